"""`vesukit segment` on Dask: one task per output chunk, teachers loaded once per worker.

The client creates the output, submits one task per chunk not yet finished, and watches
them finish. A worker process loads the teachers the first time it needs them and keeps
them (a per-process cache; :func:`preload` fills it on every worker up front, so a broken
teacher stops the run at once instead of failing every chunk). A task that raises is retried
by Dask (``retries``); one that still fails, or whose worker died, gets its chunk written as
zeros, recorded as a fallback and listed at the end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vesukit.errors import VesukitError
from vesukit.scroll.decision import ChunkDecision, load_decision
from vesukit.scroll.plan import chunk_grid, chunk_region
from vesukit.scroll.source import Source, find_source
from vesukit.scroll.store import DONE, FALLBACK, SKIPPED, OutputStore

log = logging.getLogger("vesukit.segment")


@dataclass(frozen=True)
class SegmentConfig:
    input: Path
    teachers: Path
    out: Path
    calibration: Path | None = None
    tta: str | None = None              # None: resolved (vesukit.run_settings), as predict does
    chunk: tuple[int, int, int] = (256, 256, 256)
    scheduler: str = "local"
    workers: int | None = None
    device: str = "auto"
    resume: bool = False
    level: int = 0
    overlap: float | None = None        # None: resolved (the calibration's, else the default)
    dtype: str = "uint8"
    retries: int = 2

    def __post_init__(self):  # the CLI and library callers get the same errors
        from vesukit.errors import UsageError
        from vesukit.infer.tta import PRESETS

        if self.overlap is not None and not 0 <= self.overlap < 1:
            raise UsageError(f"--overlap {self.overlap}: must be in [0, 1).")
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"--workers {self.workers}: must be >= 1.")
        if self.workers is not None and self.scheduler != "local":
            raise UsageError(f"--workers {self.workers} with --scheduler {self.scheduler}: --workers starts "
                             "local workers; an existing scheduler uses the workers started with it "
                             "(`dask worker ADDRESS`). Drop --workers.")
        if len(self.chunk) != 3 or min(self.chunk) < 1:
            raise UsageError(f"--chunk {' '.join(map(str, self.chunk))}: three sizes, each >= 1.")
        if self.retries < 0:
            raise UsageError(f"--retries {self.retries}: must be >= 0.")
        if self.tta is not None and self.tta not in PRESETS:
            raise UsageError(f"--tta {self.tta}: choose one of {', '.join(PRESETS)}.")
        if self.dtype not in ("uint8", "float16"):
            raise UsageError(f"--dtype {self.dtype}: choose uint8 or float16.")


@dataclass(frozen=True)
class ChunkJob:
    """What a task needs besides its chunk index; picklable."""

    source: Source
    store: OutputStore
    teachers: Path
    device: str
    tta: dict                           # active teacher -> TTA level (vesukit.run_settings)
    overlap: float
    decision: ChunkDecision | None
    threads: int = 0


@dataclass
class SegmentResult:
    out: Path
    shape: tuple[int, int, int]
    chunks: int
    done: int = 0
    skipped: int = 0
    resumed: int = 0
    fallbacks: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    workers: int = 0
    peak_worker_rss_mb: float = 0.0
    dashboard: str | None = None

    @property
    def voxels_per_second(self) -> float:
        return float(np.prod(self.shape)) / self.seconds if self.seconds else 0.0


# --------------------------------------------------------------------------- worker side

_LOADED: dict[tuple[str, str], tuple] = {}


def _worker_device(requested: str) -> str:
    """``auto``/``cuda``: the worker's own GPU (local workers are named 0..N-1), else the CPU."""
    if requested not in ("auto", "cuda"):
        return requested
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count():
        name = _worker_name()
        index = int(name) % torch.cuda.device_count() if str(name).isdigit() else 0
        return f"cuda:{index}"
    return "cpu"


def _worker_name():
    try:
        from distributed import get_worker

        return get_worker().name
    except (ImportError, ValueError):
        return 0


def teachers_for(folder: Path, device: str, threads: int = 0):
    """The loaded (specs, models, device) of ``folder``: loaded once per worker process."""
    key = (str(folder), device)
    if key not in _LOADED:
        import torch

        from vesukit.devices import resolve_device
        from vesukit.run_settings import active_manifest
        from vesukit.teachers import load_manifest, load_teacher

        if threads:
            torch.set_num_threads(threads)
        resolved = resolve_device(_worker_device(device))
        manifest = active_manifest(load_manifest(folder))  # weight-0 teachers are never loaded
        models = [load_teacher(spec, manifest.root, device=resolved).eval() for spec in manifest.teachers]
        _LOADED[key] = (list(manifest.teachers), models, resolved)
    return _LOADED[key]


