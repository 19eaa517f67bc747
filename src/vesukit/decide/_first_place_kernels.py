"""numba kernels of :mod:`vesukit.decide.first_place`, on one sheet's crop (uint8 0/1, C order).

Each kernel does what the 1st place's code does to the whole volume, on a crop that holds the
sheet with a margin wide enough that the crop's edges never change the result (the module
docstring says why). Loops visit voxels in C order, as the team's scans do, where order matters.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from vesukit.decide._kernels import all_marked

_JIT = dict(cache=True, nogil=True)


SHEET, DILATED, OUTSIDE = 1, 2, 4


@njit(**_JIT)
def closed(padded, voxels, offsets, faces):
    """``sheet | closing(sheet)``, in place on ``padded`` (flat uint8), returned as its flags.

    ``padded``: the crop framed by ``reach`` voxels marked OUTSIDE, its sheet voxels marked
    SHEET; ``voxels``: their flat indices; ``offsets``: the element's flat offsets in the padded
    frame, symmetric, centre included, ordered rim first. scipy's ``binary_closing`` with its
    default border: the dilation stops at the array's edge and the erosion counts everything
    beyond it as empty, so a voxel whose element leaves the array is not added. Work in
    proportion to the sheet's voxels times the element. ``faces``: the 6 face neighbours' flat
    offsets. A voxel whose 6 face neighbours are all sheet adds nothing to the dilation (each
    offset, shortened by one along its longest axis, stays in the ellipsoid: a neighbour
    covers it), so only the sheet's surface voxels scatter.
    """
    grown = np.empty(max(16, 4 * voxels.size), np.int64)
    count = 0
    for v in voxels:
        inside = True
        for f in faces:
            if padded[v + f] != SHEET:
                inside = False
                break
        if inside:
            continue
        for o in offsets:
            w = v + o
            if padded[w] == 0:
                padded[w] = DILATED
                if count == grown.size:
                    bigger = np.empty(2 * grown.size, np.int64)
                    bigger[:count] = grown[:count]
                    grown = bigger
                grown[count] = w
                count += 1
    added = np.zeros(count, np.bool_)
    for i in range(count):
        added[i] = all_marked(padded, grown[i], offsets, SHEET | DILATED)
    for i in range(count):
        padded[grown[i]] = SHEET if added[i] else 0
    return padded


@njit(**_JIT)
def ramps(heights, hole):
    """Linear ramps across a hole, along rows and along columns, with their weights.

    ``heights`` (int32) and ``hole`` (bool) are the hole's window: its bounding box and a ring
    of one pixel. A run of hole pixels between two non-hole pixels gets the heights on the line
    between theirs (float64 steps, stored as float32) and the weight 1 / (distance to the
    nearer end). Returns (row heights, row weights, column heights, column weights), -1 and 0
    where no ramp passes.
    """
    h, w = hole.shape
    along_rows = np.full((h, w), -1.0, np.float32)
    along_cols = np.full((h, w), -1.0, np.float32)
    row_weights = np.zeros((h, w), np.float32)
    col_weights = np.zeros((h, w), np.float32)
    for y in range(h):
        _ramp_line(heights[y, :], hole[y, :], along_rows[y, :], row_weights[y, :])
    for x in range(w):
        _ramp_line(heights[:, x], hole[:, x], along_cols[:, x], col_weights[:, x])
    return along_rows, row_weights, along_cols, col_weights


@njit(**_JIT)
def _ramp_line(heights, hole, out, weights):
    n = hole.size
    i = 0
    while i < n - 1:
        if hole[i] or not hole[i + 1]:
            i += 1
            continue
        end = i + 1
        while end < n and hole[end]:
            end += 1
        if end == n:            # a run that never closes (not in a hole's window)
            return
        start_height = float(heights[i])
        slope = (float(heights[end]) - start_height) / (end - i)
        height = start_height + slope
        for j in range(i + 1, end):
            out[j] = height
            height += slope
            weights[j] = 1.0 / min(j - i, end - j)
        i = end


@njit(**_JIT)
def fill_columns(volume, axis, us, vs, lows, highs, offset, total):
    """Set ``volume`` (a crop starting at ``offset`` along ``axis`` of a volume ``total`` long)
    along ``axis`` from ``lows`` to ``highs`` (inclusive, volume coordinates) at the in-plane
    pixels (us, vs); position 0 and positions past the end are skipped, as the team's
    insertion skips them."""
    for i in range(us.size):
        for d in range(max(lows[i], 1), min(highs[i], total - 1) + 1):
            if axis == 0:
                volume[d - offset, us[i], vs[i]] = 1
            elif axis == 1:
                volume[us[i], d - offset, vs[i]] = 1
            else:
                volume[us[i], vs[i], d - offset] = 1


@njit(**_JIT)
def plugged(sheet, table, passes):
    """The 2x2x2 plugging: ``passes`` scans, in C order, of the voxels within one voxel of the
    input sheet; a 2x2x2 block (its lowest corner at the voxel) whose pattern has an entry in
    ``table`` (added bits, 0: none) gains those voxels at once, later blocks seeing them."""
    n0, n1, n2 = sheet.shape
    out = sheet.copy()
    near = np.zeros(sheet.shape, np.bool_)
    for z in range(n0):
        for y in range(n1):
            for x in range(n2):
                if sheet[z, y, x]:
                    for a in range(max(z - 1, 0), min(z + 2, n0)):
                        for b in range(max(y - 1, 0), min(y + 2, n1)):
                            for c in range(max(x - 1, 0), min(x + 2, n2)):
                                near[a, b, c] = True
    for _ in range(passes):
        for z in range(n0 - 1):
            for y in range(n1 - 1):
                for x in range(n2 - 1):
                    if not near[z, y, x]:
                        continue
                    code = 0
                    for bit in range(8):
                        if out[z + (bit >> 2), y + ((bit >> 1) & 1), x + (bit & 1)]:
                            code |= 1 << bit
                    added = table[code]
                    if added:
                        for bit in range(8):
                            if added & (1 << bit):
                                out[z + (bit >> 2), y + ((bit >> 1) & 1), x + (bit & 1)] = 1
    return out


@njit(**_JIT)
def euler_6(volume):
    """Euler number of the 6-connected foreground (scikit-image's ``connectivity=1``): voxels
    - face-adjacent pairs + full 2x2 squares - full 2x2x2 cubes, outside the array empty."""
    n0, n1, n2 = volume.shape
    total = 0
    for z in range(n0):
        for y in range(n1):
            for x in range(n2):
                if not volume[z, y, x]:
                    continue
                total += 1
                zz, yy, xx = z + 1 < n0, y + 1 < n1, x + 1 < n2
                if zz and volume[z + 1, y, x]:
                    total -= 1
                if yy and volume[z, y + 1, x]:
                    total -= 1
                if xx and volume[z, y, x + 1]:
                    total -= 1
                if yy and xx and volume[z, y + 1, x] and volume[z, y, x + 1] and volume[z, y + 1, x + 1]:
                    total += 1
                if zz and xx and volume[z + 1, y, x] and volume[z, y, x + 1] and volume[z + 1, y, x + 1]:
                    total += 1
                if zz and yy and volume[z + 1, y, x] and volume[z, y + 1, x] and volume[z + 1, y + 1, x]:
                    total += 1
                if zz and yy and xx:
                    cube = True
                    for bit in range(1, 8):
                        if not volume[z + (bit >> 2), y + ((bit >> 1) & 1), x + (bit & 1)]:
                            cube = False
                            break
                    if cube:
                        total -= 1
    return total


@njit(**_JIT)
def paste(out, occupied, voxels, shape):
    """Write the sheet's ``voxels`` (flat indices into the volume of ``shape``) into ``out``
    where ``occupied`` is clear, then mark the 3x3x3 neighbourhood of each written voxel as
    occupied: the next sheet is blocked against the dilation of everything written so far,
    repairs included. ``out`` and ``occupied`` are flat."""
    n0, n1, n2 = shape[0], shape[1], shape[2]
    written = np.zeros(voxels.size, np.bool_)
    for i in range(voxels.size):
        if not occupied[voxels[i]]:
            out[voxels[i]] = 1
            written[i] = True
    for i in range(voxels.size):
        if not written[i]:
            continue
        v = voxels[i]
        a, b, c = v // (n1 * n2), (v // n2) % n1, v % n2
        for p in range(max(a - 1, 0), min(a + 2, n0)):
            for q in range(max(b - 1, 0), min(b + 2, n1)):
                for r in range(max(c - 1, 0), min(c + 2, n2)):
                    occupied[(p * n1 + q) * n2 + r] = True
