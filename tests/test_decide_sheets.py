"""The winners' steps on crafted volumes whose right answer is known."""

from functools import partial

import numpy as np
import pytest

from vesukit.decide.components import euler_number, label_components
from vesukit.decide.steps import apply_postprocess
from vesukit.maps import EnsembleMaps

Maps = partial(EnsembleMaps, n_teachers=1, total_weight=1.0)


def run(mask, name, maps=None, /, **params):
    return apply_postprocess(mask, [{"step": name, **params}], maps)


def flat_sheet(shape=(20, 40, 40), z=10, thickness=1, margin=4):
    mask = np.zeros(shape, np.uint8)
    mask[z:z + thickness, margin:-margin, margin:-margin] = 1
    return mask


def components(mask):
    return label_components(mask)[1]


def test_euler_number_counts_holes():
    sheet = flat_sheet()
    assert euler_number(sheet) == 1
    sheet[10, 20, 20] = 0
    assert euler_number(sheet) == 0                      # one hole
    sheet[10, 10:13, 10:13] = 0
    assert euler_number(sheet) == -1                     # two holes


def test_remove_small_6_and_26_connectivity():
    mask = np.zeros((12, 12, 12), np.uint8)
    mask[2:4, 2:4, 2:4] = 1
    mask[4:6, 4:6, 4:6] = 1                              # touches the first at one corner
    assert run(mask, "remove_small", min_voxels=10).sum() == 16             # one 26-component
    assert run(mask, "remove_small", min_voxels=10, connectivity=6).sum() == 0  # two of 8
    corner = np.zeros((12, 12, 12), np.uint8)
    corner[:2, :2, :2] = 1                               # small, but touches three faces
    assert run(corner, "remove_small", min_voxels=10).sum() == 0
    assert run(corner, "remove_small", min_voxels=10, keep_faces=3).sum() == 8


def test_keep_sheets_keeps_the_largest():
    mask = np.zeros((20, 20, 20), np.uint8)
    mask[2, 2:18, 2:18] = 1       # 256
    mask[8, 2:12, 2:12] = 1       # 100
    mask[14, 2:6, 2:6] = 1        # 16
    out = run(mask, "keep_sheets", count=2)
    assert out.sum() == 356 and out[14].sum() == 0
    assert run(mask, "keep_sheets", count=5).sum() == 372


def test_hysteresis_keeps_weak_parts_of_confident_sheets_only():
    p = np.zeros((16, 16, 16), np.float32)
    p[4, 2:14, 2:14] = 0.5
    p[4, 7, 7] = 0.9              # one confident voxel
    p[10, 2:6, 2:6] = 0.6         # a blob that is never confident
    maps = Maps(p, np.zeros_like(p), np.zeros_like(p))
    out = run((p >= 0.4).astype(np.uint8), "hysteresis", maps, low=0.4, high=0.8)
    assert out[4].sum() == 144 and out[10].sum() == 0


def test_split_merged_splits_bridged_sheets_and_leaves_single_sheets():
    p = np.zeros((16, 24, 24), np.float32)
    p[4, 2:22, 2:22] = 0.9
    p[10, 2:22, 2:22] = 0.9
    p[5:10, 12, 2:22] = 0.45      # a weak wall bridging the two
    maps = Maps(p, np.zeros_like(p), np.zeros_like(p))
    mask = (p >= 0.4).astype(np.uint8)
    assert components(mask) == 1
    out = run(mask, "split_merged", maps, increment=0.05)
    assert components(out) == 2
    assert out[4].sum() == out[10].sum() == 400 and out[5:10].sum() == 0
    single = (p[:8] >= 0.4).astype(np.uint8)
    single_maps = Maps(p[:8].copy(), np.zeros_like(p[:8]), np.zeros_like(p[:8]))
    assert np.array_equal(run(single, "split_merged", single_maps), single)


def test_sheet_close_mends_a_tear_without_merging_close_neighbours():
    mask = np.zeros((20, 40, 40), np.uint8)
    mask[6, 4:36, 4:36] = 1
    mask[10, 4:36, 4:36] = 1      # a neighbour 3 empty voxels away
    mask[6, 19:21, 8:30] = 0      # a 2-voxel-wide tear in the first sheet
    out = run(mask, "sheet_close", radius=3, thin=1.5)
    assert out[6, 19:21, 8:30].all()
    assert components(out) == 2 and out[7:10].sum() == 0
    # the diamond closing of the same size joins them: why the oriented ellipsoid exists
    assert components(run(mask, "close", radius=3)) == 1


