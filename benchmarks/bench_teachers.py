"""Per-teacher throughput and peak memory of a teacher preset through vesukit's engine.

Each teacher of the preset (random weights, built by ``vesukit.teachers.build_model``) runs
over one synthetic volume with ``predict_teacher`` and is folded into an
``EnsembleAccumulator`` on the same device, as the predict pipeline does. Prints seconds and
voxels/s per teacher, and the peak GPU memory of the whole ensemble run (the T4 question:
does the full seed9 ensemble on a 320^3 volume fit in 16 GB?).

    PYTHONPATH=src python benchmarks/bench_teachers.py --preset seed9 --size full --shape 320 320 320 \
        --device cuda --tta flip
    PYTHONPATH=src python benchmarks/bench_teachers.py --preset seed9 --size full --shape 8 320 320 --device cpu

Needs the teachers package (``vesukit.teachers``).
"""

from __future__ import annotations

import argparse
import time

import torch

from vesukit.infer import EnsembleAccumulator, predict_teacher
from vesukit.synth import synth_volume


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="seed9")
    parser.add_argument("--size", default="full", choices=("tiny", "full"))
    parser.add_argument("--shape", type=int, nargs=3, default=(320, 320, 320))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tta", default="none", choices=("none", "flip", "full"))
    parser.add_argument("--batch", type=int, default=None, help="default: from free memory")
    parser.add_argument("--only", nargs="*", default=None, help="teacher names to run")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from vesukit.teachers import build_model, preset_specs

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    volume, _ = synth_volume(tuple(args.shape), seed=0)
    voxels = volume.size
    specs = [s for s in preset_specs(args.preset, args.size) if not args.only or s.name in args.only]
    print(f"device={device} preset={args.preset}/{args.size} shape={tuple(args.shape)} tta={args.tta} "
          f"batch={args.batch or 'auto'} threads={torch.get_num_threads()}")
    ensemble = EnsembleAccumulator(volume.shape, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    total = 0.0
    for spec in specs:
        torch.manual_seed(0)
        model = build_model(spec).to(device).eval()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        prob = predict_teacher(volume, model, spec, device=device, tta=args.tta, batch_size=args.batch)
        ensemble.add(prob, spec.weight, name=spec.name)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        total += seconds
        del model, prob
        axes = ",".join(map(str, spec.axes)) if spec.input_kind == "2.5d" else "-"
        print(f"{spec.name:26s} {spec.input_kind:4s} patch={'x'.join(map(str, spec.patch)):11s} "
              f"ctx={spec.context} axes={axes:5s} {seconds:8.2f} s {voxels / seconds / 1e6:8.3f} Mvox/s")
    maps = ensemble.result()
    print(f"ensemble of {maps.n_teachers}: {total:.1f} s for one volume, "
          f"{voxels * len(specs) / total / 1e6:.3f} Mvox/s per teacher on average")
    if device.type == "cuda":
        print(f"peak GPU memory (whole ensemble run): {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
