"""The command-line skeleton: help, version, python -m, synth, doctor, and no torch on import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from vesukit import __version__
from vesukit.cli import main
from vesukit.data import list_test_ids, read_volume, write_volume

SRC = str(Path(__file__).resolve().parents[1] / "src")


def run_module(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "vesukit", *args], capture_output=True,
                          text=True, env=env)


def test_help_and_version():
    result = run_module("--help")
    assert result.returncode == 0
    for command in ("synth", "teachers", "predict", "postprocess", "validate", "score", "calibrate",
                    "ablate", "train", "distill", "doctor"):
        assert f"\n    {command}" in result.stdout, command
    result = run_module("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"vesukit {__version__}"


def test_no_command_is_a_usage_error(capsys):
    assert main([]) == 2


def test_synth_command_writes_a_root(tmp_path, capsys):
    out = tmp_path / "root"
    code = main(["synth", str(out), "--test", "2", "--train", "1", "--shape", "10", "12", "14",
                 "--shape", "8", "8", "8", "--seed", "3"])
    assert code == 0
    ids = list_test_ids(out)
    assert [read_volume(out / "test_images" / f"{i}.tif").shape for i in ids] == [
        (10, 12, 14), (8, 8, 8)]
    assert "wrote" in capsys.readouterr().out


def test_synth_rejects_impossible_values(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "x"), "--test", "0", "--train", "0"]) == 2
    assert main(["synth", str(tmp_path / "x"), "--shape", "1", "5", "5"]) == 2
    assert "every axis needs >= 2 voxels" in capsys.readouterr().err


def test_doctor_reports_roots_and_packages(tmp_path, capsys):
    main(["synth", str(tmp_path / "vesuvius-challenge-surface-detection"), "--test", "1",
          "--train", "0", "--shape", "4", "6", "6"])
    capsys.readouterr()
    assert main(["doctor", "--json", "--input-base", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["packages"]["numpy"]
    assert report["competition_roots"] == [str(tmp_path / "vesuvius-challenge-surface-detection")]


def test_importing_vesukit_and_cli_does_not_import_torch():
    code = ("import sys; import vesukit, vesukit.cli, vesukit.data; vesukit.cli.build_parser();"
            " print('torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": SRC}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_output_cut_short_by_the_reader_is_not_a_traceback(tmp_path):
    import numpy as np

    from vesukit.submission import SubmissionWriter

    # 300 tiny volumes: `validate --json` prints far more than a pipe holds (64 KiB), so the
    # reader closing the pipe early really interrupts the writes.
    images = tmp_path / "root" / "test_images"
    images.mkdir(parents=True)
    ids = [str(1000 + i) for i in range(300)]
    for volume_id in ids:
        write_volume(images / f"{volume_id}.tif", np.zeros((2, 4, 4), np.uint8))
    with SubmissionWriter(tmp_path / "s.zip", ids) as writer:
        for volume_id in ids:
            writer.add(volume_id, np.ones((2, 4, 4), np.uint8))
    env = {**os.environ, "PYTHONPATH": SRC}
    result = subprocess.run(
        f"{sys.executable} -m vesukit validate {tmp_path / 's.zip'} --data {tmp_path / 'root'}"
        " --json | head -1", shell=True, capture_output=True, text=True, env=env)
    assert result.stdout.strip() == "{"
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr
