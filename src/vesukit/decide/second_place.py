"""The 2nd place's post-processing, as its code does it: the step ``second_place``.

Source: mariuskern/spiral_fitting, ``surface_detection/original_code/
local-interpolation-interference.ipynb``, ``run_inference``'s chain from the probability map to
the uint8 mask (docs/winners.md gives the commit). An independent implementation of what that
code does, checked against its output on synthetic maps (tests/test_decide_winners.py). The sheet
fit draws 5000 of a cube's voxels at random with numpy's global generator, which the team never
seeds: two runs of its code differ (Dice 0.89 between two draws on a 96^3 test map). Here the
draws come from ``numpy.random.RandomState(seed)`` in the team's order, so the step gives what the
team's code gives after ``numpy.random.seed(seed)``, voxel for voxel. In order:

1. four masks from the probability: hysteresis (26-connected components of ``p >= low``
   holding a voxel ``p >= high``) with ``low`` and with each ``retry_low_*``; each closed
   along Z with a 3x1x1 line (scipy's border: nothing survives the erosion at the Z faces),
   6-connected dust under ``dust`` dropped, ``face`` voxels zeroed at every face, 26-connected
   components under ``min_voxels`` dropped; the first mask's enclosed cavities filled;
2. all four cropped by ``face`` at every face; per 26-connected component of the first, in
   80^3 cubes (stride 40, remainders under 40 skipped) the Euler number (6-connected) finds the
   cubes with holes; cubes that overlap or touch (the team's test, which compares X ends with a
   typo, is kept) are grouped and each group's box is refitted: the sheet's PCA plane, its
   height interpolated over a grid (``griddata``, a 5000-voxel subsample), median-filtered,
   smoothed unless the voxels are already planar, trimmed where no voxel is near, rasterised,
   its 5 outer layers cleared, dilated once and hole-filled per Z slice; accepted at Dice and
   coverage >= 0.75 against the cube, else the components of each alternative inside it are
   fitted (kept at Dice >= 0.45 and coverage >= 0.80) until one passes; the best fit replaces
   the box's interior (8 voxels in from each face not on the volume's face);
3. 26-connected components under ``min_voxels`` dropped; the ``face`` crop padded back.
"""

from __future__ import annotations

import contextlib
from collections import deque

import numpy as np
from scipy import ndimage

from vesukit._optional import optional_import
from vesukit.errors import VesukitError

_CUBE, _STRIDE, _INTERIOR = 80, 40, 8       # Euler-check cubes and the border a refit keeps
_SAMPLE = 5000                               # voxels the height interpolation is fitted to
_IN_SLICE = np.array([np.zeros((3, 3)), [[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.zeros((3, 3))], dtype=bool)
_DILATE = np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]],
                    [[1, 1, 1], [1, 1, 1], [1, 1, 1]],
                    [[0, 1, 0], [1, 1, 1], [0, 1, 0]]], dtype=bool)
_DILATE_OFFSETS = np.argwhere(_DILATE) - 1


class SecondPlaceError(VesukitError):
    """Bad parameters for the ``second_place`` step, or its maps missing."""


def second_place(mask: np.ndarray, maps=None, low: float = 0.2, high: float = 0.83,
                 retry_low_1: float = 0.5, retry_low_2: float = 0.6, retry_low_3: float = 0.7,
                 dust: int = 100, face: int = 3, min_voxels: int = 1000, seed: int = 0) -> np.ndarray:
    """The 2nd place's post-processing (module docstring); replaces the rule's mask. The
    ``retry_low_*`` are the alternatives' low thresholds, tried in that order."""
    alternatives = (retry_low_1, retry_low_2, retry_low_3)
    if maps is None:
        raise SecondPlaceError("postprocess step 'second_place' needs the ensemble maps (the mean "
                               "probability); call apply_postprocess(mask, steps, maps).")
    if not all(0 <= t <= high <= 1 for t in (low, *alternatives)):
        raise SecondPlaceError(f"postprocess step 'second_place': need 0 <= low, retry_low_* <= high <= 1, "
                               f"got low {low}, retries {alternatives}, high {high}.")
    if int(face) < 1 or int(dust) < 0 or int(min_voxels) < 0:
        raise SecondPlaceError(f"postprocess step 'second_place': need face >= 1, dust >= 0, min_voxels >= 0, "
                               f"got {face}, {dust}, {min_voxels}.")
    from vesukit._arrays import map_array

    probability = np.asarray(map_array(maps, "mean"), dtype=np.float32)
    masks = [_threshold_chain(probability, t, high, int(dust), int(face), int(min_voxels))
             for t in (low, *alternatives)]
    masks[0] = ndimage.binary_fill_holes(masks[0])
    inner = tuple(slice(face, n - face) for n in probability.shape)
    cropped = [m[inner] for m in masks]
    with _one_blas_thread():
        refitted = _refit_components(cropped[0], cropped[1:], np.random.RandomState(int(seed)))
    refitted = _drop_small(refitted, int(min_voxels), 26)
    out = np.zeros(probability.shape, dtype=np.uint8)
    out[inner] = refitted
    return out


