"""Sliding-window inference: vesukit vs MONAI vs a naive window loop vs the bare forward floor.

All four run in this one process on the same model, volume, patch, overlap, Gaussian blend
and flip TTA, and the script prints time ratios and the largest probability difference to
MONAI. Usage (results go to docs/benchmarks.md, section "Sliding window"):

    PYTHONPATH=src python benchmarks/bench_sliding.py --device cpu --size 96 --patch 64
    PYTHONPATH=src python benchmarks/bench_sliding.py --device cuda --size 320 --patch 128 --tta full

Peers:
- vesukit: ``sliding_window_3d`` with TTA views batched together with the windows.
- MONAI: ``monai.inferers.sliding_window_inference`` (benchmark-only dependency), with TTA done
  the way MONAI users do it: one full sliding-window pass per flipped copy of the volume.
- naive: one window at a time (batch 1), one TTA view at a time, importance map rebuilt for
  every window, accumulation in a Python loop.
- floor: only the model calls on the same windows and views in batches of the same size (the
  windows are cut before the clock starts), i.e. what any sliding-window engine must pay.

Model: ``--model resenc`` (default) builds the project's ``resenc_unet3d`` teacher (the
``unet3d`` preset, ``--teacher-size tiny|full``) through ``vesukit.teachers.build_model``;
``--model local`` is a small real 3D U-Net defined below (``BenchUNet3D``: 3 levels, instance
norm, LeakyReLU, transposed-conv upsampling) for quick engine comparisons.
On CUDA every peer runs under the same fp16 autocast.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import statistics
import time

import torch
from torch import nn

from vesukit.infer import sliding_window_3d, tta_views
from vesukit.infer.windows import axis_starts
from vesukit.synth import synth_volume


class ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(
            nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.InstanceNorm3d(cout, affine=True),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Conv3d(cout, cout, 3, padding=1, bias=False),
            nn.InstanceNorm3d(cout, affine=True),
            nn.LeakyReLU(0.01, inplace=True),
        )


class BenchUNet3D(nn.Module):
    """A plain 3-level 3D U-Net (1 input channel, 1 logit channel)."""

    def __init__(self, base: int = 8):
        super().__init__()
        c1, c2, c3 = base, base * 2, base * 4
        self.enc1 = ConvBlock(1, c1)
        self.enc2 = ConvBlock(c1, c2, stride=2)
        self.enc3 = ConvBlock(c2, c3, stride=2)
        self.up2 = nn.ConvTranspose3d(c3, c2, 2, stride=2)
        self.dec2 = ConvBlock(c2 * 2, c2)
        self.up1 = nn.ConvTranspose3d(c2, c1, 2, stride=2)
        self.dec1 = ConvBlock(c1 * 2, c1)
        self.head = nn.Conv3d(c1, 1, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([self.up2(e3), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.head(d1)


def build_model(kind: str, base: int, teacher_size: str = "full") -> nn.Module:
    """The benchmark network: the local U-Net, or the project's 3D ResEnc U-Net teacher."""
    if kind == "local":
        return BenchUNet3D(base)
    from vesukit.teachers import build_model as build_teacher  # needs the teachers package
    from vesukit.teachers import preset_specs

    return build_teacher(preset_specs("unet3d", teacher_size)[0])


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_vesukit(x, predictor, args, views):
    return sliding_window_3d(
        x, predictor, (args.patch,) * 3, overlap=args.overlap, sigma_scale=0.125,
        batch_size=args.batch, views=views, pad_mode="constant",
    )


def run_monai(x, predictor, args, views, device):
    from monai.inferers import sliding_window_inference

    total = None
    with torch.no_grad(), autocast(device):
        for view in views:
            dims = [1 + a for a in view.flips]  # x is (C, Z, Y, X)
            flipped = x.flip(dims) if dims else x
            out = sliding_window_inference(
                flipped[None], (args.patch,) * 3, args.batch, predictor, overlap=args.overlap,
                mode="gaussian", sigma_scale=0.125, padding_mode="constant",
            )[0].float()
            out = out.flip(dims) if dims else out
            total = out if total is None else total + out
    return total / len(views)


def grid(x, args):
    return list(itertools.product(*[axis_starts(s, args.patch, args.overlap) for s in x.shape[1:]]))


def run_naive(x, predictor, args, views, device):
    p = args.patch
    out = torch.zeros((1,) + tuple(x.shape[1:]), device=device)
    weights = torch.zeros_like(out)
    with torch.no_grad(), autocast(device):
        for z, y, xx in grid(x, args):
            # importance map rebuilt for every window (no cache)
            g = torch.exp(-((torch.arange(p, device=device) - (p - 1) / 2) ** 2) / (2 * (0.125 * p) ** 2))
            w = (g[:, None, None] * g[None, :, None] * g[None, None, :]).clamp(min=1e-3)
            window = x[:, z : z + p, y : y + p, xx : xx + p][None]
            for view in views:
                pred = view.undo(predictor(view.apply(window)))[0].float()
                out[:, z : z + p, y : y + p, xx : xx + p] += pred * w / len(views)
            weights[:, z : z + p, y : y + p, xx : xx + p] += w
    return out / weights


