"""2.5D adapter: a 2D teacher run slice by slice, with neighbouring slices as channels.

Along a slicing axis every slice ``s`` becomes one 2D image whose ``context`` channels are the
slices ``s - context//2 ... s + context//2``; the teacher predicts slice ``s``. Near the ends
of the axis the missing neighbours are filled by ``edge``: ``"replicate"`` (default: repeat the
end slice, which keeps the channel stack a plausible piece of scroll) or ``"reflect"`` (mirror
without repeating the end slice).

In-plane, ``plane="tile"`` cuts each slice into ``patch`` windows blended like the 3D engine
(a plane smaller than the patch is padded up to it); ``plane="whole"`` pads the plane up to a
multiple of ``multiple`` (fully convolutional 2D nets usually need 32) and runs it in one
piece. Slices are batched; the per-slice channel stacks are views of one padded copy of the
volume, so no (slices x context) copy of the volume is ever made.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from vesukit.infer.sliding import Predictor, blend_windows

EDGE_MODES = ("replicate", "reflect")
PLANE_MODES = ("tile", "whole")


def context_indices(length: int, context: int, edge: str = "replicate") -> torch.Tensor:
    """Source slice index for each of the ``length + context - 1`` padded positions."""
    if context < 1 or context % 2 == 0:
        raise ValueError(f"context must be a positive odd number of slices, got {context}")
    if edge not in EDGE_MODES:
        raise ValueError(f"edge must be one of {EDGE_MODES}, got {edge!r}")
    half = context // 2
    idx = torch.arange(-half, length + half)
    if edge == "reflect" and length > 1:
        period = 2 * (length - 1)
        idx = torch.remainder(idx, period)
        idx = torch.where(idx >= length, period - idx, idx)
    return idx.clamp(0, length - 1)


def _plane_padding(size: int, target: int) -> tuple[int, int]:
    missing = max(0, target - size)
    return missing // 2, missing - missing // 2


def predict_slices(
    volume: torch.Tensor,
    predictor: Predictor,
    *,
    axis: int = 0,
    context: int = 1,
    patch: Sequence[int] | None = None,
    plane: str = "tile",
    multiple: int = 32,
    edge: str = "replicate",
    **blend_options: Any,
) -> torch.Tensor:
    """Run a 2D ``predictor`` over ``volume`` ``(Z, Y, X)`` slice by slice along ``axis``.

    ``predictor`` takes ``(B, context, H, W)`` and returns ``(B, C_out, H, W)``. Returns
    float32 ``(C_out, Z, Y, X)`` on the accumulation device. ``blend_options`` are
    :func:`~vesukit.infer.sliding.blend_windows`'s keyword arguments for the in-plane windows
    (``overlap``, ``sigma_scale``, ``blend``, ``views``, ``batch_size``, ``accumulate_device``,
    ``autocast``, ``progress``), with its defaults; the plane is padded as ``edge`` says.
    """
    if volume.dim() != 3:
        raise ValueError(f"volume must be (Z, Y, X), got {tuple(volume.shape)}")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    if plane not in PLANE_MODES:
        raise ValueError(f"plane must be one of {PLANE_MODES}, got {plane!r}")
    moved = volume.movedim(axis, 0)
    length, height, width = moved.shape
    if plane == "whole":
        window = (math.ceil(height / multiple) * multiple, math.ceil(width / multiple) * multiple)
    else:
        if patch is None or len(patch) != 2:
            raise ValueError(f"plane='tile' needs a 2D patch (H, W), got {patch}")
        window = (int(patch[0]), int(patch[1]))
    pad_h = _plane_padding(height, window[0])
    pad_w = _plane_padding(width, window[1])
    source = moved.float()
    if any(pad_h + pad_w):
        # In-plane padding uses the same edge rule as the context (reflect needs size > pad).
        mode = edge if edge == "replicate" or (max(pad_h) < height and max(pad_w) < width) else "replicate"
        source = F.pad(source[None], (pad_w[0], pad_w[1], pad_h[0], pad_h[1]), mode=mode)[0]
    source = source.index_select(0, context_indices(length, context, edge).to(source.device))
    # (length, H', W', context) view -> (length, context, H', W') view: one image per slice.
    stacks = source.unfold(0, context, 1).permute(0, 3, 1, 2)
    out = blend_windows(stacks, predictor, window, pad_mode="replicate", what=f"2.5D slices along axis {axis}",
                        **blend_options)
    out = out[:, :, pad_h[0] : pad_h[0] + height, pad_w[0] : pad_w[0] + width]
    # (slices, C_out, H, W) -> (C_out, slices, H, W) -> slicing axis back in place.
    return out.permute(1, 0, 2, 3).movedim(1, axis + 1).contiguous()


def predict_slices_multi_axis(
    volume: torch.Tensor, predictor: Predictor, *, axes: Sequence[int] = (0,), **kwargs
) -> torch.Tensor:
    """:func:`predict_slices` along each of ``axes``, averaged (summed in place, one map held)."""
    axes = tuple(axes)
    if not axes:
        raise ValueError("axes must name at least one axis")
    total = None
    for axis in axes:
        prediction = predict_slices(volume, predictor, axis=axis, **kwargs)
        if total is None:
            total = prediction
        else:
            total += prediction.to(total.device)
            del prediction
    assert total is not None
    return total / len(axes)
