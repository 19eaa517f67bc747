"""numba kernels of the per-sheet steps and of tunnel filling, on a sheet's own voxels.

Imported only through :func:`vesukit.decide.sheets.kernels` (``None`` without numba: the steps
then run their numpy form on each sheet's bounding box, with the same result).

The sheet kernels work on flat indices into a *scratch* volume: uint8, the volume with a frame
of ``pad`` voxels marked ``OUTSIDE`` around it, so every neighbour of a voxel is ``v + offset``
with no bounds test. A kernel marks the voxels it visits with its own bits and clears them
before it returns: the scratch is all zero inside the volume on entry and on exit, so one
scratch serves every sheet of a step. The work is in proportion to the sheet's voxels (times
the structuring element), not to its bounding box, which for a sheet spanning the volume is
the whole volume.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_JIT = dict(cache=True, nogil=True)

OUTSIDE = 128  # the scratch's frame: not part of the volume


@njit(**_JIT)
def close_added(voxels, offsets, scratch):
    """Voxels the closing of the sheet ``voxels`` with the element ``offsets`` adds.

    ``offsets``: the flat offsets of a symmetric structuring element (centre included). A voxel
    is added when it lies in the dilation, not in the sheet, and every offset of it lies in the
    dilation too (the erosion). The dilation may reach into the frame (the volume is closed as
    if zero-padded); only voxels inside the volume are returned. Needs ``pad`` >= 2 * reach + 1.
    One pass over (voxel, offset) pairs finds the dilation's new voxels; the erosion then tests
    only those, and ends a voxel's test at the first offset outside the dilation.
    """
    sheet, dilated = 1, 2
    for v in voxels:
        scratch[v] = scratch[v] | sheet
    grown = np.empty(4 * voxels.size + 16, np.int64)
    count = 0
    chunk = 1024  # room is made before each chunk: no reallocation inside the hot loop
    for first in range(0, voxels.size, chunk):
        last = min(first + chunk, voxels.size)
        grown = _room(grown, count, (last - first) * offsets.size)
        for v in voxels[first:last]:
            for o in offsets:
                w = v + o
                if scratch[w] & (sheet | dilated) == 0:
                    scratch[w] = scratch[w] | dilated
                    grown[count] = w
                    count += 1
    added = np.zeros(count, np.bool_)
    for i in range(count):
        c = grown[i]
        if scratch[c] & OUTSIDE:
            continue
        added[i] = all_marked(scratch, c, offsets, sheet | dilated)
    for v in voxels:
        scratch[v] = scratch[v] & OUTSIDE
    for i in range(count):
        scratch[grown[i]] = scratch[grown[i]] & OUTSIDE
    return grown[:count][added]


@njit(**_JIT)
def all_marked(scratch, c, offsets, bits):
    """Whether every ``c + offset`` carries one of ``bits`` (the erosion test of a closing)."""
    for o in offsets:
        if scratch[c + o] & bits == 0:
            return False
    return True


@njit(**_JIT)
def _room(buffer, size, more):
    """``buffer`` (its first ``size`` entries used), or a copy with room for ``more`` entries."""
    if size + more <= buffer.size:
        return buffer
    bigger = np.empty(max(2 * buffer.size, size + more), buffer.dtype)
    bigger[:size] = buffer[:size]
    return bigger


@njit(**_JIT)
def _pattern(scratch, origin, corners, bit):
    """The 8-bit pattern (bit 4z + 2y + x) of the 2x2x2 block at ``origin``; -1 if any of its
    voxels lies outside the volume."""
    pattern = 0
    for k in range(8):
        s = scratch[origin + corners[k]]
        if s & OUTSIDE:
            return -1
        if s & bit:
            pattern |= 1 << k
    return pattern


@njit(**_JIT)
def _near(scratch, w, bit, s0, s1):
    """Whether a voxel of the 3x3x3 neighbourhood of ``w`` carries ``bit``."""
    for dz in (-s0, 0, s0):
        for dy in (-s1, 0, s1):
            for dx in (-1, 0, 1):
                if scratch[w + dz + dy + dx] & bit:
                    return True
    return False


@njit(**_JIT)
def euler_gain(scratch, w, bit, corners, euler_table):
    """Change of the Euler number of the voxels carrying ``bit`` when voxel ``w`` is added.

    The Euler number is the sum over all 2x2x2 blocks of ``euler_table[pattern]``, so only the
    8 blocks holding ``w`` change. ``w`` must not carry ``bit`` yet; needs ``pad`` >= 1.
    """
    gain = 0
    for d in range(8):
        origin = w - corners[d]
        before = 0
        for k in range(8):
            if scratch[origin + corners[k]] & bit:
                before |= 1 << k
        gain += euler_table[before | (1 << d)] - euler_table[before]
    return gain


@njit(**_JIT)
def _plug_blocks(scratch, v, lowest_only, table, corners, buffer, m, s0, s1):
    """Queue the voxels the lookup sets in the 2x2x2 blocks holding ``v`` (wholly inside the
    volume) at ``buffer[m:]`` (room for 64 needed); ``lowest_only``: only blocks where ``v``
    is the first set voxel, so a pass over every voxel reads each block once. Returns the new
    length."""
    original, current, pending = 1, 2, 4
    for d in range(8):
        origin = v - corners[d]
        if lowest_only:
            first = True
            for k in range(d):
                if scratch[origin + corners[k]] & current:
                    first = False
                    break
            if not first:
                continue
        pattern = _pattern(scratch, origin, corners, current)
        if pattern <= 0 or table[pattern] == 0:
            continue
        fill = table[pattern]
        for k in range(8):
            if not (fill >> k) & 1:
                continue
            w = origin + corners[k]
            s = scratch[w]
            if s & (current | pending) or not _near(scratch, w, original, s0, s1):
                continue
            scratch[w] = s | pending
            buffer[m] = w
            m += 1
    return m


@njit(**_JIT)
def plug_added(voxels, passes, table, corners, euler_table, scratch, s0, s1):
    """Voxels the 2x2x2 lookup plugs into the sheet ``voxels`` in ``passes`` passes, or none.

    Each pass reads every block that holds a voxel of the sheet as it was at the pass's start
    (blocks wholly inside the volume), and sets the voxels ``table[pattern]`` names that lie in
    the 3x3x3 neighbourhood of the original sheet. After the first pass only the blocks holding
    a voxel the previous pass set can change, so only those are read again. The voxels are
    returned only when they raise the sheet's Euler number (fewer holes); otherwise none.
    """
    original, current, pending = 1, 2, 4
    n = voxels.size
    buffer = np.empty(n + n // 4 + 16, np.int64)
    buffer[:n] = voxels
    for v in voxels:
        scratch[v] = scratch[v] | original | current
    start = 0
    for step in range(passes):
        m = n
        chunk = 256  # room for 8 blocks x 8 voxels each is made per chunk, not per voxel
        for first in range(start, n, chunk):
            last = min(first + chunk, n)
            buffer = _room(buffer, m, 64 * (last - first))
            for i in range(first, last):
                m = _plug_blocks(scratch, buffer[i], step == 0, table, corners, buffer, m, s0, s1)
        if m == n:
            break
        for i in range(n, m):
            scratch[buffer[i]] = (scratch[buffer[i]] ^ pending) | current
        start, n = n, m
    added = buffer[voxels.size:n].copy()
    for w in added:  # back to the sheet alone, then add one voxel at a time
        scratch[w] = scratch[w] ^ current
    gain = 0
    for w in added:
        gain += euler_gain(scratch, w, current, corners, euler_table)
        scratch[w] = scratch[w] | current
    for i in range(n):
        scratch[buffer[i]] = scratch[buffer[i]] & OUTSIDE
    if gain > 0:
        return added
    return added[:0]


@njit(**_JIT)
def group_by_label(owner, sizes):
    """Positions 0..n-1 ordered by ``owner[i]`` (label), in order within a label (a stable
    counting sort); label L's are at ``cumsum(sizes)[L] - sizes[L]`` onwards."""
    start = np.zeros(sizes.size, np.int64)
    for label in range(1, sizes.size):
        start[label] = start[label - 1] + sizes[label - 1]
    order = np.empty(owner.size, np.int64)
    for i in range(owner.size):
        order[start[owner[i]]] = i
        start[owner[i]] += 1
    return order


