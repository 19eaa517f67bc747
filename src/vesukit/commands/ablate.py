"""`vesukit ablate`: which teachers earn their place in the ensemble."""

from __future__ import annotations

import argparse
from pathlib import Path

from vesukit.commands._arguments import check_overlap

DESCRIPTION = """
On labelled train volumes (maps cached as for calibrate), score the full ensemble, every teacher
alone and every leave-one-out ensemble with the local scorer, and recommend dropping teachers that
give no stable gain. Prints a table and writes JSON."""


def register(subparsers) -> None:
    from vesukit.commands.calibrate import add_ensemble_arguments

    parser = subparsers.add_parser(
        "ablate", help="score each teacher alone and the ensemble without each", description=DESCRIPTION)
    add_ensemble_arguments(parser)
    parser.add_argument("--calibration", type=Path, default=None,
                        help="threshold rule + post-processing to score with (default: "
                        "fixed threshold, no post-processing)")
    parser.add_argument("--json", dest="json_out", type=Path, default=Path("ablation.json"),
                        help="where to write the numbers (ablation.json)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vesukit.calibrate.runner import run_ablation
    from vesukit.commands._output import progress_line

    check_overlap(args.overlap)
    result = run_ablation(args.data, args.teachers, volumes=args.volumes, cache_dir=args.cache,
                          calibration=args.calibration, device=args.device, tta=args.tta,
                          overlap=args.overlap, dtype=args.cache_dtype,
                          json_out=args.json_out, progress=progress_line)
    print(result.table())
    recommendation = result.recommendation()
    if recommendation["drop"]:
        print("recommendation: drop " + ", ".join(recommendation["drop"]) + " ("
              + recommendation["why"] + ")")
    else:
        print("recommendation: keep every teacher")
    print(f"wrote {args.json_out}")
    return 0
