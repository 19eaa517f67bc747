"""Synthetic probability maps with the defects real ensembles make, for labelled volumes.

A clean map is the label's surface, blurred, through a logistic. Then, each with a known
place and size: holes punched through sheets, tears across them, bridges between neighbouring
sheets, a stretch where two sheets merge, dust in the background, and a per-volume logit
offset (over- or under-confident teachers). Used to test and benchmark the decision stage:
a good calibration must undo what it can of these.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Defects:
    holes: int = 4            # balls of low probability on the surface
    hole_radius: float = 2.5
    tears: int = 1            # thin slabs of low probability across the volume
    bridges: int = 3          # short columns of middling probability off the surface
    merges: int = 1           # boxes where the gap between sheets is filled
    dust: int = 25            # small confident blobs in the background
    noise: float = 0.8        # logit noise (smoothed)
    bias: float = 0.0         # per-volume logit offset


def defective_map(label: np.ndarray, seed: int, defects: Defects = Defects()) -> np.ndarray:
    """float32 probability map in ``label``'s shape (label: 0 background, 1 surface, 2 ignore)."""
    rng = np.random.default_rng(seed)
    surface = (label == 1).astype(np.float32)
    shape = surface.shape
    logit = 12.0 * (ndimage.gaussian_filter(surface, 1.0) - 0.45) + defects.bias
    noise = ndimage.gaussian_filter(rng.normal(0, 1, shape).astype(np.float32), 1.0)
    logit += defects.noise * noise / max(float(noise.std()), 1e-6)
    points = np.argwhere(label == 1)

    def set_ball(center, radius, value):
        # only the ball's bounding box is touched: cheap on 320^3 volumes
        reach = int(np.ceil(radius))
        box = tuple(slice(max(int(c) - reach, 0), min(int(c) + reach + 1, n))
                    for c, n in zip(center, shape))
        grid = np.ogrid[box]
        inside = sum((g - c) ** 2 for g, c in zip(grid, center)) <= radius ** 2
        logit[box][inside] = value

    if len(points):
        for _ in range(defects.holes):
            set_ball(points[rng.integers(len(points))], defects.hole_radius, -6.0)
        for _ in range(defects.bridges):
            z, y, x = points[rng.integers(len(points))]
            axis = int(rng.integers(0, 3))
            length = int(rng.integers(4, 9))
            index = [slice(z, z + 1), slice(y, y + 1), slice(x, x + 1)]
            start = (z, y, x)[axis]
            index[axis] = slice(start, min(start + length, shape[axis]))
            logit[tuple(index)] = np.maximum(logit[tuple(index)], 0.5)
        for _ in range(defects.merges):
            center = points[rng.integers(len(points))]
            box = tuple(slice(max(int(c) - 4, 0), int(c) + 4) for c in center)
            logit[box] = np.maximum(logit[box], 0.0)
    for _ in range(defects.tears):
        axis = int(rng.integers(0, 3))
        at = int(rng.integers(shape[axis] // 4, 3 * shape[axis] // 4))
        index = [slice(None)] * 3
        index[axis] = slice(at, at + 1)
        logit[tuple(index)] = -6.0
    for _ in range(defects.dust):
        center = [int(rng.integers(0, s)) for s in shape]
        set_ball(center, float(rng.uniform(0.8, 1.8)), 3.0)
    return (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