@njit(**_JIT)
def split_index(flat, shape):
    """(z, y, x) of flat indices into a volume of ``shape``."""
    n1, n2 = shape[1], shape[2]
    zs = np.empty(flat.size, np.int64)
    ys = np.empty(flat.size, np.int64)
    xs = np.empty(flat.size, np.int64)
    for i in range(flat.size):
        zs[i], rest = divmod(flat[i], n1 * n2)
        ys[i], xs[i] = divmod(rest, n2)
    return zs, ys, xs


@njit(**_JIT)
def reframe(flat, shape, pad):
    """Flat indices into ``shape`` -> into ``shape`` grown by ``pad`` on every side; a negative
    ``pad`` goes back (the indices then lie inside the smaller volume)."""
    n1, n2 = shape[1], shape[2]
    m1, m2 = n1 + 2 * pad, n2 + 2 * pad
    out = np.empty(flat.size, np.int64)
    for i in range(flat.size):
        z, rest = divmod(flat[i], n1 * n2)
        y, x = divmod(rest, n2)
        out[i] = ((z + pad) * m1 + (y + pad)) * m2 + (x + pad)
    return out


@njit(**_JIT)
def unblocked(zs, ys, xs, labels, index):
    """For each voxel (zs, ys, xs): no voxel of another label in its 3x3x3 neighbourhood."""
    n0, n1, n2 = labels.shape
    keep = np.ones(zs.size, np.bool_)
    for i in range(zs.size):
        z, y, x = zs[i], ys[i], xs[i]
        for a in range(max(z - 1, 0), min(z + 2, n0)):
            for b in range(max(y - 1, 0), min(y + 2, n1)):
                for c in range(max(x - 1, 0), min(x + 2, n2)):
                    label = labels[a, b, c]
                    if label != 0 and label != index:
                        keep[i] = False
    return keep


