"""The per-device loop, run in a thread of the main process (one device) or in one process
per device, and the main process's watch over it.

A worker claims a volume from a shared :class:`ClaimTable` only when it is about to compute
it (reading the next open one ahead in a background thread, unclaimed), and saves each mask +
state to the workdir in another background thread; the main process assembles the zip from
there. The same function runs in both modes, so one GPU, two GPUs and CPU workers share one
code path. The main process never waits on a worker past the hard wall
(``WorkerSetup.deadline``): there it stops watching, whatever the worker is doing, and
finishes the zip. A worker process that dies (killed, segfault) is noticed by its exit code;
its claimed volumes go back to the table for a live worker, or to the main process.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vesukit.data import encode_volume, read_volume, volume_path
from vesukit.decide import Calibration
from vesukit.devices import resolve_device
from vesukit.errors import VesukitError
from vesukit.runtime.budget import TimeBudget
from vesukit.runtime.compute import (
    NoTeacherForVolume,
    NoTeacherLeft,
    StageError,
    VolumeComputer,
    describe_error,
)
from vesukit.runtime.faults import inject
from vesukit.runtime.state import DONE, FALLBACK, StateStore, VolumeState


@dataclass(frozen=True)
class WorkerSetup:
    """Everything a worker needs, picklable for worker processes."""

    teachers: Path
    root: Path
    workdir: Path
    ids: tuple[str, ...]                     # the volumes to do, in order
    shapes: dict                             # id -> (Z, Y, X)
    calibration: dict                        # Calibration.to_json()
    tta: str
    overlap: float
    fingerprint: str
    deadline: float                          # time.time() of the hard wall: the zip is finished then
    n_workers: int = 1
    audit_dir: Path | None = None            # --audit: previews are drawn by the workers
    maps_dir: Path | None = None             # --save-maps: <id>.npy ensemble means
    input_stamps: dict = field(default_factory=dict)  # id -> input size+mtime (resume check)
    fingerprint_parts: dict = field(default_factory=dict)  # part -> hash (resume: what changed)
    warm_up: bool = True                     # one tiny forward pass per teacher first
    teacher_tta: dict = field(default_factory=dict)  # teacher -> its resolved TTA (run_settings)


OPEN = 0  # a ClaimTable slot nobody has claimed; worker w's claims hold w + 1
LOCK_HELD_TOO_LONG = 2.0  # seconds; see ClaimTable.recover


class ClaimTable:
    """Which worker computes which volume (by index into ``WorkerSetup.ids``).

    ``slots`` is shared memory (a multiprocessing Array) for worker processes or a list for
    a thread; ``lock`` guards it. A volume is claimed only when about to be computed, so a
    worker that dies holds at most the volume it was computing, which :meth:`reopen` gives
    back to the others.
    """

    def __init__(self, slots, lock, size: int):
        self.slots = slots
        self.lock = lock
        self.size = size

    @classmethod
    def for_threads(cls, n: int) -> ClaimTable:
        return cls([OPEN] * n, threading.Lock(), n)

    @classmethod
    def for_processes(cls, context, n: int) -> ClaimTable:
        return cls(context.Array("i", max(n, 1), lock=False), context.Lock(), n)

    def claim(self, worker: int) -> int | None:
        with self.lock:
            index = self._first_open()
            if index is not None:
                self.slots[index] = worker + 1
            return index

    def peek(self) -> int | None:
        """The volume the next claim would get (read ahead, not claimed)."""
        with self.lock:
            return self._first_open()

    def open_indices(self) -> list[int]:
        with self.lock:
            return [i for i in range(self.size) if self.slots[i] == OPEN]

    def claimed_by(self, worker: int) -> list[int]:
        with self.lock:
            return [i for i in range(self.size) if self.slots[i] == worker + 1]

    def reopen(self, indices) -> None:
        with self.lock:
            for index in indices:
                self.slots[index] = OPEN

    def close(self, indices) -> None:
        """Mark volumes as nobody's to compute (the main process gave them a fallback)."""
        with self.lock:
            for index in indices:
                self.slots[index] = -1

    def recover(self) -> None:
        """Free the lock if a dead worker held it: it is held for microseconds, so a lock not
        free within :data:`LOCK_HELD_TOO_LONG` seconds has a holder that was killed."""
        if not self.lock.acquire(timeout=LOCK_HELD_TOO_LONG):
            self.lock.release()  # a multiprocessing.Lock may be released by any process
        else:
            self.lock.release()

    def _first_open(self) -> int | None:
        for index in range(self.size):
            if self.slots[index] == OPEN:
                return index
        return None


