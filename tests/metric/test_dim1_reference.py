"""m_1 and the comparison's dim-2 births against a plain, slow computation written from
docs/metric.md 6.5 alone: dense GF(2) column reduction with Python integers as bit columns,
every column reduced (no clearing, no early stop, no fast path, no lazy clearing).

The fast kernels skip most of that work (clearing, emergent pairs, heap-held columns, a
clearing of K(U) squares from the background's components); any of those shortcuts going
wrong changes a count here.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")

from vesukit.metric._numba import kernels  # noqa: E402
from vesukit.metric.topology import InputBlock, match_blocks  # noqa: E402


def _squares(shape):
    """(square id, its 4 voxels, its 4 edge ids) in id order, per docs/metric.md section 2."""
    n0, n1, n2 = shape

    def vid(x, y, z):
        return (x * n1 + y) * n2 + z

    out = []
    for x in range(n0):
        for y in range(n1):
            for z in range(n2):
                v = vid(x, y, z)
                if y + 1 < n1 and z + 1 < n2:  # t = 0: {x} x {y,y+1} x {z,z+1}
                    out.append((3 * v, (v, vid(x, y + 1, z), vid(x, y, z + 1), vid(x, y + 1, z + 1)),
                                (3 * v + 1, 3 * vid(x, y, z + 1) + 1, 3 * v + 2, 3 * vid(x, y + 1, z) + 2)))
                if x + 1 < n0 and z + 1 < n2:  # t = 1: {x,x+1} x {y} x {z,z+1}
                    out.append((3 * v + 1, (v, vid(x + 1, y, z), vid(x, y, z + 1), vid(x + 1, y, z + 1)),
                                (3 * v, 3 * vid(x, y, z + 1), 3 * v + 2, 3 * vid(x + 1, y, z) + 2)))
                if x + 1 < n0 and y + 1 < n1:  # t = 2: {x,x+1} x {y,y+1} x {z}
                    out.append((3 * v + 2, (v, vid(x + 1, y, z), vid(x, y + 1, z), vid(x + 1, y + 1, z)),
                                (3 * v, 3 * vid(x, y + 1, z), 3 * v + 1, 3 * vid(x + 1, y, z) + 1)))
    return out


def _edge_voxels(e, shape):
    n0, n1, n2 = shape
    v, t = divmod(e, 3)
    step = (n1 * n2, n2, 1)[t]
    x, y, z = np.unravel_index(v, shape)
    inside = (x + 1 < n0, y + 1 < n1, z + 1 < n2)[t]
    return (v, v + step) if inside else None


def reference(f: np.ndarray, g: np.ndarray):
    """(m_1, cleared K(U) square ids, cleared non-U square ids) of one block, the slow way.

    A square is a comparison dim-2 birth exactly when its column reduces to zero in the
    comparison order (K(U) squares by id, then the others by id), whatever the row order."""
    shape = f.shape
    ff, gg = f.reshape(-1) != 0, g.reshape(-1) != 0
    u = ff | gg
    squares = _squares(shape)
    in_u = [all(u[w] for w in voxels) for _, voxels, _ in squares]
    order = [i for i in range(len(squares)) if in_u[i]] + [i for i in range(len(squares)) if not in_u[i]]
    drops = {}
    zero = set()
    for a in (ff, gg):
        a_edges = []
        for e in range(3 * f.size):
            ends = _edge_voxels(e, shape)
            if ends is not None and a[ends[0]] and a[ends[1]]:
                a_edges.append(e)
        n_a = len(a_edges)
        # row rank: K(A)-edges first (by id), then the others (by id); pivot = highest rank
        rank = {e: i for i, e in enumerate(a_edges)}
        rest = [e for e in range(3 * f.size) if e not in rank]
        rank.update({e: n_a + i for i, e in enumerate(rest)})
        pivots: dict[int, int] = {}
        drop = set()
        for i in order:
            sq_id, _, edges = squares[i]
            col = 0
            for e in edges:
                col ^= 1 << rank[e]
            while col and (col.bit_length() - 1) in pivots:
                col ^= pivots[col.bit_length() - 1]
            if col == 0:
                zero.add(sq_id)
                continue
            low = col.bit_length() - 1
            pivots[low] = col
            if low < n_a and not in_u[i]:
                drop.add(sq_id)
        drops[id(a)] = drop
    m1 = len(drops[id(ff)] & drops[id(gg)])
    kus = {squares[i][0] for i in range(len(squares)) if in_u[i]}
    return m1, zero & kus, zero - kus


def _random_pair(seed):
    """Blocks of the kinds the scorer meets: noise, sheets with holes, shifted or eroded
    copies, pred = label, and volumes that are mostly foreground or mostly background."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(3, 12, size=3))
    kind = seed % 4
    if kind == 0:
        g = rng.random(shape) < rng.uniform(0.2, 0.8)
        f = g ^ (rng.random(shape) < rng.uniform(0.02, 0.15))
    elif kind == 1:  # sheets with holes, prediction shifted by one voxel
        g = np.zeros(shape, bool)
        g[:, :, ::3] = True
        g &= rng.random(shape) < 0.8
        f = np.roll(g, 1, axis=int(rng.integers(3)))
    elif kind == 2:  # independent inputs
        g = rng.random(shape) < rng.uniform(0.3, 0.9)
        f = rng.random(shape) < rng.uniform(0.3, 0.9)
    else:  # hollow box with random walls in one input only
        g = np.zeros(shape, bool)
        g[1:-1, 1:-1, 1:-1] = True
        g[2:-2, 2:-2, 2:-2] = False
        f = g | (rng.random(shape) < 0.2)
        f &= rng.random(shape) < 0.9
    return f.astype(np.uint8), g.astype(np.uint8)


@pytest.mark.parametrize("seed", range(60))
def test_m1_equals_the_plain_reduction(seed):
    f, g = _random_pair(seed)
    m1, _, _ = reference(f, g)
    counts = match_blocks([InputBlock.build(f)], [InputBlock.build(g)])
    assert counts[1][0] == m1, (seed, f.shape)


@pytest.mark.parametrize("seed", range(30))
def test_cleared_squares_are_the_zero_columns(seed):
    """The K(U) squares the fast path skips (births found from the background's components)
    and the other skipped squares are exactly the columns that reduce to zero."""
    f, g = _random_pair(seed)
    _, zero_ku, zero_rest = reference(f, g)
    k = kernels()
    u = (f | g).astype(np.uint8).reshape(-1)
    n0, n1, n2 = f.shape
    nvox = f.size
    kus, ku_cleared = k.kus_births(u, n0, n1, n2, np.empty(nvox + 1, np.int32), np.empty(nvox, np.int32))
    assert set(kus[ku_cleared != 0].tolist()) == zero_ku
    cls = k.nonu_square_classes(u, n0, n1, n2, np.empty(3 * nvox, np.uint8),
                                np.empty(nvox + 1, np.int32))
    assert set(np.flatnonzero(cls == 3).tolist()) == zero_rest
    assert set(np.flatnonzero(cls == 1).tolist()) == set(kus.tolist())
