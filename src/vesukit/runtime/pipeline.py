"""The predict pipeline: test volumes in, a validated submission.zip out, whatever happens.

A run is planned once (:func:`plan_run`: the root and the scorer's ids from
:mod:`vesukit.data`, every volume's shape, the teachers and settings, the fingerprints a
resume compares, the hard wall), then executed (:func:`execute`): per device, teachers over
volumes with faults isolated and the time budget kept (:mod:`~vesukit.runtime.worker`,
:mod:`~vesukit.runtime.compute`, :mod:`~vesukit.runtime.budget`) -> each mask saved to the
workdir (:mod:`~vesukit.runtime.state`) -> the zip assembled in test-id order as masks arrive
(:class:`vesukit.submission.SubmissionWriter`) -> validated. Volumes that could not be
predicted (unreadable, interrupted, out of time, missing) get flagged empty fallback masks, so
the zip always holds every test id; at the hard wall (the budget less the measured time to
finish the zip) the main process finishes it whatever the workers are doing.
"""

from __future__ import annotations

import math
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from vesukit.data import find_competition_root, read_test_ids, read_volume_shape, volume_path
from vesukit.decide import load_calibration
from vesukit.devices import resolve_device
from vesukit.errors import UsageError, VesukitError
from vesukit.infer.tta import PRESETS
from vesukit.run_settings import fit_mismatches, mismatch_line, resolve_run_settings, write_maps_provenance
from vesukit.runtime.budget import DEFAULT_TIME_BUDGET
from vesukit.runtime.compute import apply_fusion_weights, describe_error
from vesukit.runtime.faults import inject
from vesukit.runtime.progress import Progress
from vesukit.runtime.record import RunRecord
from vesukit.runtime.state import DONE, StateStore, VolumeState, file_stamp, fingerprint
from vesukit.runtime.worker import (
    ClaimTable,
    Watch,
    WorkerSetup,
    fallback_state,
    run_worker_processes,
    run_worker_thread,
    save_fallback,
)

EXIT_DEGRADED = 3  # the zip is valid and complete, but some volumes were predicted with less
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


@dataclass(frozen=True)
class PredictConfig:
    """Everything `vesukit predict` takes; checks itself, so the command line and library
    callers get the same errors (:class:`~vesukit.errors.UsageError`, naming the flag)."""

    teachers: Path
    out: Path
    data: Path | None = None          # competition root; None: discover under input_base
    input_base: Path | None = None
    device: str = "auto"              # auto | cpu | cuda | cuda:N
    workers: int | None = None        # None: one per visible GPU (1 on CPU)
    tta: str | None = None            # None: resolved (vesukit.run_settings)
    calibration: Path | None = None
    workdir: Path | None = None       # run.json, masks/, state/; default: beside the zip
    audit: Path | None = None
    overlap: float | None = None      # None: resolved (the calibration's, else DEFAULT_OVERLAP)
    time_budget: float = DEFAULT_TIME_BUDGET
    resume: bool = False
    save_maps: Path | None = None     # each volume's ensemble mean as <id>.npy (float16) here
    warm_up: bool = True              # one tiny forward pass per teacher before the first volume

    def __post_init__(self):
        if self.teachers is None or str(self.teachers) == "":
            raise UsageError("--teachers: a teachers folder is required.")
        if self.out is None or str(self.out) == "":
            raise UsageError("--out: a zip path is required.")
        if self.tta is not None and self.tta not in PRESETS:  # None: the calibration's TTA
            raise UsageError(f"--tta {self.tta}: choose one of {', '.join(PRESETS)}.")
        if not isinstance(self.device, str) or not _DEVICE.match(self.device):
            raise UsageError(f"--device {self.device}: choose auto, cpu, cuda or cuda:N.")
        if self.overlap is not None and (not isinstance(self.overlap, (int, float))
                                         or isinstance(self.overlap, bool) or not 0 <= self.overlap < 1):
            raise UsageError(f"--overlap {self.overlap}: must be in [0, 1).")
        if self.workers is not None and (not isinstance(self.workers, int)
                                         or isinstance(self.workers, bool) or self.workers < 1):
            raise UsageError(f"--workers {self.workers}: must be >= 1.")
        if (not isinstance(self.time_budget, (int, float)) or isinstance(self.time_budget, bool)
                or not math.isfinite(self.time_budget) or self.time_budget <= 0):
            raise UsageError(f"--time-budget {self.time_budget}: must be > 0 seconds.")

    def resolved_workdir(self) -> Path:
        return Path(self.workdir) if self.workdir else Path(self.out).parent / "vesukit-work"


