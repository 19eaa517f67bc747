"""`vesukit train` and `vesukit distill` as a user runs them, and `vesukit predict` on the
student folder they write."""

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("numba")
pytest.importorskip("segmentation_models_pytorch")

from tests.fixtures import unet3d_ensemble  # noqa: E402
from vesukit.cli import main  # noqa: E402
from vesukit.data import list_test_ids  # noqa: E402
from vesukit.submission import validate_zip  # noqa: E402
from vesukit.synth import make_competition_root  # noqa: E402
from vesukit.teachers import load_manifest, load_teacher  # noqa: E402

FAST = ["--size", "tiny", "--patch", "32", "--epochs", "1", "--steps-per-epoch", "3",
        "--batch-size", "2", "--holdout", "0.34", "--device", "cpu"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_competition_root(tmp_path_factory.mktemp("root"), n_test=1, n_train=3,
                                 shapes=((24, 32, 32),), seed=4)


def test_train_writes_a_teacher_folder_predict_uses(root, tmp_path, capsys):
    out = tmp_path / "student"
    assert main(["train", "--data", str(root), "--out", str(out), *FAST,
                 "--finetune", "head:1:1e-3"]) == 0
    printed = capsys.readouterr()
    assert "best held-back score" in printed.out and "ETA" in printed.err
    manifest = load_manifest(out)
    assert [s.name for s in manifest.teachers] == ["student"]
    load_teacher(manifest.teachers[0], out)  # strict: every parameter is in the file
    training = json.loads((out / "training.json").read_text())
    assert training["provenance"]["targets"] == "labels"
    assert [s["name"] for s in training["config"]["stages"]] == ["all", "head"]
    assert len(training["provenance"]["held_back"]) == 1
    zip_path = tmp_path / "submission.zip"
    assert main(["predict", "--data", str(root), "--teachers", str(out), "--out", str(zip_path),
                 "--device", "cpu", "--workdir", str(tmp_path / "work")]) == 0
    report = validate_zip(zip_path, root)
    assert report.valid and sorted(report.expected_ids) == sorted(list_test_ids(root))


def test_train_refuses_an_existing_run_without_resume(root, tmp_path, capsys):
    out = tmp_path / "student"
    assert main(["train", "--data", str(root), "--out", str(out), *FAST]) == 0
    assert main(["train", "--data", str(root), "--out", str(out), *FAST]) == 1
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--data", str(root), "--out", str(out), *FAST, "--resume"]) == 0
    assert main(["train", "--data", str(root), "--out", str(out), *FAST, "--finetune",
                 "bogus:1:1e-3"]) == 2


def test_distill_learns_from_the_teachers_cached_maps(root, tmp_path, capsys):
    teachers = tmp_path / "teachers"
    unet3d_ensemble(teachers, seeds=(0, 1))
    out = tmp_path / "student"
    assert main(["distill", "--data", str(root), "--teachers", str(teachers), "--out", str(out),
                 *FAST, "--arch", "resenc_unet3d", "--patch", "16", "--label-weight", "0.3"]) == 0
    training = json.loads((out / "training.json").read_text())
    provenance = training["provenance"]
    assert provenance["targets"] == "ensemble" and provenance["teacher_names"] == ["unet_0", "unet_1"]
    assert provenance["label_weight"] == 0.3
    cached = sorted(p.name for p in (out / "distill-cache").glob("*/*.zarr"))
    assert cached == sorted(f"{n}.zarr" for n in ("unet_0", "unet_1")
                            for _ in provenance["train_volumes"])
    spec = load_manifest(out).teachers[0]
    assert spec.arch == "resenc_unet3d" and spec.patch == (16, 16, 16)
    load_teacher(spec, out)


def test_train_killed_with_sigkill_resumes_from_its_last_checkpoint(root, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "student"
    args = [sys.executable, "-m", "vesukit", "train", "--data", str(root), "--out", str(out),
            "--size", "tiny", "--patch", "32", "--epochs", "4", "--steps-per-epoch", "4",
            "--batch-size", "2", "--holdout", "0", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    state = out / "checkpoint" / "state.json"
    child = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not state.is_file() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.communicate()
    done = json.loads(state.read_text())["epochs_run"]
    assert 1 <= done < 4, "the run ended before it could be killed"
    resumed = subprocess.run([*args, "--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"epoch {done + 1}" in resumed.stderr and "resuming from" in resumed.stderr
    training = json.loads((out / "training.json").read_text())
    assert training["epochs_run"] == 4
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4]
    load_teacher(load_manifest(out).teachers[0], out)


def test_the_held_back_score_during_training_is_the_score_predict_settings_give(root, tmp_path):
    """training.json's best held-back score is the student run as predict runs it by default
    (overlap 0.5, no TTA), thresholded at 0.5: not an easier setting of its own."""
    import numpy as np

    from vesukit.data import read_volume, volume_path
    from vesukit.infer import predict_teacher
    from vesukit.infer.settings import DEFAULT_OVERLAP
    from vesukit.metric import PreparedLabel

    out = tmp_path / "student"
    # 8^3 windows on 24x32x32: overlap 0.25 and 0.5 place different windows (other scores)
    assert main(["train", "--data", str(root), "--out", str(out), *FAST, "--arch",
                 "resenc_unet3d", "--patch", "8"]) == 0
    training = json.loads((out / "training.json").read_text())
    (held,) = training["provenance"]["held_back"]
    spec = load_manifest(out).teachers[0]
    with torch.inference_mode():
        probability = predict_teacher(read_volume(volume_path(root, held, "train_images")),
                                      load_teacher(spec, out), spec, device="cpu",
                                      overlap=DEFAULT_OVERLAP, tta="none").numpy()
    label = PreparedLabel(read_volume(volume_path(root, held, "train_labels")))
    expected = label.score((probability >= 0.5).astype(np.uint8)).score
    assert training["best_score"] == pytest.approx(expected, abs=1e-9)
