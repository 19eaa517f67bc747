"""Per-sheet repairs after the 1st place's description: each sheet alone, pasted without merging.

vesukit's own steps, written before the team's code was read; they differ from it (docs/winners.md).
The team's chain itself is the step ``first_place`` (:mod:`vesukit.decide.first_place`).

Each 26-connected component (a "sheet") is cut out with a margin, repaired on its own, and
pasted back only where the output is empty within a 3x3x3 neighbourhood of the sheets placed
before it (largest first), so a repair can add voxels but never join two sheets. Steps:

- ``sheet_close``: closing with an ellipsoid flat along the sheet's main projection axis;
- ``patch_holes``: the sheet's height map along that axis, holes in it interpolated;
- ``plug_holes``: 1-voxel holes plugged with a 2x2x2 lookup, kept only if the Euler number
  says the sheet has fewer holes.

Two forms with the same result: with numba (:mod:`vesukit.decide._kernels`) each sheet is
repaired on its own voxels and their neighbourhood, a cost in proportion to the sheets' voxels;
without it, with numpy/scipy on each sheet's bounding box (a sheet spanning the volume makes
that the whole volume, once per sheet). tests/test_decide_sheets.py checks they agree.

Source: 1st place of the Vesuvius Surface Detection competition (docs/winners.md), reimplemented
from the description; parameters default to the published ones for 320^3 volumes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from vesukit._optional import optional_import
from vesukit.decide.components import (
    EULER_BLOCK_TABLE,
    component_boxes,
    component_sizes,
    euler_number,
    grow_box,
    label_components,
    main_axis,
)

_CUBE = np.ones((3, 3, 3), dtype=bool)


def kernels():
    """The numba kernels (:mod:`vesukit.decide._kernels`), or None without numba."""
    if optional_import("numba") is None:
        return None
    from vesukit.decide import _kernels

    return _kernels


def per_sheet(mask: np.ndarray, repair: Callable[[np.ndarray], np.ndarray], margin: int,
              max_sheets: int = 0) -> np.ndarray:
    """Apply ``repair`` to each sheet's crop (with ``margin``) and paste without merging.

    Sheets are handled largest first; ``max_sheets`` > 0 repairs only that many (the rest are
    pasted unchanged, as the 1st place handled at most 40). A repaired voxel is pasted only if
    no voxel of another sheet lies within its 3x3x3 neighbourhood.
    """
    mask = np.asarray(mask, dtype=np.uint8)
    labels, count = label_components(mask)
    if count == 0:
        return np.zeros_like(mask)
    sizes = component_sizes(labels, count)
    order = np.argsort(-sizes[1:], kind="stable") + 1
    boxes = component_boxes(labels, count)
    out = np.zeros_like(mask)
    for rank, index in enumerate(order):
        box = grow_box(boxes[index - 1], margin, mask.shape)
        sheet = labels[box] == index
        if max_sheets and rank >= max_sheets:
            out[box] |= sheet
            continue
        repaired = repair(sheet) | sheet
        added = repaired & ~sheet
        if added.any():
            # other sheets (placed or not) within one voxel block the added voxel
            others = ndimage.binary_dilation((labels[box] != 0) & ~sheet, _CUBE)
            added &= ~others
        out[box] |= (sheet | added).astype(np.uint8)
    return out


class SparseSheet:
    """One sheet as its voxels, for the numba form of the per-sheet repairs.

    ``voxels``: the sheet's flat indices in the volume. The repairs return the flat indices of
    the voxels they add; ``scratch`` is the step's padded scratch volume (see
    :mod:`vesukit.decide._kernels`), shared by every sheet.
    """

    def __init__(self, voxels: np.ndarray, shape: tuple[int, ...], scratch: np.ndarray, pad: int):
        self.voxels, self.shape, self.scratch, self.pad = voxels, shape, scratch, pad
        self.coords = kernels().split_index(voxels, np.array(shape))
        self.padded_shape = tuple(n + 2 * pad for n in shape)

    def in_scratch(self) -> np.ndarray:
        return kernels().reframe(self.voxels, np.array(self.shape), self.pad)

    def from_scratch(self, flat: np.ndarray) -> np.ndarray:
        return kernels().reframe(flat, np.array(self.padded_shape), -self.pad)

    def main_axis(self, coords=None, shape=None) -> int:
        coords = self.coords if coords is None else coords
        areas = kernels().projected_areas(*coords, np.array(shape or self.shape))
        return int(np.argmax(areas))

    def close_added(self, radius: float, thin: float) -> np.ndarray:
        radii = [float(radius)] * 3
        radii[self.main_axis()] = float(thin)
        element = ellipsoid(tuple(radii))
        strides = np.array([self.padded_shape[1] * self.padded_shape[2], self.padded_shape[2], 1])
        steps = np.argwhere(element) - np.array(element.shape) // 2
        offsets = _fail_first(steps, radii) @ strides
        added = kernels().close_added(self.in_scratch(), offsets, self.scratch)
        return self.from_scratch(added)

    def plug_added(self, passes: int) -> np.ndarray:
        s0, s1 = self.padded_shape[1] * self.padded_shape[2], self.padded_shape[2]
        corners = np.array([z * s0 + y * s1 + x for z, y, x in _OFFSETS], dtype=np.int64)
        added = kernels().plug_added(self.in_scratch(), int(passes), PLUG_TABLE, corners,
                                     EULER_BLOCK_TABLE, self.scratch, s0, s1)
        return self.from_scratch(added)

    def patch_added(self, max_area: int) -> np.ndarray:
        """:func:`height_patch` on the sheet's bounding box grown by 1, from its voxels."""
        start = [max(int(c.min()) - 1, 0) for c in self.coords]
        stop = [min(int(c.max()) + 2, n) for c, n in zip(self.coords, self.shape)]
        crop = tuple(b - a for a, b in zip(start, stop))
        local = [c - a for c, a in zip(self.coords, start)]
        axis = self.main_axis(local, crop)
        plane_axes = [a for a in range(3) if a != axis]
        covered, low, high = kernels().column_heights(
            local[axis], local[plane_axes[0]], local[plane_axes[1]],
            (crop[plane_axes[0]], crop[plane_axes[1]]), crop[axis])
        patch = patch_columns(covered, low, high, max_area)
        if patch is None:
            return self.voxels[:0]
        target, bottom, top = patch
        # every target column (u, v) gets the depths from its bottom to its top (in the crop)
        u, v = np.nonzero(target)
        first = np.maximum(bottom[u, v], 0)
        length = np.maximum(np.minimum(top[u, v], crop[axis] - 1) - first + 1, 0)
        column = np.repeat(np.arange(u.size), length)
        depth = first[column] + np.arange(column.size) - np.repeat(np.cumsum(length) - length, length)
        coords = [None] * 3
        coords[axis] = depth + start[axis]
        coords[plane_axes[0]] = u[column] + start[plane_axes[0]]
        coords[plane_axes[1]] = v[column] + start[plane_axes[1]]
        return np.ravel_multi_index(tuple(coords), self.shape)