@dataclass
class RunResult:
    zip_path: Path
    volumes: list[VolumeState]        # in test-id order
    wall_seconds: float
    validation: object                # vesukit.submission.ValidationReport
    record_path: Path
    warnings: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    audit_index: Path | None = None   # --audit: the index.html showing every volume
    alarms: list = field(default_factory=list)
    error: str | None = None          # why nothing could be predicted (every volume a fallback)
    worker_deaths: list[dict] = field(default_factory=list)  # worker processes that died

    @property
    def device_seconds(self) -> float:
        return sum(v.device_seconds for v in self.volumes)

    @property
    def device_busy_share(self) -> float:
        workers = max(len({v.worker for v in self.volumes}), 1)
        return self.device_seconds / (self.wall_seconds * workers) if self.wall_seconds else 0.0

    @property
    def fallbacks(self) -> list[VolumeState]:
        return [v for v in self.volumes if v.status != DONE]

    @property
    def degraded(self) -> bool:
        return (bool(self.fallbacks) or any(v.degraded for v in self.volumes)
                or bool(self.worker_deaths))

    @property
    def exit_code(self) -> int:
        if not self.validation.valid:
            return 1
        return EXIT_DEGRADED if self.degraded else 0


def worker_devices(device: str, workers: int | None) -> list[str]:
    """One device name per worker: cuda:0, cuda:1... for GPUs, 'cpu' repeated on CPU."""
    import torch

    resolved = resolve_device(device)
    if resolved.type == "cuda":
        if resolved.index is not None:
            return [str(resolved)] * (workers or 1)
        count = torch.cuda.device_count()
        return [f"cuda:{i % count}" for i in range(workers or count)]
    return ["cpu"] * (workers or 1)


def check_writable(path: Path) -> None:
    """Fail before any compute if the zip cannot be written where asked."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VesukitError(f"{path}: cannot create its folder ({exc}). Choose another --out.") from exc
    if path.is_dir():
        raise VesukitError(f"{path}: is a directory. --out must be a file path ending in .zip.")
    if not os.access(path.parent, os.W_OK):
        raise VesukitError(f"{path}: folder {path.parent} is not writable. Choose another --out.")


class StopRequest:
    """SIGTERM/SIGINT set a flag: the run stops between volumes and finishes the zip."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __call__(self) -> bool:
        return self.requested


@dataclass
class RunPlan:
    """What a predict run will do, decided once before any compute: the inputs (root, ids,
    shapes), the settings, the fingerprints a resume compares, and what a resume reuses."""

    config: PredictConfig             # the command's settings, TTA and overlap resolved
    calibration: object               # vesukit.decide.Calibration
    settings: object                  # vesukit.run_settings.RunSettings: each setting and its origin
    fit_problems: list[str]           # how this run differs from what the calibration was fitted on
    root: Path
    ids: list[str]                    # the scorer's ids, in test.csv order
    shapes: dict[str, tuple[int, int, int]]
    shape_guesses: dict[str, dict]    # id -> {"shape", "source"} where the shape was guessed
    manifest: object                  # vesukit.teachers.Manifest, with the fitted weights
    devices: list[str]
    workdir: Path
    parts: dict[str, str]             # fingerprint parts (what a saved mask depends on)
    fingerprint: str
    stamps: dict[str, str]            # id -> input size+mtime
    resumed: dict[str, VolumeState]   # volumes a --resume reuses
    deadline: float                   # time.time() of the hard wall (budget less finish margin)
    finish_margin: float              # measured seconds to finish and validate the zip
    notes: list[str] = field(default_factory=list)  # warnings found while planning

    @property
    def todo(self) -> tuple[str, ...]:
        return tuple(i for i in self.ids if i not in self.resumed)


