"""nnU-Net v2 teachers against nnU-Net's own predictor, on models nnU-Net itself trained.

The models in tests/data/nnunet were planned, preprocessed and trained by nnU-Net
(scripts/make_nnunet_fixture.py; training takes minutes on two cores, so they are committed).
nnUNetPredictor (a dev-only peer) is the reference: vesukit must give the same surface
probability within 1e-3 from the raw results folder and from the slim folder that
`vesukit teachers import-nnunet` writes.

nnUNetPredictor sums its windows into float16 arrays, even on the CPU. Where only the far
corners of windows reach (the volume's corners and edges) the weighted logits fall below
float16's normal range and are rounded to a few steps, which moves its probabilities there
by up to ~0.2. vesukit sums in float32, so the fp32 reference is nnUNetPredictor with only
those two accumulators made float32 (:func:`_fp32_accumulators`); against the stock
predictor, vesukit differs only where that rounding does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from vesukit.infer import predict_teacher
from vesukit.teachers import MANIFEST_NAME, TeacherError, load_manifest
from vesukit.teachers.nnunet import NnUNetSpec, read_plan
from vesukit.teachers.nnunet_model import load_nnunet_teacher

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "nnunet"
CT = DATA / "Dataset501_VesukitCT" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
ZSCORE = DATA / "Dataset502_VesukitZ" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
TOLERANCE = 1e-3

# (model folder, folds, checkpoint): CT + PlainConvUNet with two folds and fold_all;
# z-score + ResidualEncoderUNet (transposed, anisotropic patch) with checkpoint_best.
CASES = {
    "ct-plain-folds01": (CT, (0, 1), "final"),
    "ct-plain-fold_all": (CT, ("all",), "final"),
    "zscore-resenc-best": (ZSCORE, (0,), "best"),
}


def _fixture_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_nnunet_fixture",
                                                  REPO / "scripts" / "make_nnunet_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def volumes():
    """Non-cubic volumes with zero borders (nnU-Net crops them); the second is thinner than
    the patches along z (nnU-Net pads it)."""
    sheet = _fixture_module().sheet_volume
    return {"20x34x28": sheet((20, 34, 28), seed=7)[0], "12x30x26": sheet((12, 30, 26), seed=8)[0]}


@contextlib.contextmanager
def _fp32_accumulators(module):
    """Inside ``module`` only, ``torch.zeros(..., dtype=torch.half)`` makes float32 arrays:
    nnUNetPredictor's logit and weight sums. Everything else it does is unchanged."""

    class Float32Sums(types.ModuleType):
        def __getattr__(self, name):
            return getattr(torch, name)

        @staticmethod
        def zeros(*args, dtype=None, **kwargs):
            return torch.zeros(*args, dtype=torch.float32 if dtype == torch.half else dtype,
                               **kwargs)

    module.torch = Float32Sums("torch")
    try:
        yield
    finally:
        module.torch = torch


def nnunet_probability(folder: Path, folds, checkpoint: str, volume: np.ndarray,
                       mirroring: bool = True, fp32: bool = True) -> np.ndarray:
    """nnUNetPredictor's surface probability (label 1) for ``volume`` on the CPU."""
    pytest.importorskip("nnunetv2")
    import nnunetv2.inference.predict_from_raw_data as nnunet_predict

    threads, processes = torch.get_num_threads(), nnunet_predict.default_num_processes
    nnunet_predict.default_num_processes = 1     # its default 8 threads stall two shared cores
    predictor = nnunet_predict.nnUNetPredictor(
        tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
        perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
        allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=list(folds),
                                                   checkpoint_name=f"checkpoint_{checkpoint}.pth")
    try:
        with _fp32_accumulators(nnunet_predict) if fp32 else contextlib.nullcontext():
            _, probabilities = predictor.predict_single_npy_array(
                volume[None].astype(np.float32), {"spacing": [1.0, 1.0, 1.0]}, None, None, True)
    finally:
        nnunet_predict.default_num_processes = processes
        torch.set_num_threads(threads)
    return probabilities[1]


@pytest.fixture(scope="module")
def references(volumes):
    cache: dict = {}

    def get(case: str, volume: str, mirroring: bool = True, fp32: bool = True) -> np.ndarray:
        key = (case, volume, mirroring, fp32)
        if key not in cache:
            folder, folds, checkpoint = CASES[case]
            cache[key] = nnunet_probability(folder, folds, checkpoint, volumes[volume],
                                            mirroring, fp32)
        return cache[key]

    return get