def test_patch_holes_patches_a_hole_through_a_sheet():
    sheet = flat_sheet()
    sheet[10, 15:21, 15:21] = 0                      # 36-pixel hole through the sheet
    assert euler_number(sheet) == 0
    assert np.array_equal(run(sheet, "fill_holes"), sheet)   # not an enclosed cavity
    out = run(sheet, "patch_holes", max_area=64)
    assert out[10, 15:21, 15:21].all() and out.sum() == flat_sheet().sum()
    assert np.array_equal(run(sheet, "patch_holes", max_area=20), sheet)   # above the area


def test_patch_holes_follows_a_tilted_sheet_and_leaves_edge_notches():
    z = np.arange(40) // 4 + 3                       # height rises along x
    sheet = np.zeros((20, 40, 40), np.uint8)
    for x in range(4, 36):
        sheet[z[x]:z[x] + 2, 4:36, x] = 1
    holed = sheet.copy()
    holed[:, 16:22, 16:24] = 0
    holed[:, 4:8, 30:34] = 0                         # a notch at the sheet's edge
    out = run(holed, "patch_holes", max_area=100)
    patched = out[:, 16:22, 16:24]
    heights = [np.nonzero(patched[:, 2, i])[0] for i in range(8)]
    for i, found in enumerate(heights):              # filled around the local height
        assert found.size and found.min() >= z[16 + i] - 1 and found.max() <= z[16 + i] + 2
    assert euler_number(out) == 1
    assert out[:, 4:8, 30:34].sum() == 0


def test_patched_sheets_never_merge():
    sheet = flat_sheet()
    sheet[10, 14:24, 14:24] = 0                      # a hole ...
    sheet[10, 18:20, 18:20] = 1                      # ... with a separate blob inside it
    assert components(sheet) == 2
    out = run(sheet, "patch_holes", max_area=200)
    assert components(out) == 2


def test_plug_holes_plugs_one_voxel_holes_only_when_euler_improves():
    sheet = flat_sheet()
    sheet[10, 20, 20] = 0
    sheet[10, 12, 12:14] = 0                         # a 2-voxel hole: two passes
    out = run(sheet, "plug_holes", passes=2)
    assert euler_number(out) == 1 and np.array_equal(out, flat_sheet())
    notched = flat_sheet()
    notched[10, 4:6, 4:6] = 0                        # a notch in the corner: no hole
    assert np.array_equal(run(notched, "plug_holes"), notched)


def test_slice_gaps_fills_one_voxel_gaps_and_diagonals():
    mask = np.zeros((4, 20, 20), np.uint8)
    mask[:, 10, 2:18] = 1
    mask[:, 10, 9] = 0                               # a straight gap
    mask[1, 3:8, 3:8] = np.eye(5, dtype=np.uint8)    # a diagonal line with a gap
    mask[1, 5, 5] = 0
    out = run(mask, "slice_gaps", passes=5)
    assert out[:, 10, 2:18].all() and out[1, 5, 5] == 1
    assert out.sum() == mask.sum() + 4 + 1


def test_gaussian_rethreshold_removes_dust_keeps_thickness_closes_pinholes():
    sheet = flat_sheet(thickness=3, z=8)
    sheet[9, 20, 20] = 0                             # a pinhole inside the thick sheet
    sheet[2, 2, 2] = 1                               # dust
    out = run(sheet, "gaussian_rethreshold", sigma=1.0, level=0.5)
    assert out[2, 2, 2] == 0 and out[9, 20, 20] == 1
    assert out[8:11, 10:30, 10:30].all() and out[:8, 10:30, 10:30].sum() == 0


def test_median_filter_removes_spurs_per_component():
    sheet = flat_sheet(thickness=3, z=4)
    sheet[7, 20, 20] = 1                             # a one-voxel spur
    other = flat_sheet(thickness=3, z=9)             # a second sheet two voxels away
    mask = sheet | other
    assert components(mask) == 2
    out = run(mask, "median_filter", rounds=7)
    assert out[7, 20, 20] == 0 and components(out) == 2
    assert out[4:7, 10:30, 10:30].all() and out[9:12, 10:30, 10:30].all()


