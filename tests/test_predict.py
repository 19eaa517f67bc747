"""End to end: `vesukit predict` on a tiny synthetic root writes a valid, deterministic zip."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

pytest.importorskip("torch")

from tests.fixtures import seed9_teachers
from vesukit.cli import main  # noqa: E402
from vesukit.data import list_test_ids, read_volume, read_volume_pillow  # noqa: E402
from vesukit.synth import make_competition_root  # noqa: E402

SHAPES = [(12, 24, 20), (16, 16, 16)]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_competition_root(tmp_path_factory.mktemp("comp"), n_test=2, n_train=0,
                                 shapes=SHAPES, seed=1)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    return seed9_teachers(tmp_path_factory.mktemp("teachers"))


def masks_in(zip_path):
    with zipfile.ZipFile(zip_path) as archive:
        return {name[:-4]: read_volume_pillow(io.BytesIO(archive.read(name)))
                for name in archive.namelist()}


def test_predict_writes_a_valid_deterministic_zip(root, teachers, tmp_path, capsys):
    runs = []
    for attempt in ("a", "b"):
        out = tmp_path / attempt / "submission.zip"
        code = main(["predict", "--data", str(root), "--teachers", str(teachers),
                     "--out", str(out), "--device", "cpu", "--tta", "flip",
                     "--workdir", str(tmp_path / attempt / "work")])
        assert code == 0, capsys.readouterr().err
        runs.append(masks_in(out))
    printed = capsys.readouterr().out
    assert "VALID" in printed and "device busy" in printed

    ids = list_test_ids(root)
    assert sorted(runs[0]) == sorted(ids)
    for volume_id in ids:
        source = read_volume(root / "test_images" / f"{volume_id}.tif")
        mask = runs[0][volume_id]
        assert mask.shape == source.shape and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 1}
        np.testing.assert_array_equal(mask, runs[1][volume_id])  # deterministic

    record = json.loads((tmp_path / "a" / "work" / "run.json").read_text())
    assert [v["volume_id"] for v in record["volumes"]] == ids
    assert len(record["teachers"]) == 9 and record["tta"] == "flip"
    assert record["zip_valid"] is True and record["finished"]
    for volume in record["volumes"]:
        assert set(volume["teacher_seconds"]) == {t["name"] for t in record["teachers"]}
    # every finished mask is also kept in the workdir
    for volume_id in ids:
        kept = read_volume(tmp_path / "a" / "work" / "masks" / f"{volume_id}.tif")
        np.testing.assert_array_equal(kept, runs[0][volume_id])


def test_calibration_file_sets_the_threshold(root, teachers, tmp_path, capsys):
    calibration = tmp_path / "calibration.json"
    calibration.write_text(json.dumps({"format": 1,
                                       "threshold": {"rule": "fixed", "threshold": 1.0}}))
    out = tmp_path / "sub.zip"
    code = main(["predict", "--data", str(root), "--teachers", str(teachers), "--out", str(out),
                 "--device", "cpu", "--calibration", str(calibration),
                 "--audit", str(tmp_path / "audit")])
    assert code == 0
    # the tiny teachers' probability never reaches 1: every mask is empty, and the validator still passes it
    assert all(not m.any() for m in masks_in(out).values())
    audit = json.loads((tmp_path / "audit" / f"{list_test_ids(root)[0]}.json").read_text())
    assert audit["threshold"] == 1.0 and audit["rule"] == "fixed(threshold=1.0)"
    assert audit["foreground_fraction"] == 0 and audit["components"] == 0
    assert (tmp_path / "audit" / audit["preview"]).is_file()
    assert "empty mask" in " ".join(audit["alarms"])
    page = (tmp_path / "audit" / "index.html").read_text()
    assert all(f"{i}.png" in page for i in list_test_ids(root))
    printed = capsys.readouterr().out
    assert printed.count("ALARM ") >= 2 and "index.html" in printed


def test_unreadable_volume_gets_a_flagged_fallback_and_the_zip_stays_valid(root, teachers,
                                                                          tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(root, broken)
    ids = list_test_ids(broken)
    victim = broken / "test_images" / f"{ids[1]}.tif"
    victim.write_bytes(victim.read_bytes()[:200])
    code = main(["predict", "--data", str(broken), "--teachers", str(teachers),
                 "--out", str(tmp_path / "s.zip"), "--device", "cpu",
                 "--workdir", str(tmp_path / "work")])
    captured = capsys.readouterr()
    assert code == 3, captured.out + captured.err  # valid zip, degraded
    assert f"volume '{ids[1]}' gets an empty fallback mask: unreadable" in captured.err
    assert "truncated or corrupt" in captured.err
    assert f"DEGRADED: 1 volume(s) got empty fallback masks: {ids[1]}" in captured.out
    masks = masks_in(tmp_path / "s.zip")
    assert sorted(masks) == sorted(ids) and not masks[ids[1]].any()
    state = json.loads((tmp_path / "work" / "state" / f"{ids[1]}.json").read_text())
    assert state["status"] == "fallback" and "unreadable" in state["reason"]


def test_teacher_that_fails_to_load_is_dropped_with_a_warning(root, teachers, tmp_path,
                                                              capsys):
    import shutil

    copy = tmp_path / "teachers"
    shutil.copytree(teachers, copy)
    manifest = json.loads((copy / "teachers.json").read_text())
    name = manifest["teachers"][2]["name"]
    checkpoint = copy / manifest["teachers"][2]["checkpoint"]
    if checkpoint.is_dir():
        shutil.rmtree(checkpoint)
        checkpoint.mkdir()
    else:
        checkpoint.write_bytes(b"not a checkpoint")
    code = main(["predict", "--data", str(root), "--teachers", str(copy),
                 "--out", str(tmp_path / "s.zip"), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 3  # a valid zip, made without one teacher
    assert f"teacher '{name}'" in captured.err and "failed to load and is dropped" in captured.err
    assert "VALID" in captured.out


def test_no_teacher_loading_is_said_loudly_and_still_leaves_a_valid_zip(root, teachers, tmp_path,
                                                                       capsys):
    import shutil

    copy = tmp_path / "teachers"
    shutil.copytree(teachers, copy)
    manifest = json.loads((copy / "teachers.json").read_text())
    manifest["teachers"] = manifest["teachers"][:1]
    (copy / "teachers.json").write_text(json.dumps(manifest))
    checkpoint = copy / manifest["teachers"][0]["checkpoint"]
    weights = checkpoint / "model.safetensors" if checkpoint.is_dir() else checkpoint
    weights.write_bytes(b"garbage")
    code = main(["predict", "--data", str(root), "--teachers", str(copy),
                 "--out", str(tmp_path / "s.zip"), "--device", "cpu"])
    assert code == 3  # a valid zip exists: never exit 1 (kaggle.submit raises on this one)
    err = capsys.readouterr().err
    assert "none of the 1 teachers" in err and "EVERY VOLUME IS AN EMPTY FALLBACK MASK" in err
    assert sorted(masks_in(tmp_path / "s.zip")) == sorted(list_test_ids(root))


def test_empty_test_set_and_unwritable_zip(root, teachers, tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "test_images").mkdir(parents=True)
    (empty / "test.csv").write_text("id,scroll_id\n")
    assert main(["predict", "--data", str(empty), "--teachers", str(teachers),
                 "--out", str(tmp_path / "s.zip"), "--device", "cpu"]) == 1
    assert "lists no test volumes" in capsys.readouterr().err

    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["predict", "--data", str(root), "--teachers", str(teachers),
                 "--out", str(blocker / "s.zip"), "--device", "cpu"]) == 1
    assert "cannot create its folder" in capsys.readouterr().err
