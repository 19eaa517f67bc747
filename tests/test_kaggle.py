"""The notebook's one call: input discovery and the command check (predict itself is tested
with its own stage; the whole notebook by `make kaggle-sim`)."""

from __future__ import annotations

import pytest

from vesukit import kaggle
from vesukit.errors import VesukitError


def test_missing_commands_names_only_what_the_cli_lacks():
    assert kaggle.missing_commands("synth", "doctor") == []
    assert kaggle.missing_commands("synth", "no-such-command") == ["no-such-command"]


def test_find_teachers_walks_the_input_base(tmp_path, monkeypatch):
    monkeypatch.delenv("VESUKIT_TEACHERS", raising=False)
    with pytest.raises(VesukitError, match="no teachers folder"):
        kaggle.find_teachers(tmp_path)
    folder = tmp_path / "datasets" / "me" / "vesukit-teachers"
    folder.mkdir(parents=True)
    (folder / "teachers.json").write_text("{}")
    assert kaggle.find_teachers(tmp_path) == folder
    monkeypatch.setenv("VESUKIT_TEACHERS", str(tmp_path / "elsewhere"))
    assert kaggle.find_teachers(tmp_path) == tmp_path / "elsewhere"


def test_a_folder_holding_only_manifest_json_is_not_a_teachers_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("VESUKIT_TEACHERS", raising=False)
    other = tmp_path / "some-dataset"
    other.mkdir()
    (other / "manifest.json").write_text("{}")  # a common name in other datasets
    with pytest.raises(VesukitError, match="looked for a folder holding teachers.json"):
        kaggle.find_teachers(tmp_path)


# --------------------------------------------------------------------------- submit()


@pytest.fixture(scope="module")
def kaggle_input(tmp_path_factory):
    """/kaggle/input as the notebook sees it: the competition and the teachers datasets."""
    pytest.importorskip("torch")
    from vesukit.runtime.chaos import make_fixture

    base = tmp_path_factory.mktemp("input")
    make_fixture(base)  # base/comp (the competition root) and base/teachers
    return base


def test_submit_returns_the_path_of_a_degraded_but_valid_zip(kaggle_input, tmp_path,
                                                             monkeypatch):
    import shutil

    from vesukit.data import list_test_ids, volume_path
    from vesukit.submission import validate_zip

    monkeypatch.delenv("VESUKIT_TEACHERS", raising=False)
    base = tmp_path / "input"
    shutil.copytree(kaggle_input, base)
    ids = list_test_ids(base / "comp")
    corrupt = volume_path(base / "comp", ids[1])
    corrupt.write_bytes(corrupt.read_bytes()[:300])
    out = tmp_path / "working" / "submission.zip"
    with pytest.warns(kaggle.DegradedSubmission, match=f"1 volume\\(s\\) were degraded: {ids[1]} "
                                                        "\\(fallback: unreadable"):
        path = kaggle.submit(out, input_base=base, device="cpu")
    assert path == out
    report = validate_zip(out, base / "comp")
    assert report.valid and sorted(report.files) == sorted(ids)


def test_submit_raises_when_no_teacher_loads_but_the_fallback_zip_stays(kaggle_input, tmp_path,
                                                                        monkeypatch):
    import json
    import shutil

    from vesukit.data import list_test_ids
    from vesukit.submission import validate_zip

    monkeypatch.delenv("VESUKIT_TEACHERS", raising=False)
    base = tmp_path / "input"
    shutil.copytree(kaggle_input, base)
    manifest = json.loads((base / "teachers" / "teachers.json").read_text())
    for teacher in manifest["teachers"]:
        checkpoint = base / "teachers" / teacher["checkpoint"]
        weights = checkpoint / "model.safetensors" if checkpoint.is_dir() else checkpoint
        weights.write_bytes(b"garbage")
    out = tmp_path / "working" / "submission.zip"
    with pytest.raises(VesukitError, match="no volume could be predicted.*holds only empty "
                                           "fallback masks"):
        kaggle.submit(out, input_base=base, device="cpu")
    report = validate_zip(out, base / "comp")
    assert report.valid and sorted(report.files) == sorted(list_test_ids(base / "comp"))


def test_submit_applies_the_fusion_of_the_calibration_beside_the_teachers(kaggle_input, tmp_path,
                                                                          monkeypatch, capsys):
    """The teachers dataset's calibration.json with a fitted fusion: submit() logs it and
    predict combines the teachers as it says (run.json)."""
    import json
    import shutil

    monkeypatch.delenv("VESUKIT_TEACHERS", raising=False)
    base = tmp_path / "input"
    shutil.copytree(kaggle_input, base)
    names = [t["name"] for t in json.loads((base / "teachers" / "teachers.json").read_text())[
        "teachers"]]
    weights = {name: (0.0 if i == 0 else 1.5) for i, name in enumerate(names)}
    (base / "teachers" / "calibration.json").write_text(json.dumps(
        {"threshold": {"rule": "fixed", "threshold": 0.4}, "postprocess": [],
         "fusion": {"mode": "logit", "weights": weights}}))
    out = tmp_path / "working" / "submission.zip"
    assert kaggle.submit(out, input_base=base, device="cpu") == out
    assert "fusion logit mean, weights" in capsys.readouterr().out
    record = json.loads((out.parent / "vesukit-work" / "run.json").read_text())
    assert record["fusion"]["mode"] == "logit" and record["fusion"]["weights"] == weights
    assert all(names[0] not in volume["teachers"] for volume in record["volumes"])


@pytest.mark.parametrize("form", ["equals", "prefix"])
def test_submit_uses_the_calibration_given_in_extra_args_in_any_form(kaggle_input, tmp_path,
                                                                     monkeypatch, form):
    """`extra_args=("--calibration=X",)` (or argparse's `--calib X`) is predict's own reading of
    --calibration: the teachers' calibration.json must not be appended and win."""
    import json
    import shutil

    monkeypatch.delenv("VESUKIT_TEACHERS", raising=False)
    base = tmp_path / "input"
    shutil.copytree(kaggle_input, base)
    (base / "teachers" / "calibration.json").write_text(json.dumps(
        {"threshold": {"rule": "fixed", "threshold": 0.4}, "postprocess": []}))
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"threshold": {"rule": "fixed", "threshold": 0.93}, "postprocess": []}))
    extra = (f"--calibration={mine}",) if form == "equals" else ("--calib", str(mine))
    out = tmp_path / "working" / "submission.zip"
    assert kaggle.submit(out, input_base=base, device="cpu", extra_args=extra) == out
    record = json.loads((out.parent / "vesukit-work" / "run.json").read_text())
    assert {volume["threshold"] for volume in record["volumes"]} == {0.93}
