"""`vesukit calibrate --maps`: out-of-fold fitting from saved maps of every format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

zarr = pytest.importorskip("zarr")

pytest.importorskip("numba")

from vesukit.cli import main  # noqa: E402
from vesukit.data import list_ids, read_volume  # noqa: E402
from vesukit.decide import load_calibration  # noqa: E402
from vesukit.synth import make_competition_root  # noqa: E402
from vesukit.synth_defects import Defects, defective_map  # noqa: E402

BIASES = [-1.5, 1.0, 0.0, 1.5, -0.5, 0.5]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A root with 6 labelled train volumes and their defective maps in three formats."""
    folder = tmp_path_factory.mktemp("maps")
    root = make_competition_root(folder / "root", n_test=1, n_train=6, shapes=[(24, 24, 24)],
                                 seed=5)
    maps = folder / "maps"
    maps.mkdir()
    for index, volume_id in enumerate(list_ids(root, "train")):
        label = read_volume(root / "train_labels" / f"{volume_id}.tif")
        p = defective_map(label, index, Defects(bias=BIASES[index], dust=40))
        if index == 0:
            np.savez_compressed(maps / f"{volume_id}.npz", probabilities=np.stack([1 - p, p]))
        elif index == 1:
            tifffile.imwrite(maps / f"{volume_id}.tif", np.round(p * 255).astype(np.uint8))
        elif index == 2:  # a plain zarr array, uint8 0-255
            zarr.open_array(str(maps / f"{volume_id}.zarr"), mode="w", shape=p.shape, chunks=(12, 12, 12),
                            dtype="uint8")[:] = np.round(p * 255).astype(np.uint8)
        elif index == 3:  # an OME-Zarr image as `vesukit segment` writes it (probability at level 0)
            from vesukit.scroll.store import OutputStore

            store = OutputStore(maps / f"{volume_id}.zarr", p.shape, (12, 12, 12), "float16", False)
            store.create({}, resume=False)
            zarr.open_array(str(store.path / "0"), mode="r+")[:] = p.astype(np.float16)
        else:
            np.save(maps / f"{volume_id}.npy", p.astype(np.float16))
    return root, maps


def test_calibrate_from_maps_out_of_fold_with_ablation(saved, tmp_path, capsys):
    root, maps = saved
    out = tmp_path / "calibration.json"
    code = main(["calibrate", "--maps", str(maps), "--data", str(root), "--out", str(out),
                 "--folds", "3", "--steps", "basic", "--top-k", "1",
                 "--rules", "fixed,foreground_fraction"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "out-of-fold (3 fold(s), 6 volume(s)" in printed and "ablation" in printed
    data = json.loads(out.read_text())
    calibration = load_calibration(out)               # a valid calibration file
    oof = data["evidence"]["out_of_fold"]
    assert sorted(oof["oof_winner_scores"]) == sorted(list_ids(root, "train"))
    folds = [set(f) for f in oof["folds"]]
    assert sum(map(len, folds)) == 6 and not (folds[0] & folds[1] or folds[1] & folds[2])
    # defects and dust: a chain is chosen, and it pays on volumes it was not fitted on
    assert calibration.postprocess
    rows = {row["step"]: row for row in oof["ablation"]}
    assert rows["(all post-processing)"]["delta"] > 0
    assert oof["oof_winner_mean"] > oof["oof_best_fixed_no_postprocess_mean"]
    assert oof["masks_scored"] > 0 and oof["seconds_per_mask"] > 0


def test_calibrate_needs_exactly_one_source(saved, tmp_path, capsys):
    root, maps = saved
    assert main(["calibrate", "--data", str(root), "--out", str(tmp_path / "c.json")]) == 2
    assert "exactly one of --teachers" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    np.save(empty / "not-a-train-id.npy", np.zeros((4, 4, 4), np.float16))
    assert main(["calibrate", "--maps", str(empty), "--data", str(root), "--out",
                 str(tmp_path / "c.json")]) == 1
    assert "none of its 1 map(s) belongs to a labelled train volume" in capsys.readouterr().err


def test_budget_bounds_the_volumes_searched(saved, tmp_path, capsys):
    from vesukit.calibrate.budget import volumes_within
    from vesukit.calibrate.oof import exact_masks_per_volume_bound, masks_per_volume_bound
    from vesukit.calibrate.search import RULE_GRID, postprocess_options

    options = postprocess_options(320 ** 3, winners=True, disagreement=False)
    grid = {k: v for k, v in RULE_GRID.items() if k != "uncertainty"}
    bound = masks_per_volume_bound(grid, options, top_k=3, folds=3)
    exact = exact_masks_per_volume_bound(options, folds=3, finalists=3)
    assert exact * 10 < bound  # the default gives the full scorer to a few masks per volume
    # 100 volumes of 320^3 (3 s per screened mask, 26 s per exact one) cannot all be
    # searched in 8 hours
    per_volume = bound * 3.0 + exact * 26.0
    take = volumes_within(8, 100, lambda n: n * per_volume)
    assert 2 <= take < 100 and take * per_volume <= 8 * 3600 or take == 2
    root, maps = saved
    out = tmp_path / "c.json"
    assert main(["calibrate", "--maps", str(maps), "--data", str(root), "--out", str(out),
                 "--folds", "2", "--steps", "basic", "--top-k", "1", "--rules", "fixed",
                 "--budget-hours", "0.0001"]) == 0
    printed = capsys.readouterr().out
    assert "searched 2 of 6 volume(s)" in printed
    evidence = json.loads(out.read_text())["evidence"]
    budget, work = evidence["budget"], evidence["search_engine"]
    assert budget["volumes_searched"] == 2 and work["mode"] == "ranked"
    # the budget was planned with the default's costs: every candidate screened, a few exact
    assert budget["exact_masks_per_volume_bound"] < budget["screened_masks_per_volume_bound"]
    assert budget["seconds_per_volume_at_most"] == pytest.approx(
        (budget["screened_masks_per_volume_bound"] * budget["seconds_per_screened_mask"]
         + budget["exact_masks_per_volume_bound"] * budget["seconds_per_exact_mask"]) / budget["workers"])
    # and it bounds what the search did
    assert work["screened_masks"] <= 2 * budget["screened_masks_per_volume_bound"]
    assert work["exact_masks"] <= 2 * budget["exact_masks_per_volume_bound"]


def test_saved_fp16_maps_are_thresholded_as_predict_thresholds_them():
    """calibrate --maps reads fp16 maps; predict decides on float32 (the mean rounded through
    fp16). A voxel at fp16(0.4) = 0.39990234 is below 0.4 for both (numpy alone would round
    the threshold to fp16 and set it, and fit would not equal apply)."""
    from vesukit.decide import binarize
    from vesukit.maps import maps_from_probability

    saved = np.array([0.39990234, 0.40014648], dtype=np.float16)  # the fp16 values either side of 0.4
    assert binarize(maps_from_probability(saved).mean, 0.4).tolist() == [0, 1]
    assert np.array_equal(binarize(saved, 0.4), binarize(saved.astype(np.float32), 0.4))
