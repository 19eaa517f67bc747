"""What calibrate fits is what predict applies: the score `calibrate` reports for its chosen
decision on volumes V is the score `predict --calibration` then `score` give on V (to 1e-6),
for a calibration fitted from the teachers (flip TTA, a fitted fusion, rule and chain searched
on the fused maps) and for one fitted from the maps that predict saved with it.

V are labelled train volumes that the root also lists as its test set, so the same commands a
user runs (calibrate on train, predict on test, score against the labels) meet on one set.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import shutil

import pytest

pytest.importorskip("torch")

from tests.fixtures import unet3d_ensemble  # noqa: E402
from vesukit.cli import main  # noqa: E402
from vesukit.synth import make_competition_root  # noqa: E402

SHAPES = ((16, 24, 24), (20, 20, 24), (16, 20, 28))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Three labelled volumes that are also the test set."""
    root = make_competition_root(tmp_path_factory.mktemp("root"), n_test=0, n_train=3,
                                 shapes=SHAPES, seed=11)
    with open(root / "train.csv") as handle:
        rows = list(csv.reader(handle))
    for volume_id, _ in rows[1:]:
        shutil.copy(root / "train_images" / f"{volume_id}.tif", root / "test_images")
    with open(root / "test.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return root


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("teachers")
    unet3d_ensemble(folder, seeds=(0, 1), weights=(1.0, 1.0))
    return folder


def reported_score(printed: str) -> float:
    """The score calibrate prints for the decision it wrote."""
    found = re.findall(r"^wrote \S+: .*score on the \d+ (?:fit )?volume\(s\) ([0-9.]+)$",
                       printed, re.MULTILINE)
    assert found, printed
    return float(found[-1])


def predicted_score(root, teachers, calibration, folder, capsys, *extra) -> float:
    out = folder / "submission.zip"
    code = main(["predict", "--data", str(root), "--teachers", str(teachers), "--out", str(out),
                 "--device", "cpu", "--calibration", str(calibration), "--no-warm-up",
                 "--workdir", str(folder / "work"), *extra])
    assert code == 0
    capsys.readouterr()
    assert main(["score", str(out), "--labels", str(root / "train_labels"), "--json"]) == 0
    return json.loads(capsys.readouterr().out)["mean"]


@pytest.fixture(scope="module")
def from_teachers(root, teachers, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fit")
    out = folder / "calibration.json"
    printed = io.StringIO()  # a module fixture cannot take capsys
    with contextlib.redirect_stdout(printed):
        code = main(["calibrate", "--data", str(root), "--teachers", str(teachers), "--out", str(out),
                     "--device", "cpu", "--tta", "flip", "--fusion", "--holdout", "0",
                     "--steps", "basic", "--rules", "fixed,otsu", "--top-k", "1"])
    assert code == 0
    return out, reported_score(printed.getvalue())


def test_calibration_from_teachers_scores_the_same_under_predict(root, teachers, from_teachers,
                                                                 tmp_path, capsys):
    calibration, reported = from_teachers
    data = json.loads(calibration.read_text())
    assert data["tta"] == "flip" and data["fusion"]["weights"]          # fitted, carried
    assert data["fitted_on"]["tta"] == {"unet_0": "flip", "unet_1": "flip"}
    assert set(data["fitted_on"]["teachers"]) == {"unet_0", "unet_1"}
    assert reported > 0.05                                                # a real decision
    got = predicted_score(root, teachers, calibration, tmp_path, capsys, "--save-maps",
                          str(tmp_path / "maps"))
    assert got == pytest.approx(reported, abs=1e-6)
    record = json.loads((tmp_path / "work" / "run.json").read_text())
    assert record["calibration_mismatch"] == []
    assert record["settings"]["sources"]["tta:unet_0"] == "calibration"
    assert record["settings"]["sources"]["fusion"] == "calibration"


def test_calibration_from_saved_maps_scores_the_same_under_predict(root, teachers, from_teachers,
                                                                   tmp_path, capsys):
    calibration, _ = from_teachers
    maps = tmp_path / "maps"
    predicted_score(root, teachers, calibration, tmp_path / "first", capsys, "--save-maps", str(maps))
    made = json.loads((maps / "maps.json").read_text())
    assert made["tta"] == {"unet_0": "flip", "unet_1": "flip"}
    out = tmp_path / "from-maps.json"
    assert main(["calibrate", "--maps", str(maps), "--data", str(root), "--out", str(out),
                 "--folds", "2", "--steps", "basic", "--rules", "fixed,otsu", "--top-k", "1"]) == 0
    reported = reported_score(capsys.readouterr().out)
    data = json.loads(out.read_text())
    # the maps' TTA and fusion travel into the file, so predict makes the same maps again
    assert data["tta"] == "flip"
    assert data["fusion"]["mode"] == json.loads(calibration.read_text())["fusion"]["mode"]
    assert data["fitted_on"]["maps"] == str(maps)
    assert reported > 0.05
    got = predicted_score(root, teachers, out, tmp_path / "second", capsys)
    assert got == pytest.approx(reported, abs=1e-6)


def test_explicit_flags_win_and_a_mismatch_is_one_warning_recorded(root, teachers, from_teachers,
                                                                   tmp_path, capsys):
    calibration, _ = from_teachers
    out = tmp_path / "s.zip"
    code = main(["predict", "--data", str(root), "--teachers", str(teachers), "--out", str(out),
                 "--device", "cpu", "--calibration", str(calibration), "--no-warm-up",
                 "--workdir", str(tmp_path / "work"), "--tta", "none", "--overlap", "0.25"])
    assert code == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "was fitted on other teachers or settings" in line]
    assert len(lines) == 1 and "TTA unet_0 flip->none" in lines[0] and "overlap 0.5->0.25" in lines[0]
    record = json.loads((tmp_path / "work" / "run.json").read_text())
    assert record["settings"]["sources"]["tta:unet_1"] == "cli"
    assert record["settings"]["sources"]["overlap"] == "cli"
    assert len(record["calibration_mismatch"]) == 2


def test_pack_refuses_a_calibration_fitted_on_other_teachers(teachers, from_teachers, tmp_path,
                                                            monkeypatch, capsys):
    pytest.importorskip("safetensors")
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    calibration, _ = from_teachers
    others = tmp_path / "others"
    unet3d_ensemble(others, seeds=(0, 2))
    assert main(["teachers", "pack", str(others), "--out", str(tmp_path / "d1"),
                 "--calibration", str(calibration)]) == 1
    err = capsys.readouterr().err
    assert "fitted on other teachers" in err and "vesukit calibrate --teachers" in err
    retrained = tmp_path / "retrained"
    shutil.copytree(teachers, retrained)
    unet3d_ensemble(tmp_path / "fresh", seeds=(5, 1))  # unet_0's file replaced by other weights
    shutil.copy(tmp_path / "fresh" / "seed5" / "unet3d_resenc.safetensors",
                retrained / "seed0" / "unet3d_resenc.safetensors")
    assert main(["teachers", "pack", str(retrained), "--out", str(tmp_path / "d2"),
                 "--calibration", str(calibration)]) == 1
    assert "checkpoint(s) of unet_0 changed" in capsys.readouterr().err
    # the teachers it was fitted on pack, and the shipped file matches the slim copies
    dataset = tmp_path / "d3"
    assert main(["teachers", "pack", str(teachers), "--out", str(dataset),
                 "--calibration", str(calibration)]) == 0
    from vesukit.decide import load_calibration
    from vesukit.run_settings import fit_mismatches, resolve_run_settings
    from vesukit.teachers import load_manifest

    shipped = load_calibration(dataset / "calibration.json")
    packed = load_manifest(dataset)
    assert fit_mismatches(shipped, resolve_run_settings(packed, shipped), packed) == []


def test_maps_a_run_made_otherwise_are_named_and_not_fitted_on(root, teachers, tmp_path, capsys,
                                                               monkeypatch):
    """A teacher that fails on one volume costs only that volume (issue 24), but that volume's
    saved map is then the other teacher's alone: maps.json names it, and calibrate --maps
    leaves it out of the fit rather than fit on a map predict would not make."""
    from vesukit.runtime import faults

    ids = sorted(p.stem for p in (root / "test_images").glob("*.tif"))
    first = [row[0] for row in csv.reader(open(root / "test.csv"))][1]
    monkeypatch.setenv(faults.ENV, f"teacher:MemoryError:{first}:2")  # both of unet_0's tries
    faults.reset()
    maps = tmp_path / "maps"
    code = main(["predict", "--data", str(root), "--teachers", str(teachers), "--out",
                 str(tmp_path / "s.zip"), "--device", "cpu", "--no-warm-up", "--tta", "none",
                 "--workdir", str(tmp_path / "work"), "--save-maps", str(maps)])
    monkeypatch.delenv(faults.ENV)
    assert code == 3                                   # one volume degraded, named
    made = json.loads((maps / "maps.json").read_text())
    assert made["made_otherwise"] == {first: "without teacher 'unet_0'"}
    assert sorted(p.stem for p in maps.glob("*.npy")) == ids   # every map was still saved
    capsys.readouterr()
    out = tmp_path / "from-maps.json"
    assert main(["calibrate", "--maps", str(maps), "--data", str(root), "--out", str(out),
                 "--folds", "2", "--steps", "basic", "--rules", "fixed", "--top-k", "1"]) == 0
    printed = capsys.readouterr()
    assert "map(s) left out" in printed.out + printed.err and first in printed.out + printed.err
    evidence = json.loads(out.read_text())["evidence"]
    assert first not in evidence["volumes"] and len(evidence["volumes"]) == len(ids) - 1
    assert evidence["left_out"] == {first: "without teacher 'unet_0'"}
    assert "made_otherwise" not in json.loads(out.read_text())["fitted_on"]


def test_calibration_from_teachers_on_a_sample_judges_the_held_back_volumes_whole(root, teachers,
                                                                                tmp_path, capsys):
    """From teachers at scale: the search screens on crops of a sample (here 2 volumes cut to
    16^3), the held-back volume is scored whole, as predict decides it; the ensembles and
    labels are made where they are scored (they travel as the cache folder and the label path).
    The progress line counts against the masks planned, so its ETA means something."""
    import pickle

    import numpy as np

    from vesukit.calibrate.maps import CachedEnsemble
    from vesukit.data import read_volume
    from vesukit.decide import Calibration
    from vesukit.decide.apply import decide
    from vesukit.metric import score_volume

    out = tmp_path / "sampled.json"
    cache = tmp_path / "cache"
    assert main(["calibrate", "--data", str(root), "--teachers", str(teachers), "--out", str(out),
                 "--cache", str(cache), "--device", "cpu", "--tta", "none", "--holdout", "0.34",
                 "--steps", "basic", "--rules", "fixed,otsu", "--top-k", "1",
                 "--search-volumes", "2", "--search-crop", "16", "--scheduler", "none"]) == 0
    data = json.loads(out.read_text())
    evidence = data["evidence"]
    engine = evidence["search_engine"]
    assert {k: engine["sample"][k] for k in ("volumes", "crop")} == {"volumes": 2, "crop": 16}
    # screened on the crops, the finalists scored on the sampled volumes whole
    sampled = set(evidence["volumes"])
    assert len(sampled) == 2 and sorted(sampled) == engine["sample"]["screened_volumes"]
    printed = capsys.readouterr()
    lines = re.findall(r"search: (\d+)/(\d+) masks", printed.out + printed.err)
    assert lines and all(0 < int(done) <= int(planned) for done, planned in lines)
    assert int(lines[0][1]) > int(lines[0][0])  # a total planned ahead, not the count so far
    assert engine["masks_planned"] >= engine["screened_masks"] + engine["exact_masks"]
    for c in evidence["candidates"]:
        assert {key.replace("[crop 16]", "") for key in c["scores"]} == sampled
        assert all(key.endswith("[crop 16]") != c["exact"] for key in c["scores"])
    (held,) = evidence["held_back_volumes"]
    maps = CachedEnsemble(cache, held)
    assert len(pickle.dumps(maps)) < 4096
    mask, _ = decide(maps.loaded(), Calibration.from_json(data))
    expected = score_volume(mask, read_volume(root / "train_labels" / f"{held}.tif")).score
    assert np.isclose(evidence["held_back"]["winner"]["scores"][held], expected, rtol=0, atol=1e-12)


def test_calibration_from_teachers_on_a_running_scheduler_equals_one_process(root, teachers,
                                                                            tmp_path):
    """The many-machines path from teachers, on a sample: `dask scheduler` and two `dask
    worker` processes get the ensembles as the cache folder and the labels as their paths
    (read there), and write what one process writes."""
    distributed = pytest.importorskip("distributed")
    from tests.dask_processes import scheduler_and_workers

    cache = tmp_path / "cache"
    args = ["calibrate", "--data", str(root), "--teachers", str(teachers), "--cache", str(cache),
            "--device", "cpu", "--tta", "none", "--holdout", "0.34", "--steps", "basic",
            "--rules", "fixed,otsu", "--top-k", "1", "--search-volumes", "2",
            "--search-crop", "16"]
    assert main([*args, "--out", str(tmp_path / "alone.json"), "--scheduler", "none"]) == 0
    with scheduler_and_workers(tmp_path, workers=2) as address:
        with distributed.Client(address) as client:
            client.wait_for_workers(2, timeout=120)
        assert main([*args, "--out", str(tmp_path / "remote.json"), "--scheduler", address]) == 0
    alone, remote = (json.loads((tmp_path / f"{name}.json").read_text())
                     for name in ("alone", "remote"))
    assert remote["evidence"]["search_engine"]["workers"] == 2
    assert alone["evidence"]["search_engine"]["workers"] == 1
    for key in ("threshold", "postprocess", "tta", "fitted_on"):
        assert remote[key] == alone[key]
    for key in ("candidates", "held_back", "volumes", "winner"):
        assert remote["evidence"][key] == alone["evidence"][key]


def test_calibration_from_teachers_screens_on_fit_volumes_only(root, teachers, tmp_path):
    """A sample spread over every id could pick a held-back volume: a crop no search screens
    on. With one sampled volume out of three (the middle id is the held one), the search
    screens on a fit volume and says which."""
    out = tmp_path / "one.json"
    assert main(["calibrate", "--data", str(root), "--teachers", str(teachers), "--out", str(out),
                 "--cache", str(tmp_path / "cache"), "--device", "cpu", "--tta", "none",
                 "--holdout", "0.34", "--steps", "basic", "--rules", "fixed", "--top-k", "1",
                 "--search-volumes", "1", "--search-crop", "16", "--scheduler", "none"]) == 0
    evidence = json.loads(out.read_text())["evidence"]
    screened = evidence["search_engine"]["sample"]["screened_volumes"]
    assert len(screened) == 1 and screened[0] in evidence["fit_volumes"]
    assert screened[0] not in evidence["held_back_volumes"]
    assert set(evidence["volumes"]) == set(screened)
