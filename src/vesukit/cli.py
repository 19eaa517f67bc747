"""`vesukit <command>`: the command line. Also reachable as `python -m vesukit`.

Each command lives in its own module under :mod:`vesukit.commands` with two functions,
``register(subparsers)`` and ``run(args) -> int``. Command modules import nothing heavy at
module level (torch in particular), so `vesukit validate` works on a bare image.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from vesukit import __version__
from vesukit.errors import VesukitError

# Order is the order of `vesukit --help`.
COMMAND_MODULES = (
    "vesukit.commands.synth",
    "vesukit.commands.teachers",
    "vesukit.commands.predict",
    "vesukit.commands.postprocess",
    "vesukit.commands.segment",
    "vesukit.commands.validate",
    "vesukit.commands.score",
    "vesukit.commands.calibrate",
    "vesukit.commands.ablate",
    "vesukit.commands.train",
    "vesukit.commands.distill",
    "vesukit.commands.doctor",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vesukit",
        description="Trained 3D-segmentation teachers in, a validated Kaggle "
        "submission.zip out.",
    )
    parser.add_argument("--version", action="version", version=f"vesukit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except VesukitError as exc:
        print(f"vesukit {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"vesukit {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`vesukit validate --json | head`): not an error of ours.
        # Point stdout at /dev/null so Python's exit-time flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