def preload(job: ChunkJob) -> str:
    specs, _, device = teachers_for(job.teachers, job.device, job.threads)
    return f"{len(specs)} teacher(s) on {device}"


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def segment_chunk(index: tuple[int, ...], job: ChunkJob) -> dict:
    """Compute, decide and write one chunk; record it. Returns its record."""
    from vesukit.scroll.blocks import region_maps

    start = time.perf_counter()
    specs, models, device = teachers_for(job.teachers, job.device, job.threads)
    store = job.store
    own = chunk_region(index, store.shape, store.chunk)
    region = chunk_region(index, store.shape, store.chunk, job.decision.halo if job.decision else 0)
    maps = region_maps(job.source.open(), store.shape, region, specs, models, device=device, tta=job.tta,
                       overlap=job.overlap)
    info = {"worker": str(_worker_name()), "pid": os.getpid()}
    if maps is None:
        info.update(seconds=time.perf_counter() - start, peak_rss_mb=_peak_rss_mb())
        store.record(index, SKIPPED, **info)
        return {"chunk": list(index), "status": SKIPPED, **info}
    mean = maps.mean.detach().cpu().numpy()
    inner = tuple(slice(o.start - r.start, o.stop - r.start) for o, r in zip(own, region))
    mask = job.decision.apply(mean, region, store.shape)[inner] if job.decision else None
    store.write(index, own, mean[inner], mask)
    info.update(seconds=time.perf_counter() - start, peak_rss_mb=_peak_rss_mb())
    store.record(index, DONE, **info)
    return {"chunk": list(index), "status": DONE, **info}


# --------------------------------------------------------------------------- client side

def _fingerprint(config: SegmentConfig, settings, source: Source, decision: ChunkDecision | None) -> dict:
    manifest = (Path(config.teachers) / "teachers.json").read_bytes()
    return {"input": str(Path(source.path).resolve()), "array": source.array, "tta": dict(settings.tta),
            "overlap": settings.overlap, "chunk": list(config.chunk), "dtype": config.dtype,
            "teachers": hashlib.sha256(manifest).hexdigest(),
            "decision": None if decision is None else {"threshold": decision.threshold,
                                                       "steps": [dict(s) for s in decision.steps]}}


def _check_teachers(folder: Path, shape, overlap: float) -> None:
    """Fail before any cluster starts if a teacher cannot run chunk by chunk."""
    from vesukit.run_settings import active_manifest
    from vesukit.scroll.plan import teacher_passes
    from vesukit.teachers import load_manifest

    region = tuple(slice(0, min(n, 1)) for n in shape)
    for spec in active_manifest(load_manifest(folder)).teachers:
        teacher_passes(spec, shape, region, overlap)


def _client(config: SegmentConfig, n_workers: int):
    from vesukit._optional import require

    distributed = require("distributed", "vesukit segment", "dask[distributed]")
    if config.scheduler != "local":
        return distributed.Client(config.scheduler), None
    cluster = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", silence_logs=logging.ERROR)
    return distributed.Client(cluster), cluster


def local_workers(config: SegmentConfig) -> int:
    if config.workers:
        return config.workers
    if config.device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            return max(1, torch.cuda.device_count())  # one worker per GPU
    return 1


def resolve_settings(config: SegmentConfig, progress):
    """(settings, mismatches): TTA per teacher and overlap as predict resolves them (the
    calibration's TTA included); printed with their origins, and one warning line if the
    calibration was fitted otherwise."""
    from vesukit.decide import load_calibration
    from vesukit.run_settings import fit_mismatches, mismatch_line, resolve_run_settings
    from vesukit.teachers import load_manifest

    manifest = load_manifest(config.teachers)
    calibration = load_calibration(config.calibration) if config.calibration else None
    settings = resolve_run_settings(manifest, calibration, tta=config.tta, overlap=config.overlap)
    for line in settings.lines():
        print(line, file=progress, flush=True)
    problems = fit_mismatches(calibration, settings, manifest) if calibration else []
    if problems:
        print(f"WARNING {mismatch_line(config.calibration, problems)}", file=progress, flush=True)
    return settings, problems


