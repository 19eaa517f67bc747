"""`vesukit validate` and kernel/validate_submission.py: exit codes, output, and no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from submission_helpers import good_entries, mask_for, tiff_bytes, write_zip

from vesukit.cli import main

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"


@pytest.fixture()
def good_zip(tmp_path, expected):
    return write_zip(tmp_path / "submission.zip", good_entries(expected))


@pytest.fixture()
def bad_zip(tmp_path, expected):
    entries = good_entries(expected)
    volume_id, shape = next(iter(expected.items()))
    entries[f"{volume_id}.tif"] = tiff_bytes(mask_for(shape)[0])  # the classic 2D mistake
    return write_zip(tmp_path / "bad.zip", entries)


def test_valid_zip_exits_0_with_table(good_zip, root, expected, capsys):
    assert main(["validate", str(good_zip), "--data", str(root)]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header == ["id", "shape", "dtype", "values", "fg", "%", "verdict"]
    for volume_id, shape in expected.items():
        line = next(row for row in out.splitlines() if row.startswith(volume_id))
        assert "x".join(map(str, shape)) in line and line.rstrip().endswith("ok")
    assert "VALID" in out.splitlines()[-1]


def test_invalid_zip_exits_1_and_names_the_fix(bad_zip, root, expected, capsys):
    assert main(["validate", str(bad_zip), "--data", str(root)]) == 1
    out = capsys.readouterr().out
    volume_id = next(iter(expected))
    assert f"ERROR [shape_mismatch] {volume_id}.tif" in out
    assert "multipage" in out and "INVALID" in out.splitlines()[-1]


def test_json_output(bad_zip, root, expected, capsys):
    assert main(["validate", str(bad_zip), "--data", str(root), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False
    assert [e["code"] for e in report["errors"]] == ["shape_mismatch"]
    assert set(report["files"]) == set(expected) and report["warnings"] == []


def test_strict_turns_warnings_into_exit_1(tmp_path, root, expected, capsys):
    entries = {f"sub/{k}": v for k, v in good_entries(expected).items()}
    path = write_zip(tmp_path / "s.zip", entries)
    assert main(["validate", str(path), "--data", str(root)]) == 0
    assert main(["validate", str(path), "--data", str(root), "--strict"]) == 1


def test_usage_errors_exit_2(good_zip, root, capsys):
    with pytest.raises(SystemExit) as info:
        main(["validate"])
    assert info.value.code == 2
    assert main(["validate", str(good_zip), "--data", str(root), "--workers", "0"]) == 2


def test_bad_root_exits_1(good_zip, tmp_path, capsys):
    assert main(["validate", str(good_zip), "--data", str(tmp_path / "nowhere")]) == 1
    assert "nowhere" in capsys.readouterr().err


def _without_torch(code: str) -> str:
    """Prefix that makes any import of torch (or its family) fail loudly."""
    return textwrap.dedent("""
        import sys
        class _BlockTorch:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {"torch", "torchvision", "timm",
                                          "segmentation_models_pytorch", "monai"}:
                    raise ImportError("torch is blocked in this test: " + name)
        sys.meta_path.insert(0, _BlockTorch())
        sys.modules["torch"] = None
    """) + textwrap.dedent(code)


def _run(code: str, *args, env=None):
    env = {**os.environ, "PYTHONPATH": str(SRC), **(env or {})}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_validate_runs_without_torch(good_zip, bad_zip, root):
    code = _without_torch("""
        from vesukit.cli import main
        rc_good = main(["validate", sys.argv[1], "--data", sys.argv[3]])
        rc_bad = main(["validate", sys.argv[2], "--data", sys.argv[3], "--json"])
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "torch" and sys.modules[m])
        print("RESULT", rc_good, rc_bad, loaded)
    """)
    result = _run(code, str(good_zip), str(bad_zip), str(root))
    assert result.returncode == 0, result.stderr
    assert "RESULT 0 1 []" in result.stdout


def test_writer_runs_without_torch(tmp_path, expected):
    code = _without_torch("""
        import numpy as np
        from vesukit.submission import SubmissionWriter, validate_zip
        shapes = {"a": (3, 4, 5), "b": (2, 6, 4)}
        with SubmissionWriter(sys.argv[1], shapes) as writer:
            for volume_id, shape in shapes.items():
                writer.add(volume_id, np.ones(shape, np.uint8))
        print("VALID", validate_zip(sys.argv[1], shapes=shapes).valid)
    """)
    result = _run(code, str(tmp_path / "s.zip"))
    assert result.returncode == 0, result.stderr
    assert "VALID True" in result.stdout


def test_kernel_script_discovers_root_and_validates(tmp_path, good_zip, bad_zip, root):
    # A Kaggle-like input tree: <base>/competitions/<slug> -> the synthetic root.
    base = tmp_path / "input"
    (base / "competitions").mkdir(parents=True)
    (base / "competitions" / "vesuvius-challenge-surface-detection").symlink_to(root)
    script = REPO / "kernel" / "validate_submission.py"
    env = {"VESUKIT_INPUT_BASE": str(base), "PYTHONPATH": ""}  # vesukit found via ../src
    ok = subprocess.run([sys.executable, str(script), str(good_zip)], capture_output=True,
                        text=True, env={**os.environ, **env}, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "VALID" in ok.stdout
    bad = subprocess.run([sys.executable, str(script), str(bad_zip), "--json"],
                         capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["errors"][0]["code"] == "shape_mismatch"
