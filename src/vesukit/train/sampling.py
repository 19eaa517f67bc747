"""Training patches: surface-aware sampling from in-memory volumes, and augmentation.

A share of the patches (``surface_fraction``) is centred on a voxel the target calls surface,
the rest anywhere: surface is a few percent of a volume, so uniform sampling alone would teach
a network that predicting background is nearly always right. 3D students get (D, H, W) crops;
2.5D students a centre slice along one of their axes with ``context`` neighbours as channels
(missing neighbours at the volume's edge repeat the last slice, as inference does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vesukit.train import TrainError


@dataclass
class TrainVolume:
    """One labelled volume ready for sampling: uint8 image, float16 target and weight maps."""

    volume_id: str
    image: np.ndarray
    target: np.ndarray
    weight: np.ndarray

    def __post_init__(self) -> None:
        if not (self.image.shape == self.target.shape == self.weight.shape):
            raise TrainError(f"volume '{self.volume_id}': image {self.image.shape}, target "
                             f"{self.target.shape} and weight {self.weight.shape} differ in shape")
        self.target = np.asarray(self.target, dtype=np.float16)
        self.weight = np.asarray(self.weight, dtype=np.float16)
        surface = (self.target > 0.5) & (self.weight > 0)
        self.surface = np.flatnonzero(surface.ravel())


@dataclass(frozen=True)
class Augment:
    """Random flips of every spatial axis, in-plane rot90 (square patches) and an intensity
    scale/shift in grey levels before normalisation; all off with ``Augment.none()``."""

    flip: bool = True
    rot90: bool = True
    scale: float = 0.15
    shift: float = 15.0

    @classmethod
    def none(cls) -> Augment:
        return cls(flip=False, rot90=False, scale=0.0, shift=0.0)


class PatchSampler:
    """Batches ``(x, target, weight)`` (float32 tensors, ``(B, C, *patch)``) for one spec."""

    def __init__(self, volumes: list[TrainVolume], spec, *, surface_fraction: float = 0.5,
                 augment: Augment = Augment(), seed: int = 0):
        if not volumes:
            raise TrainError("no training volumes: give at least one labelled volume")
        if not 0.0 <= surface_fraction <= 1.0:
            raise TrainError(f"surface_fraction must be in [0, 1], got {surface_fraction}")
        self.spec = spec
        self.kind = spec.input_kind
        self.patch = tuple(int(p) for p in spec.patch)
        self.context = int(spec.context) if self.kind == "2.5d" else 1
        self.axes = tuple(spec.axes) if self.kind == "2.5d" else ()
        self.volumes = volumes
        self.surface_fraction = surface_fraction
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        norm = spec.normalization
        self._norm = (float(norm.scale), float(norm.mean), float(norm.std))

    # -- state for resuming ------------------------------------------------------------------
    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    # -- sampling ----------------------------------------------------------------------------
    def _centre(self, volume: TrainVolume) -> tuple[int, int, int]:
        if volume.surface.size and self.rng.random() < self.surface_fraction:
            flat = int(volume.surface[self.rng.integers(volume.surface.size)])
            return tuple(int(i) for i in np.unravel_index(flat, volume.image.shape))
        return tuple(int(self.rng.integers(s)) for s in volume.image.shape)

    def _crop(self, arrays, centre, patch):
        """Crops of ``patch`` around ``centre`` (clamped inside; edge-padded if too small)."""
        shape = arrays[0].shape
        slices, pads = [], []
        for c, p, s in zip(centre, patch, shape):
            start = min(max(c - p // 2, 0), max(s - p, 0))
            slices.append(slice(start, start + p))
            pads.append((0, max(p - s, 0)))
        out = []
        for i, array in enumerate(arrays):
            crop = array[tuple(slices)]
            if any(after for _, after in pads):
                # image repeats its edge; target and weight are 0 (not trained on) outside
                crop = np.pad(crop, pads, mode="edge" if i == 0 else "constant")
            out.append(crop)
        return out

    def sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One un-augmented (image float32 (C, *patch), target (1, *patch), weight (1, *patch))."""
        volume = self.volumes[int(self.rng.integers(len(self.volumes)))]
        centre = self._centre(volume)
        if self.kind == "3d":
            image, target, weight = self._crop((volume.image, volume.target, volume.weight),
                                               centre, self.patch)
            return (image[None].astype(np.float32), target[None].astype(np.float32),
                    weight[None].astype(np.float32))
        axis = self.axes[int(self.rng.integers(len(self.axes)))]
        image = np.moveaxis(volume.image, axis, 0)
        target = np.moveaxis(volume.target, axis, 0)
        weight = np.moveaxis(volume.weight, axis, 0)
        c = centre[axis]
        in_plane = tuple(centre[i] for i in range(3) if i != axis)
        half = self.context // 2
        index = np.clip(np.arange(c - half, c + half + 1), 0, image.shape[0] - 1)
        stack = self._crop([image[int(i)] for i in index] + [target[c], weight[c]], in_plane,
                           self.patch)
        return (np.stack(stack[:-2]).astype(np.float32), stack[-2][None].astype(np.float32),
                stack[-1][None].astype(np.float32))

    def _augment(self, image, target, weight):
        aug, rng = self.augment, self.rng
        spatial = image.ndim - 1
        if aug.flip:
            # For 2.5D the channel axis is the slicing axis, so reversing it is a flip too.
            axes = list(range(1, image.ndim)) + ([0] if self.kind == "2.5d" else [])
            for axis in axes:
                if rng.random() < 0.5:
                    image = np.flip(image, axis)
                    if axis != 0:
                        target, weight = np.flip(target, axis), np.flip(weight, axis)
        if aug.rot90 and self.patch[-1] == self.patch[-2]:
            k = int(rng.integers(4))
            plane = (spatial - 1, spatial)
            image, target, weight = (np.rot90(a, k, plane) for a in (image, target, weight))
        if aug.scale or aug.shift:
            a = 1.0 + rng.uniform(-aug.scale, aug.scale)
            b = rng.uniform(-aug.shift, aug.shift)
            image = image * np.float32(a) + np.float32(b)
        return image, target, weight

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scale, mean, std = self._norm
        images, targets, weights = [], [], []
        for _ in range(size):
            image, target, weight = self._augment(*self.sample())
            images.append((image * np.float32(scale) - np.float32(mean)) / np.float32(std))
            targets.append(target)
            weights.append(weight)
        return tuple(torch.from_numpy(np.ascontiguousarray(np.stack(a), dtype=np.float32))
                     for a in (images, targets, weights))