@pytest.fixture(scope="module")
def slim(tmp_path_factory):
    """Every case imported the way a user does it: `vesukit teachers import-nnunet`."""
    root = tmp_path_factory.mktemp("slim")
    for case, (folder, folds, checkpoint) in CASES.items():
        result = subprocess.run(
            [sys.executable, "-m", "vesukit", "teachers", "import-nnunet", str(folder),
             "--out", str(root / case), "--folds", *map(str, folds), "--checkpoint", checkpoint,
             "--name", case],
            capture_output=True, text=True, cwd=REPO, env=_env())
        assert result.returncode == 0, result.stderr
        assert f"nnU-Net teacher '{case}'" in result.stdout
    return root


def _env():
    import os

    return dict(os.environ, PYTHONPATH=str(REPO / "src"))


def _vesukit(spec: NnUNetSpec, root: Path, volume: np.ndarray, tta: str = "flip") -> np.ndarray:
    model = load_nnunet_teacher(spec, root)
    return predict_teacher(volume, model, spec, device="cpu", tta=tta).numpy()


@pytest.mark.parametrize("volume", ["20x34x28", "12x30x26"])
@pytest.mark.parametrize("case", list(CASES))
def test_raw_results_folder_equals_nnunet_predictor(case, volume, volumes, references):
    folder, folds, checkpoint = CASES[case]
    spec = NnUNetSpec(name="t", model=str(folder), folds=folds, checkpoint=checkpoint)
    ours = _vesukit(spec, folder.parent, volumes[volume])
    theirs = references(case, volume)
    assert ours.shape == volumes[volume].shape == theirs.shape
    assert np.abs(ours - theirs).max() <= TOLERANCE
    assert 0.0 < theirs.max() and theirs.min() < 1.0          # not a constant map


def test_every_difference_from_the_stock_predictor_is_its_float16_rounding(volumes, references):
    """Against the unmodified predictor (float16 sums), vesukit differs only where nnU-Net's
    own fp32 and fp16 sums differ: |ours - stock| <= |fp32 - stock| + 1e-3 at every voxel."""
    folder, folds, checkpoint = CASES["ct-plain-folds01"]
    spec = NnUNetSpec(name="t", model=str(folder), folds=folds, checkpoint=checkpoint)
    ours = _vesukit(spec, folder.parent, volumes["20x34x28"])
    stock = references("ct-plain-folds01", "20x34x28", fp32=False)
    fp32 = references("ct-plain-folds01", "20x34x28")
    assert (np.abs(ours - stock) <= np.abs(fp32 - stock) + TOLERANCE).all()
    assert np.abs(fp32 - stock).max() > TOLERANCE      # the rounding is real, so this tests it


@pytest.mark.parametrize("case", list(CASES))
def test_imported_slim_folder_equals_nnunet_predictor(case, slim, volumes, references):
    manifest = load_manifest(slim / case)
    (spec,) = manifest.teachers
    assert isinstance(spec, NnUNetSpec) and spec.folds == CASES[case][1]
    weights = sorted(p.name for p in (slim / case / case).rglob("*") if p.is_file())
    assert not [w for w in weights if w.endswith(".pth")]     # no pickle left
    ours = _vesukit(spec, manifest.root, volumes["20x34x28"])
    assert np.abs(ours - references(case, "20x34x28")).max() <= TOLERANCE


def test_mirroring_off_and_tta_none_equal_nnunet_without_mirroring(volumes, references):
    folder, folds, checkpoint = CASES["zscore-resenc-best"]
    theirs = references("zscore-resenc-best", "20x34x28", mirroring=False)
    off = NnUNetSpec(name="t", model=str(folder), folds=folds, checkpoint=checkpoint,
                     mirroring=False)
    assert np.abs(_vesukit(off, folder.parent, volumes["20x34x28"]) - theirs).max() <= TOLERANCE
    on = NnUNetSpec(name="t", model=str(folder), folds=folds, checkpoint=checkpoint)
    assert np.abs(_vesukit(on, folder.parent, volumes["20x34x28"], tta="none")
                  - theirs).max() <= TOLERANCE
    mirrored = references("zscore-resenc-best", "20x34x28")
    assert np.abs(mirrored - theirs).max() > 10 * TOLERANCE   # mirroring matters here


def test_plans_are_read_from_the_folder():
    plan = read_plan(NnUNetSpec(name="t", model=str(ZSCORE)), ZSCORE.parent)
    assert plan.scheme == "ZScoreNormalization" and plan.transpose_forward == (2, 0, 1)
    assert plan.network_class.endswith("ResidualEncoderUNet") and plan.patch == (8, 16, 24)
    ct = read_plan(NnUNetSpec(name="t", model=str(CT), folds=(0, 1, "all")), CT.parent)
    assert ct.scheme == "CTNormalization" and ct.network_class.endswith("PlainConvUNet")
    assert ct.heads == 2 and ct.channel == 1 and len(ct.weights) == 3


