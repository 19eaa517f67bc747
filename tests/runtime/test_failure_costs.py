"""Every failure costs at most its own volume (issue 24): a teacher failing on one volume, a
worker process killed, a forward pass hanging past the budget, odd test folders, a missing
checkpoint. Each with the real failure: `$VESUKIT_FAULTS`, SIGKILL of a real worker process,
a real sleep inside a forward pass; masks are compared with a clean run's.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from vesukit.data import list_test_ids, write_volume  # noqa: E402
from vesukit.runtime import faults  # noqa: E402
from vesukit.runtime.chaos import make_fixture, predict_command, worker_processes  # noqa: E402
from vesukit.runtime.chaos import zip_masks as masks  # noqa: E402
from vesukit.runtime.compute import FAILURES_IN_A_ROW  # noqa: E402
from vesukit.runtime.pipeline import PredictConfig, run_predict  # noqa: E402
from vesukit.submission import validate_zip  # noqa: E402

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    """A root of 4 tiny volumes, two tiny teachers, and the clean run's masks."""
    folder = tmp_path_factory.mktemp("costs")
    root, teachers = make_fixture(folder, n_test=4)
    out = folder / "clean" / "s.zip"
    completed = subprocess.run(predict_command(root, teachers, out, folder / "clean" / "work"),
                               capture_output=True, text=True, env=env(), timeout=600)
    assert completed.returncode == 0, completed.stderr
    return root, teachers, masks(out)


def env(**extra):
    # one thread each: float results (and so masks) are comparable across runs
    return {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
            **extra}


def record_of(workdir) -> dict:
    return json.loads((Path(workdir) / "run.json").read_text())


def in_process(root, teachers, folder, plan, **kwargs):
    faults.reset()
    os.environ[faults.ENV] = plan
    try:
        config = PredictConfig(teachers, folder / "s.zip", data=root, device="cpu",
                               workdir=folder / "work", **kwargs)
        return run_predict(config, progress_stream=io.StringIO())
    finally:
        os.environ.pop(faults.ENV, None)


# --------------------------------------------------------------------------- item 1


def test_a_teacher_failing_on_one_volume_costs_it_that_volume_only(fixture, tmp_path):
    root, teachers, clean = fixture
    ids = list_test_ids(root)
    # the first teacher's two attempts on the CPU (as configured, batch 1) on one volume
    result = in_process(root, teachers, tmp_path, f"teacher:MemoryError:{ids[1]}:2",
                        warm_up=False)
    assert result.exit_code == 3 and result.validation.valid
    by_id = {v.volume_id: v for v in result.volumes}
    assert all(v.status == "done" for v in result.volumes)
    assert by_id[ids[1]].teachers == ["v1_segformer_mit_b2"]
    assert by_id[ids[1]].degraded == [
        "without teacher 'v1_default' on this volume (it raised on every retry (as configured: "
        f"MemoryError: injected MemoryError at stage 'teacher' (volume '{ids[1]}') | with batch "
        f"1: MemoryError: injected MemoryError at stage 'teacher' (volume '{ids[1]}')))"]
    got = masks(result.zip_path)
    for volume_id in ids:
        if volume_id != ids[1]:
            assert by_id[volume_id].teachers == ["v1_default", "v1_segformer_mit_b2"]
            assert by_id[volume_id].degraded == []
            np.testing.assert_array_equal(got[volume_id], clean[volume_id])
    assert not any("dropped for the rest of the run" in w for w in result.warnings)


def test_every_teacher_failing_on_the_first_volume_loses_that_volume_only(fixture, tmp_path):
    """The issue's reproduction: 4 of 4 volumes came out empty."""
    root, teachers, clean = fixture
    ids = list_test_ids(root)
    result = in_process(root, teachers, tmp_path, f"teacher:MemoryError:{ids[0]}:0")
    assert result.exit_code == 3 and result.validation.valid and result.error is None
    assert [v.volume_id for v in result.fallbacks] == [ids[0]]
    assert "every teacher failed on this volume" in result.fallbacks[0].reason
    got = masks(result.zip_path)
    assert not got[ids[0]].any()
    for volume_id in ids[1:]:
        np.testing.assert_array_equal(got[volume_id], clean[volume_id])


