"""One device's share of the work: teachers over volumes, with faults isolated.

A teacher that raises is retried (batch 1, then on the CPU); if it still fails, or if it
returns NaN/inf, that volume goes on without it (the others' weighted mean, renormalised,
flagged and logged for that volume). A teacher leaves the run only when it fails to load or
fails on :data:`FAILURES_IN_A_ROW` volumes in a row with no success between: one volume too
large for the GPU costs that teacher on that volume only. After the teachers, each stage
degrades instead of failing the volume: a threshold rule that raises gives the fixed default
threshold, a post-processing chain that raises gives the unprocessed mask (both flagged), a
failed audit only loses the audit. An
error while averaging raises :class:`StageError`; the worker retries the volume once with the
ensemble on the CPU, then writes a flagged empty fallback mask: never a missing entry.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from vesukit.decide import DEFAULT_THRESHOLD, Calibration, binarize
from vesukit.decide.steps import apply_postprocess
from vesukit.errors import VesukitError
from vesukit.run_settings import active_teachers, capped_tta, fitted_precision
from vesukit.runtime.faults import inject

log = logging.getLogger("vesukit.predict")

# A teacher failing on this many volumes in a row (no success between) leaves the run.
FAILURES_IN_A_ROW = 2


class NoTeacherLeft(VesukitError):
    """Every teacher has been dropped; nothing can predict the remaining volumes."""


class NoTeacherForVolume(RuntimeError):
    """Every active teacher failed on this volume (only this one: the run goes on)."""


class StageError(RuntimeError):
    """A per-volume stage raised; the message names the stage and the original error."""

    def __init__(self, stage: str, error: BaseException):
        super().__init__(f"{stage} failed ({describe_error(error)})")
        self.stage = stage


def describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def apply_fusion_weights(manifest, calibration: Calibration, where: str = "the calibration"):
    """(manifest, notes): the manifest with the weights in force (the calibration's fitted
    fusion weights in place of its own, as :func:`vesukit.run_settings.active_teachers`
    decides); notes say which teachers that leaves out or cannot find. Raises
    CalibrationError if no teacher keeps a weight > 0."""
    if not calibration.overrides_weights:
        return manifest, []
    active, _, notes = active_teachers(manifest, calibration, where)
    weights = {spec.name: spec.weight for spec in active}
    specs = tuple(replace(spec, weight=weights.get(spec.name, 0.0)) for spec in manifest.teachers)
    return replace(manifest, teachers=specs), notes


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
                 warn=log.warning, teacher_tta: dict | None = None):
        self.specs = {spec.name: spec for spec in specs}
        self.models = {spec.name: model for spec, model in zip(specs, models)}
        self.device = device
        self.calibration = calibration
        self.overlap = overlap
        self.warn = warn
        self.teacher_tta = dict(teacher_tta or {})  # teacher -> resolved TTA (run_settings)
        self.precision = fitted_precision(calibration)  # decide on the numbers it was fitted on
        self.dropped: dict[str, str] = {}
        self.failed_in_a_row: dict[str, list[str]] = {}  # name -> volume ids since its last success

    @property
    def active(self) -> list[str]:
        return [name for name in self.specs if name not in self.dropped]

    def drop(self, name: str, reason: str) -> None:
        self.dropped[name] = reason
        self.warn(f"teacher '{name}' dropped for the rest of the run: {reason}")

    def failed_on(self, name: str, volume_id: str, reason: str) -> str:
        """Count one volume's failure of a teacher; drop it after FAILURES_IN_A_ROW in a row.

        Returns the volume's degradation. A retry of the same volume is not a second failure.
        """
        streak = self.failed_in_a_row.setdefault(name, [])
        if volume_id not in streak:
            streak.append(volume_id)
        self.warn(f"volume '{volume_id}': teacher '{name}' failed on it ({reason}); this volume "
                  "uses the other teachers' weighted mean, renormalised")
        if len(streak) >= FAILURES_IN_A_ROW:
            self.drop(name, f"it failed on {len(streak)} volumes in a row "
                            f"({', '.join(streak)}); last: {reason}")
        return f"without teacher '{name}' on this volume ({reason})"

    def run(self, volume: np.ndarray, teachers: list[str], tta: str, volume_id: str = "",
            audit_dir: Path | None = None, maps_dir: Path | None = None,
            ensemble_device=None) -> Outcome:
        """Ensemble, threshold and post-process one volume.

        With ``audit_dir``, the volume's audit record is returned and its preview PNG written
        there (here, because the maps live here, possibly in a worker process). With
        ``maps_dir``, the ensemble mean is saved there as ``<id>.npy`` (float16) for
        `vesukit calibrate --maps` and `vesukit postprocess`.
        ``ensemble_device``: where the maps are averaged (default: the teachers' device).
        """
        import torch

        from vesukit.infer import EnsembleAccumulator

        start = time.perf_counter()
        target = ensemble_device if ensemble_device is not None else self.device
        accumulator = EnsembleAccumulator(volume.shape, target, mode=self.calibration.fusion_mode)
        seconds: dict[str, float] = {}
        used: list[str] = []
        failed: list[str] = []  # this volume's degradations from teachers that failed on it
        dropped_before = dict(self.dropped)
        for name in teachers:
            if name in self.dropped:
                continue
            teacher_start = time.perf_counter()
            probability, error = self._predict(name, volume, tta, volume_id)
            if probability is not None and not bool(torch.isfinite(probability).all()):
                probability, error = None, "its output holds NaN or inf"
            if probability is None:
                failed.append(self.failed_on(name, volume_id, error))
                continue
            if self.precision.get("teacher_maps", "float32") != "float32":
                probability = probability.to(getattr(torch, self.precision["teacher_maps"])).float()
            try:
                inject("ensemble", volume_id)
                accumulator.add(probability.to(target), self.specs[name].weight)
            except Exception as exc:  # noqa: BLE001 - the worker retries or falls back
                raise StageError("ensemble", exc) from exc
            seconds[name] = time.perf_counter() - teacher_start
            used.append(name)
            self.failed_in_a_row.pop(name, None)  # a success ends its run of failures
        if not used and not self.active:
            raise NoTeacherLeft(
                "no teacher produced a usable prediction ("
                + "; ".join(f"{n}: {r}" for n, r in self.dropped.items()) + ")")
        if not used:
            raise NoTeacherForVolume("every teacher failed on this volume: " + "; ".join(failed))
        try:
            maps = accumulator.result()
        except Exception as exc:  # noqa: BLE001
            raise StageError("ensemble", exc) from exc
        degraded = [f"without teacher '{n}' ({r})" for n, r in dropped_before.items()] + failed
        if "mean" in self.precision:
            maps = maps.rounded_mean(self.precision["mean"])
        if maps_dir is not None:
            try:
                from vesukit.maps import save_map

                save_map(maps_dir, volume_id, maps.mean)
            except Exception as exc:  # noqa: BLE001 - the saved map is a by-product: keep the mask
                self.warn(f"volume '{volume_id}': its map was not saved to {maps_dir} "
                          f"({describe_error(exc)})")
        try:
            inject("threshold", volume_id)
            threshold = float(self.calibration.rule(maps))
        except Exception as exc:  # noqa: BLE001 - a fixed threshold beats an empty mask
            threshold = DEFAULT_THRESHOLD
            reason = (f"fixed threshold {threshold:g}: the rule "
                      f"{self.calibration.rule.describe()} failed ({describe_error(exc)})")
            degraded.append(reason)
            self.warn(f"volume '{volume_id}': {reason}")
        mask = binarize(maps.mean, threshold)
        if getattr(self.device, "type", "cpu") == "cuda":
            torch.cuda.synchronize(self.device)
        device_seconds = time.perf_counter() - start
        try:
            inject("postprocess", volume_id)
            mask = apply_postprocess(mask, self.calibration.postprocess, maps)
        except Exception as exc:  # noqa: BLE001 - the unprocessed mask beats an empty one
            reason = f"without post-processing ({describe_error(exc)})"
            degraded.append(reason)
            self.warn(f"volume '{volume_id}': {reason}")
        audit = {}
        if audit_dir is not None:
            try:
                inject("audit", volume_id)
                audit = self._audit(volume_id, volume, maps, mask, threshold, used, tta,
                                    time.perf_counter() - start, Path(audit_dir))
            except Exception as exc:  # noqa: BLE001 - the audit is a report, not the result
                audit = {"volume_id": volume_id, "error": describe_error(exc)}
                self.warn(f"volume '{volume_id}': no audit record ({describe_error(exc)})")
        return Outcome(mask, threshold, seconds, device_seconds, used, degraded, audit)

    def warm_up(self, volume_id: str = "warm-up") -> dict[str, float]:
        """One forward pass per teacher on a tiny volume, before the first test volume.

        The first call of a model pays one-off costs (kernel selection, allocator growth,
        lazy initialisation); paid here, the time budget does not take them for the pace.
        Returns name -> seconds; a teacher that fails here is only reported (the volumes'
        retries decide whether it is dropped).
        """
        from vesukit.infer import predict_teacher

        seconds = {}
        for name, spec in self.specs.items():
            start = time.perf_counter()
            try:
                shape = _warm_up_shape(spec, self.models[name])
                inject("warmup", volume_id)
                # a ramp, not zeros: nnU-Net crops to the non-zero box and z-scores by the std
                ramp = (np.arange(int(np.prod(shape))) % 251).astype(np.uint8).reshape(shape)
                predict_teacher(ramp, self.models[name], spec,
                                device=self.device, tta="none", overlap=self.overlap,
                                batch_size=1)
            except Exception as exc:  # noqa: BLE001 - the real volumes decide
                self.warn(f"teacher '{name}': warm-up failed ({describe_error(exc)})")
            seconds[name] = time.perf_counter() - start
        return seconds

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

    def _predict(self, name: str, volume: np.ndarray, tta: str, volume_id: str = ""):
        """(the teacher's probability map, None), retrying with batch 1 and then on the CPU;
        (None, every attempt's error) when all attempts raised."""
        import torch

        from vesukit.infer import predict_teacher

        spec, model = self.specs[name], self.models[name]
        tta = capped_tta(self.teacher_tta.get(name, tta), tta)  # the budget may lower the run's
        attempts = [("as configured", self.device, None), ("with batch 1", self.device, 1)]
        if getattr(self.device, "type", "cpu") != "cpu":
            attempts.append(("on the CPU", torch.device("cpu"), 1))
        errors = []
        for label, device, batch_size in attempts:
            try:
                if device != self.device:
                    model = model.to(device)
                inject("teacher", volume_id)
                probability = predict_teacher(volume, model, spec, device=device, tta=tta,
                                              overlap=self.overlap, batch_size=batch_size)
                return probability.to(self.device), None
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # a teacher must not take the run down with it
                errors.append(f"{label}: {type(exc).__name__}: {exc}")
                self.warn(f"teacher '{name}' failed {label} ({type(exc).__name__}: {exc})")
            finally:
                if device != self.device:
                    self.models[name] = model.to(self.device)
        return None, "it raised on every retry (" + " | ".join(errors) + ")"


def _warm_up_shape(spec, model) -> tuple[int, int, int]:
    """The smallest volume that runs one full window (3D) or one tile per slicing axis (2.5D).

    2.5D: ``context`` slices along each axis the teacher slices, the patch size elsewhere, so
    a teacher slicing along all three axes gets a tiny cube, not 64 slices per extra axis.
    An nnU-Net teacher's patch is in its plans, which its loaded model carries.
    """
    plan = getattr(model, "plan", None)
    if plan is not None:  # the plans' patch is in nnU-Net's (transposed) axes: a cube fits either way
        return (max(int(p) for p in plan.patch),) * 3
    patch = tuple(int(p) for p in spec.patch)
    if spec.input_kind == "3d":
        return patch[:3]
    depth = max(int(getattr(spec, "context", 1) or 1), 1)
    shape = [max(patch)] * 3
    for axis in getattr(spec, "axes", (0,)) or (0,):
        shape[int(axis)] = depth
    return tuple(shape)
