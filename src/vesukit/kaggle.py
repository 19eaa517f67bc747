"""The notebook's one call: find the inputs under /kaggle/input, predict, validate the zip.

The notebook (kernel/kernel.py) runs the bootstrap, then ``submit(OUT)``. Everything here goes
through the command-line entry points (`vesukit predict`, `vesukit validate`) so the notebook
does exactly what a local dry run does.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

from vesukit.data import find_competition_root
from vesukit.data import input_base as data_input_base
from vesukit.errors import VesukitError
from vesukit.teachers.spec import MANIFEST_NAME

TEACHERS_ENV = "VESUKIT_TEACHERS"
# The teachers dataset carries the decision (rule, chain, TTA) beside the manifest.
CALIBRATION_NAME = "calibration.json"
EXIT_DEGRADED = 3  # vesukit.runtime.pipeline.EXIT_DEGRADED (not imported: it pulls in torch)


class DegradedSubmission(UserWarning):
    """The zip is valid and complete, but some volumes were predicted with less."""


def find_teachers(base: str | os.PathLike | None = None) -> Path:
    """``$VESUKIT_TEACHERS``, else the first folder under ``base`` holding a teacher manifest."""
    if os.environ.get(TEACHERS_ENV):
        return Path(os.environ[TEACHERS_ENV])
    base = data_input_base(base)
    for parent, dirnames, filenames in os.walk(base, followlinks=True):
        dirnames.sort()
        if MANIFEST_NAME in filenames:
            return Path(parent)
    raise VesukitError(
        f"no teachers folder under {base} (looked for a folder holding {MANIFEST_NAME}). "
        f"Attach the teachers dataset as an input of the notebook, or set ${TEACHERS_ENV}."
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
    """Predict every test volume into ``out``, validate it and return its path.

    Exit 3 from predict (a valid, complete zip with some volumes degraded: a fallback mask, a
    dropped teacher, less TTA) warns with the degraded volumes, validates and returns the
    path. Raises :class:`VesukitError` when no valid zip was written, when it fails
    validation, and when no volume at all could be predicted (every teacher failed to load):
    that zip is valid but holds only empty masks, which score near 0, so the notebook fails
    loudly instead of submitting it (it stays at ``out`` for whoever wants it anyway).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may reach the network
    from vesukit.cli import main

    missing = missing_commands("predict", "validate")
    if missing:
        raise VesukitError(f"this vesukit has no `{'`, `'.join(missing)}` command yet; build "
                           "the wheels from a checkout that has them")
    root = find_competition_root(base=input_base)
    teachers = Path(teachers) if teachers else find_teachers(input_base)
    out = Path(out)
    before = out.stat().st_mtime_ns if out.exists() else None
    print(f"vesukit: competition root {root}, teachers {teachers}, output {out}", flush=True)
    args = list(extra_args)
    calibration = teachers / CALIBRATION_NAME
    requested = predict_option(args, "calibration")
    if requested is not None:
        print(f"vesukit: decision from {requested} (extra_args)", flush=True)
    elif calibration.is_file():
        from vesukit.decide import load_calibration

        decision = load_calibration(calibration)
        print(f"vesukit: decision from {calibration}: {decision.describe()}", flush=True)
        args += ["--calibration", str(calibration)]
    else:
        print(f"vesukit: no {CALIBRATION_NAME} beside the teachers: fixed threshold, no "
              "post-processing, no TTA", flush=True)
    code = main(["predict", "--data", str(root), "--teachers", str(teachers), "--out", str(out),
                 "--device", device, *args])
    written = out.is_file() and out.stat().st_mtime_ns != before
    if code not in (0, EXIT_DEGRADED) or not written:
        raise VesukitError(f"vesukit predict failed (exit {code}); {out} was not written")
    if code == EXIT_DEGRADED:
        record = _run_record(out, args)
        degraded = _degraded_volumes(record)
        message = (f"{out} is valid and complete, but {len(degraded)} volume(s) were degraded: "
                   + "; ".join(degraded))
        if record.get("error"):
            raise VesukitError(f"{record['error']}. {out} holds only empty fallback masks "
                               "(valid, but it scores near 0); fix the teachers (see the "
                               "warnings above) and run again")
        warnings.warn(message, DegradedSubmission, stacklevel=2)
        print(f"vesukit: WARNING {message}", file=sys.stderr, flush=True)
    code = main(["validate", str(out), "--data", str(root)])
    if code != 0:
        raise VesukitError(f"{out} failed validation (exit {code}); do not submit it")
    print(f"vesukit: {out} written and valid", flush=True)
    return out


def predict_option(args: list[str], dest: str):
    """The value ``args`` give `vesukit predict`'s option ``dest`` as predict itself reads them
    (``--calibration X``, ``--calibration=X``, an unambiguous prefix such as ``--calib X``; the
    last one wins), else None (also when the arguments do not parse: predict reports that)."""
    import argparse
    import contextlib
    import io

    from vesukit.commands import predict

    parser = argparse.ArgumentParser(prog="vesukit", add_help=False)
    predict.register(parser.add_subparsers(dest="command"))
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            known, _ = parser.parse_known_args(["predict", "--teachers", ".", "--out", ".", *args])
    except SystemExit:
        return None
    return getattr(known, dest, None)


def _run_record(out: Path, extra_args: tuple[str, ...]) -> dict:
    """predict's run.json (its --workdir, else the default beside the zip); {} if unreadable."""
    workdir = predict_option(list(extra_args), "workdir") or out.parent / "vesukit-work"
    try:
        return json.loads((workdir / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def _degraded_volumes(record: dict) -> list[str]:
    found = []
    for volume in record.get("volumes", []):
        why = volume.get("reason") or "; ".join(volume.get("degraded") or [])
        if volume.get("status") != "done" or volume.get("degraded"):
            found.append(f"{volume['volume_id']} ({volume.get('status')}: {why})")
    found += [f"worker {d['worker']} died ({d['cause']}) while computing "
              f"{', '.join(d['volumes']) or 'no volume'} (handed to another worker)"
              for d in record.get("worker_deaths", [])]
    return found or ["see run.json"]
