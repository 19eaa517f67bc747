"""The presets with public code give the team's own output, voxel for voxel.

tests/data/winners/<preset>_<shape>_seed<seed>.npz holds, bit-packed, the mask the team's code
made (run outside this repository, docs/winners.md says how and at which commit) from the
synthetic map ``defective_map(synth_volume(shape, seed)[1], seed)`` thresholded at the preset's
threshold; ``input_sha256`` fingerprints that thresholded input, so a change in the generator
fails here with its own message rather than as a mismatch. Then crafted cases for the rules a
mismatch would hide in: the plug table, the blocking of sheets, the faces.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from vesukit.cli import main
from vesukit.data import list_test_ids, read_volume_pillow
from vesukit.decide.calibration import binarize, preset_calibration
from vesukit.decide.presets import PRESETS
from vesukit.decide.steps import apply_postprocess
from vesukit.synth import make_competition_root, synth_volume
from vesukit.synth_defects import defective_map

DATA = Path(__file__).parent / "data" / "winners"
CASES = [(preset, shape, seed) for preset in ("first_place", "ninth_place", "tenth_place")
         for shape, seed in (((96, 96, 96), 1), ((96, 96, 96), 2), ((200, 200, 200), 3))]


def synthetic_map(shape, seed) -> np.ndarray:
    return defective_map(synth_volume(shape, seed)[1], seed)


def team_output(preset, shape, seed):
    """(the team's mask, the fingerprint of the thresholded map it was made from)."""
    tag = "x".join(str(n) for n in shape)
    stored = np.load(DATA / f"{preset}_{tag}_seed{seed}.npz")
    mask = np.unpackbits(stored["mask"])[:int(np.prod(shape))].reshape(shape)
    return mask, str(stored["input_sha256"])


def fingerprint(mask: np.ndarray) -> str:
    return hashlib.sha256(np.packbits(mask.ravel()).tobytes()).hexdigest()


def dice(a, b) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total


@pytest.mark.parametrize("preset, shape, seed", CASES)
def test_preset_gives_the_teams_output(preset, shape, seed):
    expected, input_sha = team_output(preset, shape, seed)
    mask = binarize(synthetic_map(shape, seed), PRESETS[preset]["threshold"])
    assert fingerprint(mask) == input_sha, (
        "the synthetic map changed (synth_volume / defective_map): the stored team outputs no "
        "longer match their input; remake them as docs/winners.md says")
    out = apply_postprocess(mask, PRESETS[preset]["postprocess"])
    differ = int(np.count_nonzero(out != expected))
    assert dice(out, expected) >= 0.999, f"{differ} voxels differ from the team's output"
    assert differ == 0                                   # in fact: voxel for voxel


def test_tenth_place_gives_the_teams_output_at_320():
    """At the competition's 320³, on the benchmark's map (docs/benchmarks.md): the team's code
    ran on all its components there (tens of minutes); the preset takes seconds."""
    from benchmarks.bench_decide_speed import make_probability

    stored = np.load(DATA / "tenth_place_320x320x320_benchmap_seed3.npz")
    expected = np.unpackbits(stored["mask"])[:320 ** 3].reshape(320, 320, 320)
    mask = binarize(make_probability(320, seed=3), PRESETS["tenth_place"]["threshold"])
    assert fingerprint(mask) == str(stored["input_sha256"]), (
        "the benchmark's map changed (make_probability): remake the stored team output as docs/winners.md says")
    out = apply_postprocess(mask, PRESETS["tenth_place"]["postprocess"])
    assert int(np.count_nonzero(out != expected)) == 0


@pytest.mark.parametrize("preset", ["first_place", "ninth_place", "tenth_place"])
def test_postprocess_cli_with_a_preset_gives_the_teams_output(preset, tmp_path, capsys):
    """The user's path: saved maps in, `vesukit postprocess --preset` out, the zip's mask."""
    shape = (96, 96, 96)
    root = make_competition_root(tmp_path / "comp", n_test=1, n_train=0, shapes=[shape], seed=3)
    (volume_id,) = list_test_ids(root)
    maps = tmp_path / "maps"
    maps.mkdir()
    np.save(maps / f"{volume_id}.npy", synthetic_map(shape, 1))
    out = tmp_path / "submission.zip"
    assert main(["postprocess", str(maps), "--preset", preset, "--data", str(root), "--out", str(out)]) == 0
    with zipfile.ZipFile(out) as archive:
        written = read_volume_pillow(io.BytesIO(archive.read(f"{volume_id}.tif")))
    expected, _ = team_output(preset, shape, 1)
    assert np.array_equal(written != 0, expected != 0)


SECOND_CASES = [((96, 96, 96), 1), ((96, 96, 96), 2), ((200, 200, 200), 3)]


@pytest.mark.parametrize("shape, seed", SECOND_CASES)
def test_second_place_gives_the_teams_output_for_the_same_random_draws(shape, seed):
    """The team's sheet fit draws a random subsample with numpy's unseeded global generator: its
    outputs were made after ``numpy.random.seed(seed)``, and the step draws with that seed."""
    from vesukit.maps import maps_from_probability

    expected, input_sha = team_output("second_place", shape, seed)
    probability = synthetic_map(shape, seed)
    assert hashlib.sha256(probability.astype(np.float32).tobytes()).hexdigest() == input_sha, (
        "the synthetic map changed: remake the stored team outputs as docs/winners.md says")
    (step,) = PRESETS["second_place"]["postprocess"]
    out = apply_postprocess(binarize(probability, PRESETS["second_place"]["threshold"]),
                            [{**step, "seed": seed}], maps_from_probability(probability))
    differ = int(np.count_nonzero(out != expected))
    assert dice(out, expected) >= 0.999, f"{differ} voxels differ from the team's output"
    assert differ == 0                                   # in fact: voxel for voxel


def test_second_place_needs_the_maps():
    from vesukit.decide.second_place import SecondPlaceError

    with pytest.raises(SecondPlaceError, match="needs the ensemble maps"):
        apply_postprocess(np.zeros((8, 8, 8), np.uint8), PRESETS["second_place"]["postprocess"])


# --- 1st place: the rules, crafted ------------------------------------------------------------

def test_first_place_plug_table_is_the_teams_and_only_adds():
    from vesukit.decide.first_place import plug_table

    table = plug_table()
    patterns = np.flatnonzero(table)
    assert len(patterns) == 128
    assert all(int(table[p]) & p == 0 for p in patterns)          # adds voxels, never removes
    assert table[7] == 0      # 3 of a face's 4: not in the team's table (vesukit's old plug filled it)
    assert table[6] == 1      # two voxels meeting at an edge: the block's corner 0 is added


def test_first_place_plugging_scans_twice_in_order():
    from vesukit.decide import _first_place_kernels as kernels
    from vesukit.decide.first_place import plug_table

    block = np.zeros((4, 4, 4), np.uint8)
    block[1, 1, 2] = block[1, 2, 1] = 1                          # pattern 6 at (1, 1, 1)
    out = kernels.plugged(block, plug_table(), 2)
    assert out[1, 1, 1] == 1 and out.sum() == 3
    face = np.zeros((4, 4, 4), np.uint8)
    face[1, 1, 1] = face[1, 1, 2] = face[1, 2, 1] = 1             # pattern 7: left alone
    assert np.array_equal(kernels.plugged(face, plug_table(), 2), face)


def test_first_place_blocks_each_sheet_against_everything_already_written():
    """A voxel next to an earlier sheet's repair (not to its original voxels) is not written."""
    from vesukit.decide import _first_place_kernels as kernels

    shape = np.array([10, 10, 10])
    out = np.zeros((10, 10, 10), np.uint8)
    occupied = np.zeros((10, 10, 10), bool)
    first = np.zeros((10, 10, 10), np.uint8)
    first[2, 2:8, 2:8] = 1
    first[3, 5, 5] = 1                                           # a voxel its repair added
    kernels.paste(out.reshape(-1), occupied.reshape(-1), np.flatnonzero(first), shape)
    second = np.zeros((10, 10, 10), np.uint8)
    second[5, 2:8, 2:8] = 1                                      # 3 layers away from the sheet
    second[4, 5, 5] = 1                                          # touches only the repair voxel
    kernels.paste(out.reshape(-1), occupied.reshape(-1), np.flatnonzero(second), shape)
    assert out[4, 5, 5] == 0 and out[5, 2:8, 2:8].all()
    labels, count = ndimage.label(out, np.ones((3, 3, 3)))
    assert count == 2                                            # the sheets never touch


def test_first_place_closing_and_euler_match_scipy_and_scikit_image_at_the_faces():
    from skimage.measure import euler_number

    from vesukit.decide import _first_place_kernels as kernels
    from vesukit.decide.first_place import _closed, closing_offsets

    rng = np.random.default_rng(0)
    for trial in range(6):
        volume = (rng.random((14, 15, 16)) < 0.25).astype(np.uint8)   # reaches every face
        axis = trial % 3
        offsets = closing_offsets(7, 5 if trial > 2 else 7, axis)
        element = np.zeros((7, 7, 7), bool)
        element[tuple((offsets + 3).T)] = True
        expected = volume | ndimage.binary_closing(volume, element)
        assert np.array_equal(_closed(volume, offsets, kernels), expected)
        assert kernels.euler_6(volume) == euler_number(volume.astype(bool), connectivity=1)


def test_first_place_closing_element_with_7_and_7_is_a_ball_of_radius_3_25():
    from vesukit.decide.first_place import closing_offsets

    offsets = closing_offsets(7, 7, 0)
    grid = np.indices((7, 7, 7)).reshape(3, -1).T - 3
    ball = grid[(grid ** 2).sum(axis=1) <= 3.25 ** 2]
    assert sorted(map(tuple, offsets)) == sorted(map(tuple, ball))      # not flattened


def test_first_place_keeps_the_first_sheets_in_label_order_not_the_largest():
    mask = np.zeros((30, 40, 40), np.uint8)
    mask[6, 5:15, 5:15] = 1                                       # first in scan order, small
    mask[15, 4:36, 4:36] = 1                                      # larger, second
    out = apply_postprocess(mask, [{"step": "first_place", "min_voxels": 10, "max_sheets": 1}])
    assert out[6, 5:15, 5:15].all() and out[15].sum() == 0


# --- 10th place: faces mirrored, components alone ---------------------------------------------

def test_median_filter_mirrors_the_faces_and_matches_scipy_per_component():
    slab = np.zeros((12, 12, 12), np.uint8)
    slab[:, :, 0] = 1                                             # one voxel thick, on a face
    slab[3:9, 3:9, 0] = 1
    out = apply_postprocess(slab, [{"step": "median_filter", "rounds": 1}])
    assert out[:, :, 0].all()                        # mirrored: 18 of 27 set (zero padding: 9)
    rng = np.random.default_rng(1)
    mask = ndimage.binary_opening(rng.random((20, 22, 24)) < 0.55).astype(np.uint8)
    labels, count = ndimage.label(mask)
    expected = np.zeros_like(mask, dtype=bool)
    for index in range(1, count + 1):
        component = (labels == index).astype(np.uint8)
        for _ in range(3):
            component = ndimage.median_filter(component, size=3)
        expected |= component > 0
    assert np.array_equal(apply_postprocess(mask, [{"step": "median_filter", "rounds": 3}]), expected)


# --- 9th place: the line_norm keeps thin sheets -----------------------------------------------

def test_ninth_place_keeps_a_one_voxel_sheet_that_the_gaussian_alone_would_erase():
    sheet = np.zeros((40, 40, 40), np.uint8)
    sheet[3:37, 3:37, 20] = 1                                     # 1 voxel thick, across Z and Y
    out = apply_postprocess(sheet, [{"step": "ninth_place", "min_voxels": 100}])
    assert out[10:30, 10:30, 20].all()
    gaussian_only = ndimage.gaussian_filter(sheet.astype(float), 1.0) > 0.5
    assert not gaussian_only.any()


# --- 5th place: from the write-up --------------------------------------------------------------

def test_fifth_place_says_it_is_from_the_write_up_and_its_threshold_is_not_the_teams():
    source = PRESETS["fifth_place"]["source"]
    assert "from the write-up" in source and "signed distance" in source
    assert "not the team's threshold" in source
    assert preset_calibration("fifth_place").rule.params["threshold"] == 0.3


# --- calibrate --steps winners: the faithful chains are among the options ---------------------

def test_winners_search_options_hold_the_faithful_chains_at_320():
    import inspect

    from vesukit.calibrate.search import RULE_GRID, chain_from, postprocess_options
    from vesukit.decide.steps import STEPS

    def with_defaults(step):
        defaults = {name: p.default for name, p in inspect.signature(STEPS[step["step"]]).parameters.items()
                    if name not in ("mask", "maps")}
        return {**defaults, **step}

    options = postprocess_options(320 ** 3, winners=True)
    thresholds = {params["threshold"] for params in RULE_GRID["fixed"]}
    for preset, slots in (("first_place", ("first_place",)), ("ninth_place", ("ninth_place",)),
                          ("tenth_place", ("remove_small", "median_filter"))):
        assert PRESETS[preset]["threshold"] in thresholds
        chosen = dict.fromkeys(options)
        for slot, step in zip(slots, PRESETS[preset]["postprocess"]):
            option = next(o for o in options[slot] if o is not None
                          and with_defaults({"step": slot, **o}) == with_defaults(step))
            chosen[slot] = option
        chain = chain_from(chosen)
        assert [with_defaults(step) for step in chain] == [with_defaults(s) for s in PRESETS[preset]["postprocess"]]


def test_winners_search_holds_the_second_place_chain_as_a_whole_candidate(tmp_path, capsys):
    """The 2nd place's chain ignores the rule's mask, so it is not a slot (each rule would re-run
    it for the same mask): it is one candidate, the preset's exact chain at 320^3, scored once
    per volume and search; `calibrate --maps --steps winners` has it in its candidate table."""
    import json

    from vesukit.calibrate.search import whole_chains
    from vesukit.cli import main
    from vesukit.decide import Calibration
    from vesukit.synth import make_competition_root

    (at_320,) = whole_chains(320 ** 3, winners=True)
    assert at_320.rule.params["threshold"] == PRESETS["second_place"]["threshold"]
    assert [dict(s) for s in at_320.postprocess] == PRESETS["second_place"]["postprocess"]
    assert whole_chains(320 ** 3, winners=False) == []
    (small,) = whole_chains(32 ** 3, winners=True)
    Calibration(small.rule, small.postprocess)          # valid for the parameter table
    root = make_competition_root(tmp_path / "root", n_test=0, n_train=3, shapes=[(32, 32, 32)],
                                 seed=5)
    maps = tmp_path / "maps"
    maps.mkdir()
    for index, label in enumerate(sorted((root / "train_labels").glob("*.tif"))):
        from vesukit.data import read_volume

        truth = read_volume(label) == 1
        noise = np.random.default_rng(index).random(truth.shape)
        np.save(maps / f"{label.stem}.npy", (0.6 * truth + 0.4 * noise).astype(np.float16))
    out = tmp_path / "calibration.json"
    assert main(["calibrate", "--maps", str(maps), "--data", str(root), "--out", str(out),
                 "--folds", "2", "--rules", "fixed", "--top-k", "1", "--scheduler", "none"]) == 0
    table = json.loads(out.read_text())["evidence"]["candidates"]
    rows = [row for row in table if row["stage"] == "whole chain"]
    assert len(rows) == 1 and "second_place" in json.dumps(rows[0])
    assert len(rows[0]["scores"]) == 3


def test_second_place_fits_sheets_with_blas_on_one_thread(monkeypatch):
    """Each fit's Delaunay triangulation solves one tiny LAPACK system per triangle: on a
    multi-threaded BLAS each pays a thread hand-off (docs/benchmarks.md). The fits run on one
    thread, and the process's setting is back afterwards."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import scipy.interpolate

    from vesukit.decide.second_place import second_place
    from vesukit.maps import maps_from_probability

    def blas_threads():
        return [pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]

    seen, real = [], scipy.interpolate.griddata
    monkeypatch.setattr(scipy.interpolate, "griddata",
                        lambda *a, **k: seen.append(blas_threads()) or real(*a, **k))
    probability = np.zeros((90, 90, 90), np.float32)
    probability[44:47, 8:82, 8:82] = 0.9                       # a sheet, 3 voxels thick
    y, x = np.ogrid[:90, :90]
    probability[:, (y - 45) ** 2 + (x - 45) ** 2 < 36] = 0     # with a hole: its cubes get a fit
    before = blas_threads()
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):   # as on a 2-core machine
        out = second_place(np.zeros(probability.shape, np.uint8), maps_from_probability(probability))
    assert seen and all(threads and set(threads) == {1} for threads in seen)
    assert blas_threads() == before
    assert out[45, 45, 45]                                      # the fit closed the hole
