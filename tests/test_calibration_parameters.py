"""The parameter table: every rule's and step's parameters have a type and a range, checked
when a calibration is read (predict, postprocess, the notebook) or made (calibrate, pack), so a
bad file is refused before any compute with a message naming the step and the parameter."""

from __future__ import annotations

import inspect
import json
import math

import pytest

from vesukit.cli import main
from vesukit.decide import Calibration, ThresholdRule
from vesukit.decide.calibration import CalibrationError, preset_calibration
from vesukit.decide.parameters import RULE_PARAMETERS, STEP_PARAMETERS
from vesukit.decide.presets import PRESETS
from vesukit.decide.rules import THRESHOLD_RULES
from vesukit.decide.steps import STEPS, PostprocessError
from vesukit.errors import VesukitError

FIXED = {"rule": "fixed", "threshold": 0.4}

# (calibration file, words the refusal must contain): the cases of issue 24 and their kin
BAD = [
    ({"threshold": {"rule": "fixed", "threshold": math.nan}}, ["'fixed'", "'threshold'", "nan"]),
    ({"threshold": {"rule": "fixed", "threshold": 1.5}}, ["'threshold'", "[0, 1]"]),
    ({"threshold": FIXED, "postprocess": [{"step": "remove_small", "min_voxels": math.nan}]},
     ["step 0 ('remove_small')", "'min_voxels'"]),
    ({"threshold": FIXED, "postprocess": [{"step": "median_filter", "size": 0}]},
     ["step 0 ('median_filter')", "'size'", "0"]),
    ({"threshold": FIXED, "postprocess": [{"step": "zero_border", "width": 2.5}]},
     ["'zero_border'", "'width'", "integer"]),
    ({"threshold": FIXED, "postprocess": [{"step": "slice_gaps", "axis": 5}]},
     ["'slice_gaps'", "'axis'", "one of 0, 1, 2"]),
    ({"threshold": FIXED, "postprocess": [{"step": "remove_small", "connectivity": 8}]},
     ["'connectivity'", "one of 6, 26"]),
    ({"threshold": {"rule": "otsu", "lo": 0.8, "hi": 0.3}}, ["'otsu'", "'lo'", "'hi'"]),
    ({"threshold": FIXED, "postprocess": [{"step": "hysteresis", "low": 0.9}]},
     ["'hysteresis'", "'low'", "'high'"]),
    ({"threshold": 0.4}, ["'threshold' is 0.4", '"rule": "fixed"']),
    ({"threshold": FIXED, "postprocess": [5]}, ["step 0 is 5"]),
    ({"threshold": FIXED, "postprocess": {"step": "fill_holes"}}, ["must be a list of steps"]),
]


def test_every_rule_and_step_parameter_has_a_row_and_every_row_a_parameter():
    for table, functions, skip in ((RULE_PARAMETERS, THRESHOLD_RULES, {"maps"}),
                                   (STEP_PARAMETERS, STEPS, {"mask", "maps"})):
        assert set(table) == set(functions)
        for name, function in functions.items():
            accepted = set(inspect.signature(function).parameters) - skip
            assert set(table[name]) == accepted, name


def test_every_default_every_preset_and_every_search_candidate_is_in_range():
    """What vesukit itself writes (defaults, presets, calibrate's grid) passes the table."""
    from vesukit.calibrate.search import RULE_GRID, postprocess_options

    for name, function in THRESHOLD_RULES.items():
        defaults = {k: p.default for k, p in inspect.signature(function).parameters.items()
                    if k != "maps"}
        ThresholdRule(name, defaults)
    Calibration(postprocess=tuple({"step": name} for name in STEPS))
    for preset in PRESETS:
        preset_calibration(preset)
    for name, grid in RULE_GRID.items():
        for params in grid:
            ThresholdRule(name, params)
    for voxels in (16 ** 3, 320 ** 3):
        for step, options in postprocess_options(voxels, winners=True).items():
            for option in filter(None, options):
                Calibration(postprocess=({"step": step, **option},))