def fallback_state(setup: WorkerSetup, volume_id: str, reason: str, worker: int = 0
                   ) -> VolumeState:
    """The state of a volume that gets an empty mask (the zip's assembler writes the zeros)."""
    return VolumeState(volume_id, FALLBACK, setup.fingerprint, tuple(setup.shapes[volume_id]),
                       reason=reason, worker=worker)


def save_fallback(store: StateStore, state: VolumeState, warn: Callable[[str], None]) -> None:
    """Keep a fallback's state (and empty mask) in the workdir for the record; best effort.

    The zip never depends on it: the assembler writes a fallback's zeros itself, so a full
    disk or any other error here costs only the workdir copy.
    """
    try:
        inject("fallback", state.volume_id)
        store.save(state, encode_volume(np.zeros(state.shape, np.uint8)))
    except Exception as exc:  # noqa: BLE001 - see above
        warn(f"volume '{state.volume_id}': its fallback could not be saved in the workdir "
             f"({describe_error(exc)}); the zip gets its empty mask anyway")


def load_teachers_tolerant(folder: Path, device, warn: Callable[[str], None],
                           calibration: Calibration | None = None):
    """Load every teacher; one that fails is dropped with a warning, all failing is an error.

    The calibration's fitted fusion weights, if any, replace the manifest's (a teacher they
    weigh 0 is not loaded). Returns the loaded specs and models, and name -> reason for the
    dropped ones.
    """
    from vesukit.run_settings import active_teachers
    from vesukit.teachers import load_manifest, load_teacher

    manifest = load_manifest(folder, require_files=False)  # a missing file fails its load below
    # the one decision of which teachers run (weight > 0 after the fusion's weights); the
    # pipeline logged the left-out ones once
    active, _, _ = active_teachers(manifest, calibration)
    specs, models, failures = [], [], {}
    for spec in active:
        try:
            inject("load")
            models.append(load_teacher(spec, manifest.root, device=device))
            specs.append(spec)
        except Exception as exc:  # noqa: BLE001 - a broken teacher must not end the run
            failures[spec.name] = f"failed to load: {type(exc).__name__}: {exc}"
            warn(f"teacher '{spec.name}' ({spec.checkpoint}) failed to load and is dropped: "
                 f"{type(exc).__name__}: {exc}")
    if not specs:
        raise NoTeacherLeft(
            f"none of the {len(failures)} teachers in {manifest.root} could be loaded "
            "(see the warnings above). Check them with `vesukit teachers check "
            f"{manifest.root}`.")
    return specs, models, failures


