"""The 1st place's post-processing, as its code does it, voxel for voxel: the step ``first_place``.

Source: the team's final notebook as reproduced in jermmy19998/Vesuvius-Challenge-1st-reproduce,
``infer.py``, ``_postprocess_cpu`` and what it calls (docs/winners.md gives the commit). This is
an independent implementation of what that code does, checked against its output on synthetic
maps (tests/test_decide_winners.py); the one thing taken over as it is, is the fixed 2x2x2 plug
table, which is data.

What the team's code does, in order:

1. zero ``border_width`` voxels at every face;
2. drop 6-connected components under ``min_voxels`` (scikit-image's default connectivity);
3. label 26-connected sheets and repair the first ``max_sheets`` in label order (scan order of
   their first voxel, not size), each alone:

   - the projection axis is the one whose projection covers the most pixels (first on ties);
   - closing with an ellipsoid of semi-axes ``(close_perp - 1) // 2 + 0.25`` along that axis and
     ``(close_par - 1) // 2 + 0.25`` across it, in a ``close_par`` cube (7 and 7: a ball of
     radius 3.25), and only ever adding voxels;
   - holes of the sheet's projection (8-connected background that does not reach the border of
     the projection cropped by ``border_width``) whose bounding box is under ``max_patch``
     squared are patched: one height per column (the first voxel of the closed sheet along the
     axis, 0 where the column is empty), linear ramps across the hole along rows and along
     columns weighted by 1 / distance to the nearer end, rounded, and each hole pixel filled
     from the min to the max of the 3x3 neighbourhood's heights; then closed again;
   - 2x2x2 plugging: two scans in C order over the voxels within one voxel of the sheet, each
     block whose pattern is in the plug table set to the table's pattern at once;
   - Euler guard (6-connected, as scikit-image's ``connectivity=1``): when the patched sheet
     still has holes (1 - Euler > 0) and more than the unpatched sheet plugged the same way,
     the unpatched one is kept;
   - pasted only where the 3x3x3 dilation of everything already written (repairs included) is
     clear, so no two sheets touch;

4. fill enclosed cavities (background 6-connected, not reaching a face) and zero the border again.

Speed: the team's code works on the whole volume for each sheet; here each sheet is cut out with
a margin of ``3 * reach + 3`` voxels (``reach`` the element's half-width) across its projection
axis, and further along it where a patch column reaches: enough that the crop's edges change
nothing (a closing only looks ``2 * reach`` beyond the sheet, plugging 2), and where a crop
meets a face the face is the team's face. The loops are numba kernels
(:mod:`vesukit.decide._first_place_kernels`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from vesukit._optional import optional_import
from vesukit.decide.components import clear_faces, component_sizes, keep_labels, label_components
from vesukit.errors import VesukitError

# The team's 2x2x2 plug table: block patterns (bit 4z + 2y + x of the block's lowest corner)
# grouped by the voxels the table adds to them. Every other pattern is left alone.
PLUG_ADDS: dict[int, tuple[int, ...]] = {
    1: (6, 18, 20, 22, 26, 28, 30, 38, 52, 54, 62, 70, 82, 86, 94, 118, 126, 222, 246),
    2: (9, 25, 33, 37, 40, 41, 44, 45, 56, 57, 61, 125, 137, 161, 169, 173, 185),
    3: (24, 36, 60, 124),
    4: (65, 67, 72, 73, 74, 75, 88, 89, 91, 123, 193, 201, 203, 217, 219, 249),
    5: (66, 90, 122, 218),
    6: (121, 233),
    8: (130, 131, 132, 133, 134, 135, 164, 166, 167, 194, 198, 199, 215, 230),
    9: (214,),
    10: (129, 165),
    12: (195,),
    16: (96, 97, 98, 99, 100, 101, 103, 225, 227, 229, 231, 235, 237),
    17: (102,),
    32: (144, 145, 146, 147, 152, 154, 155, 159, 210, 211),
    33: (158,),
    34: (153,),
    64: (148, 149, 156, 157, 180, 181, 183, 188, 189, 190),
    65: (182,),
    72: (151,),
    73: (150,),
    128: (104, 106, 108, 110, 111, 120),
    144: (107, 109),
    146: (105,),
}


def plug_table() -> np.ndarray:
    """256 entries: the voxels (bits) the plug table adds to each 2x2x2 pattern, 0 for none."""
    table = np.zeros(256, dtype=np.uint8)
    for added, patterns in PLUG_ADDS.items():
        table[list(patterns)] = added
    return table


def closing_offsets(close_par: int, close_perp: int, axis: int) -> np.ndarray:
    """The closing element's offsets (k, 3): an ellipsoid in a ``close_par`` cube, semi-axis
    ``(close_perp - 1) // 2 + 0.25`` along ``axis`` and ``(close_par - 1) // 2 + 0.25`` across."""
    reach = (close_par - 1) // 2
    steps = np.arange(-reach, reach + 1)
    grid = np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), axis=-1).reshape(-1, 3)
    radii = np.full(3, (close_par - 1) // 2 + 0.25)
    radii[axis] = (close_perp - 1) // 2 + 0.25
    inside = (((grid / radii) ** 2).sum(axis=1)) <= 1
    return np.ascontiguousarray(grid[inside], dtype=np.int64)


class FirstPlaceError(VesukitError):
    """Bad parameters for the ``first_place`` step, or numba missing."""


def first_place(mask: np.ndarray, maps=None, border_width: int = 3, min_voxels: int = 20000,
                max_sheets: int = 40, max_patch: int = 64, close_par: int = 7,
                close_perp: int = 7) -> np.ndarray:
    """The 1st place's post-processing (module docstring); the defaults are its code's."""
    kernels = _kernels()
    _check(border_width, min_voxels, max_sheets, max_patch, close_par, close_perp)
    volume = np.asarray(mask) != 0
    clear_faces(volume, int(border_width))
    volume = _drop_small_6(volume, int(min_voxels))
    labels, count = ndimage.label(volume, structure=np.ones((3, 3, 3), dtype=bool))
    out = np.zeros(volume.shape, dtype=np.uint8)
    occupied = np.zeros(volume.shape, dtype=bool)
    table = plug_table()
    boxes = ndimage.find_objects(labels, max_label=min(count, int(max_sheets)))
    for index, box in enumerate(boxes, start=1):
        repaired, origin = _repair_sheet(labels, index, box, int(max_patch), int(close_par),
                                         int(close_perp), table, kernels)
        local = np.nonzero(repaired)
        voxels = np.ravel_multi_index(tuple(u + o for u, o in zip(local, origin)), volume.shape)
        kernels.paste(out.reshape(-1), occupied.reshape(-1), voxels, np.array(volume.shape))
    out = _fill_enclosed(out)
    clear_faces(out, int(border_width))
    return out


def _repair_sheet(labels, index, box, max_patch, close_par, close_perp, table, kernels):
    """One sheet, repaired on its crop: (the repaired crop, the crop's origin in the volume)."""
    shape = labels.shape
    margin = 3 * ((close_par - 1) // 2) + 3
    low = [max(s.start - margin, 0) for s in box]
    high = [min(s.stop + margin, n) for s, n in zip(box, shape)]
    sheet = (labels[tuple(slice(a, b) for a, b in zip(low, high))] == index).view(np.uint8)
    areas = [np.count_nonzero(sheet.any(axis=a)) for a in range(3)]
    axis = int(np.argmax(areas))
    offsets = closing_offsets(close_par, close_perp, axis)
    closed = _closed(sheet, offsets, kernels)

    covered = closed.any(axis=axis)
    heights = np.where(covered, np.argmax(closed, axis=axis) + low[axis], 0).astype(np.int32)
    us, vs, lows, highs = _hole_patches(sheet.any(axis=axis), heights, max_patch, kernels)
    patched = closed
    if us.size:
        # a patch column may reach beyond the crop along the axis (down to 1 where a ring
        # column is empty): widen the crop there first
        need_low = max(int(lows.min()) - margin, 0)
        need_high = min(int(highs.max()) + 1 + margin, shape[axis])
        if need_low < low[axis] or need_high > high[axis]:
            widen = [(0, 0)] * 3
            widen[axis] = (max(low[axis] - need_low, 0), max(need_high - high[axis], 0))
            closed = np.pad(closed, widen)
            low[axis] -= widen[axis][0]
            high[axis] += widen[axis][1]
        patched = closed.copy()
        kernels.fill_columns(patched, axis, us, vs, lows, highs, low[axis], shape[axis])
        patched = _closed(patched, offsets, kernels)
    fixed = kernels.plugged(patched, table, 2)
    holes_after = 1 - kernels.euler_6(fixed)
    if holes_after > 0:
        unpatched = kernels.plugged(closed, table, 2)
        if holes_after > 1 - kernels.euler_6(unpatched):
            fixed = unpatched
    return fixed, low


def _closed(sheet: np.ndarray, offsets: np.ndarray, kernels) -> np.ndarray:
    """``sheet | closing(sheet)`` as scipy's ``binary_closing`` (see the kernel), uint8."""
    reach = int(np.abs(offsets).max())
    padded = np.pad(sheet.astype(np.uint8), reach, constant_values=kernels.OUTSIDE)
    strides = np.array([padded.shape[1] * padded.shape[2], padded.shape[2], 1])
    rim_first = offsets[np.argsort(-(offsets ** 2).sum(axis=1), kind="stable")]
    flat = padded.reshape(-1)
    faces = np.concatenate([strides, -strides])
    kernels.closed(flat, np.flatnonzero(flat == kernels.SHEET), rim_first @ strides, faces)
    inner = tuple(slice(reach, reach + n) for n in sheet.shape)
    return np.ascontiguousarray(padded[inner] == kernels.SHEET).view(np.uint8)


def _hole_patches(projection: np.ndarray, heights: np.ndarray, max_patch: int, kernels):
    """The patch columns of every small hole of ``projection``: (us, vs, lows, highs), the
    in-plane pixels (crop coordinates) and the inclusive range of heights to fill there."""
    holes, count = ndimage.label(~projection, structure=np.ones((3, 3), dtype=bool))
    pieces: list[tuple[np.ndarray, ...]] = []
    rows, cols = projection.shape
    for label, box in enumerate(ndimage.find_objects(holes), start=1):
        if box is None:
            continue
        r0, r1, c0, c1 = box[0].start, box[0].stop, box[1].start, box[1].stop
        if r0 == 0 or c0 == 0 or r1 == rows or c1 == cols:      # open to the outside: no hole
            continue
        if (r1 - r0) * (c1 - c0) >= max_patch ** 2:
            continue
        window = (slice(r0 - 1, r1 + 1), slice(c0 - 1, c1 + 1))
        hole = holes[window] == label
        ring_heights = heights[window]
        along_rows, row_weights, along_cols, col_weights = kernels.ramps(ring_heights, hole)
        blended = np.round((row_weights * along_rows + col_weights * along_cols)
                           / (row_weights + col_weights + np.float32(1e-8))).astype(np.uint16)
        blended[~hole] = ring_heights[~hole]
        lowest = ndimage.minimum_filter(blended, size=3, mode="nearest")[hole].astype(np.int64)
        highest = ndimage.maximum_filter(blended, size=3, mode="nearest")[hole].astype(np.int64)
        u, v = np.nonzero(hole)
        pieces.append((u + r0 - 1, v + c0 - 1, lowest, highest))
    if not pieces:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty
    return tuple(np.concatenate([p[i] for p in pieces]).astype(np.int64) for i in range(4))


def _drop_small_6(volume: np.ndarray, min_voxels: int) -> np.ndarray:
    """Keep the 6-connected components of at least ``min_voxels`` voxels."""
    labels, count = label_components(volume, 6)
    return keep_labels(labels, component_sizes(labels, count) >= min_voxels).view(bool)


def _fill_enclosed(volume: np.ndarray) -> np.ndarray:
    """``binary_fill_holes``: background (6-connected) that reaches no face becomes foreground."""
    background, count = ndimage.label(volume == 0)
    outside = np.zeros(count + 1, dtype=bool)
    for axis in range(3):
        for end in (0, -1):
            outside[np.unique(np.take(background, end, axis=axis))] = True
    outside[0] = True
    filled = (volume != 0) | ~outside[background]
    return filled.astype(np.uint8)


def _check(border_width, min_voxels, max_sheets, max_patch, close_par, close_perp) -> None:
    for name, value, least in (("border_width", border_width, 0), ("min_voxels", min_voxels, 0),
                               ("max_sheets", max_sheets, 1), ("max_patch", max_patch, 1),
                               ("close_par", close_par, 1), ("close_perp", close_perp, 1)):
        if int(value) != value or value < least:
            raise FirstPlaceError(f"postprocess step 'first_place': {name} must be an integer >= {least}, "
                                  f"got {value!r}.")
    if int(close_par) % 2 == 0:
        raise FirstPlaceError(f"postprocess step 'first_place': close_par must be odd (the element's cube "
                              f"is close_par wide and centred), got {close_par}.")


def _kernels():
    if optional_import("numba") is None:
        raise FirstPlaceError("postprocess step 'first_place' needs numba (pip install 'vesukit[post]').")
    from vesukit.decide import _first_place_kernels

    return _first_place_kernels