def test_nnunet_checkpoints_need_the_numpy_allowlist_and_pass_it():
    """nnU-Net's checkpoints hold numpy scalars in their logs: a bare weights-only load
    refuses them; vesukit's loader (numpy data types allowed) reads them."""
    from vesukit.teachers.checkpoint import read_checkpoint_file

    path = CT / "fold_0" / "checkpoint_final.pth"
    with pytest.raises(Exception, match="(?i)weights_only|unsupported global"):
        torch.load(path, map_location="cpu", weights_only=True)
    content = read_checkpoint_file(path)
    assert content["trainer_name"] == "nnUNetTrainer" and "network_weights" in content


class _Payload:
    def __reduce__(self):
        return (print, ("this ran code from a checkpoint",))


def test_a_code_executing_nnunet_checkpoint_is_refused(tmp_path):
    folder = tmp_path / CT.name
    shutil.copytree(CT, folder)
    checkpoint = torch.load(CT / "fold_0" / "checkpoint_final.pth", weights_only=False)
    checkpoint["payload"] = _Payload()
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    spec = NnUNetSpec(name="evil", model=str(folder), folds=(0,))
    with pytest.raises(TeacherError, match="refused: this checkpoint contains pickled Python"):
        load_nnunet_teacher(spec, tmp_path)


@pytest.mark.parametrize("field,value,message", [
    ("network_class_name", "my_models.nets.EvilUNet",
     "network class 'my_models.nets.EvilUNet', which is not in dynamic_network_architectures"),
    ("conv_op", "os.system", "only torch.nn classes"),
])
def test_plans_cannot_name_code_outside_the_allowed_packages(tmp_path, field, value, message):
    folder = tmp_path / CT.name
    shutil.copytree(CT, folder)
    plans = json.loads((folder / "plans.json").read_text())
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    if field == "network_class_name":
        arch[field] = value
    else:
        arch["arch_kwargs"][field] = value
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(TeacherError, match=message):
        load_nnunet_teacher(NnUNetSpec(name="t", model=str(folder)), tmp_path)


def test_manifest_entries_are_checked(tmp_path):
    def manifest(entry):
        (tmp_path / MANIFEST_NAME).write_text(json.dumps({"format": 1, "teachers": [entry]}))
        return load_manifest(tmp_path)

    good = {"kind": "nnunetv2", "name": "nn", "model": str(CT), "folds": [0, 1]}
    assert manifest(good).teachers[0] == NnUNetSpec(name="nn", model=str(CT), folds=(0, 1))
    assert manifest(dict(good, folds="all")).teachers[0].folds == ("all",)
    with pytest.raises(TeacherError, match="field 'folds'"):
        manifest(dict(good, folds=[-1]))
    with pytest.raises(TeacherError, match="field 'checkpoint'"):
        manifest(dict(good, checkpoint="latest"))
    with pytest.raises(TeacherError, match="unknown teacher kind 'nnunetv1'"):
        manifest(dict(good, kind="nnunetv1"))
    with pytest.raises(TeacherError, match="field 'model'.*does not exist"):
        manifest(dict(good, model="missing_folder"))
    with pytest.raises(TeacherError, match="fold_5"):
        load_nnunet_teacher(NnUNetSpec(name="nn", model=str(CT), folds=(5,)), tmp_path)