@pytest.mark.parametrize("step", ["hysteresis", "split_merged"])
def test_probability_steps_need_maps(step):
    from vesukit.decide.steps import PostprocessError

    with pytest.raises(PostprocessError, match="needs the ensemble maps"):
        run(flat_sheet(), step)


def test_sparse_oriented_close_equals_scipys_dense_closing():
    from scipy import ndimage

    from vesukit.decide.components import main_axis
    from vesukit.decide.sheets import ellipsoid, oriented_close

    rng = np.random.default_rng(4)
    for trial in range(4):
        sheet = np.zeros((14, 30, 26), bool)
        z = (6 + 3 * np.sin(np.arange(26) / 5)).astype(int)
        for x in range(2, 24):
            sheet[z[x]:z[x] + 1 + trial % 2, 3:27, x] = True
        sheet &= rng.random(sheet.shape) > 0.15            # pinholes and tears
        radii = [3.0, 3.0, 3.0]
        radii[main_axis(sheet)] = 1.5
        element = ellipsoid(tuple(radii))
        padded = np.pad(sheet, 4)
        dense = ndimage.binary_erosion(ndimage.binary_dilation(padded, element), element)[4:-4, 4:-4, 4:-4]
        np.testing.assert_array_equal(oriented_close(sheet, 3, 1.5), dense | sheet)


def wavy_sheets(seed, shape=(24, 40, 36)):
    """Three wavy sheets (one touching a face, two a few voxels apart) with tears, pinholes and
    holes, plus dust: the defects the per-sheet steps repair."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, bool)
    x = np.arange(shape[2])
    for base, thickness in ((0, 2), (9, 1), (14, 2)):
        z = (base + 2 + 2 * np.sin(x / 5 + seed)).astype(int)
        for i in range(shape[2]):
            mask[max(z[i], 0):z[i] + thickness, 1:shape[1] - 2, i] = True
    mask &= rng.random(shape) > 0.12                       # pinholes and tears
    for _ in range(3):                                     # holes of a few voxels across
        y, xx = rng.integers(4, shape[1] - 8), rng.integers(4, shape[2] - 8)
        mask[:, y:y + rng.integers(2, 6), xx:xx + rng.integers(2, 6)] = False
    mask |= rng.random(shape) > 0.995                      # dust
    return mask.astype(np.uint8)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("step, params", [
    ("sheet_close", {"radius": 3, "thin": 1.5}), ("sheet_close", {"radius": 2, "thin": 0.5}),
    ("patch_holes", {"max_area": 30}), ("plug_holes", {"passes": 2}),
    ("plug_holes", {"passes": 3, "max_sheets": 2})])
def test_numba_form_equals_the_numpy_form(seed, step, params):
    """The per-sheet steps on each sheet's voxels (numba) give the bounding-box result."""
    from vesukit import _optional
    from vesukit.decide.sheets import kernels

    assert kernels() is not None
    mask = wavy_sheets(seed)
    fast = run(mask, step, **params)
    _optional.disable("numba")
    try:
        assert kernels() is None
        reference = run(mask, step, **params)
    finally:
        _optional.enable("numba")
    assert not np.array_equal(reference, mask)             # the step had work to do
    np.testing.assert_array_equal(fast, reference)


def test_euler_block_table_sums_to_the_euler_number():
    from vesukit.decide.components import EULER_BLOCK_TABLE

    rng = np.random.default_rng(1)
    for _ in range(10):
        mask = rng.random((7, 8, 9)) < 0.4
        padded = np.pad(mask, 1).astype(np.int64)
        pattern = sum(padded[z:z + 8, y:y + 9, x:x + 10] << (4 * z + 2 * y + x)
                      for z in (0, 1) for y in (0, 1) for x in (0, 1))
        assert EULER_BLOCK_TABLE[pattern].sum() == euler_number(mask)


def sheet_probability(shape=(30, 40, 40), sheets=(12,), fringe=0.25):
    """Flat 2-voxel sheets at p 0.9 in a background of 0.05, each with a fringe of ``fringe``
    (just under a 0.3 threshold) on the layers next to it, as a smooth model gives."""
    p = np.full(shape, 0.05, np.float32)
    for z in sheets:
        p[z - 1:z + 3, 4:-4, 4:-4] = np.maximum(p[z - 1:z + 3, 4:-4, 4:-4], fringe)
    for z in sheets:
        p[z:z + 2, 4:-4, 4:-4] = 0.9
    return p