def plan_run(config: PredictConfig, started: float) -> RunPlan:
    """Read everything a run depends on once; errors here are bad input (exit 1, no zip)."""
    from vesukit.teachers import load_manifest

    check_writable(Path(config.out))
    calibration = load_calibration(config.calibration)
    # one resolver decides TTA per teacher, overlap and the active teachers (vesukit.run_settings)
    # checkpoint files are checked by loading them: a missing one drops that teacher only
    declared = load_manifest(config.teachers, require_files=False)
    settings = resolve_run_settings(declared, calibration if config.calibration else None,
                                    tta=config.tta, overlap=config.overlap,
                                    where=str(config.calibration))
    fit_problems = fit_mismatches(calibration, settings, declared)
    config = replace(config, tta=settings.run_tta, overlap=settings.overlap)
    root = find_competition_root(config.data, base=config.input_base)
    ids, notes = read_test_ids(root)
    shapes, shape_problems, shape_guesses = scan_shapes(root, ids)
    notes += shape_problems
    # a fitted fusion's weights replace the manifest's (the run record says which were used)
    manifest, fusion_notes = apply_fusion_weights(declared, calibration, str(config.calibration))
    notes += [f"{config.calibration}: {text}" for text in fusion_notes]
    devices = worker_devices(config.device, config.workers)
    workdir = config.resolved_workdir()
    parts = fingerprint_parts(manifest, config, calibration)
    run_fingerprint = fingerprint(parts)
    stamps = input_stamps(root, ids)
    resumed: dict[str, VolumeState] = {}
    if config.resume:
        store = StateStore(workdir)
        for volume_id in ids:
            try:
                state, why = store.reusable(volume_id, run_fingerprint, shapes[volume_id],
                                            stamps.get(volume_id), parts)
            except Exception as exc:  # noqa: BLE001 - an unreadable state: redo the volume
                state, why = None, f"its saved state cannot be read ({describe_error(exc)})"
            if state is not None:
                resumed[volume_id] = state
            elif why:
                notes.append(f"--resume: volume '{volume_id}' is recomputed: {why}")
    margin = finish_margin(shapes)
    return RunPlan(config, calibration, settings, fit_problems, root, ids, shapes, shape_guesses, manifest,
                   devices, workdir, parts, run_fingerprint, stamps, resumed,
                   started + config.time_budget - margin, margin, notes)


def finish_margin(shapes: dict[str, tuple[int, int, int]]) -> float:
    """Seconds kept at the end of the budget to finish the zip: measured here, by encoding
    and decoding one empty mask of the largest shape, times the volumes (each may need a
    fallback and every one is validated), doubled, plus one second for the rest."""
    from vesukit.data import encode_volume, read_volume_pillow

    if not shapes:
        return 1.0
    largest = max(shapes.values(), key=lambda shape: int(np.prod(shape)))
    start = time.perf_counter()
    read_volume_pillow(encode_volume(np.zeros(largest, np.uint8)))
    return 1.0 + 2 * (time.perf_counter() - start) * len(shapes)


