"""Run one teacher over one volume: normalise, slide (3D) or slice (2.5D), TTA, sigmoid.

The teacher spec is used by attribute only (duck typing), so any object with the
``vesukit.teachers`` TeacherSpec fields works: ``name``, ``input_kind`` ("3d"|"2.5d"),
``patch``, ``axes``, ``context``, ``normalization`` (``scale``, ``mean``, ``std``), ``output``
("logit"|"probability"), ``channel``, ``tta`` (families the teacher tolerates).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from vesukit.errors import VesukitError
from vesukit.infer.settings import DEFAULT_OVERLAP
from vesukit.infer.slices import predict_slices_multi_axis
from vesukit.infer.sliding import Predictor, sliding_window_3d
from vesukit.infer.tta import PRESETS, tta_views
from vesukit.teachers.base import TeacherError


def normalize_volume(volume, normalization, device: torch.device | str) -> torch.Tensor:
    """uint8 (Z,Y,X) array/tensor -> float32 tensor on ``device``: ``(v * scale - mean) / std``.

    The uint8 volume crosses to the device once (a quarter of the float32 bytes).
    """
    if isinstance(volume, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(volume))
    else:
        tensor = torch.as_tensor(volume)
    tensor = tensor.to(device)
    out = tensor.to(torch.float32)
    scale = float(getattr(normalization, "scale", 1.0))
    mean = float(getattr(normalization, "mean", 0.0))
    std = float(getattr(normalization, "std", 1.0))
    out.mul_(scale).sub_(mean).div_(std)
    return out


def surface_predictor(model: torch.nn.Module, spec) -> Predictor:
    """Wrap ``model`` so it returns the surface probability ``(B, 1, *patch)`` in float32."""
    channel = int(getattr(spec, "channel", 0))
    is_logit = getattr(spec, "output", "logit") == "logit"

    def predict(batch: torch.Tensor) -> torch.Tensor:
        out = model(batch)
        if out.dim() != batch.dim() or out.shape[1] <= channel:
            raise TeacherError(
                f"teacher '{spec.name}': model returned shape {tuple(out.shape)} for input "
                f"{tuple(batch.shape)}; expected (B, out_channels > {channel}, *patch)"
            )
        out = out[:, channel : channel + 1].float()
        return torch.sigmoid(out) if is_logit else out

    return predict


def _check_spec(spec) -> str:
    name = getattr(spec, "name", "?")
    kind = getattr(spec, "input_kind", None)
    patch = tuple(getattr(spec, "patch", ()))
    if kind == "3d" and len(patch) != 3:
        raise TeacherError(f"teacher '{name}': a 3d teacher needs a (D, H, W) patch, got {patch}")
    if kind == "2.5d":
        if len(patch) != 2:
            raise TeacherError(f"teacher '{name}': a 2.5d teacher needs an (H, W) patch, got {patch}")
        context = int(getattr(spec, "context", 1))
        if context < 1 or context % 2 == 0:
            raise TeacherError(f"teacher '{name}': context must be an odd number of slices, got {context}")
    elif kind != "3d":
        raise TeacherError(f"teacher '{name}': input_kind must be '3d' or '2.5d', got {kind!r}")
    if getattr(spec, "output", "logit") not in ("logit", "probability"):
        raise TeacherError(f"teacher '{name}': output must be 'logit' or 'probability', got {spec.output!r}")
    return kind


def predict_teacher(
    volume,
    model: torch.nn.Module,
    spec,
    *,
    device: torch.device | str,
    tta: str = "none",
    overlap: float = DEFAULT_OVERLAP,
    batch_size: int | None = None,
    sigma_scale: float = 0.125,
    pad_mode: str = "replicate",
    plane: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Surface probability float32 ``(Z, Y, X)`` of one teacher over ``volume`` (uint8 (Z,Y,X)).

    3D teachers use the sliding window with ``spec.patch``; 2.5D teachers the slice adapter
    along each of ``spec.axes`` (averaged) with ``spec.context`` slices as channels. TTA is the
    ``tta`` preset restricted to ``spec.tta``. ``plane`` (default ``spec.plane``, else
    ``"tile"``) chooses tiled or whole-slice 2.5D inference; whole slices are padded to a
    multiple of ``spec.stride`` (32 when the spec has none). nnU-Net teachers (``kind``
    ``"nnunetv2"``) run as nnU-Net runs them (:mod:`vesukit.infer.nnunet`). The result lives on
    ``device`` (on the CPU only if memory ran out and the accumulators had to move there).
    """
    if tta not in PRESETS:
        raise TeacherError(f"--tta must be one of {PRESETS}, got {tta!r}")
    if getattr(spec, "kind", None) == "nnunetv2":
        from vesukit.infer.nnunet import predict_nnunet

        return predict_nnunet(volume, model, spec, device=device, tta=tta, overlap=overlap,
                              batch_size=batch_size, progress=progress)
    kind = _check_spec(spec)
    device = torch.device(device)
    if getattr(volume, "ndim", None) != 3:
        raise VesukitError(f"teacher '{spec.name}': volume must be (Z, Y, X), got shape {tuple(volume.shape)}")
    model = model.to(device).eval()
    predictor = surface_predictor(model, spec)
    x = normalize_volume(volume, spec.normalization, device)
    allowed = tuple(getattr(spec, "tta", ("flip", "rot90")))
    patch = tuple(int(p) for p in spec.patch)
    common = dict(overlap=overlap, sigma_scale=sigma_scale, batch_size=batch_size, progress=progress)
    if kind == "3d":
        views = tta_views(tta, 3, allowed)
        out = sliding_window_3d(x, predictor, patch, views=views, pad_mode=pad_mode, **common)[0]
    else:
        plane = plane or getattr(spec, "plane", "tile")
        square = patch[0] == patch[1] if plane == "tile" else False
        views = tta_views(tta, 2, allowed, square=square)
        out = predict_slices_multi_axis(
            x,
            predictor,
            axes=tuple(getattr(spec, "axes", (0,))),
            context=int(getattr(spec, "context", 1)),
            patch=patch,
            plane=plane,
            multiple=int(getattr(spec, "stride", 32)),
            views=views,
            **common,
        )[0]
    del x
    if out.device != device:
        try:
            out = out.to(device)
        except Exception:  # noqa: BLE001 - stay on the CPU if the device is still full
            pass
    return out