def punch_tunnel(p, z, centre=(20, 20), radius=2.5):
    """A hole through the sheet at ``z``: probability just under 0.3, lowest at its centre."""
    yy, xx = np.ogrid[:p.shape[1], :p.shape[2]]
    distance = np.sqrt((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2)
    hole = distance <= radius
    p[z:z + 2][:, hole] = (0.2 + 0.02 * distance)[hole]


def tunnel_run(p, **params):
    mask = (p >= 0.3).astype(np.uint8)
    return mask, run(mask, "fill_tunnels", Maps(p, np.zeros_like(p), np.zeros_like(p)), **params)


def test_fill_tunnels_fills_a_tunnel_the_probability_nearly_supports():
    p = sheet_probability()
    punch_tunnel(p, 12)
    mask, out = tunnel_run(p)
    assert euler_number(mask) == 0 and components(mask) == 1        # one tunnel
    assert euler_number(out) == 1 and components(out) == 1          # closed
    assert out[12:14, 18:23, 18:23].all() and np.array_equal(out & mask, mask)
    added = np.argwhere(out & ~mask)
    assert np.abs(added[:, 1:] - 20).max() <= 7                     # one ball, at the tunnel
    # on the volume's face the ball is cut by the face, and still closes it
    face = sheet_probability(shape=(12, 30, 30), sheets=(0,))   # layers 0 and 1
    punch_tunnel(face, 0, centre=(15, 15))
    mask, out = tunnel_run(face)
    assert euler_number(mask) == 0 and euler_number(out) == 1 and components(out) == 1
    # not supported by the probability (the hole and the fringe over it at background level)
    p[11:15, 17:24, 17:24] = np.where(p[11:15, 17:24, 17:24] < 0.3, 0.05, 0.9)
    assert np.array_equal(tunnel_run(p)[1], tunnel_run(p)[0])


def test_fill_tunnels_never_bridges_two_sheets_and_leaves_clean_sheets():
    p = sheet_probability(sheets=(10, 14))                          # 2 empty layers apart
    punch_tunnel(p, 10)
    mask, out = tunnel_run(p)
    assert components(mask) == 2 and euler_number(mask) == 1        # 2 sheets, one tunnel
    assert components(out) == 2 and out[12:14].sum() == 0            # the ball would bridge them
    clean = sheet_probability(sheets=(8, 20))                        # fringes, no tunnel
    mask, out = tunnel_run(clean)
    assert np.array_equal(out, mask)


def test_fill_tunnels_checks_its_parameters():
    from vesukit.decide.steps import PostprocessError

    p = sheet_probability()
    with pytest.raises(PostprocessError, match="needs the ensemble maps"):
        run((p >= 0.3).astype(np.uint8), "fill_tunnels")
    with pytest.raises(PostprocessError, match="min_radius <= max_radius"):
        tunnel_run(p, min_radius=8)


def test_diagonal_bridge_joins_corner_touching_pixels_only():
    mask = np.zeros((3, 10, 10), np.uint8)
    mask[1, 2, 2] = mask[1, 3, 3] = 1                  # touch at a corner: falling diagonal
    mask[1, 6, 7] = mask[1, 7, 6] = 1                  # rising diagonal
    mask[1, 2, 6:9] = 1                                # a straight line: nothing to bridge
    out = run(mask, "diagonal_bridge")
    assert out[1, 2, 3] == 1 and out[1, 6, 6] == 1     # the upper row's empty pixel
    assert out.sum() == mask.sum() + 2
    p = np.zeros(mask.shape, np.float32)
    p[1, 3, 2] = p[1, 7, 7] = 0.4                       # the lower pixels are more probable
    out = run(mask, "diagonal_bridge", Maps(p, np.zeros_like(p), np.zeros_like(p)))
    assert out[1, 3, 2] == 1 and out[1, 7, 7] == 1 and out.sum() == mask.sum() + 2
    assert components(run(mask, "diagonal_bridge", axis=0)) == components(mask)
    sheet = flat_sheet()
    assert np.array_equal(run(sheet, "diagonal_bridge", axis=1), sheet)