def run_predict(config: PredictConfig, progress_stream=None,
                on_volume: Callable[[VolumeState], None] | None = None) -> RunResult:
    """Run the whole pipeline and return what was done and the validator's verdict.

    Once the zip is open, nothing but an interrupt outside the signal handler ends the run
    without a complete zip: every exception in a volume's stages becomes a flagged fallback
    for that volume, an error outside them fills the volumes still open with fallbacks, and
    at the hard wall (the time budget less the measured time to finish the zip) the zip is
    finished with what is done, whatever the workers are doing.
    """
    wall_start = time.perf_counter()
    plan = plan_run(config, time.time())
    return execute(plan, wall_start, progress_stream, on_volume)


def execute(plan: RunPlan, wall_start: float, progress_stream=None,
            on_volume: Callable[[VolumeState], None] | None = None) -> RunResult:
    """Carry out ``plan``: compute the open volumes, assemble and validate the zip."""
    from vesukit.submission import SubmissionWriter, validate_zip

    config, calibration, manifest, ids = plan.config, plan.calibration, plan.manifest, plan.ids
    out = Path(config.out)
    store = StateStore(plan.workdir)
    resumed = dict(plan.resumed)
    todo = plan.todo
    record = RunRecord.start(plan.workdir / "run.json", config, plan.devices, manifest,
                             calibration, plan.root, ids, list(resumed))
    record.data["fingerprint"] = {"run": plan.fingerprint, **plan.parts}
    record.data["shape_guesses"] = plan.shape_guesses
    record.data["finish_margin_seconds"] = round(plan.finish_margin, 3)
    record.data["settings"] = plan.settings.to_json()
    record.data["calibration_mismatch"] = plan.fit_problems
    if config.save_maps is not None:
        write_maps_provenance(config.save_maps, plan.settings, manifest)
    progress = Progress(len(ids), stream=progress_stream)
    warnings: list[str] = []
    states: dict[str, VolumeState] = dict(resumed)
    lock = threading.RLock()
    closed = threading.Event()  # set once the zip is being finished: late workers are ignored

    def warn(text: str) -> None:
        with lock:
            warnings.append(text)
            record.event(text)
            progress.note(f"WARNING {text}")

    def note(key: str, value) -> None:
        with lock:
            record.data.setdefault(key, []).append(value)
            record.save()
            if key == "warm_up_seconds":
                line = (f"worker {value['worker']}: teachers warmed up in "
                        f"{sum(value['teachers'].values()):.1f}s before the first volume "
                        "(not counted as the pace)")
                record.event(line)
                progress.note(line)

    for text in plan.notes:
        warn(text)
    # the TTA summary line is what the notebook's log and the Kaggle simulation look for
    sources = sorted({plan.settings.sources[f"tta:{n}"] for n in plan.settings.teachers})
    decision = (f"decision: {calibration.describe()}; TTA applied: {config.tta} "
                f"({sources[0] if len(sources) == 1 else 'per teacher'})")
    for line in [decision, *plan.settings.lines()]:
        record.event(line)
        progress.note(line)
    if plan.fit_problems:
        warn(mismatch_line(config.calibration, plan.fit_problems))
    fusion = fusion_line(manifest, calibration, config.calibration)
    record.event(fusion)
    progress.note(fusion)
    weights_from = (f"the fusion of {config.calibration}" if calibration.overrides_weights
                    else str(manifest.root))
    for spec in manifest.teachers:
        if spec.weight == 0:
            warn(f"teacher '{spec.name}' has weight 0 in {weights_from}: skipped (not loaded)")

    setup = WorkerSetup(Path(config.teachers), plan.root, plan.workdir, todo, plan.shapes,
                        calibration.to_json(), config.tta, config.overlap,
                        plan.fingerprint, plan.deadline, len(plan.devices),
                        Path(config.audit) if config.audit is not None else None,
                        Path(config.save_maps) if config.save_maps is not None else None,
                        input_stamps=plan.stamps, warm_up=config.warm_up,
                        fingerprint_parts=plan.parts, teacher_tta=dict(plan.settings.tta))
    error: Exception | None = None
    watch = Watch()
    claims = None
    with SubmissionWriter(out, plan.shapes) as writer, StopRequest() as stop:
        assembler = OrderedAssembler(writer, ids, store, plan.shapes)

        def on_state(state: VolumeState) -> None:
            with lock:
                states[state.volume_id] = state
                for volume_id, problem in assembler.ready(state).items():
                    # the saved mask could not be added: the zip holds zeros, flagged
                    warn(f"volume '{volume_id}' gets an empty fallback mask: {problem}")
                    states[volume_id] = fallback_state(setup, volume_id, problem,
                                                       states[volume_id].worker)
                    if volume_id != state.volume_id:
                        _guarded(warn, "the run record", record.add_volume, states[volume_id])
                state = states[state.volume_id]
                _guarded(warn, "the run record", record.add_volume, state)
                label = "fallback" if state.status != DONE else f"thr {state.threshold:.3f}"
                _guarded(warn, "the progress line", progress.advance,
                         f"{state.volume_id} {'x'.join(map(str, state.shape))} ({label})",
                         state.seconds)
                if config.audit is not None:
                    _guarded(warn, "the audit record", _write_audit, Path(config.audit), state,
                             config, calibration)
            if on_volume:
                on_volume(state)

        try:
            if resumed:
                progress.skip(len(resumed), f"resumed: {len(resumed)} volume(s) already done "
                                            f"in {plan.workdir}")
            for volume_id in list(resumed):
                _guarded(warn, "the run record", record.add_volume, resumed[volume_id])
                for other, problem in assembler.ready(resumed[volume_id]).items():
                    warn(f"volume '{other}' gets an empty fallback mask: {problem}")
                    states[other] = fallback_state(setup, other, problem)
                    resumed.pop(other, None)
                    _guarded(warn, "the run record", record.add_volume, states[other])
                if volume_id in resumed and config.audit is not None:
                    _guarded(warn, "the audit record", _write_audit, Path(config.audit),
                             resumed[volume_id], config, calibration)
            if todo:
                claims, watch = compute_volumes(plan.devices, setup, _unless(closed, lock, on_state),
                                                _unless(closed, lock, warn), stop,
                                                _unless(closed, lock, note))
                if watch.errors:
                    error = VesukitError(watch.errors[0])
        except Exception as exc:  # noqa: BLE001 - the open volumes get fallbacks below
            error = exc
            if not isinstance(exc, VesukitError):
                warn(f"predict failed outside a volume ({describe_error(exc)}); the volumes "
                     "still open get empty fallback masks")
        finally:
            with lock:
                closed.set()  # from here on, a worker still running is not heard
            in_flight = _in_flight(claims, setup, states)
            if watch.hit_wall:
                warn(f"time budget: the hard wall ({config.time_budget:g}s less "
                     f"{plan.finish_margin:.1f}s to finish the zip) was reached"
                     + (f" while {', '.join(map(repr, in_flight))} was being computed"
                        if in_flight else "") + "; the zip is finished with what is done")
            reason = ("interrupted (SIGTERM/SIGINT)" if stop() else
                      "time budget exhausted" if watch.hit_wall or time.time() >= plan.deadline
                      else f"not predicted ({error})" if error else "not predicted")
            for volume_id in ids:
                if volume_id not in states:
                    why = (f"{reason} (it was being computed at the hard wall)"
                           if watch.hit_wall and volume_id in in_flight else reason)
                    state = fallback_state(setup, volume_id, why)
                    warn(f"volume '{volume_id}' gets an empty fallback mask: {why}")
                    save_fallback(store, state, warn)
                    on_state(state)
        zip_path = writer.finish()

    if config.save_maps is not None:  # say which saved maps the run made otherwise
        _guarded(warn, "the maps' record", write_maps_provenance, config.save_maps,
                 plan.settings, manifest, maps_made_otherwise(states.values(), plan.settings,
                                                              config.tta))
    report = validate_zip(zip_path, plan.root)
    result = RunResult(zip_path, [states[i] for i in ids], time.perf_counter() - wall_start,
                       report, record.path, warnings, list(resumed),
                       worker_deaths=list(watch.deaths))
    if config.audit is not None:
        from vesukit.report import read_audits, skill_lab_for, summarize, write_index_html

        # the page also shows what these teachers were measured to score (make skill-lab)
        result.audit_index = write_index_html(config.audit, skill_lab=skill_lab_for(manifest.root))
        result.alarms = summarize(read_audits(config.audit))["alarms"]
    if error is not None and not any(v.status == DONE for v in result.volumes):
        # Nothing could be predicted (no teacher loads, every worker failed): the zip of
        # fallbacks is valid, and exit 3 says so; the CLI and submit() say it loudly.
        result.error = f"no volume could be predicted: {error}"
    record.finish(result)
    return result


