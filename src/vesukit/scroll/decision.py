"""The decision stage in `segment`: which threshold rules and post-processing steps can run
chunk by chunk, and with what halo.

Available: the ``fixed`` rule (per voxel); ``zero_border`` (applied at the faces of the whole
volume, halo 0); ``close`` (a local operation: halo ``2 * radius + 1``, summed over the steps, so a chunk's voxels
see every voxel the closing reaches). Not available, because they need a whole volume or
whole components: the data-driven rules (``foreground_fraction``, ``otsu``, ``valley``,
``uncertainty``: a histogram or mean over the whole volume) and every other step of
:mod:`vesukit.decide.steps` (``remove_small``, ``fill_holes``, ``drop_uncertain`` and the
winners' per-component and per-sheet steps: a component can span any number of chunks). A
calibration that uses them is refused, never silently applied differently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vesukit.errors import UsageError

# Steps that decide a voxel from a bounded neighbourhood; every other step needs whole components.
CHUNK_STEPS = ("zero_border", "close")


@dataclass(frozen=True)
class ChunkDecision:
    """A fixed threshold and the chunk-safe post-processing steps, picklable for workers."""

    threshold: float
    steps: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)

    @property
    def halo(self) -> int:
        """Voxels of mask around a chunk the steps need to decide the chunk's voxels exactly."""
        return sum(2 * int(s.get("radius", 1)) + 1 for s in self.steps if s["step"] == "close")

    def apply(self, mean: np.ndarray, region: tuple[slice, ...], shape: tuple[int, ...]) -> np.ndarray:
        """uint8 mask of ``region`` (a box of a ``shape`` volume) from its mean probability."""
        from vesukit.decide import binarize
        from vesukit.decide.steps import STEPS

        mask = binarize(mean, self.threshold)
        for step in self.steps:
            params = {k: v for k, v in step.items() if k != "step"}
            if step["step"] == "zero_border":
                mask = _zero_faces(mask, region, shape, int(params.get("width", 3)))
            else:
                mask = STEPS[step["step"]](mask, None, **params)
        return np.asarray(mask, dtype=np.uint8)


def _zero_faces(mask: np.ndarray, region: tuple[slice, ...], shape: tuple[int, ...], width: int) -> np.ndarray:
    """``zero_border`` of the whole volume, on the part of it that ``region`` holds."""
    out = mask.copy()
    for axis, (r, n) in enumerate(zip(region, shape)):
        index = [slice(None)] * out.ndim
        index[axis] = slice(0, max(0, width - r.start))
        out[tuple(index)] = 0
        index[axis] = slice(max(0, n - width - r.start), None)
        out[tuple(index)] = 0
    return out


def load_decision(path: str | Path | None) -> ChunkDecision | None:
    """The calibration file as a chunk decision; ``None`` without a file (probability only).

    The one place `segment` reads the calibration and its rules.
    """
    if path is None:
        return None
    from vesukit.decide import load_calibration

    calibration = load_calibration(path)
    rule = calibration.rule
    if rule.name != "fixed":
        raise UsageError(
            f"{path}: threshold rule '{rule.name}' needs the whole volume's probability histogram, which "
            "`segment` does not have (it works chunk by chunk). Use a 'fixed' rule for segment, e.g. the "
            "threshold this rule gives on a representative volume."
        )
    if calibration.fusion is not None:
        raise UsageError(
            f"{path}: it carries a fitted fusion ({calibration.fusion.describe()}), which `segment` "
            "does not apply (it averages probabilities with the manifest's weights). Remove the 'fusion' "
            "block from the file used with segment, or put its weights into the teachers' manifest."
        )
    steps = tuple(dict(s) for s in calibration.postprocess)
    whole = [s["step"] for s in steps if s["step"] not in CHUNK_STEPS]
    if whole:
        raise UsageError(
            f"{path}: post-processing step(s) {', '.join(whole)} need whole connected components, which can "
            "span any number of chunks; `segment` does not run them. Remove them from the file used with "
            "segment (zero_border and close are available), or run them on the written mask."
        )
    return ChunkDecision(float(rule(None)), steps)
