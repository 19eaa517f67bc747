"""Each post-processing step on crafted volumes, with and without cc3d."""

from functools import partial

import numpy as np
import pytest

from vesukit import _optional
from vesukit.decide.steps import STEPS, PostprocessError, apply_postprocess, check_steps, label_components
from vesukit.maps import EnsembleMaps

Maps = partial(EnsembleMaps, n_teachers=3, total_weight=3.0)


@pytest.fixture(params=["cc3d", "scipy"])
def labeller(request):
    """Run the test with cc3d (when installed) and with the scipy fallback."""
    if request.param == "cc3d":
        pytest.importorskip("cc3d")
    else:
        _optional.disable("cc3d")
    yield request.param
    _optional.enable("cc3d")


def test_every_step_is_registered():
    assert set(STEPS) == {"zero_border", "remove_small", "drop_uncertain", "fill_holes", "close",
                          "keep_sheets", "hysteresis", "split_merged", "sheet_close", "patch_holes",
                          "plug_holes", "fill_tunnels", "slice_gaps", "gaussian_rethreshold",
                          "diagonal_bridge", "median_filter", "first_place", "ninth_place", "second_place"}


def test_zero_border_clears_every_face():
    mask = np.ones((10, 12, 14), dtype=np.uint8)
    out = apply_postprocess(mask, [{"step": "zero_border", "width": 2}])
    assert out[2:-2, 2:-2, 2:-2].all()
    assert out.sum() == 6 * 8 * 10
    assert apply_postprocess(mask, [{"step": "zero_border", "width": 0}]).all()


def test_components_are_26_connected(labeller):
    mask = np.zeros((6, 6, 6), dtype=np.uint8)
    mask[1, 1, 1] = mask[2, 2, 2] = 1          # corner neighbours: one component
    mask[4, 4, 4] = 1                          # separate
    labels, count = label_components(mask)
    assert count == 2
    assert labels[1, 1, 1] == labels[2, 2, 2] != labels[4, 4, 4]


def test_remove_small_keeps_components_at_the_size(labeller):
    mask = np.zeros((20, 20, 20), dtype=np.uint8)
    mask[2:5, 2:5, 2:5] = 1            # 27 voxels
    mask[10:12, 10:12, 10:12] = 1      # 8 voxels
    mask[15, 15, 15] = mask[16, 16, 16] = 1  # 2 voxels, diagonal
    out = apply_postprocess(mask, [{"step": "remove_small", "min_voxels": 8}])
    assert out.sum() == 27 + 8
    assert out[15, 15, 15] == 0
    out = apply_postprocess(mask, [{"step": "remove_small", "min_voxels": 2}])
    assert out.sum() == 27 + 8 + 2
    assert apply_postprocess(np.zeros_like(mask), [{"step": "remove_small"}]).sum() == 0


def test_drop_uncertain_judges_whole_components(labeller):
    mask = np.zeros((12, 12, 12), dtype=np.uint8)
    mask[1:4, 1:4, 1:4] = 1
    mask[7:10, 7:10, 7:10] = 1
    disagreement = np.zeros(mask.shape, dtype=np.float32)
    disagreement[7:10, 7:10, 7:10] = 0.8
    disagreement[1, 1, 1] = 1.0  # one torn voxel does not sink a calm component
    maps = Maps(mask * 0.9, np.zeros(mask.shape), disagreement)
    out = apply_postprocess(mask, [{"step": "drop_uncertain", "max_disagreement": 0.5}], maps)
    assert out[1:4, 1:4, 1:4].all() and out.sum() == 27
    out = apply_postprocess(mask, [{"step": "drop_uncertain", "max_disagreement": 0.9}], maps)
    assert out.sum() == 54
    with pytest.raises(PostprocessError, match="needs the ensemble maps"):
        apply_postprocess(mask, [{"step": "drop_uncertain"}], None)


def test_drop_uncertain_accepts_torch_maps():
    torch = pytest.importorskip("torch")
    mask = np.zeros((8, 8, 8), dtype=np.uint8)
    mask[2:5, 2:5, 2:5] = 1
    maps = Maps(torch.zeros(mask.shape), torch.zeros(mask.shape), torch.full(mask.shape, 0.7))
    assert apply_postprocess(mask, [{"step": "drop_uncertain"}], maps).sum() == 0


def hollow_box(shape=(16, 16, 16), outer=(3, 13), inner=(6, 9)):
    mask = np.zeros(shape, dtype=np.uint8)
    a, b = outer
    mask[a:b, a:b, a:b] = 1
    c, d = inner
    mask[c:d, c:d, c:d] = 0   # 27-voxel cavity
    return mask


def test_fill_holes_fills_enclosed_cavities_only(labeller):
    mask = hollow_box()
    out = apply_postprocess(mask, [{"step": "fill_holes"}])
    assert out[6:9, 6:9, 6:9].all()
    assert out.sum() == mask.sum() + 27
    # a tunnel to the outside: not enclosed, left alone
    tunnelled = mask.copy()
    tunnelled[7, 7, 0:9] = 0
    assert np.array_equal(apply_postprocess(tunnelled, [{"step": "fill_holes"}]), tunnelled)
    # background touching only along an edge diagonal is not a way out (6-connected bg)
    diagonal = mask.copy()
    diagonal[8, 8, 9] = 0
    out = apply_postprocess(diagonal, [{"step": "fill_holes"}])
    assert out[6:9, 6:9, 6:9].all() and out[8, 8, 9] == 1