def maps_made_otherwise(states, settings, level: str | None) -> dict[str, str]:
    """Volume id -> how its saved map differs from ``settings`` (a teacher left out, on this
    volume or by the time budget, or the run's TTA ``level`` lowered by the budget)."""
    otherwise = {}
    for state in states:
        if state.status != DONE:
            continue  # no map was saved
        why = [f"without teacher '{name}'" for name in settings.teachers
               if name not in state.teachers]
        if level is not None and state.tta is not None and state.tta != level:
            why.append(f"TTA {state.tta} instead of {level}")
        if why:
            otherwise[state.volume_id] = ", ".join(why)
    return otherwise


def compute_volumes(devices: list[str], setup: WorkerSetup, on_state, warn, stop, note):
    """(claims, watch): the open volumes computed on ``devices``, watched up to the hard wall.

    One device runs in a thread of this process (no second process to start, and the
    teachers' GPU memory stays in one place); several run in one process each. Volumes a dead
    worker leaves when no worker is left are computed here, in a thread, up to the wall.
    """
    if len(devices) == 1:
        claims = ClaimTable.for_threads(len(setup.ids))
        return claims, run_worker_thread(0, devices[0], setup, claims, on_state, warn, stop, note)
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    claims = ClaimTable.for_processes(context, len(setup.ids))
    watch = run_worker_processes(devices, setup, claims, on_state, warn, stop, note, context)
    if watch.leftover and not watch.hit_wall:
        left = [setup.ids[i] for i in claims.open_indices()]
        warn(f"no worker is left: the main process computes {', '.join(map(repr, left))} "
             f"on {devices[0]}")
        rest = run_worker_thread(len(devices), devices[0], setup, claims, on_state, warn,
                                 stop, note)
        watch.hit_wall = rest.hit_wall
    return claims, watch


