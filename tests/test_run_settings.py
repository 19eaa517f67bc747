"""One resolver of a run's settings, as every command uses it: weight-0 teachers are never run
(segment, calibrate), segment applies the calibration's TTA, postprocess refuses a decision that
reads disagreement its maps do not carry, and `teachers pack` refuses a calibration fitted on
other teachers. Each through the command a user runs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests.fixtures import unet3d_ensemble  # noqa: E402
from vesukit.cli import main  # noqa: E402
from vesukit.data import list_test_ids, read_volume  # noqa: E402
from vesukit.infer import predict_teacher  # noqa: E402
from vesukit.maps import save_map  # noqa: E402
from vesukit.synth import make_competition_root  # noqa: E402
from vesukit.teachers import load_manifest, load_teacher  # noqa: E402


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_competition_root(tmp_path_factory.mktemp("root"), n_test=1, n_train=2,
                                 shapes=((16, 24, 24), (16, 20, 20)), seed=5)


@pytest.fixture(scope="module")
def half_silent(tmp_path_factory):
    """Two teachers, the second of weight 0 (kept in the manifest, switched off)."""
    folder = tmp_path_factory.mktemp("teachers")
    unet3d_ensemble(folder, seeds=(0, 1), weights=(1.0, 0.0))
    return folder


def train_ids(root):
    with open(root / "train.csv") as handle:
        return [row[0] for row in list(csv.reader(handle))[1:]]


def test_calibrate_leaves_out_a_weight_0_teacher(root, half_silent, tmp_path):
    out = tmp_path / "calibration.json"
    assert main(["calibrate", "--data", str(root), "--teachers", str(half_silent), "--out", str(out),
                 "--device", "cpu", "--holdout", "0", "--steps", "basic", "--rules", "fixed",
                 "--top-k", "1"]) == 0
    fitted = json.loads(out.read_text())["fitted_on"]
    assert set(fitted["teachers"]) == {"unet_0"} and fitted["fusion"]["weights"] == {"unet_0": 1.0}
    cache = json.loads((tmp_path / "calibration-cache" / "cache.json").read_text())
    assert [t["name"] for t in cache["teachers"]] == ["unet_0"]


def test_segment_skips_a_weight_0_teacher_and_applies_the_calibrations_tta(root, half_silent,
                                                                            tmp_path, capsys):
    calibration = tmp_path / "calibration.json"
    calibration.write_text(json.dumps({"threshold": {"rule": "fixed", "threshold": 0.5},
                                       "tta": "flip"}))
    volume_path = root / "train_images" / f"{train_ids(root)[0]}.tif"
    out = tmp_path / "out.zarr"
    code = main(["segment", str(volume_path), "--teachers", str(half_silent), "--out", str(out),
                 "--calibration", str(calibration), "--device", "cpu", "--workers", "1",
                 "--dtype", "float16", "--chunk", "16", "32", "32"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "unet_0=flip (calibration)" in err and "skipped (never loaded): unet_1" in err
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(str(out), mode="r")
    probability = np.asarray(group["0"][...], dtype=np.float32)
    manifest = load_manifest(half_silent)
    spec = manifest["unet_0"]
    with torch.inference_mode():
        expected = predict_teacher(read_volume(volume_path), load_teacher(spec, manifest.root, "cpu"),
                                   spec, device="cpu", tta="flip").numpy()
    assert np.abs(probability - expected).max() < 1e-3   # float16 output, flip TTA applied
    # the run's record says what it used and where each setting came from, as predict's does
    record = json.loads((out / ".vesukit" / "settings.json").read_text())
    assert record["settings"]["tta"] == {"unet_0": "flip"}
    assert record["settings"]["sources"]["tta:unet_0"] == "calibration"
    assert record["calibration_mismatch"] == []


@pytest.mark.parametrize("decision, named", [
    ({"threshold": {"rule": "uncertainty", "base": 0.4}}, "threshold rule uncertainty"),
    ({"threshold": {"rule": "fixed"}, "postprocess": [{"step": "drop_uncertain"}]},
     "step drop_uncertain"),
])
def test_postprocess_refuses_a_decision_reading_disagreement_saved_maps_lack(root, tmp_path, capsys,
                                                                             decision, named):
    maps = tmp_path / "maps"
    for volume_id in list_test_ids(root):
        save_map(maps, volume_id, np.full((16, 24, 24), 0.5, np.float32))
    calibration = tmp_path / "c.json"
    calibration.write_text(json.dumps(decision))
    code = main(["postprocess", str(maps), "--calibration", str(calibration), "--data", str(root),
                 "--out", str(tmp_path / "s.zip")])
    err = capsys.readouterr().err
    assert code == 1 and named in err and "do not carry" in err
    assert not (tmp_path / "s.zip").exists()


def test_precedence_cli_then_calibration_then_teacher_default_then_built_in(slim_nnunet):
    from vesukit.decide import Calibration
    from vesukit.run_settings import resolve_run_settings

    manifest = slim_nnunet
    nn, plain = (s.name for s in manifest.teachers)
    own = resolve_run_settings(manifest)
    assert own.tta == {nn: "flip", plain: "none"} and own.overlap == 0.5
    assert own.sources[f"tta:{nn}"] == "teacher default" and own.sources[f"tta:{plain}"] == "built-in default"
    fitted = Calibration(tta="full", fitted_on={"tta": {nn: "none"}, "overlap": 0.25})
    from_file = resolve_run_settings(manifest, fitted)
    assert from_file.tta == {nn: "none", plain: "full"} and from_file.overlap == 0.25
    assert {from_file.sources[f"tta:{n}"] for n in (nn, plain)} == {"calibration"}
    cli = resolve_run_settings(manifest, fitted, tta="flip", overlap=0.75)
    assert cli.tta == {nn: "flip", plain: "flip"} and cli.overlap == 0.75
    assert cli.sources["overlap"] == "cli" and cli.run_tta == "flip"


@pytest.fixture
def slim_nnunet(tmp_path):
    """A manifest of an nnU-Net teacher (mirroring) and a plain one (no default of its own)."""
    from vesukit.teachers.nnunet import NnUNetSpec
    from vesukit.teachers.spec import Manifest

    plain = unet3d_ensemble(tmp_path, seeds=(0,))[0]
    return Manifest(tmp_path, (NnUNetSpec(name="nn", model="m", folds=("all",)), plain))


def test_calibrate_never_searches_disagreement_on_one_teacher(root, half_silent, tmp_path, capsys):
    """One active teacher: its maps carry no disagreement, so an uncertainty rule would be its
    base threshold in disguise; asked for alone, calibrate refuses and says why."""
    out = tmp_path / "calibration.json"
    assert main(["calibrate", "--data", str(root), "--teachers", str(half_silent), "--out", str(out),
                 "--device", "cpu", "--holdout", "0", "--rules", "uncertainty"]) == 2
    assert "reads the teachers' disagreement" in capsys.readouterr().err
    assert not out.exists()
    assert main(["calibrate", "--data", str(root), "--teachers", str(half_silent), "--out", str(out),
                 "--device", "cpu", "--holdout", "0", "--rules", "fixed,uncertainty", "--steps",
                 "winners", "--top-k", "1"]) == 0
    data = json.loads(out.read_text())
    assert data["threshold"]["rule"] == "fixed"
    assert all(step["step"] != "drop_uncertain" for step in data["postprocess"])
    searched = json.dumps(data["evidence"])
    assert "uncertainty(" not in searched and "drop_uncertain" not in searched


def test_ablate_runs_the_active_teachers_with_the_calibrations_tta(root, tmp_path):
    teachers = tmp_path / "teachers"
    unet3d_ensemble(teachers, seeds=(0, 1, 2), weights=(1.0, 0.0, 1.0))
    calibration = tmp_path / "c.json"
    calibration.write_text(json.dumps({"threshold": {"rule": "fixed", "threshold": 0.5},
                                       "tta": "flip"}))
    json_out = tmp_path / "ablation.json"
    assert main(["ablate", "--data", str(root), "--teachers", str(teachers), "--device", "cpu",
                 "--calibration", str(calibration), "--json", str(json_out)]) == 0
    cache = json.loads((tmp_path / "calibration-cache" / "cache.json").read_text())
    assert [t["name"] for t in cache["teachers"]] == ["unet_0", "unet_2"]
    assert [t["tta"] for t in cache["fingerprint"]["teachers"]] == ["flip", "flip"]
    assert "unet_1" not in json_out.read_text()


@pytest.mark.parametrize("fitted_on, named", [
    ({"tta": {"unet_0": "sideways"}}, "fitted_on 'tta'"),
    ({"overlap": 1.5}, "fitted_on 'overlap'"),
    ("teachers", "'fitted_on' must be an object"),
])
def test_a_malformed_fitted_on_is_refused_before_any_compute(root, half_silent, tmp_path, capsys,
                                                             fitted_on, named):
    calibration = tmp_path / "c.json"
    calibration.write_text(json.dumps({"threshold": {"rule": "fixed"}, "fitted_on": fitted_on}))
    code = main(["predict", "--data", str(root), "--teachers", str(half_silent), "--out",
                 str(tmp_path / "s.zip"), "--device", "cpu", "--calibration", str(calibration),
                 "--workdir", str(tmp_path / "w")])
    assert code == 1 and named in capsys.readouterr().err
    assert not (tmp_path / "s.zip").exists()