def padded_scratch(shape: tuple[int, ...], pad: int) -> np.ndarray:
    """The kernels' scratch: the volume, zero, in a frame of ``pad`` voxels marked OUTSIDE (flat)."""
    scratch = np.full([n + 2 * pad for n in shape], kernels().OUTSIDE, dtype=np.uint8)
    scratch[tuple(slice(pad, -pad) for _ in shape)] = 0
    return scratch.reshape(-1)


def _fail_first(steps: np.ndarray, radii: list[float]) -> np.ndarray:
    """The element's offsets in the order that ends the erosion test of a voxel the closing
    does not add soonest: the six tips along the axes first (a voxel beside or above a sheet
    fails at the tip pointing away from it), then the rest from the element's rim inwards."""
    rim = ((steps / np.array(radii)) ** 2).sum(axis=1)
    on_axis = np.count_nonzero(steps, axis=1) == 1
    tip = on_axis & (np.abs(steps) == np.abs(steps).max(axis=0)).any(axis=1)
    return steps[np.lexsort((-rim, ~tip))]


def per_sheet_sparse(mask: np.ndarray, added_voxels: Callable[[SparseSheet], np.ndarray], pad: int,
                     max_sheets: int = 0) -> np.ndarray:
    """:func:`per_sheet` with numba on each sheet's own voxels; ``added_voxels`` gives the flat
    indices a repair adds to a sheet. Same result: largest first, at most ``max_sheets``
    repaired, an added voxel pasted only if no voxel of another sheet lies in its 3x3x3
    neighbourhood."""
    mask = np.asarray(mask, dtype=np.uint8)
    labels, count = label_components(mask)
    if count == 0:
        return np.zeros_like(mask)
    voxels = np.flatnonzero(mask)                     # a few % of the volume: count those only
    owner = labels.ravel()[voxels].astype(np.intp)
    sizes = np.bincount(owner, minlength=count + 1)
    order = np.argsort(-sizes[1:], kind="stable") + 1
    if max_sheets:
        order = order[:max_sheets]
    by_label = kernels().group_by_label(owner, sizes)
    ends = np.cumsum(sizes)
    scratch = padded_scratch(mask.shape, pad)
    out = (mask != 0).view(np.uint8)
    flat_out = out.reshape(-1)
    for index in order:
        own = voxels[by_label[ends[index] - sizes[index]:ends[index]]]  # sorted: the sort is stable
        added = added_voxels(SparseSheet(own, mask.shape, scratch, pad))
        if added.size:
            free = kernels().unblocked(*kernels().split_index(added, np.array(mask.shape)), labels, index)
            flat_out[added[free]] = 1
    return out


