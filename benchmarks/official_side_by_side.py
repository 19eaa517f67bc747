"""Runs the rebuilt official scorer (benchmarks/official_metric.py) beside ours, for bench_score.

``--official PATH`` of bench_score: PATH is either a python executable whose environment
imports ``betti_matching``, ``surface_distance`` and ``cc3d`` (e.g. the rebuild's own venv), or
a folder holding the compiled ``betti_matching`` module, which this interpreter then puts first
on its path. The official scorer runs in its own subprocess on the same TIFFs, one pair at a
time, never at once with ours.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

OFFICIAL_METRIC = Path(__file__).resolve().parent / "official_metric.py"
FLOAT_KEYS = ("score", "toposcore", "surface_dice", "voi_score", "voi_split", "voi_merge")


class OfficialUnavailable(Exception):
    """--official names nothing that can run the official scorer; the message says what to do."""


def official_command(path: str) -> list[str]:
    """The command that runs official_metric.py with the scorer PATH names, checked to import."""
    target = Path(path)
    if target.is_dir():
        command = [sys.executable, str(OFFICIAL_METRIC), "--module-dir", str(target)]
    elif target.is_file() and os.access(target, os.X_OK):
        command = [str(target), str(OFFICIAL_METRIC)]
    else:
        raise OfficialUnavailable(f"--official {path}: neither a python executable nor a folder; give the "
                                  "rebuilt scorer's python or the folder holding betti_matching*.so")
    proc = subprocess.run([*command, "--check"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise OfficialUnavailable(f"--official {path}: {(proc.stderr or proc.stdout).strip()}")
    return command


def run_official(command: list[str], pred: Path, label: Path) -> dict:
    """The official scorer's result and seconds for one pair (reading the TIFFs not timed)."""
    proc = subprocess.run([*command, str(pred), str(label)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"official scorer failed on {pred.name}: {proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def differences(ours: dict, official: dict, tolerance: float = 1e-9) -> list[str]:
    """What differs between two results: every topology count, and the floats beyond ``tolerance``."""
    found = []
    for dim in sorted(set(ours["topo_counts"]) | set(official["topo_counts"])):
        a, b = ours["topo_counts"].get(dim), official["topo_counts"].get(dim)
        if a != b:
            found.append(f"dim {dim} (m, p, g): ours {a}, official {b}")
    for key in FLOAT_KEYS:
        if abs(ours[key] - official[key]) > tolerance:
            found.append(f"{key}: ours {ours[key]!r}, official {official[key]!r}")
    return found