def _one_blas_thread():
    """BLAS/LAPACK on one thread while fitting (when threadpoolctl is installed). Each fit's
    Delaunay triangulation solves one tiny LAPACK system per triangle (its barycentric
    transform, 10,000 of them for 5000 points); a multi-threaded OpenBLAS pays a thread
    hand-off for each, which took 0.4-4.5 s per fit on 2 busy cores against 0.03 s on one
    thread (docs/benchmarks.md). The results are the same: those systems are too small to split."""
    threadpoolctl = optional_import("threadpoolctl")
    if threadpoolctl is None:
        return contextlib.nullcontext()
    return threadpoolctl.threadpool_limits(limits=1, user_api="blas")


def _threshold_chain(probability, low, high, dust, face, min_voxels) -> np.ndarray:
    strong = probability >= high
    if not strong.any():
        return np.zeros(probability.shape, dtype=bool)
    labels, count = ndimage.label(probability >= low, np.ones((3, 3, 3), bool))
    seeded = np.zeros(count + 1, dtype=bool)
    seeded[np.unique(labels[strong])] = True
    seeded[0] = False
    volume = seeded[labels]
    volume = ndimage.binary_closing(volume, np.ones((3, 1, 1), dtype=bool))
    volume = _drop_small(volume, dust, 6)
    for axis in range(3):
        index = [slice(None)] * 3
        index[axis] = slice(0, face)
        volume[tuple(index)] = False
        index[axis] = slice(volume.shape[axis] - face, None)
        volume[tuple(index)] = False
    return _drop_small(volume, min_voxels, 26)


def _drop_small(volume, min_voxels, connectivity) -> np.ndarray:
    structure = np.ones((3, 3, 3), bool) if connectivity == 26 else None
    labels, count = ndimage.label(volume, structure)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[labels]


# --- 2: refitting the cubes with holes ----------------------------------------------------------

def _refit_components(volume, alternatives, rng) -> np.ndarray:
    """Each 26-connected component refitted on its own, in label order (the order the random
    draws are taken in). A component is worked on inside the cubes that reach its bounding box:
    cubes outside it hold none of its voxels and are never refitted, so the result is the same
    as on the whole volume, at the cost of the component's neighbourhood only."""
    labels, count = ndimage.label(volume, np.ones((3, 3, 3), bool))
    out = np.zeros(volume.shape, dtype=bool)
    cubes = _cubes(volume.shape)
    for index, extent in enumerate(ndimage.find_objects(labels), start=1):
        reaching = [cube for cube in cubes if all(c.start < e.stop and e.start < c.stop for c, e in zip(cube, extent))]
        region = tuple(slice(min([e.start] + [c[a].start for c in reaching]),
                             max([e.stop] + [c[a].stop for c in reaching])) for a, e in enumerate(extent))
        component = labels[region] == index
        local = [tuple(slice(c.start - r.start, c.stop - r.start) for c, r in zip(cube, region)) for cube in reaching]
        faces = tuple((r.start == 0, r.stop == n) for r, n in zip(region, volume.shape))
        out[region] |= _refit_component(component, local, faces, [a[region] for a in alternatives], rng)
    return out


