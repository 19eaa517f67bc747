"""Sliding-window inference over N-d volumes with overlap blending and batched TTA.

The functional core is :func:`blend_windows`, which works on a batch of images
``(N, C, *spatial)`` with any number of spatial axes (3 for 3D teachers; 2 for the 2.5D slice
adapter, where N is the number of slices). :func:`sliding_window_3d` is the 3D entry point and
:class:`SlidingWindowInferer` a MONAI-inferer-style wrapper around it.

How it is fast: the input is moved to the compute device once; windows of all images and all
TTA views are cut, transformed and stacked into one batch per model call (TTA rides along in
the batch instead of being extra passes over the volume); the blend weight map does not depend
on the predictions, so it is built once per grid and shared by all images and views; the
Gaussian importance map is cached; accumulation is float32 on the device, in place.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from vesukit.infer.memory import (
    OomPolicy,
    batch_size_from_free_memory,
    is_out_of_memory,
    measure_item_bytes,
    release_cached_memory,
)
from vesukit.infer.settings import DEFAULT_OVERLAP
from vesukit.infer.tta import IDENTITY, TTAView
from vesukit.infer.windows import importance_map, window_grid, window_slices

Predictor = Callable[[torch.Tensor], torch.Tensor]
PAD_MODES = ("replicate", "reflect", "constant")


def _pad_amounts(spatial: Sequence[int], patch: Sequence[int]) -> list[tuple[int, int]]:
    """Per axis (before, after) padding bringing each axis up to at least the patch."""
    amounts = []
    for size, p in zip(spatial, patch):
        missing = max(0, p - size)
        amounts.append((missing // 2, missing - missing // 2))
    return amounts


def _pad(images: torch.Tensor, amounts: list[tuple[int, int]], mode: str) -> torch.Tensor:
    if not any(b or a for b, a in amounts):
        return images
    flat: list[int] = []
    for before, after in reversed(amounts):  # F.pad wants the last axis first
        flat += [before, after]
    if mode == "constant":
        return F.pad(images, flat, mode="constant", value=0.0)
    if mode == "reflect":
        # Reflection cannot pad by more than size - 1; fall back to replicate beyond that.
        spatial = images.shape[2:]
        if any(max(b, a) >= s for (b, a), s in zip(amounts, spatial)):
            mode = "replicate"
    return F.pad(images, flat, mode=mode)


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def blend_windows(
    images: torch.Tensor,
    predictor: Predictor,
    patch: Sequence[int],
    *,
    overlap: float = DEFAULT_OVERLAP,
    sigma_scale: float = 0.125,
    blend: str = "gaussian",
    views: Sequence[TTAView] = (IDENTITY,),
    batch_size: int | None = None,
    pad_mode: str = "replicate",
    accumulate_device: torch.device | str | None = None,
    autocast: bool = True,
    what: str = "sliding window",
    progress: Callable[[int, int], None] | None = None,
    starts: Sequence[Sequence[int]] | None = None,
) -> torch.Tensor:
    """Blend ``predictor`` over windows of ``images`` ``(N, C, *spatial)`` -> ``(N, C_out, *spatial)``.

    Each window (and each TTA view of it) is predicted, the view undone, weighted by the
    importance map and summed; the sum is divided by the summed weights. Axes shorter than the
    patch are padded (``pad_mode``) and cropped back. The result is float32 on
    ``accumulate_device`` (default: the images' device), or on the CPU if memory ran out and
    the accumulators had to move there.

    ``batch_size`` counts model inputs (window x view) per call; ``None`` picks it from free
    memory on CUDA (the first window is run alone and measured) and a small default on CPU.

    ``starts`` replaces the evenly spread grid by explicit window corners in the (padded)
    frame of ``images``: `segment` passes the windows of the whole volume's grid that reach
    its block, so a block is blended exactly as the one-piece run blends it.
    """
    patch = tuple(int(p) for p in patch)
    if images.dim() != len(patch) + 2:
        raise ValueError(f"images must be (N, C, *spatial) with {len(patch)} spatial axes, got {tuple(images.shape)}")
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    views = tuple(views) or (IDENTITY,)
    if images.dtype != torch.float32:
        images = images.float()  # windows are cut into a float32 batch
    compute_device = images.device
    acc_device = torch.device(accumulate_device) if accumulate_device is not None else compute_device

    spatial = tuple(images.shape[2:])
    amounts = _pad_amounts(spatial, patch)
    padded = _pad(images, amounts, pad_mode)
    padded_spatial = tuple(padded.shape[2:])
    if starts is None:
        starts = window_grid(padded_spatial, patch, overlap)
    else:
        starts = [tuple(int(v) for v in start) for start in starts]
        for start in starts:
            if len(start) != len(patch) or any(s < 0 or s + p > n for s, p, n in zip(start, patch, padded_spatial)):
                raise ValueError(f"window start {start} with patch {patch} leaves the images {padded_spatial}")
    slices = [window_slices(s, patch) for s in starts]
    n_images = padded.shape[0]

    weight = importance_map(patch, mode=blend, sigma_scale=sigma_scale, device=compute_device)
    # Each view contributes 1/len(views) of a window's vote; weights do not depend on the
    # predictions, so their sum is built once for the grid and shared by all images.
    view_weight = weight / len(views)
    weight_sum = torch.zeros((1, 1) + padded_spatial, dtype=torch.float32, device=acc_device)
    acc_weight = weight.to(acc_device)
    for sl in slices:
        weight_sum[(..., *sl)] += acc_weight

    jobs = [(n, w, v) for n in range(n_images) for w in range(len(slices)) for v in range(len(views))]
    probing = batch_size is None and compute_device.type == "cuda" and torch.cuda.is_available()
    if batch_size is None:
        batch_size = 1 if probing else batch_size_from_free_memory(compute_device, 1)
    policy = OomPolicy(batch_size=max(1, int(batch_size)), can_move_accumulators=acc_device.type != "cpu")

    accumulator: torch.Tensor | None = None
    done = 0
    with torch.no_grad():
        while done < len(jobs):
            chunk = jobs[done : done + policy.batch_size]
            try:
                if probing:
                    holder: list[torch.Tensor] = []
                    item_bytes = measure_item_bytes(
                        # called at once, inside this iteration: the loop variables are current
                        lambda: holder.append(  # noqa: B023
                            _predict_chunk(padded, chunk, slices, views, predictor, autocast)),  # noqa: B023
                        compute_device,
                    )
                    outputs = holder[0]
                    probing = False
                    policy.batch_size = batch_size_from_free_memory(compute_device, item_bytes or 1)
                else:
                    outputs = _predict_chunk(padded, chunk, slices, views, predictor, autocast)
            except Exception as error:  # noqa: BLE001 - only OOM is handled, others re-raised
                if not is_out_of_memory(error):
                    raise
                del error
                probing = False
                release_cached_memory(compute_device)
                policy.on_out_of_memory(what)
                if policy.accumulate_on_cpu and acc_device.type != "cpu":
                    acc_device = torch.device("cpu")
                    weight_sum = weight_sum.cpu()
                    accumulator = accumulator.cpu() if accumulator is not None else None
                    release_cached_memory(compute_device)
                continue
            if accumulator is None:
                accumulator = torch.zeros(
                    (n_images, outputs[0].shape[1]) + padded_spatial, dtype=torch.float32, device=acc_device
                )
            if acc_device != compute_device:
                outputs = [out.to(acc_device) for out in outputs]
                item_weight = view_weight.to(acc_device)
            else:
                item_weight = view_weight
            for (n, w, _v), out in zip(chunk, outputs):
                accumulator[(n, slice(None), *slices[w])].addcmul_(out[0], item_weight)
            done += len(chunk)
            if progress is not None:
                progress(done, len(jobs))
    assert accumulator is not None
    accumulator /= weight_sum
    crop = tuple(slice(before, before + size) for (before, _), size in zip(amounts, spatial))
    return accumulator[(..., *crop)]


def _predict_chunk(
    images: torch.Tensor,
    chunk: list[tuple[int, int, int]],
    slices: list[tuple[slice, ...]],
    views: tuple[TTAView, ...],
    predictor: Predictor,
    autocast: bool,
) -> list[torch.Tensor]:
    """Run one model call over ``chunk`` (image, window, view) jobs; return each job's
    prediction ``(1, C_out, *patch)`` in the original (un-augmented) orientation."""
    by_view: dict[int, list[int]] = {}
    for position, (_n, _w, v) in enumerate(chunk):
        by_view.setdefault(v, []).append(position)
    # Windows are copied straight into one batch tensor, grouped by view; each group is then
    # transformed in place of its slice (no per-view temporaries joined by a cat).
    first = images[(chunk[0][0], slice(None), *slices[chunk[0][1]])]
    batch = torch.empty((len(chunk),) + tuple(first.shape), dtype=torch.float32, device=images.device)
    offset = 0
    for v, positions in by_view.items():
        group = batch[offset : offset + len(positions)]
        torch.stack([images[(chunk[p][0], slice(None), *slices[chunk[p][1]])] for p in positions], out=group)
        if not views[v].is_identity:
            group.copy_(views[v].apply(group))
        offset += len(positions)
    with _autocast(batch.device, autocast):
        predicted = predictor(batch)
    if predicted.dim() != batch.dim() or predicted.shape[0] != batch.shape[0] or predicted.shape[2:] != batch.shape[2:]:
        raise ValueError(
            f"the predictor returned shape {tuple(predicted.shape)} for a batch of shape "
            f"{tuple(batch.shape)}; it must return (B, C_out, *patch)"
        )
    predicted = predicted.float()
    results: list[torch.Tensor] = [None] * len(chunk)  # type: ignore[list-item]
    offset = 0
    for v, positions in by_view.items():
        undone = views[v].undo(predicted[offset : offset + len(positions)])
        for i, p in enumerate(positions):
            results[p] = undone[i : i + 1]
        offset += len(positions)
    return results


def sliding_window_3d(
    inputs: torch.Tensor,
    predictor: Predictor,
    patch: Sequence[int],
    *,
    device: torch.device | str | None = None,
    **blend_options: Any,
) -> torch.Tensor:
    """Sliding-window 3D inference.

    ``inputs``: ``(Z, Y, X)`` (one channel), ``(C, Z, Y, X)`` or ``(N, C, Z, Y, X)``; moved once
    to ``device`` (default: where it is). Returns float32 ``(C_out, Z, Y, X)``, or
    ``(N, C_out, Z, Y, X)`` for 5-d inputs. ``blend_options`` are :func:`blend_windows`'s
    keyword arguments (``overlap``, ``sigma_scale``, ``blend``, ``views``, ``batch_size``,
    ``pad_mode``, ``accumulate_device``, ``autocast``, ``progress``), with its defaults.
    """
    patch = tuple(int(p) for p in patch)
    if len(patch) != 3:
        raise ValueError(f"a 3D patch needs three sizes, got {patch}")
    if device is not None:
        inputs = inputs.to(device)
    batched = inputs.dim() == 5
    if inputs.dim() == 3:
        inputs = inputs[None]
    if inputs.dim() == 4:
        inputs = inputs[None]
    if inputs.dim() != 5:
        raise ValueError(f"inputs must be (Z,Y,X), (C,Z,Y,X) or (N,C,Z,Y,X), got {tuple(inputs.shape)}")
    out = blend_windows(inputs, predictor, patch, what="3D sliding window", **blend_options)
    return out if batched else out[0]


@dataclass(frozen=True)
class SlidingWindowInferer:
    """MONAI-style wrapper: fixed settings, called as ``inferer(inputs, predictor)``."""

    patch: tuple[int, int, int]
    overlap: float = DEFAULT_OVERLAP
    sigma_scale: float = 0.125
    batch_size: int | None = None
    blend: str = "gaussian"
    views: tuple[TTAView, ...] = field(default=(IDENTITY,))
    pad_mode: str = "replicate"
    autocast: bool = True

    def __call__(self, inputs: torch.Tensor, predictor: Predictor, **overrides) -> torch.Tensor:
        settings = dict(
            overlap=self.overlap,
            sigma_scale=self.sigma_scale,
            batch_size=self.batch_size,
            blend=self.blend,
            views=self.views,
            pad_mode=self.pad_mode,
            autocast=self.autocast,
        )
        settings.update(overrides)
        return sliding_window_3d(inputs, predictor, self.patch, **settings)
