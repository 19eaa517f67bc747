"""The predict pipeline: test volumes in, a validated submission.zip out.

For each test volume: read -> every teacher (sliding window / 2.5D, TTA) -> streaming ensemble
-> threshold rule -> post-processing -> SubmissionWriter. Reading the next volume and
encoding/writing the previous mask run in background threads while the device computes.
This module only wires stages; each stage lives in its own module.
"""

from __future__ import annotations

import os
import platform
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from vesukit import __version__
from vesukit.calibrate import Calibration, binarize, load_calibration
from vesukit.data import (
    atomic_write_bytes,
    encode_volume,
    find_competition_root,
    list_test_ids,
    read_volume,
    read_volume_shape,
    volume_path,
)
from vesukit.errors import UsageError, VesukitError, VolumeError
from vesukit.postprocess import apply_postprocess
from vesukit.runtime.progress import Progress
from vesukit.runtime.record import RunRecord

TTA_PRESETS = ("none", "flip", "full")


class TeacherLoadError(VesukitError):
    """A teacher named in the manifest cannot be loaded."""


@dataclass(frozen=True)
class PredictConfig:
    teachers: Path
    out: Path
    data: Path | None = None          # competition root; None: discover under input_base
    input_base: Path | None = None
    device: str = "auto"              # auto | cpu | cuda | cuda:N
    tta: str = "none"
    calibration: Path | None = None
    workdir: Path | None = None       # run.json and finished masks; default: beside the zip
    audit: Path | None = None
    overlap: float = 0.5

    def resolved_workdir(self) -> Path:
        return Path(self.workdir) if self.workdir else Path(self.out).parent / "vesukit-work"


@dataclass
class VolumeResult:
    volume_id: str
    shape: tuple[int, int, int]
    threshold: float
    foreground: float            # share of voxels in the mask
    seconds: float               # this volume's wall time in the main loop
    device_seconds: float        # time spent in the ensemble (device busy)
    teacher_seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class RunResult:
    zip_path: Path
    volumes: list[VolumeResult]
    wall_seconds: float
    device_seconds: float
    validation: object           # vesukit.submission.ValidationReport
    record_path: Path

    @property
    def device_busy_share(self) -> float:
        return self.device_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available here. Use --device cpu or auto.")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"--device {name}: not a torch device ({exc}).") from exc


def load_teachers(folder: Path, device) -> tuple[object, list]:
    """The manifest and every teacher's model, loaded once for the whole run."""
    from vesukit.teachers import load_manifest, load_teacher

    manifest = load_manifest(folder)
    models = []
    for spec in manifest.teachers:
        try:
            models.append(load_teacher(spec, manifest.root, device=device))
        except VesukitError:
            raise
        except Exception as exc:
            raise TeacherLoadError(
                f"teacher '{spec.name}' ({spec.checkpoint} in {manifest.root}) failed to load: "
                f"{type(exc).__name__}: {exc}. Check it with `vesukit teachers check "
                f"{manifest.root}`, or remove it from the manifest."
            ) from exc
    return manifest, models


def check_writable(path: Path) -> None:
    """Fail before any compute if the zip cannot be written where asked."""
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VesukitError(f"{path}: cannot create its folder ({exc}). Choose another --out.")
    if path.is_dir():
        raise VesukitError(f"{path}: is a directory. --out must be a file path ending in .zip.")
    if not os.access(parent, os.W_OK):
        raise VesukitError(f"{path}: folder {parent} is not writable. Choose another --out.")


