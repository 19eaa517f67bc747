"""The holes that lost a submission (issue 13): any exception in a volume's stages, weight-0
teachers, stale resumes, guessed shapes, the teachers' warm-up and a budget that degrades.

Real in-process predict runs on a tiny synthetic root with two tiny teachers; faults are real
functions patched to raise (which today's code must survive) or `$VESUKIT_FAULTS`.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from vesukit.data import list_test_ids, read_volume_pillow, volume_path  # noqa: E402
from vesukit.runtime import faults  # noqa: E402
from vesukit.runtime.chaos import make_fixture, run_plan  # noqa: E402
from vesukit.runtime.pipeline import PredictConfig, run_predict, scan_shapes  # noqa: E402
from vesukit.submission import validate_zip  # noqa: E402


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return make_fixture(tmp_path_factory.mktemp("neverlose"))


@pytest.fixture
def root(fixture):
    return fixture[0]


@pytest.fixture
def teachers(fixture):
    return fixture[1]


def predict(root, teachers, folder, **kwargs):
    stream = io.StringIO()
    config = PredictConfig(teachers, folder / "s.zip", data=root, device="cpu",
                           workdir=folder / "work", **kwargs)
    return run_predict(config, progress_stream=stream), stream.getvalue()


def assert_complete(result, root):
    report = validate_zip(result.zip_path, root)
    assert report.valid, [e.message for e in report.errors]
    assert sorted(report.files) == sorted(list_test_ids(root))


def record_of(folder):
    return json.loads((folder / "work" / "run.json").read_text())


# --------------------------------------------------------------------------- hole 2


def test_a_memory_error_in_post_processing_keeps_the_unprocessed_mask(root, teachers, tmp_path,
                                                                      monkeypatch):
    import vesukit.runtime.compute as compute

    target = list_test_ids(root)[1]
    real = compute.apply_postprocess
    calls = []

    def flaky(mask, steps, maps=None):
        calls.append(1)
        if len(calls) == 2:  # the second volume
            raise MemoryError("no memory for the closing")
        return real(mask, steps, maps)

    monkeypatch.setattr(compute, "apply_postprocess", flaky)
    result, log = predict(root, teachers, tmp_path)
    assert_complete(result, root)
    assert result.exit_code == 3
    volume = {v.volume_id: v for v in result.volumes}[target]
    assert volume.status == "done"
    assert volume.degraded == ["without post-processing (MemoryError: no memory for the closing)"]
    recorded = {v["volume_id"]: v for v in record_of(tmp_path)["volumes"]}
    assert recorded[target]["degraded"] == volume.degraded


def test_an_oserror_encoding_a_mask_becomes_a_flagged_fallback(root, teachers, tmp_path,
                                                               monkeypatch):
    import vesukit.runtime.worker as worker

    real = worker.encode_volume
    first_shape = scan_shapes(root, list_test_ids(root))[0][list_test_ids(root)[0]]

    def broken(mask, *args, **kwargs):
        if mask.shape == first_shape:
            raise OSError(28, "No space left on device")
        return real(mask, *args, **kwargs)

    monkeypatch.setattr(worker, "encode_volume", broken)
    result, log = predict(root, teachers, tmp_path)
    assert_complete(result, root)
    assert result.exit_code == 3
    first = result.volumes[0]
    assert first.status == "fallback"
    assert "its mask could not be encoded or saved (OSError: [Errno 28] No space left" in first.reason
    assert record_of(tmp_path)["fallbacks"] == [first.volume_id]
    assert all(v.status == "done" for v in result.volumes[1:])


def test_an_ensemble_error_is_retried_with_the_ensemble_on_the_cpu(root, teachers, tmp_path,
                                                                   monkeypatch):
    from vesukit.infer.ensemble import EnsembleAccumulator

    real = EnsembleAccumulator.result
    calls = []

    def once(self):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(self)

    monkeypatch.setattr(EnsembleAccumulator, "result", once)
    result, log = predict(root, teachers, tmp_path)
    assert_complete(result, root)
    first = result.volumes[0]
    assert first.status == "done"
    assert first.degraded == ["retried after: ensemble failed (RuntimeError: CUDA error: an "
                              "illegal memory access was encountered)"]
    assert "retrying with the ensemble on the CPU" in log


def test_an_error_outside_the_volumes_still_finishes_a_complete_zip(root, teachers, tmp_path,
                                                                    monkeypatch):
    from vesukit.runtime.budget import TimeBudget

    calls = []

    def broken(self, voxels_left, volumes_left):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("a bug in the planner")
        return []

    monkeypatch.setattr(TimeBudget, "replan", broken)
    result, log = predict(root, teachers, tmp_path)
    assert_complete(result, root)  # the first volume kept, the others fallbacks
    assert result.exit_code == 3
    assert [v.status for v in result.volumes] == ["done", "fallback", "fallback"]
    assert "predict failed outside a volume (ValueError: a bug in the planner)" in log
    assert not list(tmp_path.glob(".s.zip.partial-*"))


def test_fault_injection_hook_names_stage_kind_volume_and_times(monkeypatch):
    monkeypatch.setenv(faults.ENV, "read:OSError:v1:2;teacher:sleep0")
    faults.reset()
    faults.inject("read", "v2")  # another volume: nothing
    for _ in range(2):
        with pytest.raises(OSError, match="injected OSError at stage 'read' \\(volume 'v1'\\)"):
            faults.inject("read", "v1")
    faults.inject("read", "v1")  # fired twice: done
    faults.inject("teacher", "v1")
    with pytest.raises(ValueError, match="stage 'nowhere'"):
        faults.parse("nowhere:OSError")


def test_chaos_a_dozen_seeded_plans(root, teachers, tmp_path):
    """Random faults (type x stage x volume, in fallbacks and resumes too): every plan ends
    in a valid zip with every id, exit 0 or 3, and a run.json naming what was degraded."""
    import random

    from vesukit.runtime.chaos import RESUME_STAGES, random_plan

    ids = list_test_ids(root)
    rng = random.Random(13)
    problems = []
    for index in range(12):
        plan = random_plan(rng, ids)
        resume_plan = random_plan(rng, ids, stages=RESUME_STAGES, most=2)
        problems += run_plan(plan, resume_plan, root, teachers, tmp_path / f"p{index}",
                             audit=index % 4 == 0)
    assert problems == []


def test_chaos_one_scenario_of_each_kind(tmp_path):
    """The scenarios of issue 24, as real predict processes: a worker SIGKILLed, a forward
    pass hanging past the budget, one teacher failing on one volume, odd test folders. Each
    ends in exit 3, a valid zip, the clean masks for every volume not faulted, the fault
    named in run.json and a wall time within the budget."""
    import random

    from vesukit.runtime.chaos import SCENARIOS, clean_masks, draw_scenario, run_scenario

    root, teachers = make_fixture(tmp_path / "fixture", n_test=4)
    ids = list_test_ids(root)
    clean = clean_masks(root, teachers, tmp_path / "fixture")
    rng = random.Random(24)
    problems = []
    for kind in SCENARIOS:
        problems += run_scenario(draw_scenario(rng, ids, kind), root, teachers, clean,
                                 tmp_path / kind)
    assert problems == []


# --------------------------------------------------------------------------- hole 3


def test_weight_zero_teachers_are_skipped_not_loaded(root, teachers, tmp_path):
    copy = tmp_path / "teachers"
    shutil.copytree(teachers, copy)
    manifest = json.loads((copy / "teachers.json").read_text())
    manifest["teachers"][1]["weight"] = 0
    off = manifest["teachers"][1]["name"]
    (copy / manifest["teachers"][1]["checkpoint"]).write_bytes(b"never read")
    (copy / "teachers.json").write_text(json.dumps(manifest))
    result, log = predict(root, copy, tmp_path)
    assert result.exit_code == 0
    assert log.count(f"teacher '{off}' has weight 0") == 1 and "failed to load" not in log
    assert all(v.status == "done" and v.teachers == [manifest["teachers"][0]["name"]]
               for v in result.volumes)


def test_all_weights_zero_is_a_manifest_error_naming_the_file(teachers, tmp_path):
    from vesukit.teachers import TeacherError, load_manifest

    copy = tmp_path / "teachers"
    shutil.copytree(teachers, copy)
    manifest = json.loads((copy / "teachers.json").read_text())
    for teacher in manifest["teachers"]:
        teacher["weight"] = 0
    (copy / "teachers.json").write_text(json.dumps(manifest))
    with pytest.raises(TeacherError, match=f"{copy / 'teachers.json'}.*every teacher has weight 0"):
        load_manifest(copy)


# --------------------------------------------------------------------------- hole 4


def test_resume_recomputes_after_retrained_weights_under_the_same_name(root, teachers, tmp_path):
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "teachers"
    shutil.copytree(teachers, copy)
    first, _ = predict(root, copy, tmp_path)
    assert first.exit_code == 0
    # "retrained": other values, same file name, same size, the old mtime put back
    path = copy / "v1_segformer_mit_b2.safetensors"
    stat = path.stat()
    save_file({k: v * 1.5 if v.is_floating_point() else v for k, v in load_file(path).items()},
              path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    second, log = predict(root, copy, tmp_path, resume=True)
    assert second.resumed == []
    assert log.count("is recomputed: changed since: checkpoints") == len(list_test_ids(root))


def test_resume_recomputes_a_changed_input_volume(root, teachers, tmp_path):
    data = tmp_path / "comp"
    shutil.copytree(root, data)
    first, _ = predict(data, teachers, tmp_path)
    ids = list_test_ids(data)
    path = volume_path(data, ids[0])
    path.write_bytes(path.read_bytes())  # same bytes, a new mtime: it may have been replaced
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    second, log = predict(data, teachers, tmp_path, resume=True)
    assert sorted(second.resumed) == sorted(ids[1:])
    assert (f"volume '{ids[0]}' is recomputed: its input volume changed (size or modification "
            "time)") in log


# --------------------------------------------------------------------------- extras


def test_a_truncated_volume_gets_the_shape_its_header_still_tells(root, teachers, tmp_path):
    import tifffile

    data = tmp_path / "comp"
    shutil.copytree(root, data)
    ids = list_test_ids(data)
    path = volume_path(data, ids[1])
    true_shape = (12, 16, 24)  # no readable volume of the test set has this Z
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros(true_shape, np.uint8), compression="zlib")
    path.write_bytes(buffer.getvalue()[:300])
    shapes, problems, guesses = scan_shapes(data, ids)
    assert shapes[ids[1]] == true_shape
    assert guesses[ids[1]] == {"shape": list(true_shape),
                               "source": "the shape stored in its TIFF description"}
    result, log = predict(data, teachers, tmp_path)
    assert result.exit_code == 3 and result.volumes[1].status == "fallback"
    assert "fallback mask assumes 12x16x24, guessed from the shape stored in its TIFF" in log
    assert record_of(tmp_path)["shape_guesses"] == guesses
    with zipfile.ZipFile(result.zip_path) as archive:
        mask = read_volume_pillow(io.BytesIO(archive.read(f"{ids[1]}.tif")))
    assert mask.shape == true_shape and not mask.any()


def test_without_a_description_the_plane_and_the_other_volumes_decide(root, tmp_path):
    data = tmp_path / "comp"
    shutil.copytree(root, data)
    ids = list_test_ids(data)
    shapes_before = scan_shapes(data, ids)[0]
    path = volume_path(data, ids[0])
    path.write_bytes(path.read_bytes()[:300])  # synth writes no shape description
    shapes, problems, guesses = scan_shapes(data, ids)
    assert shapes[ids[0]][1:] == shapes_before[ids[0]][1:]
    assert guesses[ids[0]]["source"].startswith("its first page")
    path.write_bytes(b"")
    assert scan_shapes(data, ids)[2][ids[0]]["source"] == \
        "the most common shape of the readable test volumes"


def test_teachers_warm_up_before_the_first_volume_and_it_is_recorded(root, teachers, tmp_path):
    result, log = predict(root, teachers, tmp_path)
    record = record_of(tmp_path)
    (warm,) = record["warm_up_seconds"]
    assert set(warm["teachers"]) == {"v1_default", "v1_segformer_mit_b2"}
    assert "teachers warmed up in" in log and "warm-up failed" not in log
    (line,) = [x for x in log.splitlines() if "teachers warmed up in" in x]
    assert "WARNING" not in line                # a fact, not a problem
    assert not any("warmed up" in w for w in result.warnings)
    assert result.exit_code == 0  # the warm-up is not a degradation


def test_the_warm_up_volume_is_tiny_for_every_slicing():
    from tests.fixtures import teacher_spec
    from vesukit.runtime.compute import _warm_up_shape

    def slicing(patch, axes=(0,), context=5):
        return teacher_spec("t", "2.5d", patch=patch, axes=axes, context=context)

    assert _warm_up_shape(teacher_spec("t", "3d", patch=(32, 48, 48)), None) == (32, 48, 48)
    assert _warm_up_shape(slicing((64, 64)), None) == (5, 64, 64)
    assert _warm_up_shape(slicing((64, 64), axes=(0, 1, 2)), None) == (5, 5, 5)
    assert _warm_up_shape(slicing((64, 96), axes=(1,), context=3), None) == (96, 3, 96)


def test_measured_pace_forces_the_budget_to_degrade_later_volumes(root, teachers, tmp_path,
                                                                  monkeypatch):
    # Every teacher call takes >= 4 s (an injected slow teacher): the first volume takes 8 s of
    # the 14 s budget however fast the machine, so the planner's measured pace cannot fit the
    # other volumes at TTA full (with 1.5 s, a quiet machine fitted them and nothing degraded).
    monkeypatch.setenv(faults.ENV, "teacher:sleep4:*:0")
    faults.reset()
    result, log = predict(root, teachers, tmp_path, tta="full", time_budget=14)
    assert_complete(result, root)
    assert result.exit_code == 3
    record = record_of(tmp_path)
    decisions = [e["message"] for e in record["events"] if e["message"].startswith("time budget")]
    assert decisions and "TTA full -> flip" in decisions[0]
    first = result.volumes[0]
    assert first.status == "done" and first.tta == "full" and not first.degraded
    later = result.volumes[1:]
    assert all(v.status == "fallback" or any("(time budget)" in d for d in v.degraded)
               for v in later)
    for volume in record["volumes"][1:]:
        assert volume["reason"] or volume["degraded"]
