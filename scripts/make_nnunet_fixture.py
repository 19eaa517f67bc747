"""Tiny nnU-Net v2 models made by nnU-Net itself, for vesukit's nnU-Net tests and benchmark.

    python scripts/make_nnunet_fixture.py OUT [--epochs 2] [--iterations 3] [--export DIR]

(the committed test models: `python scripts/make_nnunet_fixture.py /tmp/nnfx --export
tests/data/nnunet`)

Two datasets from hand-made synthetic volumes (a noisy sheet, zero borders that nnU-Net crops,
an `ignore` label), each planned, preprocessed and trained by nnU-Net's own code
(`nnUNetTrainer` on the CPU, a few iterations):

- Dataset501_VesukitCT: channel 'CT' (CT normalisation), PlainConvUNet, anisotropic patch and
  kernels, folds 0 and 1 (a two-fold split) and fold 'all'.
- Dataset502_VesukitZ: channel 'MRI' (z-score), ResidualEncoderUNet, anisotropic patch,
  transpose_forward [2, 0, 1], fold 0 (checkpoint_final and checkpoint_best).

Only the network size and the training length are shrunk (by editing nnU-Net's plans and the
trainer's epoch counters); everything else is nnU-Net's default pipeline. nnU-Net reads its
folders from environment variables at import time, so this runs as its own process: OUT gets
raw/, preprocessed/ and results/, and OUT/fixture.json lists the trained model folders.
``--export DIR`` copies what inference needs (plans.json, dataset.json, the checkpoints the
tests use) into DIR/<dataset>/<Trainer>__<Plans>__<configuration>/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

SHAPES = [(20, 36, 28), (22, 32, 30), (18, 40, 26), (24, 34, 32)]
DATASETS = {
    501: dict(name="Dataset501_VesukitCT", channel="CT", arch="PlainConvUNet",
              patch=[16, 24, 16], strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]],
              kernels=[[1, 3, 3], [3, 3, 3], [3, 3, 3]], folds=[0, 1, "all"],
              transpose=[0, 1, 2]),
    502: dict(name="Dataset502_VesukitZ", channel="MRI", arch="ResidualEncoderUNet",
              patch=[8, 16, 24], strides=[[1, 1, 1], [2, 2, 2], [1, 2, 2]],
              kernels=[[3, 3, 3], [3, 3, 3], [1, 3, 3]], folds=[0],
              transpose=[2, 0, 1], best=True),
}
FEATURES = [2, 4, 8]                    # a few hundred KB of checkpoints in all


def sheet_volume(shape, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A bright tilted sheet in noise (the 'surface'), a zero border nnU-Net crops away, and a
    few 'ignore' voxels in the label."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    height = shape[0] / 2 + 3 * np.sin(x / 5.0 + seed) + 0.2 * (y - shape[1] / 2)
    distance = np.abs(z - height)
    image = rng.normal(90, 25, shape) + 110 * np.exp(-distance ** 2 / 2.0)
    image = np.clip(image, 1, 255).astype(np.uint8)
    label = (distance < 1.2).astype(np.uint8)
    image[:2] = 0                      # cropped by nnU-Net's crop-to-non-zero
    image[:, -1] = 0
    label[:2] = 0
    label[:, -1] = 0
    label[-3:, :4, :4] = 2             # ignore
    return image, label


def write_raw(raw: Path, dataset_id: int, spec: dict) -> None:
    import SimpleITK as sitk

    folder = raw / spec["name"]
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    for i, shape in enumerate(SHAPES):
        image, label = sheet_volume(shape, seed=dataset_id * 10 + i)
        for array, path in ((image, folder / "imagesTr" / f"case{i:03d}_0000.nii.gz"),
                            (label, folder / "labelsTr" / f"case{i:03d}.nii.gz")):
            itk = sitk.GetImageFromArray(array)
            itk.SetSpacing((1.0, 1.0, 1.0))
            sitk.WriteImage(itk, str(path))
    dataset = {"channel_names": {"0": spec["channel"]},
               "labels": {"background": 0, "surface": 1, "ignore": 2},
               "numTraining": len(SHAPES), "file_ending": ".nii.gz"}
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))


def shrink_plans(plans_file: Path, spec: dict) -> None:
    """The planner sizes networks for GPUs; keep its layout, make it tiny for a CPU test."""
    plans = json.loads(plans_file.read_text())
    plans["transpose_forward"] = spec["transpose"]
    plans["transpose_backward"] = [int(i) for i in np.argsort(spec["transpose"])]
    config = plans["configurations"]["3d_fullres"]
    config["patch_size"] = spec["patch"]
    config["batch_size"] = 2
    arch = config["architecture"]
    kwargs = arch["arch_kwargs"]
    n = len(FEATURES)
    kwargs.update(n_stages=n, features_per_stage=FEATURES, strides=spec["strides"],
                  kernel_sizes=spec["kernels"])
    if spec["arch"] == "ResidualEncoderUNet":
        arch["network_class_name"] = ("dynamic_network_architectures.architectures.unet."
                                      "ResidualEncoderUNet")
        kwargs.pop("n_conv_per_stage", None)
        kwargs["n_blocks_per_stage"] = [1, 2, 2]
        kwargs["n_conv_per_stage_decoder"] = [1] * (n - 1)
    else:
        kwargs["n_conv_per_stage"] = [2] * n
        kwargs["n_conv_per_stage_decoder"] = [2] * (n - 1)
    for other in [c for c in plans["configurations"] if c != "3d_fullres"]:
        del plans["configurations"][other]
    plans_file.write_text(json.dumps(plans, indent=2))


def train(dataset_id: int, fold, epochs: int, iterations: int) -> Path:
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    name = DATASETS[dataset_id]["name"]
    base = Path(nnUNet_preprocessed) / name
    plans = load_json(base / "nnUNetPlans.json")
    plans["continue_training"] = False            # what nnUNetv2_train passes for a fresh run
    trainer = nnUNetTrainer(plans, "3d_fullres", fold,
                            load_json(base / "dataset.json"), device=torch.device("cpu"))
    # nnU-Net's own trainer, only shorter: a few iterations instead of 1000 x 250.
    trainer.num_epochs = epochs
    trainer.num_iterations_per_epoch = iterations
    trainer.num_val_iterations_per_epoch = 1
    os.environ["nnUNet_n_proc_DA"] = "0"          # augmentation in this process: no workers
    try:
        trainer.run_training()
    finally:
        os.environ["nnUNet_n_proc_DA"] = "1"
    return Path(trainer.output_folder).parent


def build(out: Path, epochs: int = 2, iterations: int = 3) -> dict:
    for sub in ("raw", "preprocessed", "results"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    if "nnunetv2.paths" in sys.modules:
        raise RuntimeError("nnunetv2 was imported before its folders were set; run this as "
                           "its own process")
    os.environ.update(nnUNet_raw=str(out / "raw"), nnUNet_preprocessed=str(out / "preprocessed"),
                      nnUNet_results=str(out / "results"), nnUNet_n_proc_DA="1",
                      nnUNet_compile="false", nnUNet_def_n_proc="1")
    import torch

    torch.manual_seed(0)
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )

    models = {}
    for dataset_id, spec in DATASETS.items():
        write_raw(out / "raw", dataset_id, spec)
        extract_fingerprints([dataset_id], num_processes=1, check_dataset_integrity=True,
                             verbose=False)
        plan_experiments([dataset_id])
        preprocessed = out / "preprocessed" / spec["name"]
        shrink_plans(preprocessed / "nnUNetPlans.json", spec)
        preprocess([dataset_id], configurations=("3d_fullres",), num_processes=(1,),
                   verbose=False)
        cases = [f"case{i:03d}" for i in range(len(SHAPES))]
        splits = [{"train": cases[2:], "val": cases[:2]}, {"train": cases[:2], "val": cases[2:]}]
        (preprocessed / "splits_final.json").write_text(json.dumps(splits, indent=2))
        for fold in spec["folds"]:
            folder = train(dataset_id, fold, epochs, iterations)
        models[spec["name"]] = {"folder": str(folder.relative_to(out)), "folds": spec["folds"],
                                "channel": spec["channel"], "arch": spec["arch"],
                                "patch": spec["patch"], "transpose": spec["transpose"]}
    (out / "fixture.json").write_text(json.dumps(models, indent=2))
    return models


def export(out: Path, models: dict, target: Path) -> None:
    import shutil
    from importlib.metadata import version

    if target.exists():
        shutil.rmtree(target)
    for name, model in models.items():
        source = out / model["folder"]
        folder = target / name / source.name
        folder.mkdir(parents=True)
        for fname in ("plans.json", "dataset.json"):
            shutil.copy2(source / fname, folder / fname)
        kinds = ("final", "best") if DATASETS[int(name[7:10])].get("best") else ("final",)
        for fold in model["folds"]:
            (folder / f"fold_{fold}").mkdir()
            for kind in kinds:
                shutil.copy2(source / f"fold_{fold}" / f"checkpoint_{kind}.pth",
                             folder / f"fold_{fold}" / f"checkpoint_{kind}.pth")
    provenance = {"made_by": "scripts/make_nnunet_fixture.py", "nnunetv2": version("nnunetv2"),
                  "dynamic_network_architectures": version("dynamic_network_architectures"),
                  "models": models}
    (target / "fixture.json").write_text(json.dumps(provenance, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--export", type=Path, default=None,
                        help="copy the inference files of the models here (the test data)")
    args = parser.parse_args()
    start = time.perf_counter()
    models = build(args.out, args.epochs, args.iterations)
    if args.export is not None:
        export(args.out, models, args.export)
    print(json.dumps(models, indent=2))
    print(f"built in {time.perf_counter() - start:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
