"""`vesukit segment` as a user runs it: the CLI on a LocalCluster, OME-Zarr out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.dask_processes import scheduler_and_workers
from tests.scroll.conftest import CHUNK, SHAPE, one_volume_maps

pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")

ROOT = Path(__file__).resolve().parents[2]


def segment_cmd(source, teachers, out, *extra) -> list[str]:
    return [sys.executable, "-m", "vesukit", "segment", str(source), "--teachers", str(teachers), "--out", str(out),
            "--chunk", *map(str, CHUNK), "--device", "cpu", "--workers", "1", "--dtype", "float16", *map(str, extra)]


def run_segment(*args, check=True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(list(args), capture_output=True, text=True, env=env, timeout=600)
    if check and done.returncode != 0:
        raise AssertionError(f"segment exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    path = tmp_path_factory.mktemp("calibration") / "calibration.json"
    path.write_text(json.dumps({"threshold": {"rule": "fixed", "threshold": 0.45},
                                "postprocess": [{"step": "zero_border", "width": 2},
                                                {"step": "close", "radius": 1}]}))
    return path


@pytest.fixture(scope="module")
def finished(teachers, volume_zarr, calibration, tmp_path_factory):
    """One uninterrupted run with a calibration (probability + mask)."""
    source, volume = volume_zarr
    out = tmp_path_factory.mktemp("segment") / "out.zarr"
    done = run_segment(*segment_cmd(source, teachers, out, "--calibration", calibration))
    return out, volume, done


def records(out: Path) -> dict[tuple, dict]:
    found = (json.loads(path.read_text()) for path in (out / ".vesukit/chunks").glob("*.json"))
    return {tuple(r["chunk"]): r for r in found}


def test_segment_equals_the_one_volume_ensemble_and_skips_air(finished, teachers):
    from vesukit.decide import binarize
    from vesukit.decide.steps import apply_postprocess

    out, volume, done = finished
    assert "12 chunk(s)" in done.stdout and "4 empty (skipped)" in done.stdout
    probability = zarr.open_array(str(out / "0"), mode="r")[:].astype(np.float32)
    mask = zarr.open_array(str(out / "labels/mask/0"), mode="r")[:]
    reference = one_volume_maps(volume, teachers)
    status = records(out)
    skipped = [c for c, r in status.items() if r["status"] == "skipped"]
    assert sorted(skipped) == [(z, y, 0) for z in range(2) for y in range(2)]  # the air column
    computed = np.s_[:, :, CHUNK[2]:]
    assert np.abs(probability[computed] - reference.mean[computed]).max() < 1e-3  # fp16 storage
    assert not probability[:, :, : CHUNK[2]].any() and not mask[:, :, : CHUNK[2]].any()
    expected = apply_postprocess(binarize(reference.mean, 0.45), [{"step": "zero_border", "width": 2},
                                                                   {"step": "close", "radius": 1}])
    np.testing.assert_array_equal(mask[computed], expected[computed])


def test_output_is_ome_zarr_readable_by_ome_zarr(finished):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    out, _, _ = finished
    nodes = list(Reader(parse_url(str(out), mode="r"))())
    image = nodes[0]
    assert image.metadata["axes"] == [{"name": a, "type": "space"} for a in "zyx"]
    assert tuple(image.data[0].shape) == SHAPE and str(image.data[0].dtype) == "float16"
    labels = [n for n in nodes if "image-label" in n.zarr.root_attrs]
    assert labels and tuple(labels[0].data[0].shape) == SHAPE
    assert zarr.open_group(str(out), mode="r").attrs["vesukit"]["fallback_chunks"] == []


def test_kill_and_resume_gives_the_same_array(finished, teachers, volume_zarr, calibration, tmp_path):
    source, _ = volume_zarr
    out = tmp_path / "killed.zarr"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(segment_cmd(source, teachers, out, "--calibration", calibration), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and len([r for r in records(out).values() if r["status"] == "done"]
                                              if (out / ".vesukit/chunks").is_dir() else []) < 2:
            assert process.poll() is None, "segment ended before it could be killed"
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the CLI and its Dask workers, as a crash would
        process.wait()
    kept = records(out)
    before = {c: r for c, r in kept.items() if r["status"] == "done"}
    assert 2 <= len(before) < 8, "the kill came after the run finished: nothing left to resume"
    done = run_segment(*segment_cmd(source, teachers, out, "--calibration", calibration, "--resume"))
    assert f"{len(kept)} resumed" in done.stdout
    after = records(out)
    for chunk, record in before.items():  # finished chunks were not computed again
        assert after[chunk]["pid"] == record["pid"]
    assert all(r["status"] in ("done", "skipped") for r in after.values()) and len(after) == 12
    expected_out = finished[0]
    for array in ("0", "labels/mask/0"):
        np.testing.assert_array_equal(zarr.open_array(str(out / array), mode="r")[:],
                                      zarr.open_array(str(expected_out / array), mode="r")[:])


def test_a_failing_chunk_becomes_a_listed_fallback(finished, teachers, volume_zarr, tmp_path):
    _, volume = volume_zarr
    broken = tmp_path / "broken.zarr"  # finer input chunks, so one damaged file hits only some tasks
    zarr.open_array(str(broken), mode="w", shape=SHAPE, chunks=(4, 4, 4), dtype="uint8")[:] = volume
    chunk_file = broken / "c" / "3" / "5" / "11"  # z 12-16, y 20-24, x 44-48: read by the last column only
    assert chunk_file.is_file()
    chunk_file.write_bytes(b"not a compressed chunk")
    out = tmp_path / "out.zarr"
    done = run_segment(*segment_cmd(broken, teachers, out, "--retries", "1"), check=False)
    assert done.returncode == 3, done.stdout + done.stderr
    status = records(out)
    fallbacks = sorted(c for c, r in status.items() if r["status"] == "fallback")
    assert fallbacks == [(z, y, 2) for z in range(2) for y in range(2)]
    listed = zarr.open_group(str(out), mode="r").attrs["vesukit"]["fallback_chunks"]
    assert sorted(map(tuple, listed)) == fallbacks
    assert "DEGRADED" in done.stdout and "chunk (1, 1, 2)" in done.stdout
    probability = zarr.open_array(str(out / "0"), mode="r")[:].astype(np.float32)
    good = zarr.open_array(str(finished[0] / "0"), mode="r")[:].astype(np.float32)
    computed = [c for c, r in status.items() if r["status"] == "done"]
    assert sorted(computed) == [(z, y, 1) for z in range(2) for y in range(2)]  # nothing else is lost
    for index in computed:
        region = tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, CHUNK))
        assert np.abs(probability[region] - good[region]).max() < 1e-3
    for index in fallbacks:
        region = tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, CHUNK))
        assert not probability[region].any()


def test_usage_errors_come_before_any_cluster_starts(finished, teachers, volume_zarr, tmp_path, capsys):
    from vesukit.cli import main

    source, _ = volume_zarr
    common = [str(source), "--teachers", str(teachers), "--device", "cpu"]
    assert main(["segment", *common, "--out", str(tmp_path / "a.zarr"), "--chunk", "0", "8", "8"]) == 2
    assert main(["segment", *common, "--out", str(finished[0])]) == 2
    assert "already exists. Pass --resume" in capsys.readouterr().err
    assert main(["segment", *common, "--out", str(finished[0]), "--resume", "--tta", "flip",
                 "--chunk", *map(str, CHUNK), "--dtype", "float16"]) == 2
    assert "other settings (decision, tta)" in capsys.readouterr().err


def test_an_existing_scheduler_by_address_gives_the_same_arrays(finished, teachers, volume_zarr, calibration,
                                                               tmp_path):
    """The README's many-machines path: `dask scheduler`, `dask worker ADDRESS`, then `segment
    --scheduler ADDRESS`, all separate processes as on a cluster (here on one machine)."""
    source, _ = volume_zarr
    with scheduler_and_workers(tmp_path, workers=1) as address:
        out = tmp_path / "remote.zarr"
        command = segment_cmd(source, teachers, out, "--calibration", calibration, "--scheduler", address)
        at = command.index("--workers")
        done = run_segment(*command[:at], *command[at + 2:])  # the cluster has its own workers
    assert "on 1 worker(s)" in done.stderr and "8 computed, 4 empty (skipped)" in done.stdout
    for array in ("0", "labels/mask/0"):
        np.testing.assert_array_equal(zarr.open_array(str(out / array), mode="r")[:],
                                      zarr.open_array(str(finished[0] / array), mode="r")[:])
