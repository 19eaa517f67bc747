"""predict applies the fusion a calibration carries (logit or probability mean, weights that
override the manifest's), checked against a hand computation from the per-teacher maps of real
tiny 3D teachers; a calibration without the block behaves as before."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests.fixtures import unet3d_ensemble  # noqa: E402
from vesukit.cli import main  # noqa: E402
from vesukit.data import list_test_ids, read_volume, read_volume_pillow, volume_path  # noqa: E402
from vesukit.decide import Calibration, CalibrationError, Fusion, load_calibration  # noqa: E402
from vesukit.infer import predict_teacher  # noqa: E402
from vesukit.infer.settings import DEFAULT_OVERLAP  # noqa: E402
from vesukit.synth import make_competition_root  # noqa: E402
from vesukit.teachers import load_manifest, load_teacher  # noqa: E402

FITTED = {"unet_0": 2.0, "unet_1": 0.0, "unet_2": 0.5}  # unet_1 left out, as a fit may do


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_competition_root(tmp_path_factory.mktemp("root"), n_test=2, n_train=0,
                                 shapes=((16, 24, 24), (12, 20, 28)), seed=3)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("teachers")
    unet3d_ensemble(folder, weights=(1.0, 1.0, 1.0))
    return folder


@pytest.fixture(scope="module")
def teacher_maps(root, teachers):
    """volume id -> teacher name -> its probability map (float64), each teacher run alone."""
    manifest = load_manifest(teachers)
    out = {}
    for volume_id in list_test_ids(root):
        volume = read_volume(volume_path(root, volume_id))
        out[volume_id] = {}
        for spec in manifest.teachers:
            model = load_teacher(spec, manifest.root, "cpu")
            with torch.inference_mode():
                p = predict_teacher(volume, model, spec, device="cpu", tta="none",
                                    overlap=DEFAULT_OVERLAP)
            out[volume_id][spec.name] = p.double().numpy()
    return out


def logit_mean(maps: dict, weights: dict) -> np.ndarray:
    """sigmoid of the weighted mean of logits, probabilities clipped to [1e-6, 1 - 1e-6]."""
    total = sum(w for w in weights.values() if w > 0)
    logit = sum(w * np.log(np.clip(maps[n], 1e-6, 1 - 1e-6) / (1 - np.clip(maps[n], 1e-6, 1 - 1e-6)))
                for n, w in weights.items() if w > 0) / total
    return 1 / (1 + np.exp(-logit))


def probability_mean(maps: dict, weights: dict) -> np.ndarray:
    return sum(w * maps[n] for n, w in weights.items()) / sum(weights.values())


def predict(root, teachers, calibration: dict, folder):
    """Run `vesukit predict` with ``calibration``; (masks, saved maps, run.json)."""
    folder.mkdir()
    (folder / "calibration.json").write_text(json.dumps(calibration))
    code = main(["predict", "--data", str(root), "--teachers", str(teachers), "--out",
                 str(folder / "sub.zip"), "--device", "cpu", "--tta", "none", "--workdir",
                 str(folder / "work"), "--save-maps", str(folder / "maps"), "--calibration",
                 str(folder / "calibration.json"), "--no-warm-up"])
    assert code == 0
    with zipfile.ZipFile(folder / "sub.zip") as archive:
        masks = {name[:-4]: read_volume_pillow(io.BytesIO(archive.read(name)))
                 for name in archive.namelist()}
    maps = {i: np.load(folder / "maps" / f"{i}.npy").astype(np.float64) for i in masks}
    return masks, maps, json.loads((folder / "work" / "run.json").read_text())


def assert_decided(masks, maps, expected, threshold):
    """The saved maps are the expected ones (to their float16 storage) and so are the masks,
    away from voxels within rounding of the threshold."""
    for volume_id, hand in expected.items():
        np.testing.assert_allclose(maps[volume_id], hand, rtol=0, atol=1e-3)
        clear = np.abs(hand - threshold) > 1e-5
        assert clear.mean() > 0.99
        np.testing.assert_array_equal(masks[volume_id][clear], (hand >= threshold)[clear])


def test_predict_applies_a_fitted_logit_fusion(root, teachers, teacher_maps, tmp_path):
    expected = {i: logit_mean(m, FITTED) for i, m in teacher_maps.items()}
    plain = {i: probability_mean(m, dict.fromkeys(FITTED, 1.0)) for i, m in teacher_maps.items()}
    # the fusion must matter here, or this test could not tell it was applied
    assert max(np.abs(expected[i] - plain[i]).max() for i in expected) > 0.05
    threshold = float(np.median(np.concatenate([e.ravel() for e in expected.values()])))
    calibration = {"threshold": {"rule": "fixed", "threshold": threshold}, "postprocess": [],
                   "fusion": {"mode": "logit", "weights": FITTED, "label": "fitted",
                              "evidence": {"candidates": []}}}
    masks, maps, record = predict(root, teachers, calibration, tmp_path / "fitted")
    assert_decided(masks, maps, expected, threshold)
    assert any((masks[i] != (plain[i] >= threshold)).any() for i in masks)

    assert record["fusion"] == {"mode": "logit", "weights": FITTED, "source": "calibration",
                                "weights_from": "calibration"}
    assert record["calibration"]["fusion"] == {"mode": "logit", "weights": FITTED}
    assert all(v["teachers"] == ["unet_0", "unet_2"] for v in record["volumes"])
    events = [e["message"] for e in record["events"]]
    assert any(e.startswith("fusion: logit mean of unet_0=2, unet_2=0.5 (fitted, from ")
               for e in events)
    assert any("teacher 'unet_1' has weight 0 in the fusion of" in e for e in events)


def test_a_calibration_without_fusion_averages_probabilities_by_the_manifest(
        root, teachers, teacher_maps, tmp_path):
    expected = {i: probability_mean(m, dict.fromkeys(FITTED, 1.0))
                for i, m in teacher_maps.items()}
    threshold = float(np.median(np.concatenate([e.ravel() for e in expected.values()])))
    calibration = {"threshold": {"rule": "fixed", "threshold": threshold}, "postprocess": []}
    assert Calibration.from_json(calibration).fusion is None
    assert "fusion" not in Calibration.from_json(calibration).to_json()  # old fingerprints hold
    masks, maps, record = predict(root, teachers, calibration, tmp_path / "plain")
    assert_decided(masks, maps, expected, threshold)
    assert record["fusion"] == {"mode": "probability", "weights": dict.fromkeys(FITTED, 1.0),
                                "source": "default", "weights_from": "manifest"}
    assert "fusion" not in record["calibration"]
    assert all(v["teachers"] == list(FITTED) for v in record["volumes"])


def test_the_fusion_block_is_read_checked_and_written_back(tmp_path):
    base = {"threshold": {"rule": "fixed", "threshold": 0.4}}
    fusion = Fusion.from_json({"mode": "logit", "weights": {"a": 1, "b": 0}})
    assert fusion == Fusion("logit", {"a": 1.0, "b": 0.0})
    calibration = Calibration.from_json({**base, "fusion": {"mode": "logit"}})
    assert calibration.fusion == Fusion("logit") and "manifest weights" in calibration.describe()
    path = tmp_path / "c.json"
    path.write_text(json.dumps(Calibration(fusion=fusion).to_json()))
    assert load_calibration(path).fusion == fusion
    # a teacher the fusion does not name is left out; a name the manifest lacks is reported
    weights, notes = fusion.teacher_weights({"a": 3.0, "c": 1.0})
    assert weights == {"a": 1.0, "c": 0.0}
    assert any("'c' is left out" in n for n in notes) and any("'b'" in n for n in notes)
    for bad, message in (({"mode": "median"}, "fusion 'mode'"),
                         ({"weights": {"a": -1}}, "fusion weight of teacher 'a'"),
                         ({"weights": {"a": 0}}, "every fusion weight is 0"),
                         ({"weights": ["a"]}, "must map teacher names")):
        with pytest.raises(CalibrationError, match=message):
            Calibration.from_json({**base, "fusion": bad}, "c.json")


def test_predict_refuses_a_fusion_that_names_none_of_the_teachers(root, teachers, tmp_path,
                                                                  capsys):
    (tmp_path / "c.json").write_text(json.dumps({"threshold": {"rule": "fixed"},
                                                 "fusion": {"weights": {"other": 1.0}}}))
    code = main(["predict", "--data", str(root), "--teachers", str(teachers), "--out",
                 str(tmp_path / "sub.zip"), "--device", "cpu", "--calibration",
                 str(tmp_path / "c.json"), "--workdir", str(tmp_path / "w")])
    assert code != 0
    assert "none of them is in" in capsys.readouterr().err
