"""Which input voxels and which windows one output region needs to match the one-piece run.

The one-piece run (``predict_teacher``) pads the volume, lays one window grid over it and
blends every window. A region of the output depends only on the windows of that grid that
reach it, so a block that runs exactly those windows, over exactly the voxels they cover
(padding included), and divides by the same weight sum, gives the same numbers. Padding is
``replicate`` (what predict uses), i.e. an index clamp; the 2.5D context uses the engine's own
``context_indices``. Everything is per axis because the grid is a product of per-axis starts.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from vesukit.errors import UsageError


@dataclass(frozen=True)
class AxisWindows:
    """One axis of a block: source index of each block position, local window starts, and
    the slice of the block frame that is the output region."""

    index: np.ndarray
    starts: tuple[int, ...]
    crop: slice


@dataclass(frozen=True)
class Pass:
    """One engine call for one region: a 3D sliding window (``axis`` None) or the 2.5D slices
    along ``axis``. ``axes`` are in volume order (Z, Y, X)."""

    axis: int | None
    axes: tuple[AxisWindows, AxisWindows, AxisWindows]

    @property
    def starts(self) -> list[tuple[int, ...]]:
        """Window corners in the block frame (3D: (z, y, x); 2.5D: the two in-plane axes)."""
        used = [a.starts for i, a in enumerate(self.axes) if i != self.axis]
        return list(itertools.product(*used))


def _pad(size: int, patch: int) -> int:
    """Padding before the volume along one axis (the engine centres it)."""
    return max(0, patch - size) // 2


def window_axis(size: int, patch: int, overlap: float, lo: int, hi: int) -> AxisWindows:
    """The windows of the one-piece grid along one axis that reach ``[lo, hi)``."""
    from vesukit.infer.windows import axis_starts

    before = _pad(size, patch)
    padded = max(size, patch)
    chosen = [s for s in axis_starts(padded, patch, overlap) if s < hi + before and s + patch > lo + before]
    first, last = min(chosen), max(chosen) + patch
    index = np.clip(np.arange(first, last) - before, 0, size - 1)
    return AxisWindows(index, tuple(s - first for s in chosen), slice(lo + before - first, hi + before - first))


def context_axis(size: int, context: int, lo: int, hi: int) -> AxisWindows:
    """The slices ``[lo, hi)`` along a 2.5D slicing axis with their ``context`` neighbours."""
    from vesukit.infer.slices import context_indices

    index = context_indices(size, context, "replicate").numpy()[lo : hi + context - 1]
    return AxisWindows(np.asarray(index), (), slice(0, hi - lo))


def teacher_passes(spec, shape: tuple[int, int, int], region: tuple[slice, ...], overlap: float) -> list[Pass]:
    """The engine calls that give ``spec``'s probability over ``region`` of a ``shape`` volume."""
    patch = tuple(int(p) for p in spec.patch)
    if spec.input_kind == "3d":
        axes = tuple(window_axis(n, p, overlap, r.start, r.stop) for n, p, r in zip(shape, patch, region))
        return [Pass(None, axes)]
    if getattr(spec, "plane", "tile") != "tile":
        raise UsageError(
            f"teacher '{spec.name}' runs whole slices (plane '{spec.plane}'): its output at a voxel depends on "
            "the whole plane, so no chunk can reproduce it. Set its plane to 'tile' in teachers.json to use "
            "it in `segment`."
        )
    passes = []
    for axis in getattr(spec, "axes", (0,)):
        plane = iter(patch)
        axes = []
        for i, (n, r) in enumerate(zip(shape, region)):
            if i == axis:
                axes.append(context_axis(n, int(spec.context), r.start, r.stop))
            else:
                axes.append(window_axis(n, next(plane), overlap, r.start, r.stop))
        passes.append(Pass(int(axis), tuple(axes)))
    return passes


def read_box(passes: list[Pass]) -> tuple[slice, ...]:
    """The smallest box of the volume holding every voxel the passes read."""
    box = []
    for i in range(3):
        lo = min(int(p.axes[i].index.min()) for p in passes)
        hi = max(int(p.axes[i].index.max()) for p in passes) + 1
        box.append(slice(lo, hi))
    return tuple(box)


def chunk_grid(shape: tuple[int, ...], chunk: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Indices of the output chunks, C order."""
    return list(itertools.product(*(range(-(-n // c)) for n, c in zip(shape, chunk))))


def chunk_region(index: tuple[int, ...], shape: tuple[int, ...], chunk: tuple[int, ...],
                 halo: int = 0) -> tuple[slice, ...]:
    """The voxels of chunk ``index``, grown by ``halo`` and clipped to the volume."""
    return tuple(slice(max(0, i * c - halo), min(n, (i + 1) * c + halo)) for i, c, n in zip(index, chunk, shape))