def run_segment(config: SegmentConfig, progress=None) -> SegmentResult:
    progress = progress if progress is not None else sys.stderr  # the stream of the call, not of the import
    source = find_source(config.input, config.level)
    shape = tuple(int(n) for n in source.open().shape)
    decision = load_decision(config.calibration)
    settings, fit_problems = resolve_settings(config, progress)
    _check_teachers(config.teachers, shape, settings.overlap)
    store = OutputStore(Path(config.out), shape, tuple(config.chunk), config.dtype, decision is not None)
    store.create(_fingerprint(config, settings, source, decision), config.resume)
    # what this run used and where each setting came from, as predict's run.json has it
    store.write_settings({"settings": settings.to_json(), "calibration_mismatch": fit_problems})
    chunks = chunk_grid(shape, store.chunk)
    finished = store.finished() if config.resume else {}
    todo = [c for c in chunks if c not in finished]
    result = SegmentResult(store.path, shape, len(chunks), resumed=len(finished))
    n_workers = local_workers(config)
    # Local workers share the cores (OMP_NUM_THREADS, when set, wins); remote ones keep torch's default.
    threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 1) // n_workers)) \
        if config.scheduler == "local" else 0
    job = ChunkJob(source, store, Path(config.teachers), config.device, dict(settings.tta), settings.overlap,
                   decision, threads)
    start = time.perf_counter()
    if todo:
        client, cluster = _client(config, n_workers)
        try:
            result.dashboard = client.dashboard_link
            result.workers = len(client.scheduler_info()["workers"])
            print(f"segment: {len(todo)} of {len(chunks)} chunk(s) of {store.chunk} on {result.workers} worker(s); "
                  f"Dask dashboard {result.dashboard}", file=progress, flush=True)
            try:
                client.run(preload, job)
            except VesukitError:
                raise
            except Exception as exc:  # the teachers cannot load: every chunk would fail
                raise VesukitError(f"{config.teachers}: a worker could not load the teachers "
                                   f"({type(exc).__name__}: {exc}). Check them with `vesukit teachers check "
                                   f"{config.teachers}`.") from exc
            _watch(client, job, todo, config.retries, result, store, progress)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    result.seconds = time.perf_counter() - start
    store.finish(result.fallbacks)
    return result


def _watch(client, job: ChunkJob, todo, retries: int, result: SegmentResult, store: OutputStore, progress) -> None:
    from distributed import as_completed

    futures = {client.submit(segment_chunk, index, job, key=f"chunk-{'-'.join(map(str, index))}", retries=retries,
                             pure=False): index for index in todo}
    start = time.perf_counter()
    last = 0.0
    for count, future in enumerate(as_completed(futures), 1):
        index = futures[future]
        if future.status == "finished":
            record = future.result()
            result.done += record["status"] == DONE
            result.skipped += record["status"] == SKIPPED
            result.peak_worker_rss_mb = max(result.peak_worker_rss_mb, record.get("peak_rss_mb", 0.0))
        else:
            try:
                error = future.exception()
                reason = f"{type(error).__name__}: {error}"
            except Exception as exc:  # noqa: BLE001 - a cancelled future raises here
                reason = f"{type(exc).__name__}: {exc}"
            region = chunk_region(index, store.shape, store.chunk)
            zeros = np.zeros(tuple(r.stop - r.start for r in region), np.float32)
            store.write(index, region, zeros, zeros.astype(np.uint8))
            store.record(index, FALLBACK, reason=reason)
            result.fallbacks.append({"chunk": list(index), "reason": reason})
            print(f"segment: chunk {index} failed {retries + 1} time(s), written as a fallback: {reason}",
                  file=progress, flush=True)
        now = time.perf_counter()
        if now - last > 2.0 or count == len(todo):
            last = now
            rate = count / (now - start)
            eta = (len(todo) - count) / rate if rate else float("inf")
            print(f"segment: {count}/{len(todo)} chunks ({result.skipped} empty, {len(result.fallbacks)} fallback), "
                  f"{rate * float(np.prod(store.chunk)) / 1e6:.2f} Mvoxel/s, ETA {eta:.0f} s",
                  file=progress, flush=True)


def summary(result: SegmentResult) -> dict:
    data = asdict(result)
    data["out"] = str(result.out)
    data["voxels_per_second"] = result.voxels_per_second
    return json.loads(json.dumps(data))
