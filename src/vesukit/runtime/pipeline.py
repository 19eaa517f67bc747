"""The predict pipeline: test volumes in, a validated submission.zip out, whatever happens.

Stages, each in its own module: discover the root and ids (:mod:`vesukit.data`) -> per device,
teachers over volumes with faults isolated and the time budget kept
(:mod:`~vesukit.runtime.worker`, :mod:`~vesukit.runtime.compute`,
:mod:`~vesukit.runtime.budget`) -> each mask saved to the workdir
(:mod:`~vesukit.runtime.state`) -> the zip assembled in test-id order as masks arrive
(:class:`vesukit.submission.SubmissionWriter`) -> validated. Volumes that could not be
predicted (unreadable, interrupted, out of time) get flagged empty fallback masks, so the zip
always holds every test id.
"""

from __future__ import annotations

import os
import platform
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from vesukit import __version__
from vesukit.data import find_competition_root, list_test_ids, read_volume_shape, volume_path
from vesukit.decide import load_calibration
from vesukit.devices import resolve_device
from vesukit.errors import UsageError, VesukitError
from vesukit.runtime.budget import DEFAULT_TIME_BUDGET
from vesukit.runtime.progress import Progress
from vesukit.runtime.record import RunRecord
from vesukit.runtime.state import DONE, StateStore, VolumeState, fingerprint
from vesukit.runtime.worker import (
    WorkerSetup,
    fallback_state,
    process_volumes,
    run_worker_processes,
)

TTA_PRESETS = ("none", "flip", "full")
EXIT_DEGRADED = 3  # the zip is valid and complete, but some volumes were predicted with less


@dataclass(frozen=True)
class PredictConfig:
    teachers: Path
    out: Path
    data: Path | None = None          # competition root; None: discover under input_base
    input_base: Path | None = None
    device: str = "auto"              # auto | cpu | cuda | cuda:N
    workers: int | None = None        # None: one per visible GPU (1 on CPU)
    tta: str | None = None            # None: the calibration's TTA, else "none"
    calibration: Path | None = None
    workdir: Path | None = None       # run.json, masks/, state/; default: beside the zip
    audit: Path | None = None
    overlap: float = 0.5
    time_budget: float = DEFAULT_TIME_BUDGET
    resume: bool = False
    save_maps: Path | None = None     # each volume's ensemble mean as <id>.npy (float16) here

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
        return bool(self.fallbacks) or any(v.degraded for v in self.volumes)

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
        raise VesukitError(f"{path}: cannot create its folder ({exc}). Choose another --out.")
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


def run_predict(config: PredictConfig, progress_stream=None,
                on_volume: Callable[[VolumeState], None] | None = None) -> RunResult:
    """Run the whole pipeline and return what was done and the validator's verdict."""
    from vesukit.submission import SubmissionWriter, validate_zip
    from vesukit.teachers import load_manifest

    if config.tta is not None and config.tta not in TTA_PRESETS:
        raise UsageError(f"--tta {config.tta}: choose one of {', '.join(TTA_PRESETS)}.")
    wall_start = time.perf_counter()
    deadline = time.time() + config.time_budget
    out = Path(config.out)
    check_writable(out)
    calibration = load_calibration(config.calibration)
    # an explicit --tta wins; otherwise the TTA the calibration was fitted with
    tta_source = "requested" if config.tta else "calibration" if calibration.tta else "default"
    config = replace(config, tta=config.tta or calibration.tta or "none")
    root = find_competition_root(config.data, base=config.input_base)
    ids = list_test_ids(root)
    shapes, shape_problems = scan_shapes(root, ids)
    manifest = load_manifest(config.teachers)
    devices = worker_devices(config.device, config.workers)

    workdir = config.resolved_workdir()
    store = StateStore(workdir)
    run_fingerprint = fingerprint(
        [spec.to_dict() for spec in manifest.teachers], config.tta, config.overlap,
        calibration.to_dict())
    resumed: dict[str, VolumeState] = {}
    if config.resume:
        for volume_id in ids:
            state = store.finished(volume_id, run_fingerprint, shapes[volume_id])
            if state is not None:
                resumed[volume_id] = state
    todo = tuple(i for i in ids if i not in resumed)

    record = RunRecord.start(workdir / "run.json", config, devices, manifest, calibration,
                             root, ids, list(resumed))
    progress = Progress(len(ids), stream=progress_stream)
    warnings: list[str] = []
    states: dict[str, VolumeState] = dict(resumed)
    lock = threading.Lock()

    def warn(text: str) -> None:
        with lock:
            warnings.append(text)
            record.event(text)
            progress.note(f"WARNING {text}")

    for problem in shape_problems:
        warn(problem)
    decision = f"decision: {calibration.describe()}; TTA applied: {config.tta} ({tta_source})"
    record.event(decision)
    progress.note(decision)

    with SubmissionWriter(out, shapes) as writer, StopRequest() as stop:
        assembler = OrderedAssembler(writer, ids, store)

        def on_state(state: VolumeState) -> None:
            with lock:
                states[state.volume_id] = state
                record.add_volume(state)
                label = "fallback" if state.status != DONE else f"thr {state.threshold:.3f}"
                progress.advance(f"{state.volume_id} {'x'.join(map(str, state.shape))} "
                                 f"({label})", state.seconds)
                assembler.ready(state.volume_id)
            if config.audit is not None:
                _write_audit(Path(config.audit), state, config, calibration)
            if on_volume:
                on_volume(state)

        if resumed:
            progress.skip(len(resumed), f"resumed: {len(resumed)} volume(s) already done in "
                                        f"{workdir}")
        for volume_id in resumed:
            assembler.ready(volume_id)
            if config.audit is not None:
                _write_audit(Path(config.audit), resumed[volume_id], config, calibration)

        setup = WorkerSetup(Path(config.teachers), root, workdir, todo, shapes,
                            calibration.to_dict(), config.tta, config.overlap,
                            run_fingerprint, deadline, len(devices),
                            Path(config.audit) if config.audit is not None else None,
                            Path(config.save_maps) if config.save_maps is not None else None)
        error: VesukitError | None = None
        if todo:
            if len(devices) == 1:
                counter = iter(range(len(todo)))
                try:
                    process_volumes(0, devices[0], setup, lambda: next(counter, None),
                                    on_state, stop, warn)
                except VesukitError as exc:
                    error = exc
            else:
                for message in run_worker_processes(devices, setup, on_state, warn, stop):
                    error = error or VesukitError(message)

        reason = ("interrupted (SIGTERM/SIGINT)" if stop() else
                  "time budget exhausted" if time.time() >= deadline else
                  f"not predicted ({error})" if error else "not predicted")
        for volume_id in ids:
            if volume_id not in states:
                state, mask_tiff = fallback_state(setup, volume_id, reason)
                store.save(state, mask_tiff)
                warn(f"volume '{volume_id}' gets an empty fallback mask: {reason}")
                on_state(state)
        zip_path = writer.finish()

    report = validate_zip(zip_path, root)
    result = RunResult(zip_path, [states[i] for i in ids], time.perf_counter() - wall_start,
                       report, record.path, warnings, list(resumed))
    if config.audit is not None:
        from vesukit.report import read_audits, summarize, write_index_html

        result.audit_index = write_index_html(config.audit)
        result.alarms = summarize(read_audits(config.audit))["alarms"]
    record.finish(result)
    if error is not None and not any(v.status == DONE for v in result.volumes if
                                     v.volume_id not in resumed):
        # Nothing could be predicted (no teacher loads, every worker failed): an error, but
        # the zip of fallbacks stands.
        raise type(error)(f"{error} A valid zip with fallback masks was still written: "
                          f"{zip_path}.")
    return result


