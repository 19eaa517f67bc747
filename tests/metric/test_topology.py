"""Betti matching on small hand-made blocks, checked against hand-derived counts."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")

from vesukit.metric.topology import InputBlock, build_blocks, match_blocks, octant_slices, topo_score  # noqa: E402


def _block(f, g):
    return match_blocks([InputBlock.build(f)], [InputBlock.build(g)])


def _ring(shape=(1, 7, 7)):
    a = np.zeros(shape, np.uint8)
    a[0, 1:6, 1:6] = 1
    a[0, 2:5, 2:5] = 0
    return a


def _hollow_cube(n=7):
    a = np.zeros((n, n, n), np.uint8)
    a[1:-1, 1:-1, 1:-1] = 1
    a[2:-2, 2:-2, 2:-2] = 0
    return a


def test_identity_ring_and_shell():
    ring = _ring()
    assert _block(ring, ring) == {0: (0, 0, 0), 1: (1, 1, 1), 2: (0, 0, 0)}
    shell = _hollow_cube()
    assert _block(shell, shell) == {0: (0, 0, 0), 1: (0, 0, 0), 2: (1, 1, 1)}


def test_unrelated_features_do_not_match():
    a = np.zeros((1, 9, 16), np.uint8)
    a[0, 1:6, 1:6] = 1
    a[0, 2:5, 2:5] = 0
    b = np.zeros_like(a)
    b[0, 1:6, 9:14] = 1
    b[0, 2:5, 10:13] = 0
    assert _block(a, b)[1] == (0, 1, 1)


def test_dim0_order_dependence_example():
    """docs/metric.md section 7: the 1x3x3 block gives (1,1,1), transposed (0,1,1)."""
    f = np.zeros((1, 3, 3), np.uint8)
    g = np.zeros((1, 3, 3), np.uint8)
    f[0, 0, 2] = f[0, 2, 1] = 1
    g[0, 0, 0] = g[0, 2, 1] = 1
    assert _block(f, g)[0] == (1, 1, 1)
    ft = np.ascontiguousarray(f.transpose(0, 2, 1))
    gt = np.ascontiguousarray(g.transpose(0, 2, 1))
    assert _block(ft, gt)[0] == (0, 1, 1)


def test_swapping_inputs_swaps_p_and_g():
    rng = np.random.default_rng(3)
    f = (rng.random((9, 10, 11)) < 0.55).astype(np.uint8)
    g = (rng.random((9, 10, 11)) < 0.55).astype(np.uint8)
    fg = _block(f, g)
    gf = _block(g, f)
    for dim in range(3):
        m, p, q = fg[dim]
        assert gf[dim] == (m, q, p)
    assert any(fg[d][1] > 0 for d in range(3))


def test_octants_first_part_larger():
    slices = octant_slices((5, 4, 3))
    assert slices[0] == (slice(0, 3), slice(0, 2), slice(0, 2))
    assert slices[-1] == (slice(3, 5), slice(2, 4), slice(2, 3))
    assert len(build_blocks(np.zeros((5, 4, 3), bool))) == 8


def test_topo_score_rules():
    assert topo_score({0: (0, 0, 0), 1: (0, 0, 0), 2: (0, 0, 0)}) == 1.0
    # only dim 1 active, gt empty there: pseudo-count 0.5/(p+0.5)
    assert topo_score({0: (0, 0, 0), 1: (0, 3, 0), 2: (0, 0, 0)}) == pytest.approx(0.5 / 3.5)
    s = topo_score({0: (1, 2, 2), 1: (0, 0, 0), 2: (1, 1, 3)})
    assert s == pytest.approx((0.34 * 0.5 + 0.33 * 0.5) / 0.67)


def _full_dim1(f: InputBlock, g: InputBlock) -> int:
    """m_1 without early exit: both reductions run over every column."""
    from vesukit.metric._numba import kernels

    k = kernels()
    n0, n1, n2 = f.shape
    nvox = n0 * n1 * n2
    u = (f.mask | g.mask).astype(np.uint8)
    kus, ku_cleared = k.kus_births(u, n0, n1, n2, np.empty(nvox + 1, np.int32), np.empty(nvox, np.int32))
    big = 1 << 40
    return k.dim1_matches(f.mask, g.mask, u, kus, ku_cleared, n0, n1, n2, big, big,
                          np.empty(nvox, np.uint8), *(np.empty(3 * nvox, np.uint8) for _ in range(2)),
                          np.empty(6 * nvox, np.int32), np.empty(3 * nvox, np.uint8),
                          np.empty(nvox + 1, np.int32))


@pytest.mark.parametrize("seed", range(8))
def test_early_exit_and_shortcuts_change_nothing(seed):
    """The early exit (a reduction stops once an input has no class left) and the
    identical-block shortcut give the counts of the plain computation."""
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(5, 14, size=3))
    base = rng.random(shape) < rng.uniform(0.3, 0.7)
    other = base.copy()
    flip = rng.random(shape) < 0.1
    other[flip] = ~other[flip]
    f = InputBlock.build(base.astype(np.uint8))
    g = InputBlock.build(other.astype(np.uint8))
    counts = match_blocks([f], [g])
    assert counts[1][0] == _full_dim1(f, g)
    same = InputBlock.build(base.astype(np.uint8))
    assert _full_dim1(f, same) == f.betti[1] == match_blocks([f], [same])[1][0]


def test_identical_shortcut_agrees_with_dims_0_and_2():
    from vesukit.metric._numba import kernels
    from vesukit.metric.topology import workspace

    k = kernels()
    a = _hollow_cube(9)
    a[0, 0, :3] = 1  # a second component
    f = InputBlock.build(a)
    n0, n1, n2 = f.shape
    with workspace(n0 * n1 * n2) as ws:
        assert k.dim0_matches(f.mask, f.mask, n0, n1, n2, ws.vox_i32, ws.vox_u8) == f.betti[0] == 1
    keys = k.cavity_keys(*f.cavities, f.mask, n2)
    assert k.count_common_keys(keys, keys, n0 * n1 * n2) == f.betti[2] == 1


def test_a_warm_score_on_two_threads_allocates_no_work_buffers(monkeypatch):
    """The pool's threads end with each call; their work buffers must not (a fresh set costs
    page faults on every warm call of the calibration search)."""
    from vesukit.metric import PreparedLabel, topology

    rng = np.random.default_rng(3)
    label = (rng.random((24, 22, 20)) < 0.4).astype(np.uint8)
    pred = label ^ (rng.random(label.shape) < 0.05)
    prepared = PreparedLabel(label, workers=2)
    first = prepared.score(pred)
    built = []
    original = topology._Workspace.__init__

    def counting_init(self, nvox):
        built.append(nvox)
        original(self, nvox)

    monkeypatch.setattr(topology._Workspace, "__init__", counting_init)
    assert prepared.score(pred) == first
    assert built == []
