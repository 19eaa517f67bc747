"""An nnU-Net v2 teacher over one volume, as ``nnUNetPredictor`` runs it, on vesukit's engine.

Preprocessing (nnU-Net's DefaultPreprocessor, spacing 1): ``transpose_forward``; crop to the
bounding box of the non-zero voxels (holes filled); normalise by the plans' scheme (CT: clip
to the foreground percentiles 0.5/99.5, subtract the foreground mean, divide by its std;
z-score: the cropped image's own mean/std, inside the non-zero mask when the plans say so).
Prediction (nnUNetPredictor): windows of the plans' patch at step ``tile_step`` (0.5), nnU-Net's
Gaussian (sigma = patch/8), constant zero padding where the volume is smaller than the patch,
mirroring over every combination of the checkpoint's allowed axes, folds averaged as logits,
softmax at the end. Outside the crop the surface probability is 0 (nnU-Net's background 1).

The windows, TTA views and batching are vesukit's (:func:`blend_windows`): all folds run in one
model call per batch and the mirrored views ride along in the batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import torch

from vesukit.infer.sliding import blend_windows
from vesukit.infer.tta import TTAView

SIGMA_SCALE = 1.0 / 8


def mirror_views(axes: tuple[int, ...]) -> tuple[TTAView, ...]:
    """The identity and every non-empty combination of ``axes`` (nnU-Net's mirroring TTA)."""
    combos = [c for r in range(1, len(axes) + 1) for c in itertools.combinations(sorted(axes), r)]
    return (TTAView(),) + tuple(TTAView(flips=c) for c in combos)


def nnunet_views(spec, model, tta: str) -> tuple[TTAView, ...]:
    """The views an nnU-Net teacher runs at the run's TTA level ``tta``: nnU-Net's mirroring
    over every combination of the checkpoint's axes (8 for three), or the identity alone when
    the spec turns mirroring off or ``tta`` is ``"none"``."""
    if bool(getattr(spec, "mirroring", True)) and tta != "none":
        return mirror_views(tuple(model.mirror_axes))
    return (TTAView(),)


def nonzero_bbox(volume: np.ndarray) -> tuple[slice, ...]:
    """nnU-Net's crop: the bounding box of the non-zero voxels after filling holes (filling
    cannot grow a bounding box, so the box of the non-zero voxels is the same)."""
    nonzero = volume != 0
    box = []
    for axis in range(volume.ndim):
        other = tuple(a for a in range(volume.ndim) if a != axis)
        hit = np.flatnonzero(nonzero.any(axis=other))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1) if hit.size else slice(0, volume.shape[axis]))
    return tuple(box)


def normalize(cropped: np.ndarray, plan, device: torch.device) -> torch.Tensor:
    """float32 tensor on ``device`` normalised by the plans' scheme (nnU-Net's formulas)."""
    x = torch.from_numpy(np.ascontiguousarray(cropped)).to(device).to(torch.float32)
    scheme, props = plan.scheme, plan.intensity
    if scheme == "CTNormalization":
        x.clamp_(float(props["percentile_00_5"]), float(props["percentile_99_5"]))
        x.sub_(float(props["mean"])).div_(max(float(props["std"]), 1e-8))
    elif scheme == "ZScoreNormalization":
        if plan.use_mask_for_norm:
            from scipy.ndimage import binary_fill_holes

            mask = torch.from_numpy(binary_fill_holes(cropped != 0)).to(device)
            values = x[mask].double()
            mean, std = float(values.mean()), float(values.std(unbiased=False))
            x = torch.where(mask, (x - mean) / max(std, 1e-8), x)
        else:
            values = x.double()
            mean, std = float(values.mean()), float(values.std(unbiased=False))
            x.sub_(mean).div_(max(std, 1e-8))
    elif scheme == "RescaleTo01Normalization":
        x.sub_(x.min()).div_(max(float(x.max()), 1e-8))
    elif scheme == "RGBTo01Normalization":
        x.div_(255.0)
    return x


def predict_nnunet(volume, model: torch.nn.Module, spec, *, device: torch.device | str, tta: str, overlap: float,
                   batch_size: int | None, progress: Callable[[int, int], None] | None,
                   autocast: bool = True) -> torch.Tensor:
    """Surface probability float32 ``(Z, Y, X)`` on ``device`` of an nnU-Net teacher (``model``
    from :func:`vesukit.teachers.nnunet_model.load_nnunet_teacher`) over a uint8 volume.
    :func:`~vesukit.infer.teacher.predict_teacher` calls it for ``kind: nnunetv2`` specs and
    holds the run's defaults, so the run settings here have none.

    Mirroring runs when the spec allows it and ``tta`` is not ``"none"`` (the run's TTA level,
    which the time budget may lower); the step is ``spec.tile_step``, else ``1 - overlap``.
    ``autocast`` runs the network in fp16 on CUDA (as nnUNetPredictor does); False keeps fp32.
    """
    device = torch.device(device)
    plan = model.plan
    array = volume.cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    transposed = array.transpose(plan.transpose_forward)
    box = nonzero_bbox(transposed)
    x = normalize(transposed[box], plan, device)
    views = nnunet_views(spec, model, tta)
    step = spec.tile_step if getattr(spec, "tile_step", None) is not None else 1.0 - overlap
    model = model.to(device).eval()
    logits = blend_windows(x[None, None], model, plan.patch, overlap=1.0 - step,
                           sigma_scale=SIGMA_SCALE, blend="nnunet", views=views,
                           batch_size=batch_size, pad_mode="constant", autocast=autocast,
                           what=f"nnU-Net teacher '{spec.name}'", progress=progress)[0]
    del x
    probability = torch.softmax(logits, dim=0)[plan.channel]
    out = torch.zeros(transposed.shape, dtype=torch.float32, device=probability.device)
    out[box] = probability
    return out.permute(*plan.transpose_backward).contiguous()
