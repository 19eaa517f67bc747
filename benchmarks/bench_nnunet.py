"""nnU-Net v2 teacher: vesukit vs nnUNetPredictor (and MONAI) on the same model and volume.

Both run in this process on the same results folder, volume, step 0.5 and mirroring; the
script prints seconds per volume and the largest surface-probability difference. Usage
(results go to docs/benchmarks.md, section "nnU-Net teachers"):

    PYTHONPATH=src python benchmarks/bench_nnunet.py --device cpu --size 64 48 56
    PYTHONPATH=src python benchmarks/bench_nnunet.py --device cuda --model full --size 320 320 320 --monai

Models: ``--model ct`` (default) is the committed two-fold PlainConvUNet that nnU-Net trained
(tests/data/nnunet), ``--model zscore`` the ResidualEncoderUNet one; ``--model full`` writes a
results folder in nnU-Net's layout with nnU-Net ResEnc-M's 3d_fullres network (6 stages,
32-320 features, patch 128^3) and random weights (a speed model: its probabilities mean
nothing, the comparison is still exact); ``--model DIR`` any results folder (with ``--folds``).

Peers:
- nnUNetPredictor (nnunetv2, benchmark/test peer only): ``predict_single_npy_array`` with
  ``perform_everything_on_device`` on CUDA; its logit sums are float16. "nnU-Net fp32" is the
  same predictor with those two sums in float32 (tests/teachers/test_nnunet.py), the reference
  of the 1e-3 equality.
- MONAI (``--monai``): ``sliding_window_inference`` over vesukit's preprocessed volume with a
  Gaussian blend, one pass per mirrored copy (how MONAI users do TTA), softmax at the end.
- vesukit: ``predict_teacher`` (all folds in one model call per batch, mirrored views in the
  batch). On CUDA every peer runs under fp16 autocast.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vesukit.infer import predict_teacher
from vesukit.teachers.nnunet import NnUNetSpec
from vesukit.teachers.nnunet_model import load_nnunet_teacher

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "nnunet"
MODELS = {"ct": (DATA / "Dataset501_VesukitCT" / "nnUNetTrainer__nnUNetPlans__3d_fullres", (0, 1)),
          "zscore": (DATA / "Dataset502_VesukitZ" / "nnUNetTrainer__nnUNetPlans__3d_fullres", (0,))}
RESENC_M = dict(n_stages=6, features_per_stage=[32, 64, 128, 256, 320, 320],
                kernel_sizes=[[3, 3, 3]] * 6, strides=[[1, 1, 1]] + [[2, 2, 2]] * 5,
                n_blocks_per_stage=[1, 3, 4, 6, 6, 6], n_conv_per_stage_decoder=[1] * 5)


def make_full_resenc(root: Path, patch=(128, 128, 128), seed: int = 0, widths=None) -> Path:
    """nnU-Net ResEnc-M's 3d_fullres network with random weights, in nnU-Net's results layout
    (the committed z-score model's plans with the architecture and patch of ResEnc-M).
    ``widths`` replaces its features per stage (a narrow copy for CPU dry runs)."""
    from vesukit.teachers.nnunet import read_plan
    from vesukit.teachers.nnunet_model import build_network

    source = MODELS["zscore"][0]
    folder = root / "Dataset900_Full" / "nnUNetTrainer__nnUNetResEncUNetMPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True, exist_ok=True)
    plans = json.loads((source / "plans.json").read_text())
    plans["transpose_forward"] = plans["transpose_backward"] = [0, 1, 2]
    config = plans["configurations"]["3d_fullres"]
    config["patch_size"] = list(patch)
    config["architecture"]["arch_kwargs"].update(RESENC_M)
    if widths is not None:
        config["architecture"]["arch_kwargs"]["features_per_stage"] = list(widths)
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text((source / "dataset.json").read_text())
    torch.manual_seed(seed)
    plan = read_plan(NnUNetSpec(name="full", model=str(folder)), root, weights=False)
    network = build_network(plan, "full")
    torch.save({"network_weights": network.state_dict(), "trainer_name": "nnUNetTrainer",
                "init_args": {"configuration": "3d_fullres"},
                "inference_allowed_mirroring_axes": (0, 1, 2)},
               folder / "fold_0" / "checkpoint_final.pth")
    return folder


def sheet(shape, seed: int = 7) -> np.ndarray:
    spec = importlib.util.spec_from_file_location("fixture", REPO / "scripts" / "make_nnunet_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.sheet_volume(tuple(shape), seed=seed)[0]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_nnunet(folder: Path, folds, volume: np.ndarray, device: torch.device, mirroring: bool,
               fp32: bool) -> tuple[np.ndarray, float]:
    import nnunetv2.inference.predict_from_raw_data as nnunet_predict

    sys.path.insert(0, str(REPO))
    from tests.teachers.test_nnunet import _fp32_accumulators

    if device.type == "cpu":
        nnunet_predict.default_num_processes = torch.get_num_threads()
    predictor = nnunet_predict.nnUNetPredictor(
        tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
        perform_everything_on_device=device.type == "cuda", device=device, verbose=False,
        allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=list(folds),
                                                   checkpoint_name="checkpoint_final.pth")
    context = _fp32_accumulators(nnunet_predict) if fp32 else _null()
    with context:
        sync(device)
        start = time.perf_counter()
        _, probabilities = predictor.predict_single_npy_array(
            volume[None].astype(np.float32), {"spacing": [1.0, 1.0, 1.0]}, None, None, True)
        sync(device)
    return probabilities[1], time.perf_counter() - start


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def run_vesukit(folder: Path, folds, volume: np.ndarray, device: torch.device,
                mirroring: bool) -> tuple[np.ndarray, float]:
    spec = NnUNetSpec(name="bench", model=str(folder), folds=tuple(folds), mirroring=mirroring)
    model = load_nnunet_teacher(spec, folder.parent, device)
    sync(device)
    start = time.perf_counter()
    out = predict_teacher(volume, model, spec, device=device, tta="flip")
    sync(device)
    return out.float().cpu().numpy(), time.perf_counter() - start


def run_monai(folder: Path, folds, volume: np.ndarray, device: torch.device,
              mirroring: bool) -> tuple[np.ndarray, float]:
    from monai.inferers import sliding_window_inference

    from vesukit.infer.nnunet import nonzero_bbox, normalize

    spec = NnUNetSpec(name="bench", model=str(folder), folds=tuple(folds))
    model = load_nnunet_teacher(spec, folder.parent, device)
    plan = model.plan
    sync(device)
    start = time.perf_counter()
    transposed = volume.transpose(plan.transpose_forward)
    box = nonzero_bbox(transposed)
    x = normalize(transposed[box], plan, device)[None, None]
    flips = [()] + ([(2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)] if mirroring else [])
    autocast = torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else _null()
    def one_pass(flip: tuple[int, ...]) -> torch.Tensor:
        inputs = torch.flip(x, flip) if flip else x
        out = sliding_window_inference(inputs, plan.patch, 2, model, overlap=0.5, mode="gaussian",
                                       sigma_scale=0.125, padding_mode="constant").float()
        return torch.flip(out, flip) if flip else out

    with torch.no_grad(), autocast:
        logits = sum(one_pass(flip) for flip in flips) / len(flips)
    probability = torch.softmax(logits[0], 0)[plan.channel]
    out = torch.zeros(transposed.shape, device=device)
    out[box] = probability
    out = out.permute(*plan.transpose_backward).cpu().numpy()
    sync(device)
    return out, time.perf_counter() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="ct", help="ct, zscore, full or a results folder")
    parser.add_argument("--folds", nargs="+", default=None)
    parser.add_argument("--size", type=int, nargs=3, default=(64, 48, 56), metavar=("Z", "Y", "X"))
    parser.add_argument("--no-mirroring", action="store_true")
    parser.add_argument("--monai", action="store_true", help="also time MONAI's sliding window")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    mirroring = not args.no_mirroring
    with tempfile.TemporaryDirectory() as tmp:
        if args.model in MODELS:
            folder, folds = MODELS[args.model]
        elif args.model == "full":
            folder, folds = make_full_resenc(Path(tmp)), (0,)
        else:
            folder, folds = Path(args.model), (0,)
        if args.folds:
            folds = tuple(int(f) if f.isdigit() else f for f in args.folds)
        volume = sheet(args.size)
        results = {"device": str(device), "model": str(args.model), "folds": list(map(str, folds)),
                   "size": list(args.size), "mirroring": mirroring, "threads": torch.get_num_threads()}
        ours, results["vesukit_s"] = run_vesukit(folder, folds, volume, device, mirroring)
        stock, results["nnunet_s"] = run_nnunet(folder, folds, volume, device, mirroring, fp32=False)
        fp32, results["nnunet_fp32_s"] = run_nnunet(folder, folds, volume, device, mirroring, fp32=True)
        results["max_dp_vs_nnunet_fp32"] = float(np.abs(ours - fp32).max())
        results["max_dp_vs_nnunet_stock"] = float(np.abs(ours - stock).max())
        results["max_dp_nnunet_stock_vs_fp32"] = float(np.abs(stock - fp32).max())
        if args.monai:
            monai, results["monai_s"] = run_monai(folder, folds, volume, device, mirroring)
            results["max_dp_monai_vs_nnunet_fp32"] = float(np.abs(monai - fp32).max())
    for key, value in results.items():
        print(f"{key:32s} {value:.6g}" if isinstance(value, float) else f"{key:32s} {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
