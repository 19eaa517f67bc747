"""The 9th place's post-processing, as its code does it, voxel for voxel: the step ``ninth_place``.

Source: TingYi028/Kaggle-vesuvius-9th, ``Inference.ipynb``, ``apply_post_processing`` with the
keyword arguments of the notebook's main cell, after nnU-Net's argmax (docs/winners.md gives
the commit). An independent implementation of what that code does, checked against its output
on synthetic maps (tests/test_decide_winners.py). In order:

1. drop 6-connected components under ``min_voxels``;
2. "line_norm": in every slice along axis 0 and then along axis 1, within each octant of the
   volume (2 x 2 x 2, the first half one voxel longer on odd sizes), the slice's skeleton
   (Lee's method, scikit-image), its end points joined in pairs (same 6-connected component,
   nearer than ``max_link``, each end's direction, traced back 5 skeleton pixels, pointing at
   the other within ``max_angle`` degrees: a straight line drawn), widened to ``line_radius``
   and added, except within 8 voxels of the octant's in-plane edges. This keeps 1-voxel sheets
   alive through the Gaussian below;
3. ``sandwich_rounds`` rounds of gap filling: voxels between two "supported" voxels (at least
   ``min_support`` of the 24 others in their 5 x 5 in-plane window) 2 to ``max_gap`` + 1 apart
   along any axis are set (the supports taken at the round's start), then 1-voxel diagonal
   gaps in the XZ and YZ planes;
4. a Gaussian of ``sigma`` on each octant alone (mirrored at the octant's faces), kept above
   ``level``;
5. dust: 6-connected components under ``min_voxels``, then under ``final_dust`` within each
   octant;
6. the 2 x 2 diagonal fill: two slices along axis 0 (adjacent, then one apart) whose 2 x 2
   squares each hold 3 voxels, different ones, get the whole 2 x 2 column between them (one
   apart: only where each adjacent pair of slices shares 2 voxels there); then along axis 1.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from vesukit._optional import optional_import
from vesukit.errors import VesukitError

_OCTANT_EDGE = 8          # line_norm leaves this many in-plane voxels at each octant edge alone
_TRACE_STEPS = 5          # skeleton pixels traced back from an end point for its direction
_DIAGONALS = ((1, 0, 1), (1, 0, -1), (1, 1, 0), (1, -1, 0))   # XZ and YZ planes


class NinthPlaceError(VesukitError):
    """Bad parameters for the ``ninth_place`` step, or scikit-image missing."""


def ninth_place(mask: np.ndarray, maps=None, min_voxels: int = 5000, line_radius: float = 1.5,
                max_link: float = 30.0, max_angle: float = 45.0, sandwich_rounds: int = 5,
                max_gap: int = 3, min_support: int = 9, sigma: float = 1.0, level: float = 0.5,
                final_dust: int = 10) -> np.ndarray:
    """The 9th place's post-processing (module docstring); the defaults are its code's."""
    _check(min_voxels, line_radius, max_link, max_angle, sandwich_rounds, max_gap, min_support,
           sigma, level, final_dust)
    volume = _drop_small_6(np.asarray(mask) != 0, int(min_voxels))
    volume = volume | _line_norm(volume, 0, line_radius, max_link, max_angle) \
        | _line_norm(volume, 1, line_radius, max_link, max_angle)
    for _ in range(int(sandwich_rounds)):
        volume = _fill_gaps(volume, int(max_gap), int(min_support))
        volume = _fill_diagonals(volume)
    smooth = np.zeros_like(volume)
    for octant in octants(volume.shape):
        smooth[octant] = ndimage.gaussian_filter(volume[octant].astype(np.float64), float(sigma)) > level
    volume = _drop_small_6(smooth, int(min_voxels))
    for octant in octants(volume.shape):
        volume[octant] = _drop_small_6(volume[octant], int(final_dust))
    for axis in (0, 1):
        for gap in (0, 1):
            volume = _fill_square_diagonals(volume, axis, gap)
    return volume.astype(np.uint8)


def octants(shape: tuple[int, ...]) -> list[tuple[slice, ...]]:
    """The 2 x 2 x 2 blocks the team processes separately; an odd axis gives its first half the
    extra voxel, an axis of 1 is not split."""
    halves = []
    for n in shape:
        first = n - n // 2
        halves.append([slice(0, first), slice(first, n)] if n >= 2 else [slice(0, n)])
    return [(a, b, c) for a in halves[0] for b in halves[1] for c in halves[2]]


def _drop_small_6(volume: np.ndarray, min_voxels: int) -> np.ndarray:
    labels, count = ndimage.label(volume)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[labels]


# --- 2: line_norm -------------------------------------------------------------------------------

def _line_norm(volume: np.ndarray, axis: int, radius: float, max_link: float, max_angle: float) -> np.ndarray:
    """The voxels line_norm along ``axis`` adds: widened, linked skeletons of every slice."""
    skeletonize, draw_line = _skimage()
    labels, _ = ndimage.label(volume)
    reach = int(math.floor(radius))
    steps = np.arange(-reach, reach + 1)
    disk = (steps[:, None] ** 2 + steps[None, :] ** 2) <= radius * radius
    added = np.zeros_like(volume)
    edge = _OCTANT_EDGE
    for octant in octants(volume.shape):
        block = volume[octant]
        plane_sizes = [n for a, n in enumerate(block.shape) if a != axis]
        if any(n <= 2 * edge for n in plane_sizes):
            continue
        block_labels = labels[octant]
        block_added = added[octant]
        for i in range(block.shape[axis]):
            at = tuple(i if a == axis else slice(None) for a in range(3))
            image = block[at]
            if not image.any():
                continue
            skeleton = skeletonize(image, method="lee").astype(bool)
            _link_ends(skeleton, block_labels[at], max_link, max_angle, draw_line)
            if not skeleton.any():
                continue
            widened = ndimage.binary_dilation(skeleton, disk)
            index = [slice(edge, -edge)] * 3
            index[axis] = i
            block_added[tuple(index)] |= widened[edge:-edge, edge:-edge]
    return added


def _link_ends(skeleton: np.ndarray, labels: np.ndarray, max_link: float, max_angle: float, draw_line) -> None:
    """Join the skeleton's end points in pairs, in place (the team's greedy matching)."""
    neighbours = ndimage.convolve(skeleton.astype(np.int64), np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]]),
                                  mode="constant", cval=0)
    ends = np.argwhere(skeleton & (neighbours == 1))
    if len(ends) < 2:
        return
    directions = np.array([_direction(skeleton, end) for end in ends])
    owner = labels[ends[:, 0], ends[:, 1]]
    has_direction = np.hypot(directions[:, 0], directions[:, 1]) != 0
    # pairs that can match at all (same component, both with a direction, near enough): the
    # exact tests below then run, as the team's do, only on these
    offsets = ends[None, :, :] - ends[:, None, :]
    near = (offsets ** 2).sum(axis=2) <= max_link * max_link
    possible = near & (owner[:, None] == owner[None, :]) & has_direction[:, None] & has_direction[None, :]
    np.fill_diagonal(possible, False)
    limit = math.radians(max_angle)
    used = np.zeros(len(ends), dtype=bool)
    for i in range(len(ends)):
        if used[i]:
            continue
        best, best_distance = -1, max_link
        for j in np.flatnonzero(possible[i] & ~used):
            distance = float(np.linalg.norm(ends[i] - ends[j]))
            if distance > max_link:
                continue
            toward = (ends[j] - ends[i]) / distance
            facing = float(np.dot(directions[i], toward)) > 0 and float(np.dot(directions[j], -toward)) > 0
            if not facing or distance >= best_distance:
                continue
            if math.acos(float(np.clip(np.dot(directions[i], -directions[j]), -1.0, 1.0))) < limit:
                best, best_distance = j, distance
        if best >= 0:
            used[i] = used[best] = True
            rows, cols = draw_line(ends[i][0], ends[i][1], ends[best][0], ends[best][1])
            skeleton[rows, cols] = True


def _direction(skeleton: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Unit vector from the pixel ``_TRACE_STEPS`` steps back along the skeleton to the end
    point (each step: the first unvisited skeleton pixel of the 3 x 3 window, row by row)."""
    visited = {(int(end[0]), int(end[1]))}
    y, x = int(end[0]), int(end[1])
    rows, cols = skeleton.shape
    for _ in range(_TRACE_STEPS):
        step = None
        for a in range(max(y - 1, 0), min(y + 2, rows)):
            for b in range(max(x - 1, 0), min(x + 2, cols)):
                if skeleton[a, b] and (a, b) not in visited:
                    step = (a, b)
                    break
            if step is not None:
                break
        if step is None:
            break
        visited.add(step)
        y, x = step
    vector = np.array([end[0] - y, end[1] - x], dtype=np.float64)
    length = np.linalg.norm(vector)
    return vector / length if length else np.zeros(2)


