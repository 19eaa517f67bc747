"""m_0 against a plain computation written from docs/metric.md 6.3 alone: a dictionary
union-find over every voxel, every edge that touches U^c taken in lexicographic (x, y, z, t)
order, a match counted when both groups hold F and G voxels.

The kernel does no union-find over the background: it relies on the growing group of
everything reached so far taking in each U-component whole, at the first edge from a
background voxel into it (its docstring). That argument going wrong changes a count here.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")

from vesukit.metric._numba import kernels  # noqa: E402
from vesukit.metric.topology import InputBlock, match_blocks  # noqa: E402


def reference_m0(f: np.ndarray, g: np.ndarray) -> int:
    n0, n1, n2 = f.shape
    in_u = f | g
    parent: dict = {}
    has = {}

    def find(a):
        while parent[a] != a:
            a = parent[a]
        return a

    def join(a, b):
        ra, rb = find(a), find(b)
        if ra == rb:
            return False
        both = has[ra] == {"F", "G"} == has[rb]
        parent[rb] = ra
        has[ra] = has[ra] | has[rb]
        return both

    for p in np.ndindex(f.shape):
        parent[p] = p
        has[p] = {name for name, mask in (("F", f), ("G", g)) if mask[p]}
    edges = []
    for x, y, z in np.ndindex(f.shape):
        for t, q in enumerate(((x + 1, y, z), (x, y + 1, z), (x, y, z + 1))):
            if q[t] < f.shape[t]:
                edges.append(((x, y, z), q))
    for p, q in edges:  # 1. the 6-components of U
        if in_u[p] and in_u[q]:
            join(p, q)
    # 2. the edges touching U^c, in (x, y, z, t) order (the list is built in that order)
    return sum(join(p, q) for p, q in edges if not (in_u[p] and in_u[q]))


def _random_pair(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(2, 11, size=3))
    kind = seed % 3
    if kind == 0:  # noise, the prediction a few flips away
        g = rng.random(shape) < rng.uniform(0.1, 0.6)
        f = g ^ (rng.random(shape) < rng.uniform(0.02, 0.2))
    elif kind == 1:  # a holed sheet, shifted by a voxel
        g = np.zeros(shape, bool)
        g[:, shape[1] // 2, :] = True
        g &= rng.random(shape) < 0.85
        f = np.roll(g, 1, axis=int(rng.integers(3)))
    else:  # independent, sparse: many small components of F, of G and of both
        g = rng.random(shape) < rng.uniform(0.1, 0.35)
        f = rng.random(shape) < rng.uniform(0.1, 0.35)
    return f, g


@pytest.mark.parametrize("seed", range(60))
def test_m0_equals_the_plain_kruskal(seed):
    f, g = _random_pair(seed)
    expected = reference_m0(f, g)
    assert match_blocks([InputBlock.build(f)], [InputBlock.build(g)])[0][0] == expected
    n0, n1, n2 = f.shape
    nvox = f.size
    got = kernels().dim0_matches(f.astype(np.uint8).reshape(-1), g.astype(np.uint8).reshape(-1),
                                 n0, n1, n2, np.empty(nvox, np.int32), np.empty(nvox, np.uint8))
    assert got == expected


def test_the_reference_gives_the_documented_order_dependence():
    """docs/metric.md section 7: the 1x3x3 block gives m_0 = 1, transposed 0."""
    f = np.zeros((1, 3, 3), bool)
    g = np.zeros((1, 3, 3), bool)
    f[0, 0, 2] = f[0, 2, 1] = True
    g[0, 0, 0] = g[0, 2, 1] = True
    assert reference_m0(f, g) == 1
    assert reference_m0(f.transpose(0, 2, 1), g.transpose(0, 2, 1)) == 0
