"""`vesukit segment`: a whole scroll (OME-Zarr, zarr or TIFF) in, an OME-Zarr probability
(and mask) out, chunk by chunk on a Dask cluster."""

from __future__ import annotations

import argparse
from pathlib import Path

from vesukit.commands._arguments import (
    add_device_argument,
    add_overlap_argument,
    add_teachers_argument,
    add_tta_argument,
)

DESCRIPTION = """
Cut the volume into output chunks; each Dask task reads its chunk plus the halo the sliding
windows and 2.5D context need, runs the ensemble and writes only its own chunk, so the result
equals a one-piece run. All-zero blocks are skipped (their output is 0). Exit 0: every chunk
done; 3: some chunks failed and were written as listed fallbacks; 1: failed."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "segment", help="run the teacher ensemble over a volume of any size (OME-Zarr in and out, on Dask)",
        description=DESCRIPTION)
    parser.add_argument("input", type=Path, help="OME-Zarr image, plain zarr array, or TIFF (uint8 Z, Y, X)")
    add_teachers_argument(parser)
    parser.add_argument("--out", type=Path, required=True, help="output OME-Zarr folder (OUT.zarr)")
    parser.add_argument("--calibration", type=Path, default=None,
                        help="calibration.json: also write the mask (fixed threshold; zero_border, close)")
    add_tta_argument(parser, default=None, help_text="test-time augmentation (default: the "
                     "calibration's, else each teacher's own, else none)")
    parser.add_argument("--chunk", type=int, nargs=3, default=[256, 256, 256], metavar=("Z", "Y", "X"),
                        help="output chunk = one task (256 256 256)")
    parser.add_argument("--scheduler", default="local",
                        help="'local' (a LocalCluster here, default) or a Dask scheduler address (tcp://host:8786)")
    parser.add_argument("--workers", type=int, default=None,
                        help="local workers (default: one per GPU, else 1)")
    add_device_argument(parser, help_text="auto (default: each worker its GPU), cpu, cuda, cuda:N")
    parser.add_argument("--resume", action="store_true", help="continue OUT, skipping its finished chunks")
    parser.add_argument("--level", type=int, default=0, help="resolution level of an OME-Zarr INPUT (0)")
    add_overlap_argument(parser)
    parser.add_argument("--dtype", default="uint8", choices=["uint8", "float16"],
                        help="probability as uint8 0-255 (default) or float16")
    parser.add_argument("--retries", type=int, default=2, help="retries of a failing chunk before its fallback")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vesukit.scroll.run import SegmentConfig, run_segment

    config = SegmentConfig(input=args.input, teachers=args.teachers, out=args.out, calibration=args.calibration,
                           tta=args.tta, chunk=tuple(args.chunk), scheduler=args.scheduler, workers=args.workers,
                           device=args.device, resume=args.resume, level=args.level, overlap=args.overlap,
                           dtype=args.dtype, retries=args.retries)
    result = run_segment(config)
    print(f"{result.out}: {result.chunks} chunk(s) of a {'x'.join(map(str, result.shape))} volume: "
          f"{result.done} computed, {result.skipped} empty (skipped), {result.resumed} resumed, "
          f"{len(result.fallbacks)} fallback; {result.seconds:.1f} s, {result.voxels_per_second / 1e6:.2f} Mvoxel/s"
          + (f", peak worker memory {result.peak_worker_rss_mb:.0f} MB" if result.peak_worker_rss_mb else ""))
    if result.fallbacks:
        print(f"DEGRADED: {len(result.fallbacks)} chunk(s) failed and hold zeros (listed in "
              f"{result.out}/.zattrs 'vesukit'):")
        for fallback in result.fallbacks:
            print(f"  chunk {tuple(fallback['chunk'])}: {fallback['reason']}")
        return 3
    return 0