# --- 3: gap filling -----------------------------------------------------------------------------

def _fill_gaps(volume: np.ndarray, max_gap: int, min_support: int) -> np.ndarray:
    """Set the voxels between two supported voxels 2..max_gap+1 apart along each axis."""
    supported = [volume & (_plane_count(volume, axis) >= min_support) for axis in range(3)]
    out = volume.copy()
    for axis in range(3):
        n = volume.shape[axis]
        for gap in range(1, max_gap + 1):
            stride = gap + 1
            if stride >= n:
                continue
            ends = _cut(supported[axis], axis, 0, n - stride) & _cut(supported[axis], axis, stride, n)
            for i in range(1, stride):
                _cut(out, axis, i, i + n - stride)[...] |= ends
    return out


def _plane_count(volume: np.ndarray, axis: int) -> np.ndarray:
    """Set voxels among the 24 others of each voxel's 5 x 5 window normal to ``axis``."""
    counts = volume.view(np.uint8)
    for other in range(3):
        if other != axis:
            counts = _window_sum(counts, other, 2)
    return counts - volume.view(np.uint8)


def _window_sum(values: np.ndarray, axis: int, reach: int) -> np.ndarray:
    """Sum over ``2 * reach + 1`` along ``axis``, zero beyond the ends (uint8: at most 25 here)."""
    n = values.shape[axis]
    total = values.copy()
    for shift in range(1, reach + 1):
        if shift >= n:
            break
        _cut(total, axis, 0, n - shift)[...] += _cut(values, axis, shift, n)
        _cut(total, axis, shift, n)[...] += _cut(values, axis, 0, n - shift)
    return total


