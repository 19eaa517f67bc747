"""The decision applied: predict --save-maps, `vesukit postprocess` on saved maps of every
format, presets end to end, and the calibration's TTA and chain in predict's log."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import tifffile

from vesukit.cli import main
from vesukit.data import list_test_ids, read_volume_pillow
from vesukit.decide import Calibration, load_calibration
from vesukit.decide.apply import decide
from vesukit.decide.calibration import preset_calibration
from vesukit.decide.presets import PRESETS
from vesukit.maps import maps_from_probability, read_map
from vesukit.synth import make_competition_root

SHAPES = [(12, 24, 20), (16, 16, 16)]
CHAIN = [{"step": "remove_small", "min_voxels": 20}, {"step": "sheet_close", "radius": 2},
         {"step": "patch_holes", "max_area": 16}, {"step": "fill_holes"}]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_competition_root(tmp_path_factory.mktemp("comp"), n_test=2, n_train=0,
                                 shapes=SHAPES, seed=1)


@pytest.fixture(scope="module")
def predicted(root, tmp_path_factory):
    """One predict run with a chain and TTA from the calibration file, maps saved."""
    pytest.importorskip("torch")
    from vesukit.teachers import write_preset

    folder = tmp_path_factory.mktemp("run")
    teachers = folder / "teachers"
    write_preset(teachers, preset="seed9", size="tiny", seed=0)
    calibration = folder / "calibration.json"
    calibration.write_text(json.dumps({"threshold": {"rule": "fixed", "threshold": 0.45},
                                       "postprocess": CHAIN, "tta": "flip"}))
    out = folder / "submission.zip"
    code = main(["predict", "--data", str(root), "--teachers", str(teachers), "--out", str(out),
                 "--device", "cpu", "--calibration", str(calibration),
                 "--save-maps", str(folder / "maps"), "--workdir", str(folder / "work")])
    assert code == 0
    return folder


def masks_in(zip_path):
    with zipfile.ZipFile(zip_path) as archive:
        return {name[:-4]: read_volume_pillow(io.BytesIO(archive.read(name)))
                for name in archive.namelist()}


def test_predict_saves_maps_and_applies_the_calibrations_tta_and_chain(root, predicted):
    record = json.loads((predicted / "work" / "run.json").read_text())
    assert record["tta"] == "flip"                        # from the calibration, not a flag
    decision = [e["message"] for e in record["events"] if e["message"].startswith("decision:")]
    assert decision and "sheet_close(radius=2)" in decision[0]
    settings = record["settings"]                         # each teacher's TTA and its origin
    assert set(settings["tta"].values()) == {"flip"}
    assert {settings["sources"][f"tta:{n}"] for n in settings["teachers"]} == {"calibration"}
    for volume_id, shape in zip(list_test_ids(root), SHAPES):
        saved = np.load(predicted / "maps" / f"{volume_id}.npy")
        assert saved.dtype == np.float16 and saved.shape == shape
        assert 0 <= saved.min() and saved.max() <= 1


def test_postprocess_reproduces_predict_from_saved_maps(root, predicted, tmp_path, capsys):
    out = tmp_path / "post.zip"
    code = main(["postprocess", str(predicted / "maps"), "--calibration",
                 str(predicted / "calibration.json"), "--data", str(root), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "VALID" in printed and "sheet_close" in printed
    ours, theirs = masks_in(out), masks_in(predicted / "submission.zip")
    calibration = load_calibration(predicted / "calibration.json")
    for volume_id in list_test_ids(root):
        probability = read_map(predicted / "maps" / f"{volume_id}.npy")
        expected, _ = decide(maps_from_probability(probability), calibration)
        np.testing.assert_array_equal(ours[volume_id], expected)
        # the float16 map moves only voxels within rounding of the threshold
        assert np.mean(ours[volume_id] != theirs[volume_id]) < 0.01


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_runs_through_postprocess(root, predicted, tmp_path, preset, capsys):
    out = tmp_path / f"{preset}.zip"
    assert main(["postprocess", str(predicted / "maps"), "--preset", preset, "--data", str(root),
                 "--out", str(out)]) == 0
    assert f"threshold fixed(threshold={PRESETS[preset]['threshold']})" in capsys.readouterr().out


def test_a_preset_name_in_the_calibration_file_runs_through_predict(root, predicted, tmp_path):
    calibration = tmp_path / "calibration.json"
    calibration.write_text(json.dumps({"threshold": {"rule": "fixed", "threshold": 0.3},
                                       "postprocess": "tenth_place"}))
    assert load_calibration(calibration).postprocess == preset_calibration("tenth_place").postprocess
    out = tmp_path / "s.zip"
    assert main(["predict", "--data", str(root), "--teachers", str(predicted / "teachers"),
                 "--out", str(out), "--device", "cpu", "--calibration", str(calibration),
                 "--workdir", str(tmp_path / "work")]) == 0
    record = json.loads((tmp_path / "work" / "run.json").read_text())
    assert record["tta"] == "none"
    assert any("median_filter(rounds=7, size=3, connectivity=6)" in e["message"] for e in record["events"])


def test_postprocess_reads_npz_tif_and_falls_back_for_missing_maps(root, predicted, tmp_path,
                                                                    capsys):
    ids = list_test_ids(root)
    maps = tmp_path / "maps"
    maps.mkdir()
    first = read_map(predicted / "maps" / f"{ids[0]}.npy")
    second = read_map(predicted / "maps" / f"{ids[1]}.npy")
    # nnU-Net's --save_probabilities layout: classes first, class 1 the surface
    np.savez_compressed(maps / f"{ids[0]}.npz",
                        probabilities=np.stack([1 - first, first]).astype(np.float16))
    tifffile.imwrite(maps / f"{ids[1]}.tif", np.round(second * 255).astype(np.uint8))
    np.testing.assert_allclose(read_map(maps / f"{ids[1]}.tif"), second, atol=1 / 255)
    calibration = Calibration()
    out = tmp_path / "s.zip"
    assert main(["postprocess", str(maps), "--data", str(root), "--out", str(out)]) == 0
    masks = masks_in(out)
    np.testing.assert_array_equal(masks[ids[0]], decide(maps_from_probability(
        read_map(maps / f"{ids[0]}.npz")), calibration)[0])
    # a float tif, and one id without a map: a flagged empty fallback, exit 3
    (maps / f"{ids[0]}.npz").unlink()
    (maps / f"{ids[1]}.tif").unlink()
    tifffile.imwrite(maps / f"{ids[1]}.tif", second.astype(np.float32))
    capsys.readouterr()
    assert main(["postprocess", str(maps), "--data", str(root), "--out", str(out)]) == 3
    captured = capsys.readouterr()
    assert "DEGRADED" in captured.out and f"volume '{ids[0]}' gets an empty fallback" in captured.err
    masks = masks_in(out)
    assert masks[ids[0]].sum() == 0 and masks[ids[0]].shape == SHAPES[0]


def test_postprocess_rejects_a_wrong_shape_and_an_unknown_preset(root, tmp_path, capsys):
    ids = list_test_ids(root)
    maps = tmp_path / "maps"
    maps.mkdir()
    np.save(maps / f"{ids[0]}.npy", np.zeros((3, 3, 3), np.float16))
    assert main(["postprocess", str(maps), "--data", str(root), "--out",
                 str(tmp_path / "s.zip")]) == 3
    assert "has shape 3x3x3" in capsys.readouterr().err
    assert main(["postprocess", str(maps), "--preset", "eleventh_place", "--data", str(root),
                 "--out", str(tmp_path / "s.zip")]) == 1
    assert "Known presets: fifth_place, first_place" in capsys.readouterr().err


def test_postprocess_falls_back_to_the_unprocessed_mask_when_a_step_fails(root, predicted, tmp_path):
    """A chain that raises costs only the chain, as in predict: on an image without numba the
    5th place's tunnel filling cannot run, so every volume gets its thresholded mask, flagged,
    exit 3 and a valid zip (before: a traceback and no zip)."""
    import os
    import subprocess
    import sys

    from vesukit.decide import binarize
    from vesukit.submission import validate_zip

    out = tmp_path / "fifth.zip"
    env = {**os.environ, "VESUKIT_DISABLE": "numba"}
    done = subprocess.run([sys.executable, "-m", "vesukit", "postprocess", str(predicted / "maps"),
                           "--preset", "fifth_place", "--data", str(root), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    assert "without post-processing (PostprocessError: postprocess step 'fill_tunnels' needs numba" \
        in done.stderr
    assert "DEGRADED: 2 volume(s) decided with a fallback stage" in done.stdout
    report = validate_zip(out, root)
    assert report.valid and sorted(report.files) == sorted(list_test_ids(root))
    masks = masks_in(out)
    for volume_id in list_test_ids(root):
        probability = read_map(predicted / "maps" / f"{volume_id}.npy")
        np.testing.assert_array_equal(masks[volume_id], binarize(probability, 0.3))