def _unless(closed: threading.Event, lock, callback):
    """``callback`` for the workers: ignored once the main process is finishing the zip
    (a worker thread left running past the hard wall must not touch the zip or the record)."""
    def gated(*args) -> None:
        with lock:
            if not closed.is_set():
                callback(*args)
    return gated


def _in_flight(claims, setup: WorkerSetup, states: dict) -> list[str]:
    """Volumes claimed by a worker that has not delivered them (being computed now)."""
    if claims is None:
        return []
    with claims.lock:
        return [setup.ids[i] for i in range(claims.size)
                if claims.slots[i] > 0 and setup.ids[i] not in states]


def fusion_line(manifest, calibration, calibration_file) -> str:
    """The run log's line saying how the teachers' maps were combined, and from where."""
    weights = ", ".join(f"{s.name}={s.weight:g}" for s in manifest.teachers if s.weight > 0)
    source = (f"fitted, from {calibration_file}" if calibration.fusion is not None
              else "default, weights from the manifest")
    return f"fusion: {calibration.fusion_mode} mean of {weights} ({source})"


def _guarded(warn: Callable[[str], None], what: str, function, *args) -> None:
    """Run a bookkeeping step whose failure must not cost a volume (record, progress, audit)."""
    try:
        function(*args)
    except Exception as exc:  # noqa: BLE001
        try:
            warn(f"{what} could not be updated ({describe_error(exc)})")
        except Exception:  # noqa: BLE001 - the warning goes to the same record
            pass


