"""Never lose a submission: kill -9 + resume, SIGTERM, faulty teachers, budget, two workers.

Runs are real `vesukit predict` processes on a tiny synthetic root with two tiny teachers;
zips are compared byte for byte.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tests.fixtures import TWO_OF_SEED9, seed9_teachers  # noqa: E402
from vesukit.data import list_test_ids, read_volume_pillow  # noqa: E402
from vesukit.runtime.pipeline import PredictConfig, run_predict  # noqa: E402
from vesukit.submission import validate_zip  # noqa: E402
from vesukit.synth import make_competition_root  # noqa: E402

SRC = str(Path(__file__).resolve().parents[2] / "src")
KEEP = TWO_OF_SEED9


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_competition_root(tmp_path_factory.mktemp("comp"), n_test=4, n_train=0,
                                 shapes=[(8, 20, 16), (10, 16, 16), (8, 16, 24)], seed=3)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    return seed9_teachers(tmp_path_factory.mktemp("teachers"), keep=KEEP)


def predict_cmd(root, teachers, out, workdir, *extra):
    return [sys.executable, "-m", "vesukit", "predict", "--data", str(root), "--teachers",
            str(teachers), "--out", str(out), "--workdir", str(workdir), "--device", "cpu",
            *extra]


def env_one_thread():
    # Equal thread counts make float results (and so masks) comparable across runs.
    return {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run(cmd, **kwargs):
    return subprocess.run(cmd, capture_output=True, text=True, env=env_one_thread(),
                          timeout=600, **kwargs)


@pytest.fixture(scope="module")
def reference_zip(root, teachers, tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference")
    result = run(predict_cmd(root, teachers, folder / "s.zip", folder / "work"))
    assert result.returncode == 0, result.stderr
    return (folder / "s.zip").read_bytes()


def states_done(workdir: Path) -> int:
    folder = workdir / "state"
    return len(list(folder.glob("*.json"))) if folder.is_dir() else 0


def start_and_kill_after(cmd, workdir, n_states, sig=signal.SIGKILL):
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env_one_thread())
    deadline = time.monotonic() + 300
    while states_done(workdir) < n_states and process.poll() is None:
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.05)
    process.send_signal(sig)
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


@pytest.mark.parametrize("kill_after", [0, 1, 2])
def test_kill_9_at_any_moment_then_resume_gives_the_identical_zip(root, teachers, tmp_path,
                                                                   reference_zip, kill_after):
    out, work = tmp_path / "s.zip", tmp_path / "work"
    cmd = predict_cmd(root, teachers, out, work)
    code, _, _ = start_and_kill_after(cmd, work, kill_after)
    assert code == -signal.SIGKILL
    assert not out.exists()  # no half-written zip under the final name
    resumed = run(cmd + ["--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zip", "work"]  # no stale partial
    if kill_after:
        assert "resumed: " in resumed.stderr  # finished volumes were not recomputed
    assert out.read_bytes() == reference_zip


def test_sigterm_finishes_the_zip_with_fallbacks_then_resume_completes(root, teachers, tmp_path,
                                                                        reference_zip):
    out, work = tmp_path / "s.zip", tmp_path / "work"
    cmd = predict_cmd(root, teachers, out, work)
    code, stdout, stderr = start_and_kill_after(cmd, work, 1, signal.SIGTERM)
    assert code == 3, stderr
    assert "interrupted (SIGTERM/SIGINT)" in stderr and "DEGRADED" in stdout
    report = validate_zip(out, root)
    assert report.valid and sorted(report.files) == sorted(list_test_ids(root))
    # the interrupted run's fallbacks are redone on resume
    resumed = run(cmd + ["--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert out.read_bytes() == reference_zip


def test_two_workers_give_the_same_zip_as_one(root, teachers, tmp_path, reference_zip):
    out = tmp_path / "s.zip"
    result = run(predict_cmd(root, teachers, out, tmp_path / "work", "--workers", "2"))
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "work" / "run.json").read_text())
    assert record["environment"]["devices"] == ["cpu", "cpu"]  # two worker processes
    # Volumes go to whichever worker asks first, so either may have done them all.
    assert {v["worker"] for v in record["volumes"]} <= {0, 1}
    assert out.read_bytes() == reference_zip


def masks(zip_path):
    with zipfile.ZipFile(zip_path) as archive:
        return {n[:-4]: read_volume_pillow(io.BytesIO(archive.read(n)))
                for n in archive.namelist()}


def test_nan_teacher_is_dropped_with_a_warning(root, teachers, tmp_path):
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "teachers"
    shutil.copytree(teachers, copy)
    weights_path = copy / "v1_segformer_mit_b2.safetensors"
    weights = load_file(weights_path)
    save_file({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
               for k, v in weights.items()}, weights_path)
    stream = io.StringIO()
    result = run_predict(PredictConfig(copy, tmp_path / "s.zip", data=root, device="cpu",
                                       workdir=tmp_path / "work"), progress_stream=stream)
    log = stream.getvalue()
    # NaN on every volume: it fails on two in a row (FAILURES_IN_A_ROW), then leaves the run
    ids = list_test_ids(root)
    assert (f"teacher 'v1_segformer_mit_b2' dropped for the rest of the run: it failed on 2 "
            f"volumes in a row ({ids[0]}, {ids[1]}); last: its output holds NaN or inf") in log
    assert log.count("dropped for the rest of the run") == 1
    assert result.validation.valid and result.exit_code == 3
    assert all(v.teachers == ["v1_default"] for v in result.volumes)
    assert all(any("v1_segformer_mit_b2" in d for d in v.degraded) for v in result.volumes)


def test_teacher_raising_is_retried_then_dropped(root, teachers, tmp_path, monkeypatch):
    import vesukit.infer

    real = vesukit.infer.predict_teacher
    calls = []

    def flaky(volume, model, spec, **kwargs):
        if spec.name == "v1_default":
            calls.append(kwargs.get("batch_size"))
            raise RuntimeError("injected fault")
        return real(volume, model, spec, **kwargs)

    monkeypatch.setattr(vesukit.infer, "predict_teacher", flaky)
    stream = io.StringIO()
    # no warm-up: its one call per teacher would go through `flaky` as well
    result = run_predict(PredictConfig(teachers, tmp_path / "s.zip", data=root, device="cpu",
                                       workdir=tmp_path / "work", warm_up=False),
                         progress_stream=stream)
    log = stream.getvalue()
    # as configured, then batch 1 (no GPU: no CPU retry), on two volumes; then it is dropped
    assert calls == [None, 1, None, 1]
    assert "teacher 'v1_default' failed with batch 1 (RuntimeError: injected fault)" in log
    assert "teacher 'v1_default' dropped for the rest of the run: it failed on 2 volumes in a row" in log
    assert result.validation.valid and result.exit_code == 3
    assert all(v.status == "done" and v.teachers == ["v1_segformer_mit_b2"]
               for v in result.volumes)


def test_budget_overrun_ends_in_a_valid_zip_with_fallbacks(root, teachers, tmp_path):
    result = run(predict_cmd(root, teachers, tmp_path / "s.zip", tmp_path / "work",
                             "--time-budget", "0.01"))
    assert result.returncode == 3, result.stderr
    assert "gets an empty fallback mask: time budget exhausted" in result.stderr
    report = validate_zip(tmp_path / "s.zip", root)
    assert report.valid and sorted(report.files) == sorted(list_test_ids(root))
    record = json.loads((tmp_path / "work" / "run.json").read_text())
    assert record["fallbacks"] == list_test_ids(root) and record["degraded"] is True
    assert any("time budget exhausted" in e["message"] for e in record["events"])
    assert all(not m.any() for m in masks(tmp_path / "s.zip").values())
