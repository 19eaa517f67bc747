"""One device's share of the work: teachers over volumes, with faults isolated.

A teacher that raises is retried (batch 1, then on the CPU); if it still fails, or if it
returns NaN/inf, it is dropped for the rest of the run with a warning and the volume goes on
with the others. A volume that cannot be read, or that no teacher could predict, gets a
flagged empty fallback mask: never a missing entry.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vesukit.decide import Calibration, binarize
from vesukit.decide.steps import apply_postprocess
from vesukit.errors import VesukitError

log = logging.getLogger("vesukit.predict")


class NoTeacherLeft(VesukitError):
    """Every teacher has been dropped; nothing can predict the remaining volumes."""


@dataclass
class Outcome:
    mask: np.ndarray
    threshold: float
    teacher_seconds: dict[str, float]
    device_seconds: float
    teachers: list[str]
    degraded: list[str] = field(default_factory=list)
    audit: dict = field(default_factory=dict)


class VolumeComputer:
    """The loaded ensemble on one device."""

    def __init__(self, specs, models, device, calibration: Calibration, overlap: float,
                 warn=log.warning):
        self.specs = {spec.name: spec for spec in specs}
        self.models = {spec.name: model for spec, model in zip(specs, models)}
        self.device = device
        self.calibration = calibration
        self.overlap = overlap
        self.warn = warn
        self.dropped: dict[str, str] = {}

    @property
    def active(self) -> list[str]:
        return [name for name in self.specs if name not in self.dropped]


    def drop(self, name: str, reason: str) -> None:
        self.dropped[name] = reason
        self.warn(f"teacher '{name}' dropped for the rest of the run: {reason}")

    def run(self, volume: np.ndarray, teachers: list[str], tta: str, volume_id: str = "",
            audit_dir: Path | None = None, maps_dir: Path | None = None) -> Outcome:
        """Ensemble, threshold and post-process one volume.

        With ``audit_dir``, the volume's audit record is returned and its preview PNG written
        there (here, because the maps live here, possibly in a worker process). With
        ``maps_dir``, the ensemble mean is saved there as ``<id>.npy`` (float16) for
        `vesukit calibrate --maps` and `vesukit postprocess`.
        """
        import torch

        from vesukit.infer import EnsembleAccumulator

        start = time.perf_counter()
        accumulator = EnsembleAccumulator(volume.shape, self.device)
        seconds: dict[str, float] = {}
        used: list[str] = []
        for name in teachers:
            if name in self.dropped:
                continue
            teacher_start = time.perf_counter()
            probability = self._predict(name, volume, tta)
            if probability is None:
                continue
            if not bool(torch.isfinite(probability).all()):
                self.drop(name, "its output holds NaN or inf")
                continue
            accumulator.add(probability, self.specs[name].weight)
            seconds[name] = time.perf_counter() - teacher_start
            used.append(name)
        if not used:
            raise NoTeacherLeft(
                "no teacher produced a usable prediction ("
                + "; ".join(f"{n}: {r}" for n, r in self.dropped.items()) + ")")
        maps = accumulator.result()
        if maps_dir is not None:
            from vesukit.maps import save_map

            save_map(maps_dir, volume_id, maps.mean)
        threshold = float(self.calibration.rule(maps))
        mask = binarize(maps.mean, threshold)
        if getattr(self.device, "type", "cpu") == "cuda":
            torch.cuda.synchronize(self.device)
        device_seconds = time.perf_counter() - start
        mask = apply_postprocess(mask, self.calibration.postprocess, maps)
        degraded = [f"without teacher '{n}' ({r})" for n, r in self.dropped.items()]
        audit = {}
        if audit_dir is not None:
            audit = self._audit(volume_id, volume, maps, mask, threshold, used, tta,
                                time.perf_counter() - start, Path(audit_dir))
        return Outcome(mask, threshold, seconds, device_seconds, used, degraded, audit)

    def _audit(self, volume_id, volume, maps, mask, threshold, used, tta, seconds,
               folder: Path) -> dict:
        from vesukit.report import volume_audit, write_preview_png

        maps = maps.to_numpy()
        audit = volume_audit(volume_id, volume, maps, mask, threshold,
                             self.calibration.rule.describe(), used, tta, seconds)
        folder.mkdir(parents=True, exist_ok=True)
        write_preview_png(folder / f"{volume_id}.png", volume, maps, mask,
                          title=f"{volume_id}  thr {threshold:.3f}  "
                                f"{self.calibration.rule.describe()}")
        audit["preview"] = f"{volume_id}.png"
        return audit

    def _predict(self, name: str, volume: np.ndarray, tta: str):
        """The teacher's probability map, retrying with batch 1 and then on the CPU."""
        import torch

        from vesukit.infer import predict_teacher

        spec, model = self.specs[name], self.models[name]
        attempts = [("as configured", self.device, None), ("with batch 1", self.device, 1)]
        if getattr(self.device, "type", "cpu") != "cpu":
            attempts.append(("on the CPU", torch.device("cpu"), 1))
        errors = []
        for label, device, batch_size in attempts:
            try:
                if device != self.device:
                    model = model.to(device)
                probability = predict_teacher(volume, model, spec, device=device, tta=tta,
                                              overlap=self.overlap, batch_size=batch_size)
                return probability.to(self.device)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # a teacher must not take the run down with it
                errors.append(f"{label}: {type(exc).__name__}: {exc}")
                self.warn(f"teacher '{name}' failed {label} ({type(exc).__name__}: {exc})")
            finally:
                if device != self.device:
                    self.models[name] = model.to(self.device)
        self.drop(name, "it raised on every retry (" + " | ".join(errors) + ")")
        return None