def _refit_component(component, cubes, faces, alternatives, rng) -> np.ndarray:
    """``component`` refitted where ``cubes`` (its reach, in the team's order) have holes;
    ``faces``: per axis, whether the component's region starts and ends at the volume's faces."""
    from vesukit.decide._first_place_kernels import euler_6

    holed = [box for box in cubes                   # cubes of >= 20 voxels whose Euler number
             if np.count_nonzero(component[box]) >= 20     # says they have a hole
             and 1 - euler_6(np.ascontiguousarray(component[box]).view(np.uint8)) > 0]
    result = component.copy()
    for group in _groups(holed):
        box = tuple(slice(min(holed[i][a].start for i in group), max(holed[i][a].stop for i in group))
                    for a in range(3))
        _refit_box(result, box, faces, alternatives, rng)
    return result


def _cubes(shape) -> list[tuple[slice, slice, slice]]:
    starts = []
    for n in shape:
        starts.append([(s, min(s + _CUBE, n)) for s in range(0, n, _STRIDE) if min(s + _CUBE, n) - s >= _CUBE // 2])
    return [(slice(*z), slice(*y), slice(*x)) for z in starts[0] for y in starts[1] for x in starts[2]]


def _groups(boxes) -> list[list[int]]:
    """Boxes that overlap or lie within 2 voxels, grouped breadth first in order. The team's
    X test compares the first box's X end with the second's X start only (its typo: the other
    half of the test is always false); kept."""
    def near(a, b) -> bool:
        z = not (a[0].stop + 2 < b[0].start or b[0].stop + 2 < a[0].start)
        y = not (a[1].stop + 2 < b[1].start or b[1].stop + 2 < a[1].start)
        x = not (a[2].stop + 2 < b[2].start)
        return z and y and x

    n = len(boxes)
    adjacent = np.zeros((n, n), dtype=bool)
    for i in range(n):
        for j in range(i + 1, n):
            adjacent[i, j] = adjacent[j, i] = near(boxes[i], boxes[j])
    seen = np.zeros(n, dtype=bool)
    groups = []
    for i in range(n):
        if seen[i]:
            continue
        seen[i] = True
        group, queue = [], deque([i])
        while queue:
            k = queue.popleft()
            group.append(k)
            for j in range(n):
                if adjacent[k, j] and not seen[j]:
                    seen[j] = True
                    queue.append(j)
        groups.append(group)
    return groups


def _refit_box(component, box, faces, alternatives, rng) -> None:
    """Refit ``component[box]`` in place: the team's fit, its alternatives, its interior."""
    original = component[box].copy()
    if np.count_nonzero(original) < 20:
        return
    best = _fit_sheet(original, rng)
    best_dice = _dice(original, best)
    if best_dice < 0.75 or _coverage(original, best) < 0.75:
        for alternative in alternatives:
            inside = alternative[box] & original
            if not inside.any():
                continue
            labels, count = ndimage.label(inside, np.ones((3, 3, 3), bool))
            parts = []
            for index in range(1, count + 1):
                piece = labels == index
                if np.count_nonzero(piece) < 100:
                    continue
                fitted = _fit_sheet(piece, rng)
                if _dice(piece, fitted) >= 0.45 and _coverage(piece, fitted) >= 0.80:
                    parts.append(fitted)
            if not parts:
                continue
            combined = np.logical_or.reduce(parts)
            dice, coverage = _dice(original, combined), _coverage(original, combined)
            if dice > best_dice:
                best, best_dice = combined, dice
            if dice >= 0.45 and coverage >= 0.80:
                break
    interior = np.ones(original.shape, dtype=bool)
    for axis, n in enumerate(original.shape):
        width = _INTERIOR if n > 2 * _INTERIOR else max(1, n // 4)
        index = [slice(None)] * 3
        if not (box[axis].start == 0 and faces[axis][0]):            # not on the volume's face
            index[axis] = slice(0, width)
            interior[tuple(index)] = False
        if not (box[axis].stop == component.shape[axis] and faces[axis][1]):
            index[axis] = slice(n - width, None)
            interior[tuple(index)] = False
    component[box][interior] = best[interior]


def _dice(a, b) -> float:
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 0.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total


def _coverage(original, fitted) -> float:
    count = int(np.count_nonzero(original))
    return 0.0 if count == 0 else int(np.count_nonzero(original & fitted)) / count


def _fit_sheet(piece: np.ndarray, rng) -> np.ndarray:
    """The team's sheet fit of one cube's voxels (module docstring, step 2)."""
    from scipy.interpolate import griddata
    from scipy.spatial import cKDTree

    from vesukit.decide._second_place_kernels import rasterised

    coords = np.column_stack(np.nonzero(piece))
    if len(coords) < 10:
        return piece.copy()
    size = len(coords)
    resolution = 30 if size < 500 else 50 if size < 2000 else 70 if size < 5000 else 80 if size < 15000 else 100
    mean = coords.mean(axis=0)
    _, singular, basis = np.linalg.svd(coords - mean, full_matrices=False)
    plane = (coords - mean) @ np.column_stack([basis[0], basis[1]])
    height = (coords - mean) @ basis[2]
    if size > _SAMPLE:
        chosen = rng.choice(size, _SAMPLE, replace=False)
        sample_plane, sample_height = plane[chosen], height[chosen]
    else:
        sample_plane, sample_height = plane, height
    (u_low, v_low), (u_high, v_high) = plane.min(axis=0), plane.max(axis=0)
    u_pad, v_pad = (u_high - u_low) * 0.05, (v_high - v_low) * 0.05
    grid_u, grid_v = np.meshgrid(np.linspace(u_low - u_pad, u_high + u_pad, num=resolution),
                                 np.linspace(v_low - v_pad, v_high + v_pad, num=resolution), indexing="ij")
    try:
        grid = griddata(sample_plane, sample_height, (grid_u, grid_v), method="linear")
    except Exception:                    # a degenerate (flat) sample: Qhull fails, as in the team's code
        grid = griddata(sample_plane, sample_height, (grid_u, grid_v), method="nearest")
    if np.isnan(grid).any():
        gaps = np.isnan(grid)
        grid[gaps] = griddata(sample_plane, sample_height, (grid_u, grid_v), method="nearest")[gaps]
    grid = ndimage.median_filter(grid, size=3)
    if not singular[2] / singular[0] < 0.05:
        grid = ndimage.gaussian_filter(grid, sigma=1.0)
    reach = (u_high - u_low + v_high - v_low) / (2 * resolution) * 2
    distances, _ = cKDTree(plane).query(np.column_stack([grid_u.ravel(), grid_v.ravel()]), k=1)
    near = distances.reshape(resolution, resolution) <= reach
    far, count = ndimage.label(~near)             # 4-connected empty cells reaching the grid's edge
    edge = np.unique(np.concatenate([far[0], far[-1], far[:, 0], far[:, -1]]))
    grid[np.isin(far, edge[edge > 0])] = np.nan
    points = mean + grid_u[..., None] * basis[0] + grid_v[..., None] * basis[1] + grid[..., None] * basis[2]
    sheet = rasterised(np.ascontiguousarray(points), np.zeros(piece.shape, dtype=bool), 8)
    for axis in range(3):
        index = [slice(None)] * 3
        index[axis] = slice(0, 5)
        sheet[tuple(index)] = False
        index[axis] = slice(piece.shape[axis] - 5, None)
        sheet[tuple(index)] = False
    sheet = _dilated(sheet)
    extent = ndimage.find_objects(sheet.view(np.uint8))
    if extent:                        # holes lie inside the sheet's bounding box: fill only there
        sheet[extent[0]] = _fill_holes_per_slice(sheet[extent[0]])
    return sheet


def _dilated(sheet: np.ndarray) -> np.ndarray:
    """``binary_dilation(sheet, _DILATE)``, scattered from the sheet's voxels: a rasterised
    sheet is one voxel thick, so this touches its voxels' neighbours, not the whole box."""
    voxels = np.argwhere(sheet)
    out = sheet.copy()
    for offset in _DILATE_OFFSETS:
        moved = voxels + offset
        inside = np.all((moved >= 0) & (moved < sheet.shape), axis=1)
        out[tuple(moved[inside].T)] = True
    return out


def _fill_holes_per_slice(volume: np.ndarray) -> np.ndarray:
    """``binary_fill_holes`` of each Z slice, all slices in one labelling: a slice's background
    pixels not 4-connected, within the slice, to the slice's edge are holes. On a crop to the
    foreground's bounding box the same: background at the crop's edge reaches the slice's edge
    through the background around the box."""
    background, count = ndimage.label(~volume, _IN_SLICE)
    open_to_edge = np.zeros(count + 1, dtype=bool)
    for edge in (background[:, 0], background[:, -1], background[:, :, 0], background[:, :, -1]):
        open_to_edge[edge] = True
    open_to_edge[0] = False                                   # label 0: the volume's own voxels
    return ~open_to_edge[background]