def test_fill_holes_size_limit(labeller):
    mask = hollow_box()
    assert np.array_equal(apply_postprocess(mask, [{"step": "fill_holes", "max_voxels": 26}]),
                          mask)
    assert apply_postprocess(mask, [{"step": "fill_holes", "max_voxels": 27}])[7, 7, 7] == 1


def test_close_bridges_a_one_voxel_gap_and_only_adds():
    mask = np.zeros((12, 12, 12), dtype=np.uint8)
    mask[4:8, 4:8, 1:5] = 1
    mask[4:8, 4:8, 6:11] = 1       # gap at x = 5
    out = apply_postprocess(mask, [{"step": "close", "radius": 1}])
    assert out[5:7, 5:7, 5].all()
    assert (out >= mask).all()
    # a sheet touching the volume's face keeps its face voxels (padding, no edge erosion)
    sheet = np.zeros((8, 8, 8), dtype=np.uint8)
    sheet[:, :, 3] = 1
    assert np.array_equal(apply_postprocess(sheet, [{"step": "close"}]), sheet)
    assert apply_postprocess(mask, [{"step": "close", "radius": 0}]).sum() == mask.sum()


def test_chain_runs_in_order():
    mask = np.zeros((16, 16, 16), dtype=np.uint8)
    mask[0:8, 0:8, 0:8] = 1   # 512 voxels, 1-voxel thick shell at the faces after border 1
    border_first = apply_postprocess(mask, [{"step": "zero_border", "width": 1},
                                            {"step": "remove_small", "min_voxels": 400}])
    small_first = apply_postprocess(mask, [{"step": "remove_small", "min_voxels": 400},
                                           {"step": "zero_border", "width": 1}])
    assert border_first.sum() == 0          # 7^3 = 343 < 400 after the border
    assert small_first.sum() == 343


def test_check_steps_names_the_problem():
    with pytest.raises(PostprocessError, match="'open'.*Known steps"):
        check_steps([{"step": "open"}])
    with pytest.raises(PostprocessError, match="radius"):
        check_steps([{"step": "fill_holes", "radius": 2}])
    with pytest.raises(PostprocessError, match="expected an integer >= 0"):
        check_steps([{"step": "close", "radius": "big"}])
    check_steps([{"step": name} for name in STEPS])


def test_median_filter_numba_majority_equals_the_numpy_one_faces_and_all(monkeypatch):
    """median_filter's compiled majority (the search runs it many times; it counts from the set
    voxels only) is the numpy one's voxel for voxel, over several rounds: blocks thinner than
    the window, mirrored faces and open edges."""
    pytest.importorskip("numba")
    from vesukit.decide import _kernels, steps

    rng = np.random.default_rng(3)
    for _ in range(60):
        shape = tuple(int(n) for n in rng.integers(1, 10, 3))
        reach = int(rng.integers(1, 4))
        block = rng.random(shape) < rng.random()
        faces = [(bool(rng.integers(2)), bool(rng.integers(2))) for _ in range(3)]
        rounds = int(rng.integers(1, 4))
        got = _kernels.sparse_majority(block.view(np.uint8), reach, np.array([f[0] for f in faces]),
                                       np.array([f[1] for f in faces]), rounds)
        expected = block
        for _ in range(rounds):
            expected = steps._majority(expected, reach, faces)
        assert np.array_equal(got, expected), (shape, reach, faces, rounds)
    mask = (rng.random((30, 34, 38)) < 0.45).astype(np.uint8)
    fast = apply_postprocess(mask, [{"step": "median_filter", "rounds": 7, "size": 3}])
    monkeypatch.setattr(steps, "kernels", lambda: None)
    assert np.array_equal(fast, apply_postprocess(mask, [{"step": "median_filter", "rounds": 7, "size": 3}]))


def test_close_with_numba_equals_the_scipy_closing(monkeypatch):
    """close's numba form (dilation from the mask's voxels, erosion tested where it added) is
    scipy's padded closing voxel for voxel: blocks thinner than the element, sheets at the faces,
    dense and sparse masks, radius 1 to 3."""
    pytest.importorskip("numba")
    from vesukit.decide import steps

    rng = np.random.default_rng(11)
    cases = []
    for _ in range(40):
        shape = tuple(int(n) for n in rng.integers(1, 14, 3))
        cases.append(((rng.random(shape) < rng.random()).astype(np.uint8), int(rng.integers(1, 4))))
    sheet = np.zeros((20, 24, 22), np.uint8)
    sheet[0:2] = 1
    sheet[0:2, 5:7, 5:9] = 0                                       # a tear at a face
    sheet[10:13, 3:20, 2:21] = 1
    sheet[11, 9, 4:18] = 0                                         # a 1-voxel slit inside
    cases += [(sheet, 1), (sheet, 2)]
    fast = [steps.close(mask, radius=radius) for mask, radius in cases]
    monkeypatch.setattr(steps, "kernels", lambda: None)
    for (mask, radius), got in zip(cases, fast):
        expected = steps.close(mask, radius=radius)
        assert got.dtype == expected.dtype == np.uint8
        assert np.array_equal(got, expected), (mask.shape, radius)
    assert fast[-2][11, 9, 4:18].all()                             # the slit was closed
