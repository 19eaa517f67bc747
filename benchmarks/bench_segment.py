"""`vesukit segment`: seamless equality, 1 vs 2 workers, peak memory per worker.

Usage (results go to docs/benchmarks.md, section "Whole-scroll segment"):

    PYTHONPATH=src python benchmarks/bench_segment.py --size 512 --chunk 128 --workers 1 2

1. Seamless: a ``--check-size``^3 volume through `segment` (float16 output, several chunks of
   ``--check-chunk``) against the one-volume ensemble predict computes in process
   (``predict_teacher`` per teacher into ``EnsembleAccumulator``): max abs difference over all
   voxels and over the voxels on both sides of every chunk border.
2. Scale: a ``--size``^3 volume on a LocalCluster of each ``--workers`` count: wall seconds
   (cluster start and teacher loading included) and voxels per second.
3. Memory: the peak RSS of a worker (``ru_maxrss`` reported by each task) for the ``--size``
   volume and for one of half the edge (8x fewer voxels) with the same chunk.

Teachers: a tiny ``resenc_unet3d`` (widths 4-8-16, patch 32) and a tiny 2.5D smp U-Net (patch
32, context 3, slices along Z and X), real checkpoints written and loaded from disk.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def write_teachers(folder: Path, cube_only: bool = False, patch: int = 32) -> Path:
    """The two tiny teachers; with ``cube_only``, the 3D one alone (patch ``patch``^3): the
    cheapest real ensemble, so that a 512^3 volume of tissue fits a scaling run on 2 CPU cores."""
    import torch

    from vesukit.teachers import TeacherSpec, build_model, preset_specs, save_checkpoint, save_manifest

    cube = dataclasses.replace(preset_specs("unet3d", "tiny")[0], patch=(patch,) * 3)
    slices = TeacherSpec(name="slices", arch="smp.Unet", encoder="tu-resnet18", input_kind="2.5d", patch=(32, 32),
                         checkpoint="slices.safetensors", axes=(0, 2), context=3, weight=2.0,
                         model_kwargs={"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64], "encoder_depth": 3,
                                       "decoder_channels": [16, 8, 8]})
    specs = [cube] if cube_only else [cube, slices]
    folder.mkdir(parents=True, exist_ok=True)
    for seed, spec in enumerate(specs):
        torch.manual_seed(seed)
        save_checkpoint(build_model(spec).eval(), folder / spec.checkpoint)
    save_manifest(folder, specs)
    return folder


def write_volume(path: Path, size: int, chunk: int, seed: int = 0, blob: int = 0) -> np.ndarray | None:
    """A random uint8 cube written slab by slab (never whole in memory when it is big); with
    ``blob``, air (zeros) except a random ``blob``^3 cube in the middle of the central chunk."""
    import zarr

    rng = np.random.default_rng(seed)
    array = zarr.open_array(str(path), mode="w", shape=(size,) * 3, chunks=(chunk,) * 3, dtype="uint8")
    if blob:
        lo = (size // chunk // 2) * chunk + (chunk - blob) // 2
        array[lo : lo + blob, lo : lo + blob, lo : lo + blob] = rng.integers(1, 256, (blob,) * 3, dtype=np.uint8)
        return None
    for z in range(0, size, chunk):
        array[z : z + chunk] = rng.integers(1, 256, (min(chunk, size - z), size, size), dtype=np.uint8)
    return array[:] if size <= 128 else None


def segment(source: Path, teachers: Path, out: Path, chunk: int, workers: int):
    from vesukit.scroll.run import SegmentConfig, run_segment

    config = SegmentConfig(input=source, teachers=teachers, out=out, chunk=(chunk,) * 3, workers=workers,
                           device="cpu", dtype="float16")
    start = time.perf_counter()
    result = run_segment(config, progress=open("/dev/null", "w"))
    return result, time.perf_counter() - start


def seamless(folder: Path, teachers: Path, size: int, chunk: int) -> dict:
    import zarr

    from vesukit.infer import EnsembleAccumulator, predict_teacher
    from vesukit.teachers import load_manifest, load_teacher

    volume = write_volume(folder / "check.zarr", size, chunk)
    segment(folder / "check.zarr", teachers, folder / "check-out.zarr", chunk, 1)
    got = zarr.open_array(str(folder / "check-out.zarr" / "0"), mode="r")[:].astype(np.float32)
    manifest = load_manifest(teachers)
    accumulator = EnsembleAccumulator(volume.shape)
    for spec in manifest.teachers:
        model = load_teacher(spec, manifest.root, device="cpu")
        accumulator.add(predict_teacher(volume, model, spec, device="cpu"), spec.weight)
    error = np.abs(got - accumulator.result().mean.numpy())
    borders = list(range(chunk, size, chunk))
    at_borders = max(float(np.take(error, [b - 1 for b in borders] + borders, axis=a).max()) for a in range(3))
    return {"size": size, "chunk": chunk, "chunks": (-(-size // chunk)) ** 3, "max_abs": float(error.max()),
            "max_abs_at_borders": at_borders}


def halo_factors(shape: tuple[int, int, int], chunk: int, patch3d: int = 128, tile: int = 256,
                 overlap: float = 0.5) -> dict:
    """Windows computed over one-piece windows, and voxels read over voxels written, for chunks
    of ``chunk``^3 (pure geometry, from the same window selection `segment` uses)."""
    from vesukit.infer.windows import axis_starts
    from vesukit.scroll.plan import window_axis

    def per_axis(size: int, patch: int) -> tuple[float, float]:
        grid = len(axis_starts(max(size, patch), patch, overlap))
        windows = read = 0
        for lo in range(0, size, chunk):
            axis = window_axis(size, patch, overlap, lo, min(size, lo + chunk))
            windows += len(axis.starts)
            read += len(np.unique(axis.index))
        return windows / grid, read / size

    cube = [per_axis(n, patch3d) for n in shape]
    plane = [per_axis(n, tile) for n in shape[1:]]
    return {"chunk": chunk, "3d_windows": float(np.prod([c[0] for c in cube])),
            "3d_read": float(np.prod([c[1] for c in cube])),
            "2.5d_windows": float(np.prod([p[0] for p in plane])), "2.5d_read": float(np.prod([p[1] for p in plane]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--check-size", type=int, default=64)
    parser.add_argument("--check-chunk", type=int, default=24)
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--skip-check", action="store_true")
    parser.add_argument("--blob", type=int, default=0,
                        help="air but for a random blob^3 cube inside the central chunk (skipped chunks cost "
                        "their read only): memory and skipping on a big volume, not compute throughput")
    parser.add_argument("--cube-only", action="store_true",
                        help="scale with the 3D teacher alone (patch --patch): the cheapest real ensemble")
    parser.add_argument("--patch", type=int, default=32, help="the 3D teacher's patch edge")
    parser.add_argument("--geometry", action="store_true",
                        help="only the halo factors for Scroll 1's shape (14376 x 7888 x 8096) at chunks 256-1024")
    args = parser.parse_args()
    if args.geometry:
        for chunk in (256, 512, 1024):
            print(json.dumps({k: round(v, 2) for k, v in halo_factors((14376, 7888, 8096), chunk).items()}))
        return
    with tempfile.TemporaryDirectory(prefix="bench-segment-") as tmp:
        folder = Path(tmp)
        teachers = write_teachers(folder / "teachers", args.cube_only, args.patch)
        report = {}
        if not args.skip_check:
            report["seamless"] = seamless(folder, teachers, args.check_size, args.check_chunk)
            print(json.dumps(report["seamless"]), flush=True)
        if not args.skip_scale:
            write_volume(folder / "big.zarr", args.size, args.chunk, blob=args.blob)
            write_volume(folder / "half.zarr", args.size // 2, args.chunk, blob=args.blob)
            report["scale"] = []
            for workers in args.workers:
                result, wall = segment(folder / "big.zarr", teachers, folder / f"big-{workers}.zarr", args.chunk,
                                       workers)
                row = {"size": args.size, "chunk": args.chunk, "blob": args.blob, "workers": workers,
                       "computed": result.done, "skipped": result.skipped, "wall_s": round(wall, 1),
                       "voxels_per_s": round(args.size**3 / wall),
                       "peak_worker_rss_mb": round(result.peak_worker_rss_mb)}
                report["scale"].append(row)
                print(json.dumps(row), flush=True)
            result, wall = segment(folder / "half.zarr", teachers, folder / "half-1.zarr", args.chunk, 1)
            row = {"size": args.size // 2, "chunk": args.chunk, "blob": args.blob, "workers": 1,
                   "computed": result.done, "skipped": result.skipped, "wall_s": round(wall, 1),
                   "peak_worker_rss_mb": round(result.peak_worker_rss_mb)}
            report["memory_half_edge"] = row
            print(json.dumps(row), flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
