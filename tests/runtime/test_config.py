"""PredictConfig checks itself: the library and the command line give the same errors; the
TTA presets and the exit codes each have one source; the run record needs no pipeline."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from vesukit.cli import main
from vesukit.errors import EXIT_CODES, UsageError

REPO = Path(__file__).resolve().parents[2]

BAD = [
    ("overlap", 1.0, ["--overlap", "1.0"], "--overlap 1.0: must be in [0, 1)."),
    ("overlap", -0.1, ["--overlap", "-0.1"], "--overlap -0.1: must be in [0, 1)."),
    ("workers", 0, ["--workers", "0"], "--workers 0: must be >= 1."),
    ("time_budget", 0.0, ["--time-budget", "0"], "--time-budget 0.0: must be > 0 seconds."),
    ("time_budget", float("inf"), ["--time-budget", "inf"],
     "--time-budget inf: must be > 0 seconds."),
    ("device", "gpu", ["--device", "gpu"], "--device gpu: choose auto, cpu, cuda or cuda:N."),
]


@pytest.mark.parametrize("field, value, flags, message", BAD)
def test_library_and_cli_give_the_same_error(field, value, flags, message, tmp_path, capsys):
    from vesukit.runtime.pipeline import PredictConfig

    with pytest.raises(UsageError) as caught:
        PredictConfig(tmp_path / "teachers", tmp_path / "s.zip", **{field: value})
    assert str(caught.value) == message
    code = main(["predict", "--teachers", str(tmp_path / "teachers"),
                 "--out", str(tmp_path / "s.zip"), *flags])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"vesukit predict: error: {message}"


def test_tta_presets_have_one_source():
    from vesukit.cli import build_parser
    from vesukit.infer.tta import PRESETS
    from vesukit.runtime.pipeline import PredictConfig

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name in ("predict", "calibrate"):
        (tta,) = [a for a in commands[name]._actions if a.dest == "tta"]
        assert tta.choices is PRESETS
    with pytest.raises(UsageError, match="choose one of none, flip, full"):
        PredictConfig("t", "s.zip", tta="all")


def test_the_cli_parser_and_the_run_record_import_no_torch_and_no_pipeline():
    code = ("import sys, vesukit.cli, vesukit.runtime.record; vesukit.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'vesukit.runtime.pipeline') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO / "src")}, check=True).stdout
    assert out.strip() == "[]"


def test_readme_exit_code_table_is_the_code_word_for_word():
    readme = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| (\d+) \| (.+?) \|$", readme, flags=re.M)
    assert [(int(code), text) for code, text in rows] == list(EXIT_CODES)
