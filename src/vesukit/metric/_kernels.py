"""numba kernels of the metric. Imported only through :func:`vesukit.metric._numba.kernels`.

All kernels work on one C-contiguous boolean block (uint8, 0/1) flattened, with its shape
(n0, n1, n2). Voxel ``v = (x*n1 + y)*n2 + z``; edge and square ids are ``3*v + t`` with the
orientation t of docs/metric.md section 2, so id order is the lexicographic (x, y, z, t) order
the official code uses for ties. Every kernel releases the GIL so octants run in threads.

The per-axis blocks below (one for x, y and z; one per edge or square orientation) repeat
themselves on purpose: numba compiles straight-line code for each axis with its stride as a
constant, so the hottest loops of the scorer hold no inner loop over axes and no call through
a stride argument. A duplicate-code report on this file lists them; they are deliberate.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_JIT = dict(cache=True, nogil=True)


@njit(**_JIT)
def _find(parent, i):
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:  # path compression
        nxt = parent[i]
        parent[i] = root
        i = nxt
    return root


# ---------------------------------------------------------------- counts of one input


@njit(**_JIT)
def complex_counts(a, n0, n1, n2, parent):
    """(c6, #vertices, #edges, #squares, #cubes) of the V-construction complex K(a).
    ``parent``: an int32 work buffer of at least n0*n1*n2 entries.

    One pass: each voxel of ``a`` is joined to its neighbours before it (x-1, y-1, z-1), which
    are already in the union-find, and c6 = #vertices - #joins that merged two components."""
    s0 = n1 * n2
    s1 = n2
    nv = 0
    ne = 0
    ns = 0
    nc = 0
    joins = 0
    for x in range(n0):
        for y in range(n1):
            for z in range(n2):
                v = (x * n1 + y) * n2 + z
                if a[v] == 0:
                    continue
                parent[v] = v
                nv += 1
                # One block per axis, unrolled on purpose (module docstring): the only pairs
                # `duplicates` reports over src/ are these and the like blocks below.
                if x >= 1 and a[v - s0] != 0:
                    ra = _find(parent, v)
                    rb = _find(parent, v - s0)
                    if ra != rb:
                        parent[max(ra, rb)] = min(ra, rb)
                        joins += 1
                if y >= 1 and a[v - s1] != 0:
                    ra = _find(parent, v)
                    rb = _find(parent, v - s1)
                    if ra != rb:
                        parent[max(ra, rb)] = min(ra, rb)
                        joins += 1
                if z >= 1 and a[v - 1] != 0:
                    ra = _find(parent, v)
                    rb = _find(parent, v - 1)
                    if ra != rb:
                        parent[max(ra, rb)] = min(ra, rb)
                        joins += 1
                bx = x + 1 < n0 and a[v + s0] != 0
                by = y + 1 < n1 and a[v + s1] != 0
                bz = z + 1 < n2 and a[v + 1] != 0
                ne += bx + by + bz
                byz = by and bz and a[v + s1 + 1] != 0
                bxz = bx and bz and a[v + s0 + 1] != 0
                bxy = bx and by and a[v + s0 + s1] != 0
                ns += byz + bxz + bxy
                if byz and bxz and bxy and a[v + s0 + s1 + 1] != 0:
                    nc += 1
    return nv - joins, nv, ne, ns, nc


@njit(**_JIT)
def background_runs(a, n0, n1, n2):
    """:func:`runs26` of the background (cavities: components that touch no face)."""
    return runs26(a, n0, n1, n2, False)


@njit(**_JIT)
def runs26(a, n0, n1, n2, fg):
    """Maximal z-runs of foreground (fg) or background voxels of ``a``, joined
    26-connectedly (union-find on runs).

    Returns (row_start, z0, z1, root, bounded): runs of row r = x*n1 + y are
    row_start[r]:row_start[r+1]; root[i] is the run's component (a run id) and
    bounded[root] is 1 for a component that touches no block face (a cavity of K(a)).
    Runs instead of voxels: a sparse foreground leaves one or two runs per row.
    """
    nrows = n0 * n1
    row_start = np.zeros(nrows + 1, dtype=np.int64)
    count = 0
    for r in range(nrows):
        row_start[r] = count
        base = r * n2
        prev = False
        for z in range(n2):
            cur = (a[base + z] != 0) == fg
            if cur and not prev:
                count += 1
            prev = cur
    row_start[nrows] = count
    z0 = np.empty(count, dtype=np.int32)
    z1 = np.empty(count, dtype=np.int32)
    i = 0
    for r in range(nrows):
        base = r * n2
        z = 0
        while z < n2:
            if (a[base + z] != 0) == fg:
                start = z
                while z < n2 and (a[base + z] != 0) == fg:
                    z += 1
                z0[i] = start
                z1[i] = z - 1
                i += 1
            else:
                z += 1
    parent = np.arange(count, dtype=np.int32)
    for x in range(n0):
        for y in range(n1):
            r = x * n1 + y
            if row_start[r] == row_start[r + 1]:
                continue
            for q in range(4):
                if q == 0:
                    xx = x
                    yy = y + 1
                else:
                    xx = x + 1
                    yy = y + q - 2
                if xx >= n0 or yy < 0 or yy >= n1:
                    continue
                rr = xx * n1 + yy
                i = row_start[r]
                j = row_start[rr]
                ie = row_start[r + 1]
                je = row_start[rr + 1]
                while i < ie and j < je:
                    # overlap of [z0-1, z1+1] with the other run: 26-adjacent
                    if z0[j] <= z1[i] + 1 and z0[i] <= z1[j] + 1:
                        ra = _find(parent, i)
                        rb = _find(parent, j)
                        if ra != rb:
                            parent[max(ra, rb)] = min(ra, rb)
                    if z1[i] < z1[j]:
                        i += 1
                    else:
                        j += 1
    root = np.empty(count, dtype=np.int32)
    bounded = np.zeros(count, dtype=np.uint8)
    for i in range(count):
        root[i] = _find(parent, i)
        if root[i] == i:
            bounded[i] = 1
    for x in range(n0):
        for y in range(n1):
            r = x * n1 + y
            edge_row = x == 0 or y == 0 or x == n0 - 1 or y == n1 - 1
            for i in range(row_start[r], row_start[r + 1]):
                if edge_row or z0[i] == 0 or z1[i] == n2 - 1:
                    bounded[root[i]] = 0
    return row_start, z0, z1, root, bounded


@njit(**_JIT)
def cavity_keys(row_start, z0, z1, root, bounded, u, n2):
    """Per cavity root: its lexicographically last voxel outside U (-1: none), docs/metric.md 6.4."""
    count = z0.shape[0]
    keys = np.full(count, -1, dtype=np.int64)
    nrows = row_start.shape[0] - 1
    for r in range(nrows):
        for i in range(row_start[r], row_start[r + 1]):
            c = root[i]
            if bounded[c] == 0:
                continue
            for z in range(z1[i], z0[i] - 1, -1):
                v = r * n2 + z
                if u[v] == 0:
                    if v > keys[c]:
                        keys[c] = v
                    break
    return keys


@njit(**_JIT)
def count_common_keys(keys_f, keys_g, nvox):
    marked = np.zeros(nvox, dtype=np.uint8)
    for r in range(keys_f.shape[0]):
        if keys_f[r] >= 0:
            marked[keys_f[r]] = 1
    m = 0
    for r in range(keys_g.shape[0]):
        if keys_g[r] >= 0 and marked[keys_g[r]] != 0:
            m += 1
    return m


# ---------------------------------------------------------------- dim 0


@njit(**_JIT)
def _edge_end(v, x, y, z, t, n0, n1, n2):
    """The far voxel of edge (x, y, z, t) from voxel v (flat C index), or -1 if outside."""
    if t == 0:
        return v + n1 * n2 if x + 1 < n0 else -1
    if t == 1:
        return v + n2 if y + 1 < n1 else -1
    return v + 1 if z + 1 < n2 else -1


@njit(**_JIT)
def dim0_matches(f, g, n0, n1, n2, parent, flags):
    """m_0 of one block: raster-order Kruskal over edges touching U^c (docs/metric.md 6.3).
    ``parent`` (int32) and ``flags`` (uint8): work buffers of at least n0*n1*n2 entries.

    Taken in that order, the edges keep every voxel reached so far in one growing group: a
    voxel joins the previous voxel of its row, and the first voxel of a row joins the row
    (or slab) before it, by that edge or, when both ends are in U, by being in its
    U-component already. So each join adds to the growing group either a lone background
    voxel (no F, no G: no match, nothing changes) or a whole U-component not reached before,
    at the first edge from a background voxel into it (a U voxel's U-neighbours are in its
    own component). A match is such a component holding F and G, added once the growing
    group holds both: only the U-components need a union-find, and the background a scan.
    """
    nvox = n0 * n1 * n2
    if nvox == 0:
        return 0
    # flags[v]: 1 in F, 2 in G, 4 in U; on a U-component's root, 1 and 2 for the component
    # and 8 once the growing group has taken it in
    for v in range(nvox):
        code = (1 if f[v] != 0 else 0) | (2 if g[v] != 0 else 0)
        flags[v] = code | (4 if code != 0 else 0)
        parent[v] = v
    # 6-components of U
    for x in range(n0):
        for y in range(n1):
            for z in range(n2):
                v = (x * n1 + y) * n2 + z
                if flags[v] & 4 == 0:
                    continue
                ra = -1
                for t in range(3):
                    w = _edge_end(v, x, y, z, t, n0, n1, n2)
                    if w < 0 or flags[w] & 4 == 0:
                        continue
                    if ra < 0:
                        ra = _find(parent, v)
                    rb = _find(parent, w)
                    if ra != rb:
                        parent[rb] = ra
                        flags[ra] |= flags[rb] & 3
    grown = 0  # F (1) and G (2) of the growing group: it starts as voxel 0's group
    if flags[0] & 4 != 0:
        r = _find(parent, 0)
        flags[r] |= 8
        grown = flags[r] & 3
    m0 = 0
    for x in range(n0):
        for y in range(n1):
            for z in range(n2):
                v = (x * n1 + y) * n2 + z
                if flags[v] & 4 != 0:
                    continue
                for t in range(3):
                    w = _edge_end(v, x, y, z, t, n0, n1, n2)
                    if w < 0 or flags[w] & 4 == 0:
                        continue
                    r = _find(parent, w)
                    if flags[r] & 8 != 0:
                        continue
                    flags[r] |= 8
                    if grown == 3 and flags[r] & 3 == 3:
                        m0 += 1
                    grown |= flags[r] & 3
    return m0


# ---------------------------------------------------------------- dim 1


@njit(**_JIT)
def _square_state(u, v, t, x, y, z, n0, n1, n2):
    """-1: the square does not exist; 1: it is in K(U); 0: it exists, not in K(U)."""
    s0 = n1 * n2
    s1 = n2
    if t == 0:
        if y + 1 >= n1 or z + 1 >= n2:
            return -1
        w1 = v + s1
        w2 = v + 1
        w3 = v + s1 + 1
    elif t == 1:
        if x + 1 >= n0 or z + 1 >= n2:
            return -1
        w1 = v + s0
        w2 = v + 1
        w3 = v + s0 + 1
    else:
        if x + 1 >= n0 or y + 1 >= n1:
            return -1
        w1 = v + s0
        w2 = v + s1
        w3 = v + s0 + s1
    if u[v] != 0 and u[w1] != 0 and u[w2] != 0 and u[w3] != 0:
        return 1
    return 0


@njit(**_JIT)
def _dual_join(parent, c1, c2):
    """Join two dual nodes; True when they were in different components (a 2-cycle is born)."""
    ra = _find(parent, c1)
    rb = _find(parent, c2)
    if ra == rb:
        return False
    if ra < rb:
        parent[ra] = rb
    else:
        parent[rb] = ra
    return True


@njit(**_JIT)
def _dual_nodes(sq, n0, n1, n2):
    """The two dual nodes (cubes, or the outside node n0*n1*n2) on either side of a square."""
    s0 = n1 * n2
    s1 = n2
    omega = n0 * n1 * n2
    v = sq // 3
    t = sq - 3 * v
    x = v // s0
    y = (v // s1) % n1
    z = v % n2
    c1 = v if (x + 1 < n0 and y + 1 < n1 and z + 1 < n2) else omega
    if t == 0:
        c2 = v - s0 if x >= 1 else omega
    elif t == 1:
        c2 = v - s1 if y >= 1 else omega
    else:
        c2 = v - 1 if z >= 1 else omega
    return c1, c2


@njit(**_JIT)
def _ku_squares(u, n0, n1, n2):
    """The ids of the K(U) squares (all 4 voxels in U), ascending; only U voxels are visited."""
    kus = np.empty(1 << 12, dtype=np.int64)
    nku = 0
    for x in range(n0):
        for y in range(n1):
            for z in range(n2):
                v = (x * n1 + y) * n2 + z
                if u[v] == 0:
                    continue
                for t in range(3):
                    if _square_state(u, v, t, x, y, z, n0, n1, n2) == 1:
                        if nku == kus.shape[0]:
                            grown = np.empty(2 * nku, dtype=np.int64)
                            grown[:nku] = kus
                            kus = grown
                        kus[nku] = 3 * v + t
                        nku += 1
    return kus[:nku].copy()


@njit(**_JIT)
def _cube_node(c, n0, n1, n2, u, row_start, z0, z1, root, bounded, rep):
    """The dual node a cube belongs to once every square outside K(U) is in (see
    :func:`kus_births`): the outside node for a missing cube or a face-touching component,
    a representative voxel of its background component, or the cube itself when all its
    voxels are in U."""
    omega = n0 * n1 * n2
    if c == omega:
        return omega
    s0 = n1 * n2
    x = c // s0
    y = (c // n2) % n1
    z = c % n2
    for dx in range(2):
        for dy in range(2):
            for dz in range(2):
                w = c + dx * s0 + dy * n2 + dz
                if u[w] != 0:
                    continue
                r = (x + dx) * n1 + y + dy
                zz = z + dz
                for i in range(row_start[r], row_start[r + 1]):
                    if z0[i] <= zz <= z1[i]:
                        top = root[i]
                        return omega if bounded[top] == 0 else rep[top]
    return c


@njit(**_JIT)
def kus_births(u, n0, n1, n2, parent, node):
    """The K(U) squares (ascending ids) and, per square, 1 when it is a comparison dim-2 birth
    (cleared: its column reduces to zero).

    The dual union-find of docs/metric.md section 4 takes squares in descending (value,
    index) order, so every square outside K(U) comes before any K(U) square. Those squares
    join exactly the cubes that share a background (U^c) voxel, and join a cube to the
    outside node through a block face: after them, the dual components are the 26-connected
    background components (those touching a face merged with the outside), plus one node
    per cube lying wholly in U. That partition does not depend on the order, so it comes
    from the background's runs instead of a pass over all squares; only the K(U) squares
    are then joined one by one. ``parent``: int32 work buffer of n0*n1*n2 + 1 entries;
    ``node``: int32 work buffer of n0*n1*n2 entries, each cube's dual node once found (a cube
    wholly in U is a face of up to 6 K(U) squares: finding its node was most of the time).
    """
    kus = _ku_squares(u, n0, n1, n2)
    nku = kus.shape[0]
    cleared = np.zeros(nku, dtype=np.uint8)
    if nku == 0 or n0 < 2 or n1 < 2 or n2 < 2:
        return kus, cleared  # no cubes: every square joins the outside node to itself
    row_start, z0, z1, root, bounded = runs26(u, n0, n1, n2, False)
    rep = np.empty(z0.shape[0], dtype=np.int64)  # a background voxel of each run
    for r in range(n0 * n1):
        for i in range(row_start[r], row_start[r + 1]):
            rep[i] = r * n2 + z0[i]
    nvox = n0 * n1 * n2
    for i in range(nvox + 1):
        parent[i] = i
    node[:nvox] = -1
    for i in range(nku - 1, -1, -1):
        c1, c2 = _dual_nodes(kus[i], n0, n1, n2)
        a = nvox if c1 == nvox else node[c1]
        if a < 0:
            a = node[c1] = _cube_node(c1, n0, n1, n2, u, row_start, z0, z1, root, bounded, rep)
        b = nvox if c2 == nvox else node[c2]
        if b < 0:
            b = node[c2] = _cube_node(c2, n0, n1, n2, u, row_start, z0, z1, root, bounded, rep)
        if _dual_join(parent, a, b):
            cleared[i] = 1
    return kus, cleared


@njit(**_JIT)
def nonu_square_classes(u, n0, n1, n2, cls, parent):
    """Per square id: 0 absent, 1 in K(U), 2 not in K(U), 3 not in K(U) and a comparison
    dim-2 birth (cleared). The births come from the dual union-find over cubes plus the
    outside node, squares outside K(U) by descending id (docs/metric.md section 4): a square
    that joins two dual components creates a 2-cycle, so its column reduces to zero.
    ``cls``: uint8 of 3*n0*n1*n2 entries (filled here); ``parent``: int32 of n0*n1*n2 + 1."""
    nvox = n0 * n1 * n2
    for x in range(n0):
        for y in range(n1):
            for z in range(n2):
                v = (x * n1 + y) * n2 + z
                for t in range(3):
                    st = _square_state(u, v, t, x, y, z, n0, n1, n2)
                    cls[3 * v + t] = 1 if st == 1 else (2 if st == 0 else 0)
    for i in range(nvox + 1):
        parent[i] = i
    s0 = n1 * n2
    omega = nvox
    for x in range(n0 - 1, -1, -1):
        for y in range(n1 - 1, -1, -1):
            for z in range(n2 - 1, -1, -1):
                v = (x * n1 + y) * n2 + z
                c1 = v if (x + 1 < n0 and y + 1 < n1 and z + 1 < n2) else omega
                for t in range(2, -1, -1):
                    sq = 3 * v + t
                    if cls[sq] != 2:
                        continue
                    if t == 0:
                        c2 = v - s0 if x >= 1 else omega
                    elif t == 1:
                        c2 = v - n2 if y >= 1 else omega
                    else:
                        c2 = v - 1 if z >= 1 else omega
                    if _dual_join(parent, c1, c2):
                        cls[sq] = 3
    return cls


@njit(**_JIT)
def _square_keys(s, n1, n2, code, bit, big, out):
    """The 4 row keys of square s for one input, descending: edge id, plus ``big`` unless
    both ends are in the input (``code[voxel] & bit``: the input's bit of the voxel)."""
    v = s // 3
    t = s - 3 * v
    s0 = n1 * n2
    if t == 0:  # {x} x {y,y+1} x {z,z+1}
        b = v + n2
        c = v + 1
        d = b + 1
        ta = 1
        tb = 2
    elif t == 1:  # {x,x+1} x {y} x {z,z+1}
        b = v + s0
        c = v + 1
        d = b + 1
        ta = 0
        tb = 2
    else:  # {x,x+1} x {y,y+1} x {z}
        b = v + s0
        c = v + n2
        d = b + n2
        ta = 0
        tb = 1
    # edges v-b and c-d run along axis ta, v-c and b-d along tb
    out[0] = 3 * v + ta + (0 if code[v] & code[b] & bit else big)
    out[1] = 3 * c + ta + (0 if code[c] & code[d] & bit else big)
    out[2] = 3 * v + tb + (0 if code[v] & code[c] & bit else big)
    out[3] = 3 * b + tb + (0 if code[b] & code[d] & bit else big)
    for i in range(1, 4):  # sort descending (insertion sort)
        key = out[i]
        j = i - 1
        while j >= 0 and out[j] < key:
            out[j + 1] = out[j]
            j -= 1
        out[j + 1] = key


@njit(**_JIT)
def _first_pivot(v, b, c, d, t, code, bit, big):
    """The largest of :func:`_square_keys` without building them: the square's edges in id
    order are v-b < v-c < c-d < b-d for every orientation, and an edge outside K(A) (not
    both ends with ``bit``) carries ``big``, so the pivot is the largest edge outside K(A),
    or b-d when all four are in K(A)."""
    ta = 1 if t == 0 else 0  # the axis of v-b and c-d; v-c and b-d run along tb
    tb = 1 if t == 2 else 2
    if code[b] & code[d] & bit == 0:
        return 3 * b + tb + big
    if code[c] & code[d] & bit == 0:
        return 3 * c + ta + big
    if code[v] & code[c] & bit == 0:
        return 3 * v + tb + big
    if code[v] & code[b] & bit == 0:
        return 3 * v + ta + big
    return 3 * b + tb


# The column being reduced is a max-heap of row keys plus a mark per edge (its entry is in
# the column): adding a 4-entry column toggles 4 marks and pushes at most 4 keys, instead of
# merging two sorted columns of hundreds of entries. Keys whose mark was toggled off stay in
# the heap until they reach the top (lazy deletion); a key can sit there more than once.


@njit(**_JIT)
def _heap_push(heap, h, key):
    if h == heap.shape[0]:
        grown = np.empty(2 * h, dtype=np.int64)
        grown[:h] = heap
        heap = grown
    i = h
    while i > 0:
        p = (i - 1) >> 1
        if heap[p] >= key:
            break
        heap[i] = heap[p]
        i = p
    heap[i] = key
    return heap, h + 1


@njit(**_JIT)
def _heap_pop(heap, h):
    """Drop the largest key; returns the new size."""
    h -= 1
    last = heap[h]
    i = 0
    while True:
        c = 2 * i + 1
        if c >= h:
            break
        if c + 1 < h and heap[c + 1] > heap[c]:
            c += 1
        if heap[c] <= last:
            break
        heap[i] = heap[c]
        i = c
    if h > 0:
        heap[i] = last
    return h


@njit(**_JIT)
def _toggle(key, big, mark, heap, h):
    e = key - big if key >= big else key
    mark[e] ^= 1
    if mark[e] != 0:
        return _heap_push(heap, h, key)
    return heap, h


@njit(**_JIT)
def _heap_pivot(big, mark, heap, h):
    """Drop toggled-off keys from the top; returns (size, pivot key or -1 for a zero column)."""
    while h > 0:
        top = heap[0]
        if mark[top - big if top >= big else top] != 0:
            return h, top
        h = _heap_pop(heap, h)
    return h, -1


@njit(**_JIT)
def _reduce_column(s, n1, n2, code, bit, big, owner, which, pool, pstart, plen, meta, heap,
                   mark, other):
    """Reduce column s for one input (``bit`` of ``code``; ``owner[2*edge + which]``) against
    the columns reduced so far; record its pivot. The caller has handled the fast path.

    owner = 2*square (the column was never modified, so its boundary is recomputed when
    needed) or 2*slot+1 (a modified column stored in the pool, keys descending). meta holds
    (pool entries used, slots used); ``mark`` (uint8 per edge) is all zero between calls.
    Returns (pivot key or -1, and the possibly grown arrays)."""
    _square_keys(s, n1, n2, code, bit, big, other)
    piv = other[0]
    o = owner[2 * (piv - big if piv >= big else piv) + which]
    if o < 0:  # an emergent pair: unmodified, its pivot is free
        owner[2 * (piv - big if piv >= big else piv) + which] = 2 * s
        return piv, pool, pstart, plen, heap
    h = 0
    for i in range(4):
        heap, h = _toggle(other[i], big, mark, heap, h)
    while True:
        if o % 2 == 0:
            _square_keys(o // 2, n1, n2, code, bit, big, other)
            for i in range(4):
                heap, h = _toggle(other[i], big, mark, heap, h)
        else:
            st = pstart[o // 2]
            for i in range(st, st + plen[o // 2]):
                heap, h = _toggle(pool[i], big, mark, heap, h)
        h, piv = _heap_pivot(big, mark, heap, h)
        if piv < 0:
            return -1, pool, pstart, plen, heap  # zero column: every mark is off again
        o = owner[2 * (piv - big if piv >= big else piv) + which]
        if o < 0:
            break
    # store the reduced column, descending, and turn its marks off
    used = meta[0]
    slot = meta[1]
    if slot == pstart.shape[0]:
        ns_ = np.empty(2 * slot, dtype=np.int64)
        ns_[:slot] = pstart
        pstart = ns_
        nl_ = np.empty(2 * slot, dtype=np.int64)
        nl_[:slot] = plen
        plen = nl_
    if used + h > pool.shape[0]:
        np_ = np.empty(2 * (used + h), dtype=np.int64)
        np_[:used] = pool[:used]
        pool = np_
    n = 0
    while h > 0:
        key = heap[0]
        h = _heap_pop(heap, h)
        e = key - big if key >= big else key
        if mark[e] != 0:
            mark[e] = 0
            pool[used + n] = key
            n += 1
    pstart[slot] = used
    plen[slot] = n
    meta[0] = used + n
    meta[1] = slot + 1
    owner[2 * (piv - big if piv >= big else piv) + which] = 2 * slot + 1
    return piv, pool, pstart, plen, heap


@njit(**_JIT)
def dim1_matches(f, g, u, kus, ku_cleared, n0, n1, n2, target_f, target_g, code, mark_f,
                 mark_g, owner, cls, parent):
    """m_1 of one block: the two image reductions of docs/metric.md 6.5, run in lockstep.

    Rows are edges keyed by (not in K(A), id), so K(A)-edges come first; the pivot is the
    largest key. Columns: the K(U) squares ``kus`` (those with ``ku_cleared`` skipped; they
    span the K(U) boundaries, so their order is free), then the other squares in id
    (lexicographic) order, cleared squares skipped. A non-U column
    "drops" for A when its pivot is a K(A)-edge; m_1 counts the columns that drop for both.
    target_A = dim Z_1(K(A)) is the number of K(A)-pivots of the complete reduction: once
    either input reaches it, neither can drop again for both, and the reduction stops, often
    before the non-U squares, whose classes (:func:`nonu_square_classes`) are then never
    computed.

    Both reductions share one pass: ``code`` (uint8, nvox) holds f's bit (1) and g's bit (2)
    per voxel, and ``owner`` (int32, 6*nvox) interleaves the two inputs' owners per edge, so
    a column reads one small array and one cache line for both. mark_f, mark_g, cls (uint8)
    are work buffers of 3*nvox entries; parent (int32) of nvox + 1.
    """
    nvox = n0 * n1 * n2
    nsq = 3 * nvox
    big = 3 * nvox
    if target_f <= 0 or target_g <= 0:
        return 0
    s0 = n1 * n2
    for v in range(nvox):
        code[v] = (1 if f[v] != 0 else 0) | (2 if g[v] != 0 else 0)
    owner[:2 * nsq] = -1  # owner ids are < 6*nvox < 2**31 (checked by the caller)
    mark_f[:nsq] = 0
    mark_g[:nsq] = 0
    # small first sizes on purpose: they grow by doubling (cheap), and small blocks in the
    # tests then exercise the growth too
    pool_f = np.empty(1 << 8, dtype=np.int64)
    pool_g = np.empty(1 << 8, dtype=np.int64)
    ps_f = np.empty(1 << 4, dtype=np.int64)
    pl_f = np.empty(1 << 4, dtype=np.int64)
    ps_g = np.empty(1 << 4, dtype=np.int64)
    pl_g = np.empty(1 << 4, dtype=np.int64)
    meta_f = np.zeros(2, dtype=np.int64)
    meta_g = np.zeros(2, dtype=np.int64)
    heap_f = np.empty(1 << 4, dtype=np.int64)
    heap_g = np.empty(1 << 4, dtype=np.int64)
    other = np.empty(4, dtype=np.int64)
    found_f = 0
    found_g = 0
    m1 = 0
    nku = kus.shape[0]
    # Phases: 0 and 1 the K(U) squares, those in neither K(F) nor K(G) first (any order of
    # the K(U) columns gives the same result, and this one needs about half the additions on
    # sheet-like inputs); 2 the other squares, in id order.
    for phase in range(3):
        if phase == 2:
            nonu_square_classes(u, n0, n1, n2, cls, parent)
        for idx in range(nku if phase < 2 else nsq):
            if phase < 2:
                if ku_cleared[idx] != 0:
                    continue
                s = kus[idx]
            else:
                if cls[idx] != 2:
                    continue
                s = idx
            v = s // 3
            t = s - 3 * v
            if t == 0:
                b = v + n2
                c = v + 1
            elif t == 1:
                b = v + s0
                c = v + 1
            else:
                b = v + s0
                c = v + n2
            d = b + c - v
            inside = code[v] & code[b] & code[c] & code[d]  # bit A: the square is in K(A)
            if phase < 2 and (inside == 0) != (phase == 0):
                continue
            # The column's pivot before any addition; when nobody owns it (most columns) the
            # pair is emergent and there is nothing to reduce.
            pf = _first_pivot(v, b, c, d, t, code, 1, big)
            ef = pf - big if pf >= big else pf
            if owner[2 * ef] < 0:
                owner[2 * ef] = 2 * s
            else:
                pf, pool_f, ps_f, pl_f, heap_f = _reduce_column(
                    s, n1, n2, code, 1, big, owner, 0, pool_f, ps_f, pl_f, meta_f, heap_f,
                    mark_f, other)
            pg = _first_pivot(v, b, c, d, t, code, 2, big)
            eg = pg - big if pg >= big else pg
            if owner[2 * eg + 1] < 0:
                owner[2 * eg + 1] = 2 * s
            else:
                pg, pool_g, ps_g, pl_g, heap_g = _reduce_column(
                    s, n1, n2, code, 2, big, owner, 1, pool_g, ps_g, pl_g, meta_g, heap_g,
                    mark_g, other)
            drop_f = pf >= 0 and pf < big
            drop_g = pg >= 0 and pg < big
            if drop_f:
                found_f += 1
            if drop_g:
                found_g += 1
            if phase == 2 and drop_f and drop_g:
                m1 += 1
            if found_f >= target_f or found_g >= target_g:
                return m1
    return m1


# ---------------------------------------------------------------- surface Dice


@njit(**_JIT)
def surfels(mask, n0, n1, n2):
    """Neighbour codes of every 2x2x2 window of the zero-padded mask that is a surfel.

    Window position p (0..n per axis) covers voxels p-1 and p, weights as the DeepMind
    kernel: 128 for (p-1, p-1, p-1) ... 1 for (p, p, p). Each foreground voxel ORs its bit
    into the 8 windows that contain it, so the work follows the foreground. Returns (flat
    positions in the (n0+1, n1+1, n2+1) grid, codes), in ascending position order, and the
    grid of every window's code.
    """
    m1 = n1 + 1
    m2 = n2 + 1
    grid = np.zeros((n0 + 1) * m1 * m2, dtype=np.uint8)
    for x in range(n0):
        for y in range(n1):
            for z in range(n2):
                if mask[(x * n1 + y) * n2 + z] == 0:
                    continue
                for a in range(2):
                    for b in range(2):
                        for c in range(2):
                            # window p = voxel + (a,b,c); the voxel is its corner (1-a,1-b,1-c)
                            bit = 1 << (7 - (4 * (1 - a) + 2 * (1 - b) + (1 - c)))
                            grid[((x + a) * m1 + y + b) * m2 + z + c] |= bit
    cnt = 0
    for p in range(grid.shape[0]):
        if grid[p] != 0 and grid[p] != 255:
            cnt += 1
    pos = np.empty(cnt, dtype=np.int64)
    codes = np.empty(cnt, dtype=np.uint8)
    i = 0
    for p in range(grid.shape[0]):
        if grid[p] != 0 and grid[p] != 255:
            pos[i] = p
            codes[i] = grid[p]
            i += 1
    return pos, codes, grid


@njit(**_JIT)
def area_near(pos, codes, area_table, other_codes, m1, m2, offsets):
    """(area of the surfels within tolerance of the other mask's surface, total area). A
    surfel is within tolerance when some offset of the ball (symmetric) lands on a surfel
    of the other mask, read from its window codes; ``offsets`` come shortest first, so the
    search usually stops at the first few."""
    m0 = other_codes.shape[0] // (m1 * m2)
    total = 0.0
    within = 0.0
    for q in range(pos.shape[0]):
        p = pos[q]
        a = area_table[codes[q]]
        total += a
        i = p // (m1 * m2)
        j = (p // m2) % m1
        k = p % m2
        for o in range(offsets.shape[0]):
            ii = i + offsets[o, 0]
            jj = j + offsets[o, 1]
            kk = k + offsets[o, 2]
            if ii < 0 or jj < 0 or kk < 0 or ii >= m0 or jj >= m1 or kk >= m2:
                continue
            c = other_codes[(ii * m1 + jj) * m2 + kk]
            if c != 0 and c != 255:
                within += a
                break
    return within, total


# ---------------------------------------------------------------- VOI


@njit(**_JIT)
def run_overlaps(rs_a, z0_a, z1_a, root_a, rs_b, z0_b, z1_b, root_b):
    """Segments of constant (component of a, component of b) along every row, over voxels
    in either foreground. Returns (label_a, label_b, length) arrays; label = root run + 1,
    0 for background."""
    nrows = rs_a.shape[0] - 1
    cap = 1 << 16
    la = np.empty(cap, dtype=np.int64)
    lb = np.empty(cap, dtype=np.int64)
    ln = np.empty(cap, dtype=np.int64)
    cnt = 0
    big = 1 << 60
    for r in range(nrows):
        i = rs_a[r]
        ie = rs_a[r + 1]
        j = rs_b[r]
        je = rs_b[r + 1]
        z = -1
        while i < ie or j < je:
            gs = z0_a[i] if i < ie else big
            ge = z1_a[i] if i < ie else big
            ps = z0_b[j] if j < je else big
            pe = z1_b[j] if j < je else big
            start = max(z, min(gs, ps))
            in_a = i < ie and gs <= start
            in_b = j < je and ps <= start
            end = big
            if in_a:
                end = min(end, ge)
            elif i < ie:
                end = min(end, gs - 1)
            if in_b:
                end = min(end, pe)
            elif j < je:
                end = min(end, ps - 1)
            if cnt == cap:
                cap *= 2
                t1 = np.empty(cap, dtype=np.int64)
                t1[:cnt] = la[:cnt]
                la = t1
                t2 = np.empty(cap, dtype=np.int64)
                t2[:cnt] = lb[:cnt]
                lb = t2
                t3 = np.empty(cap, dtype=np.int64)
                t3[:cnt] = ln[:cnt]
                ln = t3
            la[cnt] = root_a[i] + 1 if in_a else 0
            lb[cnt] = root_b[j] + 1 if in_b else 0
            ln[cnt] = end - start + 1
            cnt += 1
            z = end + 1
            if i < ie and ge < z:
                i += 1
            if j < je and pe < z:
                j += 1
    return la[:cnt].copy(), lb[:cnt].copy(), ln[:cnt].copy()