def fingerprint_parts(manifest, config: PredictConfig, calibration) -> dict[str, str]:
    """What a saved mask depends on, part by part, so a resume can say what changed.

    ``checkpoints``: each active teacher's file size, mtime and a fast content hash, so
    weights retrained under the same name are never taken for the old ones.
    """
    active = [spec for spec in manifest.teachers if spec.weight > 0]
    return {
        "teachers": fingerprint([spec.to_json() for spec in active]),
        "checkpoints": fingerprint([(spec.name, _checkpoint_stamp(manifest, spec))
                                    for spec in active]),
        "tta": fingerprint(config.tta),
        "overlap": fingerprint(config.overlap),
        "calibration": fingerprint(calibration.to_json()),
    }


def _checkpoint_stamp(manifest, spec) -> str:
    try:
        return file_stamp(manifest.checkpoint_path(spec), content=True)
    except OSError as exc:
        return f"unreadable: {exc}"  # the loader reports it; a resume then redoes the volume


def input_stamps(root: Path, ids: list[str]) -> dict[str, str]:
    """id -> the test volume's size and mtime (a changed input is never resumed)."""
    stamps = {}
    for volume_id in ids:
        try:
            stamps[volume_id] = file_stamp(volume_path(root, volume_id))
        except (OSError, VesukitError):
            stamps[volume_id] = "missing"
    return stamps


USUAL_SHAPE = (320, 320, 320)  # the competition's most common volume (docs/competition.md)


def scan_shapes(root: Path, ids: list[str]
                ) -> tuple[dict[str, tuple[int, int, int]], list[str], dict[str, dict]]:
    """Every test volume's shape from its TIFF headers (no decoding).

    A volume whose headers are damaged still needs an entry of the right shape (a wrong one
    fails the whole submission at scoring), so its shape is taken from the best source left,
    in order: the shape its writer stored in the first page's description (tifffile JSON or
    ImageJ), its first page's (Y, X) with the Z of the readable test volumes of that plane
    (at least as many pages as are still reachable), a cube on its first page's plane, the
    most common shape of the test set, and last the competition's usual 320^3.
    Returns the shapes, a warning per guess, and id -> {"shape", "source"} per guess.
    """
    from collections import Counter

    shapes: dict[str, tuple[int, int, int]] = {}
    damaged: dict[str, str] = {}
    for volume_id in ids:
        try:
            shapes[volume_id] = read_volume_shape(volume_path(root, volume_id))
        except VesukitError as exc:
            damaged[volume_id] = str(exc)
    common = [shape for shape, _ in Counter(shapes.values()).most_common()]
    problems, guesses = [], {}
    for volume_id, error in damaged.items():
        guess, source = _guess_shape(volume_path(root, volume_id), common)
        shapes[volume_id] = guess
        guesses[volume_id] = {"shape": list(guess), "source": source}
        problems.append(f"volume '{volume_id}': its shape cannot be read ({error}); its "
                        f"fallback mask assumes {'x'.join(map(str, guess))}, guessed from "
                        f"{source}")
    return {i: shapes[i] for i in ids}, problems, guesses


def _guess_shape(path: Path, common: list[tuple[int, int, int]]
                 ) -> tuple[tuple[int, int, int], str]:
    header = _partial_header(path)
    plane, pages, described = header
    if described is not None and (plane is None or tuple(described[1:]) == plane):
        return described, "the shape stored in its TIFF description"
    if plane is not None:
        same_plane = [shape for shape in common if shape[1:] == plane and shape[0] >= pages]
        if same_plane:
            return same_plane[0], (f"its first page ({plane[0]}x{plane[1]}) and the readable "
                                   "test volumes of that plane")
        return (max(plane[0], pages), *plane), (f"its first page ({plane[0]}x{plane[1]}), "
                                                "assuming a cube")
    if common:
        return common[0], "the most common shape of the readable test volumes"
    return USUAL_SHAPE, "nothing readable: the competition's usual shape"


