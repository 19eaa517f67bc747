"""One chunk through the ensemble: read its block once, run each teacher's windows, blend.

Each teacher runs exactly the windows of the one-piece grid that reach the region (see
:mod:`vesukit.scroll.plan`) through the engine's own ``blend_windows``, with the teacher's
normalisation, predictor wrapper and TTA views as ``predict_teacher`` builds them, and the
maps are combined by the same :class:`EnsembleAccumulator` predict uses.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from vesukit.infer import EnsembleAccumulator, blend_windows, normalize_volume, surface_predictor, tta_views
from vesukit.infer.settings import DEFAULT_OVERLAP
from vesukit.scroll.plan import Pass, read_box, teacher_passes


def _run_pass(block: torch.Tensor, offset: tuple[int, ...], step: Pass, predictor, spec, tta: str,
              batch_size: int | None) -> torch.Tensor:
    """One pass over the normalised ``block`` (read at ``offset``) -> probability over the region."""
    index = tuple(torch.as_tensor(a.index - o, device=block.device) for a, o in zip(step.axes, offset))
    x = block[index[0]][:, index[1]][:, :, index[2]]
    allowed = tuple(getattr(spec, "tta", ("flip", "rot90")))
    patch = tuple(int(p) for p in spec.patch)
    if step.axis is None:
        views = tta_views(tta, 3, allowed)
        out = blend_windows(x[None, None], predictor, patch, views=views, batch_size=batch_size,
                            starts=step.starts, what="3D sliding window (segment)")[0, 0]
        return out[tuple(a.crop for a in step.axes)]
    views = tta_views(tta, 2, allowed, square=patch[0] == patch[1])
    moved = x.movedim(step.axis, 0)
    stacks = moved.unfold(0, int(spec.context), 1).permute(0, 3, 1, 2)  # (slices, context, H, W)
    out = blend_windows(stacks, predictor, patch, views=views, batch_size=batch_size, starts=step.starts,
                        what=f"2.5D slices along axis {step.axis} (segment)")[:, 0]
    plane = [a.crop for i, a in enumerate(step.axes) if i != step.axis]
    out = out[:, plane[0], plane[1]]
    return out.movedim(0, step.axis)


def region_maps(volume, shape: tuple[int, int, int], region: tuple[slice, ...], specs, models, *,
                device, tta: str | Mapping[str, str] = "none", overlap: float = DEFAULT_OVERLAP,
                batch_size: int | None = None):
    """Ensemble maps over ``region`` of a ``shape`` volume that ``volume[box]`` reads from.

    Returns ``(maps, box_max)``; ``maps`` is None when every voxel the region depends on is 0
    (air around the scroll: the block is skipped and its output stays 0).
    """
    plans = {spec.name: teacher_passes(spec, shape, region, overlap) for spec in specs}
    box = read_box([p for passes in plans.values() for p in passes])
    raw = np.asarray(volume[box])
    if not raw.any():
        return None
    offset = tuple(b.start for b in box)
    accumulator = EnsembleAccumulator(tuple(r.stop - r.start for r in region), device)
    with torch.no_grad():
        for spec, model in zip(specs, models):
            block = normalize_volume(raw, spec.normalization, device)
            predictor = surface_predictor(model.to(device).eval(), spec)
            passes = plans[spec.name]
            total = None
            for step in passes:
                level = tta[spec.name] if isinstance(tta, Mapping) else tta  # per teacher, resolved
                out = _run_pass(block, offset, step, predictor, spec, level, batch_size)
                total = out if total is None else total + out
            accumulator.add(total / len(passes) if len(passes) > 1 else total, spec.weight, spec.name)
            del block
    return accumulator.result()