def ellipsoid(radii: tuple[float, float, float]) -> np.ndarray:
    """Boolean ellipsoid with semi-axes ``radii`` (voxels), in a box of 2 * ceil(r) + 1."""
    half = [int(np.ceil(r)) for r in radii]
    grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    return sum((g / max(r, 1e-9)) ** 2 for g, r in zip(grids, radii)) <= 1.0


def oriented_close(sheet: np.ndarray, radius: float, thin: float) -> np.ndarray:
    """Closing with an ellipsoid of semi-axes ``thin`` along the main axis, ``radius`` across.

    Equal to ``binary_erosion(binary_dilation(padded, E), E)`` on the zero-padded crop, but
    sparse: a sheet fills a few % of its box, so the dilation scatters the ellipsoid's offsets
    from the sheet's voxels only, and the erosion tests only the voxels the closing could add
    (dilated, not in the sheet). 5-10x less work than scipy's dense passes over the box.
    """
    axis = main_axis(sheet)
    radii = [float(radius)] * 3
    radii[axis] = float(thin)
    structure = ellipsoid(tuple(radii))
    reach = int(np.ceil(max(radius, thin)))
    pad = 2 * reach + 1  # every offset of every dilated voxel stays inside: no wrap-around
    padded = np.pad(np.asarray(sheet, dtype=bool), pad)
    strides = np.array([padded.shape[1] * padded.shape[2], padded.shape[2], 1])
    offsets = (np.argwhere(structure) - np.array(structure.shape) // 2) @ strides
    flat = padded.ravel()
    voxels = np.flatnonzero(flat)
    dilated = np.zeros_like(flat)
    for offset in offsets:
        dilated[voxels + offset] = True
    candidates = np.flatnonzero(dilated & ~flat)
    keep = np.ones(candidates.size, dtype=bool)
    for offset in offsets:
        keep &= dilated[candidates + offset]
    closed = flat.copy()
    closed[candidates[keep]] = True
    closed = closed.reshape(padded.shape)
    return closed[tuple(slice(pad, -pad) for _ in range(3))]


def sheet_close(mask: np.ndarray, maps=None, radius: float = 3, thin: float = 1.5,
                max_sheets: int = 40) -> np.ndarray:
    """Per-sheet closing with an ellipsoid oriented to the sheet's main axis (1st place).

    The 1st place closed each sheet with an ellipsoid in a 7x7x7 box oriented to its main
    projection axis: here semi-axes ``radius`` across the sheet's plane and ``thin`` along its
    normal (3 and 1.5: 7x7 across, 3 layers deep), so tears within the sheet close while the
    sheet does not grow toward its neighbours. With ``thin`` < 1 the element is a flat disc.
    """
    if kernels() is not None:
        reach = int(np.ceil(max(radius, thin)))
        return per_sheet_sparse(mask, lambda sheet: sheet.close_added(radius, thin), 2 * reach + 1,
                                int(max_sheets))
    return per_sheet(mask, lambda s: oriented_close(s, radius, thin),
                     int(np.ceil(radius)) + 1, int(max_sheets))


def height_patch(sheet: np.ndarray, max_area: int) -> np.ndarray:
    """The sheet plus its height-map holes of at most ``max_area`` pixels, filled.

    Along the main axis, each column the sheet crosses has a top and bottom height. Holes are
    8-connected groups of empty columns that do not touch the crop's edge; each hole column
    gets heights interpolated along its row and its column, each side weighted by the inverse
    distance to the hole's edge, and is filled between the min and max height of its 3x3
    neighbourhood (so the patch joins the surrounding sheet without a step).
    """
    axis = main_axis(sheet)
    along = np.moveaxis(sheet, axis, 0)
    covered = along.any(axis=0)
    depth = along.shape[0]
    z = np.arange(depth)[:, None, None]
    low = np.where(along, z, depth).min(axis=0)
    high = np.where(along, z, -1).max(axis=0)
    patch = patch_columns(covered, low, high, max_area)
    if patch is None:
        return sheet
    target, bottom, top = patch
    add = target[None] & (z >= bottom[None]) & (z <= top[None])
    return np.moveaxis(along | add, 0, axis)


def patch_columns(covered: np.ndarray, low: np.ndarray, high: np.ndarray,
                  max_area: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The hole columns to fill and each one's lowest and highest depth (see
    :func:`height_patch`), from the sheet's height map: ``covered`` columns and the ``low``
    and ``high`` depth of each (``depth`` and -1 where not covered). None: nothing to fill."""
    holes, count = ndimage.label(~covered, structure=np.ones((3, 3), bool))
    if count == 0:
        return None
    sizes = np.bincount(holes.ravel(), minlength=count + 1)
    edge = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
    fill = sizes <= max_area
    fill[0] = False
    fill[edge] = False
    target = fill[holes]
    if not target.any():
        return None
    low_i = _interpolate(low.astype(np.float64), covered, target)
    high_i = _interpolate(high.astype(np.float64), covered, target)
    known = covered | target
    lo = np.where(known, low_i, np.inf)
    hi = np.where(known, high_i, -np.inf)
    lo3 = ndimage.minimum_filter(lo, size=3, mode="constant", cval=np.inf)
    hi3 = ndimage.maximum_filter(hi, size=3, mode="constant", cval=-np.inf)
    bottom = np.floor(np.where(target, lo3, 0)).astype(np.int64)
    top = np.ceil(np.where(target, hi3, -1)).astype(np.int64)
    return target, bottom, top


def _interpolate(height: np.ndarray, covered: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Heights inside ``target`` from the nearest covered pixels along rows and columns.

    Each direction's estimate is the inverse-distance mix of its two sides; the row and
    column estimates are mixed by the inverse of their distance to the hole's edge.
    """
    estimates, weights = [], []
    for axis in (0, 1):
        h = np.moveaxis(height, axis, 1)
        c = np.moveaxis(covered, axis, 1)
        index = np.arange(h.shape[1])[None, :].repeat(h.shape[0], 0)
        left = np.maximum.accumulate(np.where(c, index, -1), axis=1)
        right = np.minimum.accumulate(np.where(c, index, h.shape[1])[:, ::-1], axis=1)[:, ::-1]
        valid = (left >= 0) & (right < h.shape[1])
        rows = np.arange(h.shape[0])[:, None]
        hl = h[rows, np.clip(left, 0, h.shape[1] - 1)]
        hr = h[rows, np.clip(right, 0, h.shape[1] - 1)]
        dl = np.maximum(index - left, 1).astype(np.float64)
        dr = np.maximum(right - index, 1).astype(np.float64)
        value = (hl / dl + hr / dr) / (1 / dl + 1 / dr)
        weight = np.where(valid, 1.0 / np.minimum(dl, dr), 0.0)
        estimates.append(np.moveaxis(np.where(valid, value, 0.0), 1, axis))
        weights.append(np.moveaxis(weight, 1, axis))
    total = weights[0] + weights[1]
    mixed = (estimates[0] * weights[0] + estimates[1] * weights[1]) / np.maximum(total, 1e-12)
    return np.where(target & (total > 0), mixed, height)


def patch_holes(mask: np.ndarray, maps=None, max_area: int = 4096,
                max_sheets: int = 40) -> np.ndarray:
    """Per-sheet height-map hole patching (1st place: holes below 64^2 pixels).

    See :func:`height_patch`. A hole through a sheet connects both sides of the background,
    so ``fill_holes`` cannot fill it; this step can, for holes up to ``max_area`` pixels of
    the sheet's projection.
    """
    if kernels() is not None:
        return per_sheet_sparse(mask, lambda sheet: sheet.patch_added(int(max_area)), 1,
                                int(max_sheets))
    return per_sheet(mask, lambda s: height_patch(s, int(max_area)), 1, int(max_sheets))


def _plug_table() -> np.ndarray:
    """256 entries: for each 2x2x2 pattern (bit ``4z + 2y + x``), the bits to set.

    A pattern with exactly three voxels on one face of the cube and none on the opposite face
    is a corner of a 1-voxel hole in a sheet lying on that face: the fourth voxel is set.
    """
    table = np.zeros(256, dtype=np.uint8)
    bit = {(z, y, x): 1 << (4 * z + 2 * y + x) for z in (0, 1) for y in (0, 1) for x in (0, 1)}
    faces = []
    for axis in range(3):
        for side in (0, 1):
            face = [k for k in bit if k[axis] == side]
            opposite = [k for k in bit if k[axis] != side]
            faces.append((face, opposite))
    for pattern in range(256):
        for face, opposite in faces:
            on = [k for k in face if pattern & bit[k]]
            if len(on) == 3 and not any(pattern & bit[k] for k in opposite):
                missing = next(k for k in face if not pattern & bit[k])
                table[pattern] |= bit[missing]
    return table


PLUG_TABLE = _plug_table()
_OFFSETS = [(z, y, x) for z in (0, 1) for y in (0, 1) for x in (0, 1)]


def plug_pass(sheet: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """One pass of the 2x2x2 lookup over every cube of the crop, limited to ``allowed``."""
    m = sheet.astype(np.uint8)
    pattern = np.zeros([n - 1 for n in m.shape], dtype=np.uint8)
    for z, y, x in _OFFSETS:
        corner = m[z:z + m.shape[0] - 1, y:y + m.shape[1] - 1, x:x + m.shape[2] - 1]
        pattern |= corner << (4 * z + 2 * y + x)
    fill = PLUG_TABLE[pattern]
    out = sheet.copy()
    if not fill.any():
        return out
    for z, y, x in _OFFSETS:
        bit = (fill >> (4 * z + 2 * y + x)) & 1
        out[z:z + m.shape[0] - 1, y:y + m.shape[1] - 1, x:x + m.shape[2] - 1] |= bit.astype(bool)
    return out & (allowed | sheet)


def plug_sheet(sheet: np.ndarray, passes: int) -> np.ndarray:
    """Plug 1-voxel holes (``passes`` passes inside the sheet's 3x3x3 dilation); the result is
    kept only if its Euler number is higher, i.e. it has fewer holes than the sheet."""
    allowed = ndimage.binary_dilation(sheet, _CUBE)
    plugged = sheet
    for _ in range(int(passes)):
        plugged = plug_pass(plugged, allowed)
    if euler_number(plugged) > euler_number(sheet):
        return plugged
    return sheet


def plug_holes(mask: np.ndarray, maps=None, passes: int = 2, max_sheets: int = 40) -> np.ndarray:
    """Per-sheet 1-voxel hole plugging with a 2x2x2 lookup and an Euler guard (1st place)."""
    if kernels() is not None:
        return per_sheet_sparse(mask, lambda sheet: sheet.plug_added(int(passes)), 1,
                                int(max_sheets))
    return per_sheet(mask, lambda s: plug_sheet(s, passes), 2, int(max_sheets))