def _partial_header(path: Path) -> tuple[tuple[int, int] | None, int, tuple | None]:
    """What a damaged TIFF still tells: first page (Y, X), pages reachable, stored shape."""
    import json

    import tifffile

    plane, pages, described = None, 0, None
    try:
        with tifffile.TiffFile(path) as tif:
            first = tif.pages.first
            plane = tuple(int(n) for n in first.shape[-2:])
            text = first.description or ""
            try:
                shape = json.loads(text).get("shape") if text.startswith("{") else None
            except ValueError:
                shape = None
            if shape is None:
                match = re.search(r"(?:^|\n)images=(\d+)", text)
                shape = [int(match.group(1)), *plane] if match else None
            if shape is not None and len(shape) == 3 and all(int(n) > 0 for n in shape):
                described = tuple(int(n) for n in shape)
            try:
                for _ in tif.pages:
                    pages += 1
            except Exception:  # noqa: BLE001 - the chain ends where the file is damaged
                pass
    except Exception:  # noqa: BLE001 - nothing readable at all
        pass
    return plane, pages, described


class OrderedAssembler:
    """Adds finished masks to the zip in test-id order, as soon as the next one is ready.

    The order (and the bytes) therefore do not depend on which worker finished first, so one
    worker, two workers and a resumed run all give the same zip. A fallback's empty mask is
    encoded here, never read back from the workdir, so a fallback needs no disk.
    """

    def __init__(self, writer, ids: list[str], store: StateStore,
                 shapes: dict[str, tuple[int, int, int]]):
        self.writer = writer
        self.ids = list(ids)
        self.store = store
        self.shapes = shapes
        self.ready_masks: dict[str, bytes | None] = {}  # None: an empty mask
        self.next = 0

    def ready(self, state: VolumeState) -> dict[str, str]:
        """Queue ``state``'s mask and add what is next in order.

        Returns id -> why a saved mask had to become an empty one (the caller flags those).
        """
        problems: dict[str, str] = {}
        data = None
        if state.status == DONE:
            try:
                inject("assemble", state.volume_id)
                data = self.store.mask_bytes(state.volume_id)
                self.writer.check_encoded(state.volume_id, data)
            except Exception as exc:  # noqa: BLE001 - zeros instead, flagged by the caller
                data = None
                problems[state.volume_id] = ("its saved mask cannot be added to the zip "
                                             f"({describe_error(exc)})")
        self.ready_masks[state.volume_id] = data
        while self.next < len(self.ids) and self.ids[self.next] in self.ready_masks:
            current = self.ids[self.next]
            data = self.ready_masks.pop(current)
            if data is not None:
                try:
                    self.writer.add_encoded(current, data)
                except Exception as exc:  # noqa: BLE001
                    problems[current] = f"its mask cannot be added to the zip ({describe_error(exc)})"
                    data = None
            if data is None:
                self.writer.add(current, np.zeros(self.shapes[current], np.uint8))
            self.next += 1
        return problems


def _write_audit(folder: Path, state: VolumeState, config: PredictConfig, calibration) -> None:
    """audit/<id>.json: the worker's measurements (maps, mask) plus how the volume was run."""
    from vesukit.report import alarms, write_volume_audit

    record = {**state.audit, **{k: v for k, v in state.to_json().items() if k != "audit"}}
    record.setdefault("rule", calibration.rule.describe())
    record["tta_requested"] = config.tta
    record["alarms"] = alarms(record)
    write_volume_audit(folder, record)