@pytest.mark.parametrize("data, words", BAD, ids=[str(i) for i in range(len(BAD))])
def test_a_bad_calibration_file_is_refused_naming_the_step_and_parameter(data, words):
    with pytest.raises((CalibrationError, PostprocessError)) as caught:
        Calibration.from_json(data, "calib.json")
    message = str(caught.value)
    assert message.startswith("calib.json: ")
    for word in words:
        assert word in message, (word, message)


def test_a_bad_calibration_cannot_be_built_so_none_can_be_written():
    with pytest.raises(CalibrationError, match="'threshold' is nan"):
        ThresholdRule("fixed", {"threshold": math.nan})
    with pytest.raises(PostprocessError, match="'size' is 0"):
        Calibration(postprocess=({"step": "median_filter", "size": 0},))
    with pytest.raises(CalibrationError, match="unknown threshold rule 'magic'"):
        ThresholdRule("magic", {})


def test_integral_floats_of_integer_parameters_are_read_as_integers():
    calibration = Calibration.from_json({"threshold": FIXED, "postprocess": [
        {"step": "remove_small", "min_voxels": 20000.0}, {"step": "sheet_close", "radius": 3}]})
    assert calibration.postprocess[0]["min_voxels"] == 20000
    assert isinstance(calibration.postprocess[0]["min_voxels"], int)
    assert calibration.postprocess[1] == {"step": "sheet_close", "radius": 3}


@pytest.fixture(scope="module")
def competition(tmp_path_factory):
    pytest.importorskip("torch")
    from vesukit.runtime.chaos import make_fixture

    base = tmp_path_factory.mktemp("input")
    root, teachers = make_fixture(base, n_test=2)
    return base, root, teachers


@pytest.mark.parametrize("data, words", BAD[:4] + BAD[9:11], ids=["nan", "above", "dust-nan", "median0",
                                                                 "bare-number", "bare-step"])
def test_predict_refuses_a_bad_calibration_before_any_compute(competition, tmp_path, capsys, data,
                                                               words):
    _, root, teachers = competition
    bad = tmp_path / "calibration.json"
    bad.write_text(json.dumps(data))
    out = tmp_path / "submission.zip"
    code = main(["predict", "--data", str(root), "--teachers", str(teachers), "--out", str(out),
                 "--device", "cpu", "--calibration", str(bad), "--workdir", str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert code == 1 and str(bad) in err and "Traceback" not in err
    for word in words:
        assert word in err
    assert not out.exists() and not (tmp_path / "work" / "masks").exists()


def test_the_notebook_shows_a_bad_packed_calibration(competition, tmp_path, monkeypatch):
    import shutil

    from vesukit import kaggle

    base, _, _ = competition
    monkeypatch.delenv("VESUKIT_TEACHERS", raising=False)
    copy = tmp_path / "input"
    shutil.copytree(base, copy)
    (copy / "teachers" / "calibration.json").write_text(json.dumps(
        {"threshold": FIXED, "postprocess": [{"step": "median_filter", "size": 0}]}))
    out = tmp_path / "working" / "submission.zip"
    with pytest.raises(VesukitError, match="'median_filter'.*'size' is 0"):
        kaggle.submit(out, input_base=copy, device="cpu")
    assert not out.exists()


def test_teachers_pack_refuses_a_bad_calibration(competition, tmp_path, capsys):
    _, _, teachers = competition
    bad = tmp_path / "calibration.json"
    bad.write_text(json.dumps({"threshold": {"rule": "fixed", "threshold": math.nan}}))
    dataset = tmp_path / "dataset"
    code = main(["teachers", "pack", str(teachers), "--out", str(dataset), "--calibration", str(bad)])
    assert code == 1 and "'threshold' is nan" in capsys.readouterr().err
    assert not (dataset / "calibration.json").exists()
