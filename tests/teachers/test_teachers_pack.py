"""`vesukit teachers pack` and the notebook's `submit()` applying the packed decision."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from vesukit import kaggle  # noqa: E402
from vesukit.cli import main  # noqa: E402
from vesukit.synth import make_competition_root  # noqa: E402
from vesukit.teachers import load_manifest, load_teacher, write_preset  # noqa: E402

DECISION = {"threshold": {"rule": "fixed", "threshold": 0.45}, "tta": "flip",
            "postprocess": [{"step": "remove_small", "min_voxels": 10},
                            {"step": "sheet_close", "radius": 2}]}


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pack")
    source = folder / "teachers"
    write_preset(source, preset="seed9", size="tiny", seed=0)
    (source / "calibration.json").write_text(json.dumps(DECISION))
    return source, folder / "dataset"


def test_pack_writes_a_dataset_that_predicts_the_same(packed, monkeypatch, capsys):
    source, dataset = packed
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    assert main(["teachers", "pack", str(source), "--out", str(dataset)]) == 0
    captured = capsys.readouterr()
    assert "sheet_close(radius=2)" in captured.out
    assert "KAGGLE_USERNAME" not in captured.err
    metadata = json.loads((dataset / "dataset-metadata.json").read_text())
    assert metadata["id"] == "someone/vesukit-teachers"
    shipped = json.loads((dataset / "calibration.json").read_text())
    assert shipped["tta"] == "flip" and shipped["postprocess"] == DECISION["postprocess"]
    original, slim = load_manifest(source), load_manifest(dataset)
    # checkpoint files become weights-only safetensors; folders (save_pretrained) travel whole
    expected = [s.checkpoint if original.checkpoint_path(s).is_dir() else f"{s.name}.safetensors"
                for s in original.teachers]
    assert [s.checkpoint for s in slim.teachers] == expected
    assert any(name.endswith(".safetensors") for name in expected)
    for a, b in zip(original.teachers, slim.teachers):
        first, second = load_teacher(a, original.root), load_teacher(b, slim.root)
        x = torch.randn(1, a.in_channels, *a.patch)
        with torch.inference_mode():
            np.testing.assert_array_equal(first(x).numpy(), second(x).numpy())


def test_pack_refuses_a_bad_calibration(packed, tmp_path, capsys):
    source, _ = packed
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"threshold": {"rule": "fixed"}, "postprocess": "sixth_place"}))
    assert main(["teachers", "pack", str(source), "--out", str(tmp_path / "d"),
                 "--calibration", str(bad)]) == 1
    assert "unknown post-processing preset 'sixth_place'" in capsys.readouterr().err


def test_submit_applies_the_packed_decision(packed, tmp_path, monkeypatch, capsys):
    source, dataset = packed
    if not (dataset / "teachers.json").is_file():
        main(["teachers", "pack", str(source), "--out", str(dataset)])
    base = tmp_path / "input"
    make_competition_root(base / "competitions" / "vesuvius-challenge-surface-detection",
                          n_test=1, n_train=0, shapes=[(12, 16, 16)], seed=2)
    monkeypatch.delenv("VESUKIT_TEACHERS", raising=False)
    monkeypatch.setenv("VESUKIT_TEACHERS", str(dataset))
    out = kaggle.submit(tmp_path / "working" / "submission.zip", input_base=base, device="cpu")
    assert out.is_file()
    captured = capsys.readouterr()
    assert "decision from" in captured.out and "sheet_close(radius=2)" in captured.out
    assert "=flip (calibration)" in captured.err      # each teacher's TTA, from the calibration


def test_pack_without_an_owner_warns_before_the_upload_fails(packed, tmp_path, monkeypatch, capsys):
    source, _ = packed
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    assert main(["teachers", "pack", str(source), "--out", str(tmp_path / "d")]) == 0
    assert "no $KAGGLE_USERNAME" in capsys.readouterr().err