@njit(**_JIT)
def projected_areas(zs, ys, xs, shape):
    """Pixels the voxels cover when projected along each axis (the main axis has the most)."""
    n0, n1, n2 = shape
    along0 = np.zeros((n1, n2), np.bool_)
    along1 = np.zeros((n0, n2), np.bool_)
    along2 = np.zeros((n0, n1), np.bool_)
    areas = np.zeros(3, np.int64)
    for i in range(zs.size):
        z, y, x = zs[i], ys[i], xs[i]
        if not along0[y, x]:
            along0[y, x] = True
            areas[0] += 1
        if not along1[z, x]:
            along1[z, x] = True
            areas[1] += 1
        if not along2[z, y]:
            along2[z, y] = True
            areas[2] += 1
    return areas


@njit(**_JIT)
def column_heights(depths, us, vs, plane, depth):
    """Per column (u, v) of the plane: covered, lowest and highest depth of the voxels."""
    covered = np.zeros(plane, np.bool_)
    low = np.full(plane, depth, np.int64)
    high = np.full(plane, -1, np.int64)
    for i in range(depths.size):
        u, v, d = us[i], vs[i], depths[i]
        covered[u, v] = True
        if d < low[u, v]:
            low[u, v] = d
        if d > high[u, v]:
            high[u, v] = d
    return covered, low, high


# ---------------------------------------------------------------- tunnel filling (5th place)
# These work on arrays with a frame of one zero voxel around the volume (``np.pad(a, 1)``), so a
# voxel's 26 neighbours and 2x2x2 blocks are read without bounds tests.

CLOSED, BRIDGE, OPEN = 0, 1, 2  # fill_ball: kept; touches no sheet or two; closes no tunnel


@njit(**_JIT)
def _gain(volume, z, y, x, euler_table):
    """Change of the Euler number of the nonzero voxels when (z, y, x) is set (it is not)."""
    gain = 0
    for d in range(8):
        dz, dy, dx = d >> 2, (d >> 1) & 1, d & 1
        before = 0
        for k in range(8):
            if volume[z - dz + (k >> 2), y - dy + ((k >> 1) & 1), x - dx + (k & 1)] != 0:
                before |= 1 << k
        gain += euler_table[before | (1 << d)] - euler_table[before]
    return gain


@njit(**_JIT)
def _root(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]  # path halving
        i = parent[i]
    return i


