"""numba kernel of :mod:`vesukit.decide.second_place`: the sheet fit's rasterisation.

The team rasterises with a numba loop too; this one does the same arithmetic in the same order
as the step's former numpy form (each sample is ``w1 p1 + w2 p2 + w3 p3 + w4 p4``, summed left to
right, rounded half to even), so the marked voxels are the same, without the numpy form's
(quads x 64 x 3) temporaries.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_JIT = dict(cache=True, nogil=True)


@njit(**_JIT)
def _round_half_even(x):
    low = np.floor(x)
    rest = x - low                                  # exact: x and its floor are close
    if rest > 0.5 or (rest == 0.5 and low % 2.0 != 0.0):
        return low + 1.0
    return low


@njit(**_JIT)
def rasterised(points, out, samples):
    """Mark in ``out`` (bool, 3-D) the voxel nearest to each of ``samples`` x ``samples``
    bilinear samples of every quad of ``points`` (grid, grid, 3) whose 4 corners are defined
    (not NaN in their first coordinate, as the team tests them)."""
    rows, cols = points.shape[0], points.shape[1]
    for i in range(rows - 1):
        for j in range(cols - 1):
            if (np.isnan(points[i, j, 0]) or np.isnan(points[i + 1, j, 0]) or np.isnan(points[i, j + 1, 0])
                    or np.isnan(points[i + 1, j + 1, 0])):
                continue
            for a in range(samples):
                u = a / (samples - 1.0)
                for b in range(samples):
                    v = b / (samples - 1.0)
                    w1, w2, w3, w4 = (1 - u) * (1 - v), u * (1 - v), (1 - u) * v, u * v
                    z = _round_half_even(w1 * points[i, j, 0] + w2 * points[i + 1, j, 0]
                                         + w3 * points[i, j + 1, 0] + w4 * points[i + 1, j + 1, 0])
                    y = _round_half_even(w1 * points[i, j, 1] + w2 * points[i + 1, j, 1]
                                         + w3 * points[i, j + 1, 1] + w4 * points[i + 1, j + 1, 1])
                    x = _round_half_even(w1 * points[i, j, 2] + w2 * points[i + 1, j, 2]
                                         + w3 * points[i, j + 1, 2] + w4 * points[i + 1, j + 1, 2])
                    if 0 <= z < out.shape[0] and 0 <= y < out.shape[1] and 0 <= x < out.shape[2]:
                        out[int(z), int(y), int(x)] = True
    return out
