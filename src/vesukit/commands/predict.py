"""`vesukit predict`: test volumes in, a validated submission.zip out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="run the teacher ensemble over the test volumes and write submission.zip",
        description="Find the competition root and its test ids, run every teacher over every "
        "test volume (sliding window, TTA), ensemble, threshold, post-process, stream masks "
        "into submission.zip, then validate it.")
    parser.add_argument("--data", type=Path, default=None,
                        help="competition root (default: discovered under /kaggle/input)")
    parser.add_argument("--input-base", type=Path, default=None,
                        help="where to discover the root (default $VESUKIT_INPUT_BASE or "
                        "/kaggle/input)")
    parser.add_argument("--teachers", type=Path, required=True,
                        help="folder with teachers.json and the checkpoints")
    parser.add_argument("--out", type=Path, required=True, help="submission zip to write")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    parser.add_argument("--tta", default="none", choices=["none", "flip", "full"])
    parser.add_argument("--overlap", type=float, default=0.5,
                        help="sliding-window overlap in [0, 1) (0.5)")
    parser.add_argument("--calibration", type=Path, default=None,
                        help="calibration.json (threshold rule + post-processing)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="run.json and finished masks (default: <out folder>/vesukit-work)")
    parser.add_argument("--audit", type=Path, default=None,
                        help="write audit/<id>.json per volume into this folder")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vesukit.errors import UsageError
    from vesukit.runtime.pipeline import PredictConfig, run_predict
    from vesukit.runtime.progress import format_seconds

    if not 0 <= args.overlap < 1:
        raise UsageError(f"--overlap {args.overlap}: must be in [0, 1).")
    config = PredictConfig(teachers=args.teachers, out=args.out, data=args.data,
                           input_base=args.input_base, device=args.device, tta=args.tta,
                           calibration=args.calibration, workdir=args.workdir,
                           audit=args.audit, overlap=args.overlap)
    result = run_predict(config)
    print(f"\n{'id':>12}  {'shape':>13}  {'threshold':>9}  {'fg %':>6}  {'seconds':>8}")
    for v in result.volumes:
        print(f"{v.volume_id:>12}  {'x'.join(map(str, v.shape)):>13}  {v.threshold:9.3f}  "
              f"{100 * v.foreground:6.2f}  {v.seconds:8.2f}")
    print(f"\n{len(result.volumes)} volume(s) in {format_seconds(result.wall_seconds)}; device "
          f"busy {100 * result.device_busy_share:.0f}% of the wall time. Run record: "
          f"{result.record_path}")
    report = result.validation
    print(f"{result.zip_path}: " + ("VALID" if report.valid else "INVALID"))
    for issue in list(report.errors) + list(report.warnings):
        print(f"  {issue.message}", file=sys.stderr)
    return 0 if report.valid else 1