def test_a_teacher_failing_on_volumes_in_a_row_leaves_the_run(fixture, tmp_path):
    root, teachers, _ = fixture
    ids = list_test_ids(root)
    assert FAILURES_IN_A_ROW == 2
    plan = ";".join(f"teacher:RuntimeError:{i}:2" for i in ids[:2])
    result = in_process(root, teachers, tmp_path, plan, warm_up=False)
    dropped = [w for w in result.warnings if "dropped for the rest of the run" in w]
    assert dropped == [f"teacher 'v1_default' dropped for the rest of the run: it failed on 2 "
                       f"volumes in a row ({ids[0]}, {ids[1]}); last: it raised on every retry "
                       f"(as configured: RuntimeError: injected RuntimeError at stage 'teacher' "
                       f"(volume '{ids[1]}') | with batch 1: RuntimeError: injected RuntimeError "
                       f"at stage 'teacher' (volume '{ids[1]}'))"]
    assert all(v.teachers == ["v1_segformer_mit_b2"] for v in result.volumes)


# --------------------------------------------------------------------------- item 2


def two_busy_workers(root, teachers, out, work):
    """predict --workers 2, once the first volume is saved: (the process, its workers' pids).
    Each forward pass takes a second, so the workers are computing when one is killed."""
    process = subprocess.Popen(predict_command(root, teachers, out, work, "--workers", "2"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env(VESUKIT_FAULTS="teacher:sleep1:*:0"))
    deadline = time.time() + 300
    while not list((work / "state").glob("*.json")) and time.time() < deadline:
        time.sleep(0.1)
    workers = worker_processes(process.pid)
    assert len(workers) == 2
    return process, workers


def test_a_killed_worker_is_noticed_and_its_volume_recomputed(fixture, tmp_path):
    root, teachers, clean = fixture
    ids = list_test_ids(root)
    out, work = tmp_path / "s.zip", tmp_path / "work"
    process, workers = two_busy_workers(root, teachers, out, work)
    os.kill(workers[1], signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 3, stderr
    record = record_of(work)
    assert len(record["worker_deaths"]) == 1
    death = record["worker_deaths"][0]
    assert death["cause"] == "killed by SIGKILL" and len(death["volumes"]) <= 1
    assert f"worker {death['worker']} (cpu) died (killed by SIGKILL)" in stderr
    assert f"DEGRADED: worker {death['worker']} (cpu) died (killed by SIGKILL)" in stdout
    assert record["fallbacks"] == []
    got = masks(out)
    for volume_id in ids:
        np.testing.assert_array_equal(got[volume_id], clean[volume_id])


def test_when_every_worker_is_dead_the_main_process_computes_the_rest(fixture, tmp_path):
    root, teachers, clean = fixture
    out, work = tmp_path / "s.zip", tmp_path / "work"
    process, workers = two_busy_workers(root, teachers, out, work)
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 3, stderr
    record = record_of(work)
    assert sorted(d["worker"] for d in record["worker_deaths"]) == [0, 1]
    assert "no worker is left: the main process computes" in stderr
    assert record["fallbacks"] == []
    got = masks(out)
    for volume_id in list_test_ids(root):
        np.testing.assert_array_equal(got[volume_id], clean[volume_id])


# --------------------------------------------------------------------------- item 3


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_hung_forward_pass_cannot_outlast_the_budget(fixture, tmp_path, workers):
    root, teachers, clean = fixture
    ids = list_test_ids(root)
    out, work = tmp_path / "s.zip", tmp_path / "work"
    budget = 20.0
    start = time.perf_counter()
    completed = subprocess.run(
        predict_command(root, teachers, out, work, "--workers", workers, "--time-budget", str(budget)),
        capture_output=True, text=True, timeout=600,
        env=env(VESUKIT_FAULTS=f"teacher:sleep120:{ids[1]}:1"))
    elapsed = time.perf_counter() - start
    assert completed.returncode == 3, completed.stderr
    assert elapsed < 120  # the hung pass was not waited for
    record = record_of(work)
    assert record["wall_seconds"] <= budget + 1
    assert ids[1] in record["fallbacks"]  # hung, or never reached on a slow start
    assert any("the hard wall" in e["message"] for e in record["events"])
    report = validate_zip(out, root)
    assert report.valid and sorted(report.files) == sorted(ids)
    got = masks(out)
    for volume in record["volumes"]:
        volume_id = volume["volume_id"]
        if volume["status"] != "done":
            assert not got[volume_id].any() and "time budget exhausted" in volume["reason"]
        elif not volume["degraded"]:  # not made cheaper by the budget: as the clean run
            np.testing.assert_array_equal(got[volume_id], clean[volume_id])


# --------------------------------------------------------------------------- items 4, 5 via submit()


def kaggle_copy(fixture, folder: Path) -> tuple[Path, Path, Path]:
    """A Kaggle-like input folder (competition root + teachers) to change."""
    root, teachers, _ = fixture
    base = folder / "input"
    shutil.copytree(root, base / "comp")
    shutil.copytree(teachers, base / "teachers")
    return base, base / "comp", base / "teachers"


def submit(base: Path, out: Path):
    from vesukit import kaggle

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = kaggle.submit(out, input_base=base, device="cpu")
    return path, [w for w in caught if issubclass(w.category, kaggle.DegradedSubmission)]


def test_odd_test_folders_still_give_a_valid_zip_from_submit(fixture, tmp_path, monkeypatch):
    zarr = pytest.importorskip("zarr")
    _, _, clean = fixture
    base, root, _ = kaggle_copy(fixture, tmp_path)
    ids = list_test_ids(root)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # a row without a volume, a row twice, a volume without a row, a 0x32x32 zarr volume
    (root / "test_images" / f"{ids[3]}.tif").unlink()
    write_volume(root / "test_images" / "999.tif", np.zeros((8, 16, 16), np.uint8))
    empty = zarr.open_array(str(root / "test_images" / "555.zarr"), mode="w", shape=(0, 32, 32),
                            dtype="uint8")
    assert empty.shape == (0, 32, 32)
    rows = (root / "test.csv").read_text().splitlines()
    first = rows[1]
    (root / "test.csv").write_text("\n".join([*rows, first, first.replace(ids[0], "555")]) + "\n")
    torch.set_num_threads(1)
    path, degraded = submit(base, tmp_path / "s.zip")
    assert degraded, "exit 3 must warn"
    expected = [*ids, "555"]
    report = validate_zip(path, root)
    assert report.valid, [e.message for e in report.errors]
    assert sorted(report.files) == sorted(expected)
    got = masks(path)
    assert not got[ids[3]].any() and not got["555"].any()
    for volume_id in ids[:3]:
        np.testing.assert_array_equal(got[volume_id], clean[volume_id])
    record = record_of(tmp_path / "vesukit-work")
    assert sorted(record["fallbacks"]) == sorted([ids[3], "555"])
    events = " ".join(e["message"] for e in record["events"])
    assert "ids listed twice, kept once" in events and "have no row in" in events
    assert "zero-size dimension" in events


def test_a_missing_checkpoint_drops_only_its_teacher_and_weight_zero_is_never_checked(
        fixture, tmp_path, monkeypatch):
    _, _, clean = fixture
    base, root, teachers = kaggle_copy(fixture, tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    manifest = json.loads((teachers / "teachers.json").read_text())
    # a third teacher of weight 0 whose file is missing: never checked, never loaded
    ghost = dict(manifest["teachers"][0], name="ghost", checkpoint="ghost.safetensors", weight=0)
    manifest["teachers"].append(ghost)
    (teachers / "teachers.json").write_text(json.dumps(manifest, indent=2))
    torch.set_num_threads(1)
    path, degraded = submit(base, tmp_path / "a.zip")
    assert not degraded  # exit 0: the weight-0 teacher costs nothing
    got = masks(path)
    for volume_id in clean:
        np.testing.assert_array_equal(got[volume_id], clean[volume_id])

    # the active SegFormer's file is gone: that teacher is dropped, exit 3, the zip is made
    segformer = next(t for t in manifest["teachers"] if t["name"] == "v1_segformer_mit_b2")
    (teachers / segformer["checkpoint"]).unlink()
    path, degraded = submit(base, tmp_path / "b.zip")
    assert degraded
    record = record_of(tmp_path / "vesukit-work")
    assert all(v["teachers"] == ["v1_default"] for v in record["volumes"])
    assert any("'v1_segformer_mit_b2'" in e["message"] and "failed to load" in e["message"]
               for e in record["events"])
    assert validate_zip(path, root).valid