def test_teachers_check_runs_the_slim_folder(slim):
    result = subprocess.run([sys.executable, "-m", "vesukit", "teachers", "check",
                             str(slim / "ct-plain-folds01")],
                            capture_output=True, text=True, cwd=REPO, env=_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nnunetv2" in result.stdout and "16x24x16" in result.stdout


def test_predict_runs_an_imported_nnunet_teacher_beside_a_2_5d_one(tmp_path, slim):
    """The user's path: synth data, the slim nnU-Net folder plus a 2.5D teacher in one
    manifest, `vesukit predict`, and the zip it writes validates."""
    from vesukit.teachers import save_manifest
    from vesukit.teachers.presets import write_preset

    teachers = tmp_path / "teachers"
    shutil.copytree(slim / "ct-plain-fold_all", teachers)
    nnunet = load_manifest(teachers).teachers[0]
    smp = write_preset(tmp_path / "seed9", preset="seed9", size="tiny").teachers[0]
    smp = dataclasses.replace(smp, checkpoint=str(tmp_path / "seed9" / smp.checkpoint))
    save_manifest(teachers, [nnunet, smp])
    data = tmp_path / "data"
    run = [sys.executable, "-m", "vesukit"]
    synth = subprocess.run(run + ["synth", str(data), "--test", "1", "--train", "0",
                                  "--shape", "20", "34", "28"],
                           capture_output=True, text=True, cwd=REPO, env=_env())
    assert synth.returncode == 0, synth.stderr
    zip_path = tmp_path / "submission.zip"
    predict = subprocess.run(run + ["predict", "--teachers", str(teachers), "--out", str(zip_path),
                                    "--data", str(data), "--device", "cpu", "--tta", "flip",
                                    "--workdir", str(tmp_path / "work")],
                             capture_output=True, text=True, cwd=REPO, env=_env())
    assert predict.returncode == 0, predict.stdout + predict.stderr
    record = json.loads((tmp_path / "work" / "run.json").read_text())
    assert "ct-plain-fold_all" in json.dumps(record["teachers"])
    validate = subprocess.run(run + ["validate", str(zip_path), "--data", str(data)],
                              capture_output=True, text=True, cwd=REPO, env=_env())
    assert validate.returncode == 0, validate.stdout + validate.stderr


def test_predict_runs_an_imported_nnunet_teacher_as_nnunet_does_by_default(tmp_path, slim):
    """Without --tta, the teacher's own default holds: `"mirroring": true` from import-nnunet
    means nnUNetPredictor's mirroring, and run.json says where that came from."""
    from vesukit.cli import main
    from vesukit.data import list_test_ids, read_volume, volume_path
    from vesukit.synth import make_competition_root

    teachers = slim / "ct-plain-fold_all"
    data = make_competition_root(tmp_path / "data", n_test=1, n_train=0, shapes=((20, 34, 28),),
                                 seed=4)
    maps = tmp_path / "maps"
    assert main(["predict", "--teachers", str(teachers), "--out", str(tmp_path / "s.zip"),
                 "--data", str(data), "--device", "cpu", "--no-warm-up", "--save-maps", str(maps),
                 "--workdir", str(tmp_path / "work")]) == 0
    (volume_id,) = list_test_ids(data)
    spec = load_manifest(teachers).teachers[0]
    mirrored = _vesukit(spec, teachers, read_volume(volume_path(data, volume_id)), tta="flip")
    saved = np.load(maps / f"{volume_id}.npy").astype(np.float32)
    assert np.abs(saved - mirrored).max() < 1e-3        # float16 map of the mirrored prediction
    settings = json.loads((tmp_path / "work" / "run.json").read_text())["settings"]
    assert settings["tta"] == {"ct-plain-fold_all": "flip"}
    assert settings["sources"]["tta:ct-plain-fold_all"] == "teacher default"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fp16_is_close_to_cpu_fp32(volumes):
    folder, folds, checkpoint = CASES["ct-plain-folds01"]
    spec = NnUNetSpec(name="t", model=str(folder), folds=folds, checkpoint=checkpoint)
    cpu = _vesukit(spec, folder.parent, volumes["20x34x28"])
    model = load_nnunet_teacher(spec, folder.parent, "cuda")
    cuda = predict_teacher(volumes["20x34x28"], model, spec, device="cuda", tta="flip")
    assert cuda.device.type == "cuda"
    assert np.abs(cuda.cpu().numpy() - cpu).max() <= 1e-2


def test_pack_ships_a_slim_nnunet_folder_and_refuses_a_raw_one(tmp_path, slim, monkeypatch):
    """`vesukit teachers pack` copies an imported folder whole (already safetensors + json) and
    sends a raw results folder (pickled training checkpoints) to import-nnunet first."""
    from vesukit.cli import main
    from vesukit.teachers import load_manifest

    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    dataset = tmp_path / "dataset"
    assert main(["teachers", "pack", str(slim / "ct-plain-folds01"), "--out", str(dataset)]) == 0
    source, packed = load_manifest(slim / "ct-plain-folds01"), load_manifest(dataset)
    assert [s.name for s in packed.teachers] == [s.name for s in source.teachers]
    assert not list(dataset.rglob("*.pth"))
    x = np.random.default_rng(0).integers(0, 255, (20, 34, 28)).astype(np.uint8)
    np.testing.assert_array_equal(_vesukit(source.teachers[0], source.root, x, tta="none"),
                                  _vesukit(packed.teachers[0], packed.root, x, tta="none"))
    raw = tmp_path / "raw"
    raw.mkdir()
    folder, folds, checkpoint = CASES["ct-plain-folds01"]
    (raw / "teachers.json").write_text(json.dumps({"teachers": [
        {"kind": "nnunetv2", "name": "raw", "model": str(folder), "folds": list(folds),
         "checkpoint": checkpoint}]}))
    assert main(["teachers", "pack", str(raw), "--out", str(tmp_path / "d2")]) == 1