def process_volumes(worker: int, device_name: str, setup: WorkerSetup, claims: ClaimTable,
                    emit: Callable[[VolumeState], None],
                    should_stop: Callable[[], bool], warn: Callable[[str], None],
                    note: Callable[[str, object], None] = lambda key, value: None) -> None:
    """Predict volumes until none is open, a stop is requested, or the deadline passes.

    Any exception in a volume's stages becomes a flagged fallback for that volume; only
    :class:`NoTeacherLeft` (nothing can predict any volume) ends the loop. ``note`` receives
    facts for the run record (the teachers' warm-up seconds).
    """
    device = resolve_device(device_name)
    calibration = Calibration.from_json(setup.calibration)
    specs, models, failures = load_teachers_tolerant(setup.teachers, device, warn, calibration)
    computer = VolumeComputer(specs, models, device, calibration, setup.overlap, warn=warn,
                              teacher_tta=setup.teacher_tta)
    computer.dropped.update(failures)  # every volume's state says it ran without them
    if setup.warm_up:
        warm = computer.warm_up()
        # a fact, not a problem: the main process logs it as an info line
        note("warm_up_seconds", {"worker": worker, "device": device_name, "teachers": warm})
    views = _views_counter(specs, models, setup.teacher_tta)
    budget = TimeBudget(setup.deadline - time.time(), {s.name: s.weight for s in specs},
                        views, setup.tta)
    store = StateStore(setup.workdir)

    def fall_back(volume_id: str, reason: str) -> None:
        warn(f"volume '{volume_id}' gets an empty fallback mask: {reason}")
        state = fallback_state(setup, volume_id, reason, worker)
        save_fallback(store, state, warn)
        emit(state)

    def save(state: VolumeState, mask: np.ndarray) -> None:
        errors = []
        for _ in range(2):  # a second try for a transient failure (a busy disk)
            try:
                inject("encode", state.volume_id)
                mask_tiff = encode_volume(mask)
                inject("save", state.volume_id)
                store.save(state, mask_tiff)
                emit(state)
                return
            except Exception as exc:  # noqa: BLE001 - becomes a flagged fallback
                errors.append(describe_error(exc))
        fall_back(state.volume_id, "its mask could not be encoded or saved ("
                  + " | ".join(errors) + ")")

    def read(index: int | None):
        if index is None:
            return None
        inject("read", setup.ids[index])
        return read_volume(volume_path(setup.root, setup.ids[index]))

    with ThreadPoolExecutor(1, thread_name_prefix=f"read{worker}") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix=f"save{worker}") as saver:
        pending = []
        ahead = claims.peek()  # read ahead, unclaimed: another worker may take it first
        upcoming = reader.submit(read, ahead)
        while True:
            if should_stop() or budget.expired():
                break  # the main process writes fallbacks for what is left
            index = claims.claim(worker)
            if index is None:
                break
            if index != ahead:  # the volume read ahead went to another worker
                upcoming.cancel()
                upcoming = reader.submit(read, index)
            volume_id = setup.ids[index]
            start = time.perf_counter()
            try:
                volume = upcoming.result()
                failure = None
            except Exception as exc:  # noqa: BLE001 - any read error: this volume only
                volume, failure = None, f"unreadable: {_read_error(exc)}"
            ahead = claims.peek()
            upcoming = reader.submit(read, ahead)
            if failure is not None:
                pending.append(saver.submit(fall_back, volume_id, failure))
                continue

            left = _remaining(setup, claims)
            for decision in budget.replan(left[1], left[0] + 1):
                warn(f"time budget: {decision}")
            plan = budget.plan
            teachers = [n for n in plan.teachers if n in computer.active]
            try:
                outcome = _compute(computer, volume, teachers, plan.tta, volume_id, setup, warn)
            except NoTeacherLeft as exc:
                pending.append(saver.submit(fall_back, volume_id, str(exc)))
                for future in pending:
                    future.result()
                raise
            except Exception as exc:  # noqa: BLE001 - any error: this volume only
                pending.append(saver.submit(fall_back, volume_id, str(exc)))
                continue
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
                audit=outcome.audit, input_stamp=setup.input_stamps.get(volume_id),
                fingerprint_parts=dict(setup.fingerprint_parts))
            pending.append(saver.submit(save, state, outcome.mask))
            for done in [p for p in pending if p.done()]:
                done.result()
                pending.remove(done)
        upcoming.cancel()
        for future in pending:
            future.result()


def _compute(computer: VolumeComputer, volume, teachers, tta, volume_id, setup, warn):
    """``computer.run``, once more with the ensemble on the CPU if it fails (memory)."""
    try:
        return computer.run(volume, teachers, tta, volume_id, setup.audit_dir, setup.maps_dir)
    except (NoTeacherLeft, NoTeacherForVolume):
        raise  # the teachers themselves failed: an ensemble retry would not help
    except Exception as exc:  # noqa: BLE001 - retried once, then the caller falls back
        first = describe_error(exc) if not isinstance(exc, StageError) else str(exc)
    warn(f"volume '{volume_id}': {first}; retrying with the ensemble on the CPU")
    _free_device_memory(computer.device)
    try:
        outcome = computer.run(volume, teachers, tta, volume_id, setup.audit_dir,
                               setup.maps_dir, ensemble_device="cpu")
    except NoTeacherLeft:
        raise
    except Exception as exc:  # noqa: BLE001
        second = describe_error(exc) if not isinstance(exc, StageError) else str(exc)
        raise StageError("the volume", RuntimeError(f"{first}; on retry: {second}")) from exc
    outcome.degraded.append(f"retried after: {first}")
    return outcome


def _free_device_memory(device) -> None:
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        torch.cuda.empty_cache()


def _read_error(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, VesukitError) else describe_error(exc)