def _cut(array: np.ndarray, axis: int, start: int, stop: int) -> np.ndarray:
    index = [slice(None)] * array.ndim
    index[axis] = slice(start, stop)
    return array[tuple(index)]


def _fill_diagonals(volume: np.ndarray) -> np.ndarray:
    """Set the middle of every pair of voxels two apart along an XZ or YZ diagonal; each
    direction sees the fills of the ones before it."""
    out = volume.copy()
    for direction in _DIAGONALS:
        anchors = out.copy()
        first, middle, last = [], [], []
        for step, n in zip(direction, out.shape):
            span = n - 2 * abs(step)
            low = 2 if step < 0 else 0
            first.append(slice(low, low + span))
            middle.append(slice(low + step, low + step + span))
            last.append(slice(low + 2 * step, low + 2 * step + span))
        if any(s.stop <= s.start for s in first):
            continue
        out[tuple(middle)] |= anchors[tuple(first)] & anchors[tuple(last)]
    return out


# --- 6: the 2 x 2 diagonal fill -----------------------------------------------------------------

def _fill_square_diagonals(volume: np.ndarray, axis: int, gap: int) -> np.ndarray:
    """Slices ``gap + 1`` apart along ``axis``, in order: where a 2 x 2 square holds 3 voxels in
    each and 4 in their union (and, with a gap, every adjacent pair of slices between shares
    more than one voxel of it), the square is set in all the slices from one to the other.
    The team checks the squares four times, each time leaving out one more row or column at
    the edges, and the later checks see the earlier fills between the slices."""
    work = np.moveaxis(volume, axis, 0).astype(bool)           # a copy
    depth, rows, cols = work.shape
    step = gap + 1
    for z in range(step, depth):
        before, after = work[z - step].astype(np.uint8), work[z].astype(np.uint8)
        union = before | after
        three_each = (_square_sum(before) == 3) & (_square_sum(after) == 3) & (_square_sum(union) == 4)
        if not three_each.any():
            continue
        for dr, dc in ((0, 0), (0, 1), (1, 0), (1, 1)):
            if rows - 1 - dr <= dr or cols - 1 - dc <= dc:
                continue
            hit = np.zeros_like(three_each)
            hit[dr:rows - 1 - dr, dc:cols - 1 - dc] = three_each[dr:rows - 1 - dr, dc:cols - 1 - dc]
            for k in range(z - step, z) if gap > 0 else ():
                hit &= _square_sum(work[k] & work[k + 1]) > 1
            if not hit.any():
                continue
            grown = np.zeros((rows, cols), dtype=bool)
            grown[:-1, :-1] |= hit
            grown[1:, :-1] |= hit
            grown[:-1, 1:] |= hit
            grown[1:, 1:] |= hit
            work[z - step:z + 1] |= grown
    return np.moveaxis(work, 0, axis)


def _square_sum(image: np.ndarray) -> np.ndarray:
    """Voxels in each 2 x 2 square, indexed by its upper-left pixel: (rows - 1, cols - 1)."""
    image = image.astype(np.uint8)
    return image[:-1, :-1] + image[:-1, 1:] + image[1:, :-1] + image[1:, 1:]


def _check(min_voxels, line_radius, max_link, max_angle, sandwich_rounds, max_gap, min_support,
           sigma, level, final_dust) -> None:
    problems = []
    for name, value in (("min_voxels", min_voxels), ("sandwich_rounds", sandwich_rounds),
                        ("max_gap", max_gap), ("final_dust", final_dust)):
        if int(value) != value or value < 0:
            problems.append(f"{name} must be an integer >= 0, got {value!r}")
    if not 0 <= min_support <= 24 or int(min_support) != min_support:
        problems.append(f"min_support must be an integer from 0 to 24, got {min_support!r}")
    for name, value in (("line_radius", line_radius), ("max_link", max_link), ("sigma", sigma)):
        if not value > 0:
            problems.append(f"{name} must be > 0, got {value!r}")
    if not 0 < max_angle <= 180:
        problems.append(f"max_angle must be in (0, 180] degrees, got {max_angle!r}")
    if not 0 <= level < 1:
        problems.append(f"level must be in [0, 1), got {level!r}")
    if problems:
        raise NinthPlaceError("postprocess step 'ninth_place': " + "; ".join(problems) + ".")


def _skimage():
    if optional_import("skimage") is None:
        raise NinthPlaceError("postprocess step 'ninth_place' needs scikit-image (pip install 'vesukit[post]'): "
                              "the 9th place's line_norm uses its skeletonize (Lee) and draw.line.")
    from skimage.draw import line
    from skimage.morphology import skeletonize

    return skeletonize, line