def run_predict(config: PredictConfig, progress_stream=None,
                on_volume: Callable[[VolumeResult], None] | None = None) -> RunResult:
    """Run the whole pipeline; returns what was done and the validator's verdict."""
    from vesukit.infer import EnsembleAccumulator, predict_teacher
    from vesukit.submission import SubmissionWriter, validate_zip

    if config.tta not in TTA_PRESETS:
        raise UsageError(f"--tta {config.tta}: choose one of {', '.join(TTA_PRESETS)}.")
    wall_start = time.perf_counter()
    out = Path(config.out)
    check_writable(out)
    calibration: Calibration = load_calibration(config.calibration)
    root = find_competition_root(config.data, base=config.input_base)
    ids = list_test_ids(root)
    shapes = {volume_id: read_volume_shape(volume_path(root, volume_id)) for volume_id in ids}
    device = resolve_device(config.device)
    manifest, models = load_teachers(Path(config.teachers), device)

    workdir = config.resolved_workdir()
    masks_dir = workdir / "masks"
    masks_dir.mkdir(parents=True, exist_ok=True)
    record = RunRecord.start(workdir / "run.json", config, device, manifest, calibration,
                             root, ids)
    progress = Progress(len(ids), stream=progress_stream)
    results: list[VolumeResult] = []

    def write_mask(writer: SubmissionWriter, volume_id: str, mask: np.ndarray) -> None:
        # Keep every finished mask in the workdir too: a crash later loses nothing.
        atomic_write_bytes(masks_dir / f"{volume_id}.tif", encode_volume(mask))
        writer.add(volume_id, mask)

    with ThreadPoolExecutor(1, thread_name_prefix="read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="write") as writer_pool, \
            SubmissionWriter(out, shapes) as writer:
        next_read: Future = reader.submit(read_volume, volume_path(root, ids[0]))
        pending_write: Future | None = None
        for index, volume_id in enumerate(ids):
            start = time.perf_counter()
            try:
                volume = next_read.result()
            except VolumeError as exc:
                raise VolumeError(
                    f"test volume '{volume_id}' cannot be read: {exc} "
                    f"{len(results)} finished mask(s) are kept in {masks_dir}."
                ) from exc
            if index + 1 < len(ids):
                next_read = reader.submit(read_volume, volume_path(root, ids[index + 1]))

            device_start = time.perf_counter()
            accumulator = EnsembleAccumulator(volume.shape, device)
            teacher_seconds = {}
            for spec, model in zip(manifest.teachers, models):
                teacher_start = time.perf_counter()
                probability = predict_teacher(volume, model, spec, device=device,
                                              tta=config.tta, overlap=config.overlap)
                accumulator.add(probability, spec.weight)
                teacher_seconds[spec.name] = time.perf_counter() - teacher_start
            maps = accumulator.result()
            threshold = calibration.rule(maps)
            mask = binarize(maps.mean, threshold)
            _synchronize(device)
            device_seconds = time.perf_counter() - device_start

            mask = apply_postprocess(mask, calibration.postprocess, maps)
            if pending_write is not None:
                pending_write.result()  # one mask in flight at most; surfaces write errors
            pending_write = writer_pool.submit(write_mask, writer, volume_id, mask)

            result = VolumeResult(volume_id, tuple(volume.shape), float(threshold),
                                  float(mask.mean()), time.perf_counter() - start,
                                  device_seconds, teacher_seconds)
            results.append(result)
            if config.audit is not None:
                _write_audit(Path(config.audit), result, maps, mask, calibration, config)
            record.add_volume(result)
            progress.advance(f"{volume_id} {'x'.join(map(str, volume.shape))}", result.seconds)
            if on_volume:
                on_volume(result)
        if pending_write is not None:
            pending_write.result()
        zip_path = writer.finish()

    report = validate_zip(zip_path, root)
    wall = time.perf_counter() - wall_start
    device_total = sum(r.device_seconds for r in results)
    record.finish(wall, device_total, report.valid)
    return RunResult(zip_path, results, wall, device_total, report, record.path)


def _synchronize(device) -> None:
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        torch.cuda.synchronize(device)


def _write_audit(folder: Path, result: VolumeResult, maps, mask: np.ndarray,
                 calibration: Calibration, config: PredictConfig) -> None:
    import json

    mean = _to_numpy(maps.mean)
    disagreement = _to_numpy(maps.disagreement)
    inside = mask.astype(bool)
    audit = {
        "id": result.volume_id,
        "shape": list(result.shape),
        "threshold": result.threshold,
        "rule": calibration.rule.describe(),
        "postprocess": [dict(s) for s in calibration.postprocess],
        "foreground_fraction": result.foreground,
        "mean_probability_in_mask": float(mean[inside].mean()) if inside.any() else None,
        "max_probability": float(mean.max()),
        "disagreement_mean": float(disagreement.mean()),
        "disagreement_in_mask": float(disagreement[inside].mean()) if inside.any() else None,
        "teachers": result.teacher_seconds,
        "tta": config.tta,
        "seconds": result.seconds,
    }
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / f"{result.volume_id}.json",
                       json.dumps(audit, indent=2).encode())


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy()
    return np.asarray(value)


def environment_summary(device) -> dict:
    import torch

    info = {
        "vesukit": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "device": str(device),
    }
    if getattr(device, "type", "cpu") == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    else:
        info["device_name"] = platform.processor() or platform.machine()
        info["cpu_threads"] = torch.get_num_threads()
    return info