@njit(**_JIT)
def tunnel_deaths(zs, ys, xs, labels, count, euler_table):
    """Where tunnels die when the voxels (zs, ys, xs) are added to the mask in that order.

    ``labels``: the mask's component labels 1..count (int32, framed), 0 at every (zs, ys, xs);
    the coordinates are the volume's. A voxel whose addition raises the Euler number while touching
    a single component closes a loop of that component (its 26-neighbourhood meets the component
    in a ring): the loop's death in the filtration by falling probability. Returns the indices
    (into zs) of those voxels. The added voxels are written into ``labels`` as their set's id
    while the filtration runs (so neighbours of one set mostly carry one id and are looked up
    once) and cleared before it returns: ``labels`` is as it was.
    """
    parent = np.arange(count + zs.size + 1)
    deaths = np.empty(zs.size, np.int64)
    found = 0
    roots = np.empty(26, np.int64)
    for i in range(zs.size):
        z, y, x = zs[i] + 1, ys[i] + 1, xs[i] + 1
        touched = 0
        seen = 0  # the last id looked up: runs of one id need one lookup
        for a in range(z - 1, z + 2):
            for b in range(y - 1, y + 2):
                for c in range(x - 1, x + 2):
                    v = labels[a, b, c]
                    if v == 0 or v == seen:
                        continue
                    seen = v
                    r = _root(parent, v)
                    new = True
                    for j in range(touched):
                        if roots[j] == r:
                            new = False
                    if new:
                        roots[touched] = r
                        touched += 1
        if touched == 1 and _gain(labels, z, y, x, euler_table) > 0:
            deaths[found] = i
            found += 1
        if touched == 0:
            own = count + 1 + i  # a new set
        else:
            own = roots[0]       # joins the first set; the others join it
            for j in range(1, touched):
                parent[roots[j]] = own
        labels[z, y, x] = own
    for i in range(zs.size):
        labels[zs[i] + 1, ys[i] + 1, xs[i] + 1] = 0
    return deaths[:found]


@njit(**_JIT)
def fill_deaths(zs, ys, xs, mask, labels, probability, low, min_radius, max_radius, euler_table,
                changed):
    """One round's balls: at each tunnel death (zs, ys, xs), in order, unless an earlier ball
    covered it, :func:`fill_ball`; when that ball is one sheet's but closes no tunnel, one more
    at :func:`deepest_nearby` (the hole's middle). ``changed`` (bool, the volume's shape) is set
    around each death whose ball was kept, as far as a ball's test reads (its recentring
    included)."""
    reach = int(np.ceil(max_radius))
    margin = 2 * reach + 2
    n0, n1, n2 = changed.shape
    for i in range(zs.size):
        z, y, x = zs[i], ys[i], xs[i]
        if mask[z + 1, y + 1, x + 1]:
            continue  # covered by an earlier ball of this round
        outcome = fill_ball(z, y, x, mask, labels, min_radius, max_radius, euler_table)
        if outcome == OPEN:
            cz, cy, cx = deepest_nearby(z, y, x, mask, probability, low, reach)
            if cz >= 0:
                outcome = fill_ball(cz, cy, cx, mask, labels, min_radius, max_radius, euler_table)
        if outcome == CLOSED:
            changed[max(z - margin, 0):min(z + margin + 1, n0),
                    max(y - margin, 0):min(y + margin + 1, n1),
                    max(x - margin, 0):min(x + margin + 1, n2)] = True


@njit(**_JIT)
def _blocks_euler(volume, blocks, euler_table):
    """The Euler number's share of the 2x2x2 blocks of ``volume`` (nonzero voxels) whose lowest
    corner lies in the box ``blocks`` = (z0, z1, y0, y1, x0, x1), bounds included. Along x each
    block's pattern comes from the previous one's: its upper half moves down, 4 new reads."""
    z0, z1, y0, y1, x0, x1 = blocks
    total = 0
    for a in range(z0, z1 + 1):
        for b in range(y0, y1 + 1):
            pattern = 0
            for k in range(8):
                if volume[a + (k >> 2), b + ((k >> 1) & 1), x0 + (k & 1)] != 0:
                    pattern |= 1 << k
            total += euler_table[pattern]
            for c in range(x0 + 1, x1 + 1):
                pattern = (pattern >> 1) & 0b01010101
                for k in (1, 3, 5, 7):
                    if volume[a + (k >> 2), b + ((k >> 1) & 1), c + 1] != 0:
                        pattern |= 1 << k
                total += euler_table[pattern]
    return total


