"""`vesukit predict`: test volumes in, a validated submission.zip out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vesukit.commands._arguments import (
    add_device_argument,
    add_overlap_argument,
    add_root_arguments,
    add_teachers_argument,
    add_tta_argument,
)
from vesukit.errors import EXIT_CODES

DESCRIPTION = """
Find the competition root and its test ids, run every teacher over every test volume (sliding
window, TTA), ensemble, threshold, post-process, stream masks into submission.zip, then validate
it. Exit codes: """ + "; ".join(f"{code}: {text}" for code, text in EXIT_CODES if code < 130) + "."


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="run the teacher ensemble over the test volumes and write submission.zip",
        description=DESCRIPTION)
    add_root_arguments(parser)
    add_teachers_argument(parser)
    parser.add_argument("--out", type=Path, required=True, help="submission zip to write")
    add_device_argument(parser)
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: one per visible GPU, 1 on CPU)")
    add_tta_argument(parser, default=None,
                     help_text="test-time augmentation (default: the calibration's 'tta', else none)")
    add_overlap_argument(parser)
    parser.add_argument("--calibration", type=Path, default=None,
                        help="calibration.json (threshold rule + post-processing)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="run.json, masks/ and state/ (default: <out folder>/vesukit-work)")
    parser.add_argument("--resume", action="store_true",
                        help="skip volumes the workdir already holds for the same settings")
    parser.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                        help="finish every volume within this many seconds, degrading TTA and "
                        "then the lowest-weight teachers when behind (default: 8.5 h)")
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                        help="skip the teachers' warm-up pass on a tiny input before the first "
                        "volume (then the first volume pays it and the time budget sees it)")
    parser.add_argument("--audit", type=Path, default=None,
                        help="write <id>.json, a preview <id>.png per volume and index.html "
                        "(with alarms) into this folder")
    parser.add_argument("--save-maps", type=Path, default=None, metavar="DIR",
                        help="save each volume's ensemble mean probability as <id>.npy (float16) "
                        "for `vesukit calibrate --maps` and `vesukit postprocess`")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vesukit.runtime.budget import DEFAULT_TIME_BUDGET
    from vesukit.runtime.pipeline import PredictConfig, run_predict
    from vesukit.runtime.progress import format_seconds

    # PredictConfig checks every value itself, so a library caller gets the same errors.
    config = PredictConfig(teachers=args.teachers, out=args.out, data=args.data,
                           input_base=args.input_base, device=args.device, workers=args.workers,
                           tta=args.tta, calibration=args.calibration, workdir=args.workdir,
                           audit=args.audit, overlap=args.overlap,
                           time_budget=(DEFAULT_TIME_BUDGET if args.time_budget is None
                                        else args.time_budget),
                           resume=args.resume, warm_up=args.warm_up, save_maps=args.save_maps)
    result = run_predict(config)
    print(f"\n{'id':>12}  {'shape':>13}  {'threshold':>9}  {'fg %':>6}  {'seconds':>8}  status")
    for v in result.volumes:
        threshold = f"{v.threshold:9.3f}" if v.threshold is not None else f"{'-':>9}"
        status = v.status + (" (resumed)" if v.volume_id in result.resumed else "")
        if v.degraded:
            status += " degraded: " + "; ".join(v.degraded)
        if v.reason:
            status += f" ({v.reason})"
        print(f"{v.volume_id:>12}  {'x'.join(map(str, v.shape)):>13}  {threshold}  "
              f"{100 * v.foreground:6.2f}  {v.seconds:8.2f}  {status}")
    print(f"\n{len(result.volumes)} volume(s) in {format_seconds(result.wall_seconds)}; device "
          f"busy {100 * result.device_busy_share:.0f}% of the wall time. Run record: "
          f"{result.record_path}")
    if result.error:
        print(f"ERROR: {result.error}. EVERY VOLUME IS AN EMPTY FALLBACK MASK: the zip is valid "
              "but scores near 0.", file=sys.stderr)
    if result.fallbacks:
        print(f"DEGRADED: {len(result.fallbacks)} volume(s) got empty fallback masks: "
              + ", ".join(v.volume_id for v in result.fallbacks))
    elif any(v.degraded for v in result.volumes):
        print("DEGRADED: some volumes ran with fewer teachers or less TTA (see status)")
    for death in result.worker_deaths:
        print(f"DEGRADED: worker {death['worker']} ({death['device']}) died ({death['cause']}) while "
              f"computing {', '.join(death['volumes']) or 'no volume'} (handed to another worker)")
    if result.audit_index is not None:
        print(f"audit: {result.audit_index}")
        for volume_id, messages in result.alarms.items():
            for message in messages:
                print(f"ALARM {volume_id}: {message}")
    report = result.validation
    print(f"{result.zip_path}: " + ("VALID" if report.valid else "INVALID"))
    for issue in list(report.errors) + list(report.warnings):
        print(f"  {issue.message}", file=sys.stderr)
    return result.exit_code
