"""`vesukit validate ZIP --data ROOT`: judge a submission zip the way the scorer will read it."""

from __future__ import annotations

import argparse
import json

from vesukit.commands._arguments import check_workers

DESCRIPTION = """
Read every <id>.tif of ZIP in memory (size-capped, nothing extracted) through Pillow page
stacking, as the scorer does, and through tifffile; compare ids, shapes, dtype and values with
the test set. Exit 0 valid, 1 invalid, 2 usage."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "validate", help="check a submission.zip as the Kaggle scorer reads it (no torch needed)",
        description=DESCRIPTION)
    parser.add_argument("zip", help="the submission zip")
    parser.add_argument("--data", metavar="ROOT", default=None,
                        help="competition root holding test.csv and/or test_images/ "
                        "(default: discovered under $VESUKIT_INPUT_BASE or /kaggle/input)")
    parser.add_argument("--json", action="store_true",
                        help='print {"valid", "errors", "warnings", "files"} as JSON')
    parser.add_argument("--strict", action="store_true", help="treat warnings as errors")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="entries read in parallel threads (default: half the cores, at most 2)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vesukit.data import find_competition_root
    from vesukit.submission import format_report, validate_zip

    check_workers(args.workers)
    root = find_competition_root(args.data)
    report = validate_zip(args.zip, root, strict=args.strict, workers=args.workers)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(format_report(report))
    return 0 if report.valid else 1