@njit(**_JIT)
def fill_ball(z, y, x, mask, labels, min_radius, max_radius, euler_table):
    """Fill a ball at volume voxel (z, y, x) into ``mask`` if it closes a tunnel of one sheet.

    Radius clip(d + 1, min_radius, max_radius), d the distance to the nearest mask voxel. The
    ball is kept only when every mask voxel next to it has one label (it joins no two sheets and
    makes no new one) and the Euler number rises with it (a tunnel closed). ``mask`` (uint8) and
    ``labels`` (int32; the ball gets its sheet's label), both framed, are updated in place when
    it is kept. Returns CLOSED, BRIDGE or OPEN.
    """
    n0, n1, n2 = mask.shape[0] - 2, mask.shape[1] - 2, mask.shape[2] - 2
    z, y, x = z + 1, y + 1, x + 1
    reach = int(np.ceil(max_radius))
    nearest = max_radius * max_radius
    for a in range(max(z - reach, 1), min(z + reach + 1, n0 + 1)):
        for b in range(max(y - reach, 1), min(y + reach + 1, n1 + 1)):
            for c in range(max(x - reach, 1), min(x + reach + 1, n2 + 1)):
                if mask[a, b, c]:
                    nearest = min(nearest, (a - z) ** 2 + (b - y) ** 2 + (c - x) ** 2)
    radius = min(max(np.sqrt(nearest) + 1.0, min_radius), max_radius)
    r = int(radius)
    label = 0
    ball = np.empty((2 * r + 1) ** 3, np.int64)
    size = 0
    for a in range(max(z - r, 1), min(z + r + 1, n0 + 1)):
        for b in range(max(y - r, 1), min(y + r + 1, n1 + 1)):
            for c in range(max(x - r, 1), min(x + r + 1, n2 + 1)):
                if (a - z) ** 2 + (b - y) ** 2 + (c - x) ** 2 > radius * radius or mask[a, b, c]:
                    continue
                for a2 in range(a - 1, a + 2):
                    for b2 in range(b - 1, b + 2):
                        for c2 in range(c - 1, c + 2):
                            other = labels[a2, b2, c2]
                            if other != 0 and other != label:
                                if label != 0:
                                    return BRIDGE  # two sheets: never join them
                                label = other
                ball[size] = (a * mask.shape[1] + b) * mask.shape[2] + c
                size += 1
    if size == 0 or label == 0:
        return BRIDGE
    # the Euler number's change: the blocks holding a ball voxel, before and after (what adding
    # the voxels one by one sums to, with a quarter of the reads)
    blocks = (max(z - r, 1) - 1, min(z + r, n0), max(y - r, 1) - 1, min(y + r, n1),
              max(x - r, 1) - 1, min(x + r, n2))
    before = _blocks_euler(mask, blocks, euler_table)
    flat_mask = mask.reshape(-1)
    for i in range(size):
        flat_mask[ball[i]] = 1
    gain = _blocks_euler(mask, blocks, euler_table) - before
    if gain <= 0:
        for i in range(size):
            flat_mask[ball[i]] = 0
        return OPEN
    flat_labels = labels.reshape(-1)
    for i in range(size):
        flat_labels[ball[i]] = label
    return CLOSED


_ROOT2, _ROOT3 = np.sqrt(2.0), np.sqrt(3.0)


@njit(**_JIT)
def _chamfer_step(depth, a, b, c, sweep):
    """The distance at (a, b, c) from the 13 neighbours a sweep in direction ``sweep`` has
    already passed: the whole plane a - sweep, the row b - sweep of plane a, and c - sweep."""
    p, q, r = a - sweep, b - sweep, c - sweep
    return min(depth[a, b, c],
               depth[p, b - 1, c - 1] + _ROOT3, depth[p, b - 1, c] + _ROOT2, depth[p, b - 1, c + 1] + _ROOT3,
               depth[p, b, c - 1] + _ROOT2, depth[p, b, c] + 1.0, depth[p, b, c + 1] + _ROOT2,
               depth[p, b + 1, c - 1] + _ROOT3, depth[p, b + 1, c] + _ROOT2, depth[p, b + 1, c + 1] + _ROOT3,
               depth[a, q, c - 1] + _ROOT2, depth[a, q, c] + 1.0, depth[a, q, c + 1] + _ROOT2,
               depth[a, b, r] + 1.0)


