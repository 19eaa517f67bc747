"""The notebook's one call: find the inputs under /kaggle/input, predict, validate the zip.

The notebook (kernel/kernel.py) runs the bootstrap, then ``submit(OUT)``. Everything here goes
through the command-line entry points (`vesukit predict`, `vesukit validate`) so the notebook
does exactly what a local dry run does.
"""

from __future__ import annotations

import os
from pathlib import Path

from vesukit.data import DEFAULT_INPUT_BASE, find_competition_root
from vesukit.errors import VesukitError

TEACHERS_ENV = "VESUKIT_TEACHERS"
# A teachers folder holds one of these beside the checkpoints (`vesukit teachers init`).
TEACHER_MANIFESTS = ("teachers.json", "manifest.json")
# The teachers dataset carries the decision (rule, chain, TTA) beside the manifest.
CALIBRATION_NAME = "calibration.json"


def find_teachers(base: str | os.PathLike | None = None) -> Path:
    """``$VESUKIT_TEACHERS``, else the first folder under ``base`` holding a teacher manifest."""
    if os.environ.get(TEACHERS_ENV):
        return Path(os.environ[TEACHERS_ENV])
    base = Path(base or os.environ.get("VESUKIT_INPUT_BASE", DEFAULT_INPUT_BASE))
    for parent, dirnames, filenames in os.walk(base, followlinks=True):
        dirnames.sort()
        if any(name in filenames for name in TEACHER_MANIFESTS):
            return Path(parent)
    raise VesukitError(
        f"no teachers folder under {base} (looked for a folder holding "
        f"{' or '.join(TEACHER_MANIFESTS)}). Attach the teachers dataset as an input of the "
        f"notebook, or set ${TEACHERS_ENV}."
    )


def missing_commands(*names: str) -> list[str]:
    """Which of ``names`` are not `vesukit` commands in this installation."""
    from vesukit.cli import build_parser

    subparsers = build_parser()._subparsers
    choices: set[str] = set()
    for action in subparsers._group_actions if subparsers else []:
        choices.update(getattr(action, "choices", None) or {})
    return [name for name in names if name not in choices]


def submit(
    out: str | os.PathLike = "/kaggle/working/submission.zip",
    input_base: str | os.PathLike | None = None,
    teachers: str | os.PathLike | None = None,
    device: str = "auto",
    extra_args: tuple[str, ...] = (),
) -> Path:
    """Predict every test volume into ``out`` and validate it; raises VesukitError on failure."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may reach the network
    from vesukit.cli import main

    missing = missing_commands("predict", "validate")
    if missing:
        raise VesukitError(f"this vesukit has no `{'`, `'.join(missing)}` command yet; build "
                           "the wheels from a checkout that has them")
    root = find_competition_root(base=input_base)
    teachers = Path(teachers) if teachers else find_teachers(input_base)
    out = Path(out)
    print(f"vesukit: competition root {root}, teachers {teachers}, output {out}", flush=True)
    args = list(extra_args)
    calibration = teachers / CALIBRATION_NAME
    if "--calibration" not in args and calibration.is_file():
        from vesukit.decide import load_calibration

        decision = load_calibration(calibration)
        print(f"vesukit: decision from {calibration}: {decision.describe()}", flush=True)
        args += ["--calibration", str(calibration)]
    elif "--calibration" not in args:
        print(f"vesukit: no {CALIBRATION_NAME} beside the teachers: fixed threshold, no "
              "post-processing, no TTA", flush=True)
    code = main(["predict", "--data", str(root), "--teachers", str(teachers), "--out", str(out),
                 "--device", device, *args])
    if code != 0:
        raise VesukitError(f"vesukit predict failed (exit {code}); {out} was not written")
    code = main(["validate", str(out), "--data", str(root)])
    if code != 0:
        raise VesukitError(f"{out} failed validation (exit {code}); do not submit it")
    print(f"vesukit: {out} written and valid", flush=True)
    return out