def _remaining(setup: WorkerSetup, claims: ClaimTable) -> tuple[int, int]:
    """(volumes, voxels) still open after the current one, this worker's share."""
    rest = [setup.ids[i] for i in claims.open_indices()]
    voxels = sum(int(np.prod(setup.shapes[i])) for i in rest)
    share = max(setup.n_workers, 1)
    return -(-len(rest) // share), voxels // share


def _views_counter(specs, models, teacher_tta: dict | None = None) -> Callable[[str, str], int]:
    """(teacher, run TTA level) -> forward passes per window/slice, for the cost model.

    Counts what the teacher really runs at that level: its own TTA capped by the level (as
    VolumeComputer runs it), and for an nnU-Net teacher its mirroring views (8, not flip's 4).
    A wrong count makes the budget's projection after lowering TTA wrong by the same factor.
    """
    from vesukit.infer import tta_views
    from vesukit.infer.nnunet import nnunet_views
    from vesukit.run_settings import capped_tta
    from vesukit.teachers.nnunet import NnUNetSpec

    by_name = {spec.name: (spec, model) for spec, model in zip(specs, models)}
    own = dict(teacher_tta or {})

    def count(name: str, level: str) -> int:
        spec, model = by_name[name]
        level = capped_tta(own.get(name, level), level)
        if isinstance(spec, NnUNetSpec):
            return len(nnunet_views(spec, model, level))
        allowed = tuple(spec.tta)
        if spec.input_kind == "3d":
            return len(tta_views(level, 3, allowed))
        square = spec.patch[0] == spec.patch[1]
        return len(tta_views(level, 2, allowed, square=square)) * max(len(spec.axes), 1)

    return count


# --------------------------------------------------------------------------- processes


@dataclass
class Watch:
    """What the main process saw while its workers ran."""

    errors: list[str] = field(default_factory=list)   # the workers' own error reports
    deaths: list[dict] = field(default_factory=list)  # worker processes that died
    hit_wall: bool = False                            # stopped watching at the hard wall
    leftover: bool = False                            # volumes still open, no worker left


def _death_reason(exit_code: int | None) -> str:
    if exit_code is not None and exit_code < 0:
        try:
            return f"killed by {signal.Signals(-exit_code).name}"
        except ValueError:
            return f"killed by signal {-exit_code}"
    return f"exit code {exit_code}"


def run_worker_thread(worker: int, device_name: str, setup: WorkerSetup, claims: ClaimTable,
                      on_state: Callable[[VolumeState], None], warn: Callable[[str], None],
                      should_stop: Callable[[], bool],
                      note: Callable[[str, object], None] = lambda key, value: None) -> Watch:
    """One device in a thread of this process, watched from the calling thread.

    The caller returns at the hard wall even if the thread is stuck in a forward pass: the
    thread is a daemon, told to stop, and whatever it emits later is the caller's to ignore.
    Raises what the worker raised (every teacher failed to load, ...).
    """
    told_to_stop = threading.Event()
    raised: list[BaseException] = []

    def target() -> None:
        try:
            process_volumes(worker, device_name, setup, claims, on_state,
                            lambda: told_to_stop.is_set() or should_stop(), warn, note)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the watching thread
            raised.append(exc)

    thread = threading.Thread(target=target, name=f"vesukit-worker{worker}", daemon=True)
    thread.start()
    watch = Watch()
    while thread.is_alive():
        thread.join(timeout=max(min(setup.deadline - time.time(), 0.2), 0.01))
        if thread.is_alive() and time.time() >= setup.deadline:
            told_to_stop.set()
            watch.hit_wall = True
            break
    if raised:
        raise raised[0]
    return watch


def _worker_process(worker: int, device_name: str, setup: WorkerSetup, claims: ClaimTable,
                    connection, stop_event) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when to stop
    if device_name == "cpu":
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // setup.n_workers))
    sending = threading.Lock()  # the loop and its saver thread share this worker's own pipe

    def send(kind: str, payload) -> None:
        with sending:
            connection.send((kind, payload))

    try:
        process_volumes(worker, device_name, setup, claims,
                        lambda state: send("state", state.to_json()),
                        stop_event.is_set, lambda text: send("warn", text),
                        lambda key, value: send("note", (key, value)))
    except BaseException as exc:  # noqa: BLE001 - reported to the main process
        send("error", f"worker {worker} ({device_name}): {type(exc).__name__}: {exc}")
    finally:
        send("exit", worker)
        connection.close()


# a volume in flight when this many workers died is not handed out again: it gets a fallback
DEATHS_PER_VOLUME = 2


def run_worker_processes(devices: list[str], setup: WorkerSetup, claims: ClaimTable,
                         on_state: Callable[[VolumeState], None],
                         warn: Callable[[str], None], should_stop: Callable[[], bool],
                         note: Callable[[str, object], None] = lambda key, value: None,
                         context=None) -> Watch:
    """One process per device, sharing ``claims``, watched until done or the hard wall.

    A process that exits without saying so (killed, segfault) is a death: it is logged, its
    claimed volumes go back to ``claims`` for the live workers (a volume in flight at
    :data:`DEATHS_PER_VOLUME` deaths gets a flagged fallback instead), and ``Watch.leftover``
    tells the caller to compute what is still open itself when no worker is left.
    """
    context = context or multiprocessing.get_context("spawn")
    stop_event = context.Event()
    # one pipe per worker, not one shared queue: a worker killed while writing can then
    # garble or block only its own channel, never the others'
    pipes = [context.Pipe(duplex=False) for _ in devices]
    processes = [context.Process(target=_worker_process, name=f"vesukit-worker{i}",
                                 args=(i, device, setup, claims, pipes[i][1], stop_event))
                 for i, device in enumerate(devices)]
    for process, (_, sender) in zip(processes, pipes):
        process.start()
        sender.close()  # the worker holds the only write end: its death is an EOF here
    channels = {reader: i for i, (reader, _) in enumerate(pipes)}
    watch = Watch()
    received: set[str] = set()
    ended: set[int] = set()               # workers that said "exit" or were found dead
    deaths_of: dict[str, int] = {}        # volume id -> deaths while it was in flight

    def handle(kind: str, payload) -> None:
        if kind == "state":
            state = VolumeState.from_json(payload)
            received.add(state.volume_id)
            on_state(state)
        elif kind == "warn":
            warn(payload)
        elif kind == "note":
            note(*payload)
        elif kind == "error":
            watch.errors.append(payload)
            warn(payload)
        elif kind == "exit":
            ended.add(payload)

    def receive(reader) -> None:
        """Handle one message; a closed or garbled channel (its worker died) is dropped."""
        try:
            message = reader.recv()
        except Exception:  # noqa: BLE001 - EOF, or a message cut short by a kill
            channels.pop(reader, None)
            return
        handle(*message)

    def drain(worker: int) -> None:
        for reader in [r for r, w in channels.items() if w == worker]:
            while reader in channels and reader.poll():
                receive(reader)

    def bury(worker: int) -> None:
        process = processes[worker]
        ended.add(worker)
        claims.recover()  # it may have died holding the claim table's lock
        lost = [i for i in claims.claimed_by(worker) if setup.ids[i] not in received]
        lost_ids = [setup.ids[i] for i in lost]
        death = {"worker": worker, "device": devices[worker], "exit_code": process.exitcode,
                 "cause": _death_reason(process.exitcode), "volumes": lost_ids}
        watch.deaths.append(death)
        note("worker_deaths", death)
        warn(f"worker {worker} ({devices[worker]}) died ({death['cause']}) while computing "
             f"{', '.join(map(repr, lost_ids)) or 'no volume'}; "
             + ("its volumes go back to the live workers" if lost_ids else "nothing was lost"))
        for index in lost:
            volume_id = setup.ids[index]
            deaths_of[volume_id] = deaths_of.get(volume_id, 0) + 1
            if deaths_of[volume_id] >= DEATHS_PER_VOLUME:
                claims.close([index])
                reason = (f"{deaths_of[volume_id]} workers died while computing it "
                          f"(last: {death['cause']})")
                warn(f"volume '{volume_id}' gets an empty fallback mask: {reason}")
                state = fallback_state(setup, volume_id, reason, worker)
                save_fallback(StateStore(setup.workdir), state, warn)
                received.add(volume_id)
                on_state(state)
            else:
                claims.reopen([index])

    while len(ended) < len(processes):
        if should_stop():
            stop_event.set()
        if time.time() >= setup.deadline:
            watch.hit_wall = True
            break
        timeout = max(min(setup.deadline - time.time(), 0.5), 0.01)
        ready = multiprocessing.connection.wait(list(channels), timeout=timeout) if channels \
            else time.sleep(timeout) or []
        for reader in ready:
            receive(reader)
        for worker, process in enumerate(processes):
            if worker not in ended and not process.is_alive():
                drain(worker)  # what it said before dying comes first
                if worker not in ended:
                    bury(worker)
    if watch.hit_wall:
        stop_event.set()
        for process in processes:
            if process.is_alive():
                process.kill()  # the zip is finished now, whatever the workers are doing
        for process in processes:
            process.join(timeout=10)
        claims.recover()  # a worker killed here may have held the claim table's lock
    else:
        for worker in range(len(processes)):
            drain(worker)
        watch.leftover = bool(watch.deaths) and bool(claims.open_indices()) and not should_stop()
    for process in processes:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
    return watch