@njit(**_JIT)
def deepest_nearby(z, y, x, mask, probability, low, reach):
    """The voxel within ``reach`` (a box) of volume voxel (z, y, x), outside the (framed) mask
    and with probability >= ``low``, farthest from the mask: the middle of the hole near a
    tunnel's death. Distances by a chamfer sweep (steps 1, sqrt 2, sqrt 3, close to Euclidean).
    Returns its volume coordinates, or (-1, -1, -1) when there is none or it is (z, y, x)."""
    n0, n1, n2 = probability.shape
    z0, y0, x0 = max(z - reach, 0), max(y - reach, 0), max(x - reach, 0)
    m0, m1, m2 = min(z + reach + 1, n0) - z0, min(y + reach + 1, n1) - y0, min(x + reach + 1, n2) - x0
    far = 1e9
    # the box with a frame of ``far``: a neighbour in the frame never lowers a distance (far +
    # step > far >= every distance), as if it were not there
    depth = np.full((m0 + 2, m1 + 2, m2 + 2), far)
    for a in range(m0):
        for b in range(m1):
            for c in range(m2):
                if mask[z0 + a + 1, y0 + b + 1, x0 + c + 1]:
                    depth[a + 1, b + 1, c + 1] = 0.0
    for sweep in (1, -1):
        for i in range(m0):
            a = (i if sweep == 1 else m0 - 1 - i) + 1
            for j in range(m1):
                b = (j if sweep == 1 else m1 - 1 - j) + 1
                for k in range(m2):
                    c = (k if sweep == 1 else m2 - 1 - k) + 1
                    if depth[a, b, c] > 0.0:  # a mask voxel stays at 0
                        depth[a, b, c] = _chamfer_step(depth, a, b, c, sweep)
    found, most = -1, -1.0
    for a in range(m0):
        for b in range(m1):
            for c in range(m2):
                d = depth[a + 1, b + 1, c + 1]
                if 0 < d < far and d > most and probability[z0 + a, y0 + b, x0 + c] >= low:
                    found, most = (a * m1 + b) * m2 + c, d
    if found < 0:
        return -1, -1, -1
    a, rest = divmod(found, m1 * m2)
    b, c = divmod(rest, m2)
    if (z0 + a, y0 + b, x0 + c) == (z, y, x):
        return -1, -1, -1
    return z0 + a, y0 + b, x0 + c


# --- median filter (10th place): a box majority with the volume's faces mirrored -------------

@njit(**_JIT)
def _window_sources(n, reach, low_face, high_face):
    """For each position of an axis of length ``n``, the index read by each of its 2 * reach + 1
    window taps: past a volume face the one ``np.pad(mode="symmetric")`` repeats there (the
    edge voxel first), past a block edge inside the volume -1 (an empty voxel)."""
    sources = np.empty((n, 2 * reach + 1), np.int64)
    for i in range(n):
        for k in range(2 * reach + 1):
            j = i + k - reach
            if (j < 0 and not low_face) or (j >= n and not high_face):
                sources[i, k] = -1
                continue
            while j < 0 or j >= n:
                j = -j - 1 if j < 0 else 2 * n - j - 1
            sources[i, k] = j
    return sources


@njit(**_JIT)
def _window_targets(sources, n):
    """The inverse of :func:`_window_sources`: for each index ``u`` of the axis, the positions
    whose window reads it, once per tap that reads it (``targets[starts[u]:starts[u + 1]]``)."""
    starts = np.zeros(n + 1, np.int64)
    for i in range(sources.shape[0]):
        for k in range(sources.shape[1]):
            if sources[i, k] >= 0:
                starts[sources[i, k] + 1] += 1
    for u in range(n):
        starts[u + 1] += starts[u]
    targets = np.empty(starts[n], np.int64)
    filled = starts[:n].copy()
    for i in range(sources.shape[0]):
        for k in range(sources.shape[1]):
            u = sources[i, k]
            if u >= 0:
                targets[filled[u]] = i
                filled[u] += 1
    return starts, targets


