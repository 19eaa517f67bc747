"""`vesukit postprocess MAPS --calibration FILE --out ZIP`: saved probability maps to a zip."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vesukit.commands._arguments import add_root_arguments
from vesukit.commands._output import progress_line

DESCRIPTION = """
Read each test volume's saved probability map from MAPS (<id>.npy from `vesukit predict
--save-maps`, nnU-Net's <id>.npz, <id>.tif uint8 or float, <id>.zarr), threshold and post-process
it as the calibration says, and write submission.zip with predict's writer, validator and
fallbacks (a test id without a usable map gets an empty mask). Exit 0: valid zip; 3: valid, but
some volumes got fallback masks; 1: failed."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "postprocess", help="saved probability maps + a calibration -> validated submission.zip",
        description=DESCRIPTION)
    parser.add_argument("maps", type=Path, help="folder of saved probability maps")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--calibration", type=Path, default=None,
                        help="calibration.json (rule + post-processing); default: fixed 0.4")
    choice.add_argument("--preset", default=None,
                        help="a named chain with its published threshold (first_place, "
                        "second_place, fifth_place, ninth_place, tenth_place)")
    add_root_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="submission zip to write")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vesukit.decide import load_calibration
    from vesukit.decide.apply import postprocess_maps
    from vesukit.decide.calibration import preset_calibration
    from vesukit.run_settings import check_disagreement, compare_fitted, mismatch_line, read_maps_provenance

    calibration = (preset_calibration(args.preset) if args.preset
                   else load_calibration(args.calibration))
    where = f"preset {args.preset}" if args.preset else str(args.calibration or "the default decision")
    # saved maps hold the mean only: a rule or step reading disagreement would silently do nothing
    check_disagreement(calibration, where, args.maps)
    made = read_maps_provenance(args.maps)
    problems = compare_fitted(calibration.fitted_on, made) if made and calibration.fitted_on else []
    if problems:
        print(f"WARNING {mismatch_line(where, problems)}", file=sys.stderr)
    result = postprocess_maps(args.maps, calibration, args.out, data=args.data,
                              input_base=args.input_base, progress=progress_line)
    print(f"decision: {result.decision}")
    print(f"\n{'id':>12}  {'threshold':>9}  {'fg %':>6}  {'seconds':>8}  status")
    for v in result.volumes:
        threshold = f"{v.threshold:9.3f}" if v.threshold is not None else f"{'-':>9}"
        status = v.status + (f": {v.reason}" if v.reason else "")
        print(f"{v.volume_id:>12}  {threshold}  {100 * v.foreground:6.2f}  {v.seconds:8.2f}  {status}")
    for warning in result.warnings:
        print(f"WARNING {warning}", file=sys.stderr)
    if result.fallbacks:
        print(f"DEGRADED: {len(result.fallbacks)} volume(s) got empty fallback masks: "
              + ", ".join(v.volume_id for v in result.fallbacks))
    if result.degraded:
        print(f"DEGRADED: {len(result.degraded)} volume(s) decided with a fallback stage: "
              + ", ".join(v.volume_id for v in result.degraded))
    report = result.validation
    print(f"{result.zip_path}: " + ("VALID" if report.valid else "INVALID"))
    for issue in list(report.errors) + list(report.warnings):
        print(f"  {issue.message}", file=sys.stderr)
    return result.exit_code
