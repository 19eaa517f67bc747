from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

pytest.importorskip("numba")

from vesukit import _optional  # noqa: E402
from vesukit.cli import main  # noqa: E402
from vesukit.data import encode_volume, write_volume  # noqa: E402
from vesukit.errors import MissingDependencyError, VolumeError  # noqa: E402
from vesukit.metric import score_predictions, score_volume  # noqa: E402
from vesukit.synth import synth_volume  # noqa: E402


@pytest.fixture
def pair(tmp_path):
    """Two labelled volumes and predictions as a folder and as a zip (ids a, b)."""
    labels = tmp_path / "labels"
    preds = tmp_path / "preds"
    labels.mkdir()
    preds.mkdir()
    zpath = tmp_path / "submission.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as archive:
        for seed, vid in enumerate("ab"):
            _, label = synth_volume((24, 20, 22), seed)
            write_volume(labels / f"{vid}.tif", label)
            pred = np.roll((label == 1).astype(np.uint8) * 255, seed + 1, axis=2)
            write_volume(preds / f"{vid}.tif", pred)
            archive.writestr(f"sub/{vid}.tif", encode_volume(pred))
    return labels, preds, zpath


def test_zip_and_folder_agree_with_score_volume(pair):
    labels, preds, zpath = pair
    from_folder = score_predictions(preds, labels, workers=2)
    from_zip = score_predictions(zpath, labels, workers=1)
    assert from_folder == from_zip
    assert set(from_folder["volumes"]) == {"a", "b"}
    import tifffile
    direct = score_volume(tifffile.imread(preds / "a.tif"), tifffile.imread(labels / "a.tif"))
    assert from_folder["volumes"]["a"] == direct.to_json()
    assert from_folder["mean"] == pytest.approx(
        np.mean([v["score"] for v in from_folder["volumes"].values()]))


def test_cli_json_and_table(pair, capsys):
    labels, _, zpath = pair
    assert main(["score", str(zpath), "--labels", str(labels), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"mean", "volumes"}
    assert set(out["volumes"]["a"]) == {"score", "toposcore", "topo_counts", "surface_dice",
                                        "voi_score", "voi_split", "voi_merge"}
    assert set(out["volumes"]["a"]["topo_counts"]) == {"0", "1", "2"}
    assert main(["score", str(zpath), "--labels", str(labels), "--workers", "1"]) == 0
    table = capsys.readouterr().out
    assert "mean" in table and "a " in table


def test_missing_label_and_missing_prediction_name_the_id(pair, capsys):
    labels, preds, _ = pair
    (labels / "b.tif").rename(labels / "b.tif.bak")
    with pytest.raises(VolumeError, match="prediction id.*b"):
        score_predictions(preds, labels)
    (labels / "b.tif.bak").rename(labels / "b.tif")
    (preds / "a.tif").unlink()
    with pytest.raises(VolumeError, match="no prediction for label id.*a"):
        score_predictions(preds, labels)
    assert main(["score", str(preds), "--labels", str(labels)]) == 1
    assert "a" in capsys.readouterr().err


def test_shape_mismatch_and_2d_name_the_id(pair, tmp_path):
    labels, preds, _ = pair
    write_volume(preds / "a.tif", np.zeros((24, 20, 21), np.uint8))
    with pytest.raises(VolumeError, match="a: prediction shape"):
        score_predictions(preds, labels)
    from PIL import Image
    Image.fromarray(np.zeros((20, 22), np.uint8)).save(preds / "a.tif")
    with pytest.raises(VolumeError, match="a: the prediction has shape \\(1, 20, 22\\)|a: "):
        score_predictions(preds, labels)
    with pytest.raises(VolumeError, match="2D|3D"):
        score_volume(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8))


def test_missing_numba_is_a_clear_error(monkeypatch):
    from vesukit.metric import _numba

    monkeypatch.setattr(_numba, "_kernels", None)
    _optional.disable("numba")
    try:
        with pytest.raises(MissingDependencyError, match="numba"):
            score_volume(np.zeros((3, 3, 3), np.uint8), np.zeros((3, 3, 3), np.uint8))
    finally:
        _optional.enable("numba")