@njit(**_JIT)
def _plain_targets(starts, targets, reach):
    """Whether each index's targets are just the plain window around it (u - reach..u + reach,
    once each), as everywhere but near a mirrored face or a block edge."""
    n = starts.size - 1
    plain = np.zeros(n, np.bool_)
    for u in range(n):
        if starts[u + 1] - starts[u] != 2 * reach + 1:
            continue
        plain[u] = True
        for k in range(2 * reach + 1):
            if targets[starts[u] + k] != u - reach + k:
                plain[u] = False
    return plain


@njit(**_JIT)
def sparse_majority(block, reach, low_faces, high_faces, rounds):
    """The majority (more than half set) of each voxel's (2 * reach + 1)^3 window of the 0/1
    ``block``, ``rounds`` times. Counted from the set voxels only: each adds one to the window
    count of every position whose window reads it (:func:`_window_sources`: mirrored at a
    volume face, empty past a block edge), and only the positions reached are tested. A sheet
    fills a few % of its box, so this is far less work than window sums over the whole box."""
    nz, ny, nx = block.shape
    half = (2 * reach + 1) ** 3 // 2
    st0, t0 = _window_targets(_window_sources(nz, reach, low_faces[0], high_faces[0]), nz)
    st1, t1 = _window_targets(_window_sources(ny, reach, low_faces[1], high_faces[1]), ny)
    st2, t2 = _window_targets(_window_sources(nx, reach, low_faces[2], high_faces[2]), nx)
    plain0 = _plain_targets(st0, t0, reach)
    plain1 = _plain_targets(st1, t1, reach)
    plain2 = _plain_targets(st2, t2, reach)
    current = block != 0
    counts = np.zeros(block.shape, np.int32)
    # per row (z, y): the x range of its set voxels (empty: first > last)
    first, last = np.full((nz, ny), nx, np.int64), np.full((nz, ny), -1, np.int64)
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                if current[z, y, x]:
                    first[z, y], last[z, y] = min(first[z, y], x), x
    for _ in range(rounds):
        for z in range(nz):
            for y in range(ny):
                for x in range(first[z, y], last[z, y] + 1):
                    if not current[z, y, x]:
                        continue
                    if plain0[z] and plain1[y] and plain2[x]:  # no face near: the plain window
                        for c in range(z - reach, z + reach + 1):
                            for b in range(y - reach, y + reach + 1):
                                for k in range(x - reach, x + reach + 1):
                                    counts[c, b, k] += 1
                        continue
                    for i in range(st0[z], st0[z + 1]):
                        for j in range(st1[y], st1[y + 1]):
                            for k in range(st2[x], st2[x + 1]):
                                counts[t0[i], t1[j], t2[k]] += 1
        # a voxel's count comes from voxels within ``reach`` on each axis (mirrored reads
        # included), so the rows within reach of a row with set voxels, over their x range
        # grown by reach, hold every count; every voxel set before lies there too
        low, high = _grown_ranges(first, last, reach, nx)
        first, last = np.full((nz, ny), nx, np.int64), np.full((nz, ny), -1, np.int64)
        for z in range(nz):
            for y in range(ny):
                for x in range(low[z, y], high[z, y] + 1):
                    kept = counts[z, y, x] > half
                    current[z, y, x] = kept
                    counts[z, y, x] = 0
                    if kept:
                        first[z, y], last[z, y] = min(first[z, y], x), x
    return current


@njit(**_JIT)
def _grown_ranges(first, last, reach, nx):
    """Per row (z, y): the union of the x ranges of the rows within ``reach`` of it (on both
    row axes), grown by ``reach`` and kept inside 0..nx - 1."""
    nz, ny = first.shape
    low, high = np.full((nz, ny), nx, np.int64), np.full((nz, ny), -1, np.int64)
    for z in range(nz):
        for y in range(ny):
            if first[z, y] > last[z, y]:
                continue
            for c in range(max(z - reach, 0), min(z + reach + 1, nz)):
                for b in range(max(y - reach, 0), min(y + reach + 1, ny)):
                    low[c, b] = min(low[c, b], max(first[z, y] - reach, 0))
                    high[c, b] = max(high[c, b], min(last[z, y] + reach, nx - 1))
    return low, high
