"""`vesukit doctor`: what this environment can do, before a submission is spent on it."""

from __future__ import annotations

import argparse
import json
import platform
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "doctor", help="report Python, torch/CUDA, optional packages, wheels and data roots")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--input-base", default=None,
                        help="where to look for competition roots and wheels "
                        "(default $VESUKIT_INPUT_BASE or /kaggle/input)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vesukit.doctor import diagnose

    report = diagnose(args.input_base)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"python      {report['python']} ({platform.platform()})")
    print(f"vesukit     {report['vesukit']}")
    torch_info = report["torch"]
    if torch_info.get("version"):
        print(f"torch       {torch_info['version']}, CUDA {torch_info.get('cuda') or 'none'}")
        for device in torch_info.get("devices", []):
            print(f"  cuda:{device['index']}  {device['name']}  {device['memory_gb']:.1f} GB")
    else:
        print("torch       not installed (prediction needs it; validate/score do not)")
    print("packages")
    for name, version in report["packages"].items():
        print(f"  {name:28s} {version or '-- missing'}")
    print("wheel folders")
    for folder in report["wheel_folders"] or ["-- none found"]:
        print(f"  {folder}")
    print("competition roots")
    for root in report["competition_roots"] or ["-- none found"]:
        print(f"  {root}")
    sys.stdout.flush()
    return 0
