"""Window grids and the Gaussian importance map used to blend overlapping windows.

Pure geometry: which windows cover an N-d volume, and how much each voxel of a window counts.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import torch

#: Smallest weight a voxel of a window may have. The Gaussian's corners fall to ~1e-10 for
#: sigma = patch/8; where a single window covers a voxel (volume corners) such weights make the
#: blend ill-conditioned, so they are floored, as MONAI and nnU-Net do.
MIN_IMPORTANCE = 1e-3
#: nnUNetPredictor's peak weight (its ``value_scaling_factor``) for the float16 map.
NNUNET_PEAK = 10.0


def axis_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start offsets of windows of length ``patch`` covering ``[0, size)`` along one axis.

    The step is ``patch * (1 - overlap)`` at most; windows are spread evenly so that the first
    is flush with 0 and the last flush with the border. ``size < patch`` gives one window at 0
    (the caller pads the volume up to the patch).
    """
    if patch <= 0:
        raise ValueError(f"patch must be positive, got {patch}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if size <= patch:
        return [0]
    step = max(1, int(patch * (1.0 - overlap)))
    count = math.ceil((size - patch) / step) + 1
    span = size - patch
    # Evenly spread: integer positions round(i * span / (count - 1)); first 0, last span.
    return [round(i * span / (count - 1)) for i in range(count)]


def window_grid(shape: tuple[int, ...], patch: tuple[int, ...], overlap: float) -> list[tuple[int, ...]]:
    """Start corners of all windows covering ``shape`` (C order: last axis fastest)."""
    if len(shape) != len(patch):
        raise ValueError(f"shape {shape} and patch {patch} differ in rank")
    per_axis = [axis_starts(s, p, overlap) for s, p in zip(shape, patch)]
    return list(itertools.product(*per_axis))


def window_slices(start: tuple[int, ...], patch: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(s, s + p) for s, p in zip(start, patch))


@lru_cache(maxsize=32)
def _importance_map_cached(
    patch: tuple[int, ...], mode: str, sigma_scale: float, device: str, dtype: torch.dtype
) -> torch.Tensor:
    if mode == "constant":
        weights = torch.ones(patch, dtype=torch.float64)
    elif mode == "gaussian":
        weights = torch.ones((), dtype=torch.float64)
        for size in patch:
            sigma = sigma_scale * size
            x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
            g = torch.exp(-(x**2) / (2.0 * sigma**2))
            weights = weights.unsqueeze(-1) * g
        weights = weights.clamp(min=max(float(weights.min()), MIN_IMPORTANCE))
    elif mode == "nnunet":
        # nnU-Net's map as nnUNetPredictor uses it: a delta at size // 2 blurred by scipy's
        # Gaussian (cut at 4 sigma), scaled to peak 10 and stored in float16 (its far corners
        # underflow to 0, then are raised to the smallest non-zero weight). The float16 steps
        # decide how windows share the volume's edges, so they are reproduced, not improved.
        weights = torch.ones((), dtype=torch.float64)
        for size in patch:
            sigma = sigma_scale * size
            radius = int(4.0 * sigma + 0.5)
            x = torch.arange(size, dtype=torch.float64) - size // 2
            g = torch.where(x.abs() <= radius, torch.exp(-0.5 * x**2 / sigma**2), torch.zeros(()))
            weights = weights.unsqueeze(-1) * g
        weights = (weights * (NNUNET_PEAK / weights.max())).to(torch.float16)
        weights = torch.where(weights == 0, weights[weights > 0].min(), weights).to(torch.float64)
    else:
        raise ValueError(f"blend must be 'gaussian', 'nnunet' or 'constant', got {mode!r}")
    return weights.to(device=device, dtype=dtype)


def importance_map(
    patch: tuple[int, ...],
    *,
    mode: str = "gaussian",
    sigma_scale: float = 0.125,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Per-voxel weight of a window: separable Gaussian with sigma = ``sigma_scale * patch``.

    Peak ~1 at the centre, floored at :data:`MIN_IMPORTANCE`; ``mode="nnunet"`` is nnU-Net's
    own map (centred at ``patch // 2``, cut at 4 sigma). Cached per
    (patch, mode, sigma, device, dtype); treat the result as read-only.
    """
    if sigma_scale <= 0:
        raise ValueError(f"sigma_scale must be positive, got {sigma_scale}")
    return _importance_map_cached(tuple(int(p) for p in patch), mode, float(sigma_scale),
                                  str(torch.device(device)), dtype)
