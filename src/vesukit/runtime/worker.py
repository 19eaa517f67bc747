"""The per-device loop, run in-process (one device) or in one process per GPU.

A worker takes volume ids from a shared counter, reads the next volume in a background
thread while the device computes the current one, and saves each mask + state to the
workdir in another background thread; the main process assembles the zip from there. The
same function runs in both modes, so one GPU, two GPUs and CPU workers share one code path.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from vesukit.data import encode_volume, read_volume, volume_path
from vesukit.decide import Calibration
from vesukit.devices import resolve_device
from vesukit.errors import VesukitError
from vesukit.runtime.budget import TimeBudget
from vesukit.runtime.compute import NoTeacherLeft, VolumeComputer
from vesukit.runtime.state import DONE, FALLBACK, StateStore, VolumeState


@dataclass(frozen=True)
class WorkerSetup:
    """Everything a worker needs, picklable for worker processes."""

    teachers: Path
    root: Path
    workdir: Path
    ids: tuple[str, ...]                     # the volumes to do, in order
    shapes: dict                             # id -> (Z, Y, X)
    calibration: dict                        # Calibration.to_dict()
    tta: str
    overlap: float
    fingerprint: str
    deadline: float                          # time.time() by which every volume must be done
    n_workers: int = 1
    audit_dir: Path | None = None            # --audit: previews are drawn by the workers
    maps_dir: Path | None = None             # --save-maps: <id>.npy ensemble means


def fallback_state(setup: WorkerSetup, volume_id: str, reason: str, worker: int = 0
                   ) -> tuple[VolumeState, bytes]:
    shape = tuple(setup.shapes[volume_id])
    state = VolumeState(volume_id, FALLBACK, setup.fingerprint, shape, reason=reason,
                        worker=worker)
    return state, encode_volume(np.zeros(shape, np.uint8))


def load_teachers_tolerant(folder: Path, device, warn: Callable[[str], None]):
    """Load every teacher; one that fails is dropped with a warning, all failing is an error.

    Returns the loaded specs and models, and name -> reason for the dropped ones.
    """
    from vesukit.teachers import load_manifest, load_teacher

    manifest = load_manifest(folder)
    specs, models, failures = [], [], {}
    for spec in manifest.teachers:
        try:
            models.append(load_teacher(spec, manifest.root, device=device))
            specs.append(spec)
        except Exception as exc:  # noqa: BLE001 - a broken teacher must not end the run
            failures[spec.name] = f"failed to load: {type(exc).__name__}: {exc}"
            warn(f"teacher '{spec.name}' ({spec.checkpoint}) failed to load and is dropped: "
                 f"{type(exc).__name__}: {exc}")
    if not specs:
        raise NoTeacherLeft(
            f"none of the {len(manifest.teachers)} teachers in {manifest.root} could be loaded "
            "(see the warnings above). Check them with `vesukit teachers check "
            f"{manifest.root}`.")
    return specs, models, failures


def process_volumes(worker: int, device_name: str, setup: WorkerSetup,
                    next_index: Callable[[], int | None], emit: Callable[[VolumeState], None],
                    should_stop: Callable[[], bool], warn: Callable[[str], None]) -> None:
    """Predict volumes until the ids run out, a stop is requested, or the deadline passes."""
    device = resolve_device(device_name)
    calibration = Calibration.from_dict(setup.calibration)
    specs, models, failures = load_teachers_tolerant(setup.teachers, device, warn)
    computer = VolumeComputer(specs, models, device, calibration, setup.overlap, warn=warn)
    computer.dropped.update(failures)  # every volume's state says it ran without them
    views = _views_counter(specs)
    budget = TimeBudget(setup.deadline - time.time(), {s.name: s.weight for s in specs},
                        views, setup.tta)
    store = StateStore(setup.workdir)

    def save(state: VolumeState, mask_tiff: bytes) -> None:
        store.save(state, mask_tiff)
        emit(state)

    def read(index: int | None):
        if index is None:
            return None
        return read_volume(volume_path(setup.root, setup.ids[index]))

    with ThreadPoolExecutor(1, thread_name_prefix=f"read{worker}") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix=f"save{worker}") as saver:
        pending = []
        index = next_index()
        upcoming = reader.submit(read, index)
        while index is not None:
            if should_stop() or budget.expired():
                break  # the main process writes fallbacks for what is left
            volume_id = setup.ids[index]
            start = time.perf_counter()
            try:
                volume = upcoming.result()
                failure = None
            except VesukitError as exc:
                volume, failure = None, f"unreadable: {exc}"
            index = next_index()
            upcoming = reader.submit(read, index)
            if failure is not None:
                warn(f"volume '{volume_id}' gets an empty fallback mask: {failure}")
                pending.append(saver.submit(save, *fallback_state(setup, volume_id, failure,
                                                                  worker)))
                continue

            left = _remaining(setup, index)
            for decision in budget.replan(left[1], left[0] + 1):
                warn(f"time budget: {decision}")
            plan = budget.plan
            teachers = [n for n in plan.teachers if n in computer.active]
            try:
                outcome = computer.run(volume, teachers, plan.tta, volume_id, setup.audit_dir,
                                       setup.maps_dir)
            except NoTeacherLeft as exc:
                warn(f"volume '{volume_id}' gets an empty fallback mask: {exc}")
                pending.append(saver.submit(save, *fallback_state(setup, volume_id, str(exc),
                                                                  worker)))
                raise
            budget.observe(outcome.teacher_seconds, volume.size, plan.tta)
            degraded = list(outcome.degraded)
            if plan.tta != setup.tta:
                degraded.append(f"TTA {plan.tta} instead of {setup.tta} (time budget)")
            degraded += [f"without teacher '{n}' (time budget)" for n in plan.dropped]
            state = VolumeState(
                volume_id, DONE, setup.fingerprint, tuple(volume.shape),
                threshold=outcome.threshold, foreground=float(outcome.mask.mean()),
                seconds=time.perf_counter() - start, device_seconds=outcome.device_seconds,
                teacher_seconds=outcome.teacher_seconds, tta=plan.tta,
                teachers=outcome.teachers, degraded=degraded, worker=worker,
                audit=outcome.audit)
            pending.append(saver.submit(lambda s=state, m=outcome.mask: save(s, encode_volume(m))))
            for done in [p for p in pending if p.done()]:
                done.result()
                pending.remove(done)
        for future in pending:
            future.result()


def _remaining(setup: WorkerSetup, next_index: int | None) -> tuple[int, int]:
    """(volumes, voxels) still to do after the current one, this worker's share."""
    if next_index is None:
        return 0, 0
    rest = setup.ids[next_index:]
    voxels = sum(int(np.prod(setup.shapes[i])) for i in rest)
    share = max(setup.n_workers, 1)
    return -(-len(rest) // share), voxels // share


def _views_counter(specs) -> Callable[[str, str], int]:
    """(teacher, TTA level) -> forward passes per window/slice, for the cost model."""
    from vesukit.infer import tta_views

    by_name = {spec.name: spec for spec in specs}

    def count(name: str, level: str) -> int:
        spec = by_name[name]
        allowed = tuple(spec.tta)
        if spec.input_kind == "3d":
            return len(tta_views(level, 3, allowed))
        square = spec.patch[0] == spec.patch[1]
        return len(tta_views(level, 2, allowed, square=square)) * max(len(spec.axes), 1)

    return count


# --------------------------------------------------------------------------- processes


def _worker_process(worker: int, device_name: str, setup: WorkerSetup, counter, lock,
                    messages, stop_event) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when to stop
    if device_name == "cpu":
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // setup.n_workers))

    def next_index() -> int | None:
        with lock:
            if counter.value >= len(setup.ids):
                return None
            counter.value += 1
            return counter.value - 1

    try:
        process_volumes(worker, device_name, setup, next_index,
                        lambda state: messages.put(("state", state.to_json())),
                        stop_event.is_set, lambda text: messages.put(("warn", text)))
    except BaseException as exc:  # noqa: BLE001 - reported to the main process
        messages.put(("error", f"worker {worker} ({device_name}): {type(exc).__name__}: {exc}"))
    finally:
        messages.put(("exit", worker))


def run_worker_processes(devices: list[str], setup: WorkerSetup,
                         on_state: Callable[[VolumeState], None],
                         warn: Callable[[str], None], should_stop: Callable[[], bool]
                         ) -> list[str]:
    """One process per device, sharing the id counter; returns the workers' errors."""
    context = multiprocessing.get_context("spawn")
    counter = context.Value("i", 0)
    lock = context.Lock()
    messages = context.Queue()
    stop_event = context.Event()
    processes = [context.Process(target=_worker_process, name=f"vesukit-worker{i}",
                                 args=(i, device, setup, counter, lock, messages, stop_event))
                 for i, device in enumerate(devices)]
    for process in processes:
        process.start()
    errors: list[str] = []
    running = len(processes)
    while running:
        if should_stop():
            stop_event.set()
        try:
            kind, payload = messages.get(timeout=0.5)
        except queue.Empty:
            if not any(p.is_alive() for p in processes):
                break  # a worker died without saying so (killed, segfault)
            continue
        if kind == "state":
            on_state(VolumeState.from_json(payload))
        elif kind == "warn":
            warn(payload)
        elif kind == "error":
            errors.append(payload)
            warn(payload)
        elif kind == "exit":
            running -= 1
    for process in processes:
        process.join(timeout=10)
        if process.is_alive():
            process.terminate()
    return errors