def cut_batches(x, args, views):
    p = args.patch
    items = [
        view.apply(x[:, z : z + p, y : y + p, xx : xx + p][None])[0]
        for z, y, xx in grid(x, args)
        for view in views
    ]
    return [torch.stack(items[i : i + args.batch]).contiguous() for i in range(0, len(items), args.batch)]


def run_floor(batches, predictor, device):
    with torch.no_grad(), autocast(device):
        for batch in batches:
            predictor(batch)


def timed(fn, device, repeats):
    times, result = [], None
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=96, help="cube edge of the synthetic volume")
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=4, help="model inputs per call (all peers)")
    parser.add_argument("--tta", default="flip", choices=("none", "flip", "full"))
    parser.add_argument("--base", type=int, default=8, help="U-Net width (first level channels)")
    parser.add_argument("--model", default="resenc", choices=("resenc", "local"))
    parser.add_argument("--teacher-size", default="full", choices=("tiny", "full"), help="for --model resenc")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave)")
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args.model, args.base, args.teacher_size).to(device).eval()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    def identity(batch):
        return batch

    def predictor(batch):
        return torch.sigmoid(model(batch).float())

    image, _ = synth_volume((args.size,) * 3, seed=0)
    x = ((torch.from_numpy(image).float() / 255 - 0.35) / 0.2)[None].to(device)
    views = tta_views(args.tta, 3)
    n_windows = len(grid(x, args))
    print(f"device={device} volume={args.size}^3 patch={args.patch}^3 overlap={args.overlap} "
          f"windows={n_windows} tta={args.tta}({len(views)} views) batch={args.batch} model={args.model}/{args.base} "
          f"threads={torch.get_num_threads()} repeats={args.repeats} (median)")

    # warm-up (cuDNN autotuning, allocator) and MONAI's import, which takes seconds
    import monai.inferers  # noqa: F401

    run_vesukit(x, predictor, args, views)
    batches = cut_batches(x, args, views)
    runs = {
        "vesukit": lambda: run_vesukit(x, predictor, args, views),
        "monai": lambda: run_monai(x, predictor, args, views, device),
        "naive": lambda: run_naive(x, predictor, args, views, device),
        "floor": lambda: run_floor(batches, predictor, device),
        # The engines alone: an identity "model" costs nothing, what remains is blending,
        # cutting windows, TTA and bookkeeping (a less noisy view of the overhead).
        "vesukit-engine": lambda: run_vesukit(x, identity, args, views),
        "monai-engine": lambda: run_monai(x, identity, args, views, device),
    }
    if args.skip_naive:
        del runs["naive"]
    # Round-robin repeats: a load spike on a shared machine hits every peer alike.
    times: dict[str, list[float]] = {name: [] for name in runs}
    outputs: dict[str, object] = {}
    peak = None
    for _ in range(args.repeats):
        for name, fn in runs.items():
            if device.type == "cuda" and name == "vesukit":
                torch.cuda.reset_peak_memory_stats(device)
            seconds, outputs[name] = timed(fn, device, 1)
            times[name].append(seconds)
            if device.type == "cuda" and name == "vesukit":
                peak = torch.cuda.max_memory_allocated(device) / 2**30
    results = {name: (statistics.median(t), outputs[name]) for name, t in times.items()}
    base_time, ours = results["vesukit"]
    voxels = args.size**3
    for name, (seconds, _) in results.items():
        each = " ".join(f"{t:.2f}" for t in times[name])
        print(f"{name:8s} {seconds:8.3f} s  {seconds / base_time:6.2f}x vesukit  "
              f"{voxels / seconds / 1e6:8.3f} Mvox/s  [{each}]")
    monai_out = results["monai"][1]
    def round_ratio(name: str) -> float:
        # Median over rounds of the ratio within a round: steadier than a ratio of medians
        # when the machine's load drifts during the run.
        return statistics.median(a / b for a, b in zip(times[name], times["vesukit"]))

    print(f"MONAI / vesukit time: {results['monai'][0] / base_time:.2f}x "
          f"(median per-round ratio {round_ratio('monai'):.2f}x)")
    print(f"floor / vesukit time: median per-round ratio {round_ratio('floor'):.2f}x")
    if "naive" in results:
        print(f"naive / vesukit time: {results['naive'][0] / base_time:.2f}x")
        print(f"max |vesukit - naive| = {float((ours - results['naive'][1]).abs().max()):.2e}")
    print(f"vesukit overhead above the bare forward floor: {100 * (base_time / results['floor'][0] - 1):.1f} %")
    engine = results["vesukit-engine"][0]
    monai_engine = results["monai-engine"][0]
    print(f"engine alone (identity model): vesukit {engine:.3f} s = "
          f"{100 * engine / results['floor'][0]:.1f} % of the forward floor; "
          f"MONAI {monai_engine:.3f} s ({monai_engine / engine:.2f}x vesukit)")
    print(f"max |vesukit - MONAI| probability = {float((ours - monai_out).abs().max()):.2e}")
    if peak is not None:
        print(f"vesukit peak GPU memory: {peak:.2f} GiB")


if __name__ == "__main__":
    main()