def scan_shapes(root: Path, ids: list[str]) -> tuple[dict[str, tuple[int, int, int]], list[str]]:
    """Every test volume's shape from its TIFF headers (no decoding).

    A volume whose headers are damaged still needs an entry of the right shape, so its shape
    is guessed: its first page's (Y, X) with the most common Z among the readable volumes of
    that plane size, else the most common shape. Returns the shapes and a warning per guess.
    """
    from collections import Counter

    import tifffile

    shapes: dict[str, tuple[int, int, int]] = {}
    damaged: dict[str, str] = {}
    for volume_id in ids:
        try:
            shapes[volume_id] = read_volume_shape(volume_path(root, volume_id))
        except VesukitError as exc:
            damaged[volume_id] = str(exc)
    common = Counter(shapes.values()).most_common()
    problems = []
    for volume_id, error in damaged.items():
        plane = None
        try:
            with tifffile.TiffFile(volume_path(root, volume_id)) as tif:
                plane = tuple(tif.pages.first.shape[-2:])
        except Exception:  # noqa: BLE001 - nothing readable at all: use the common shape
            pass
        same_plane = [shape for shape, _ in common if shape[1:] == plane]
        if same_plane:
            guess = same_plane[0]
        elif plane is not None:
            guess = (max(plane), *plane)
        else:
            guess = common[0][0] if common else (320, 320, 320)
        shapes[volume_id] = guess
        problems.append(f"volume '{volume_id}': its shape cannot be read ({error}); its "
                        f"fallback mask assumes {'x'.join(map(str, guess))}")
    return {i: shapes[i] for i in ids}, problems


class OrderedAssembler:
    """Adds finished masks to the zip in test-id order, as soon as the next one is ready.

    The order (and the bytes) therefore do not depend on which worker finished first, so one
    worker, two workers and a resumed run all give the same zip.
    """

    def __init__(self, writer, ids: list[str], store: StateStore):
        self.writer = writer
        self.ids = list(ids)
        self.store = store
        self.ready_ids: set[str] = set()
        self.next = 0

    def ready(self, volume_id: str) -> None:
        self.ready_ids.add(volume_id)
        while self.next < len(self.ids) and self.ids[self.next] in self.ready_ids:
            current = self.ids[self.next]
            self.writer.add_encoded(current, self.store.mask_bytes(current))
            self.next += 1


def _write_audit(folder: Path, state: VolumeState, config: PredictConfig, calibration) -> None:
    """audit/<id>.json: the worker's measurements (maps, mask) plus how the volume was run."""
    from vesukit.report import alarms, write_volume_audit

    record = {**state.audit, **{k: v for k, v in state.to_json().items() if k != "audit"}}
    record.setdefault("rule", calibration.rule.describe())
    record["tta_requested"] = config.tta
    record["alarms"] = alarms(record)
    write_volume_audit(folder, record)


def environment_summary(devices: list[str]) -> dict:
    import torch

    info = {
        "vesukit": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "devices": devices,
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    info["cpu"] = platform.processor() or platform.machine()
    info["cpu_threads"] = torch.get_num_threads()
    return info
