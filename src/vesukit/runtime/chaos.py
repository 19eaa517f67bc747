"""Chaos runs: seeded random fault plans through the real predict pipeline.

A plan is a ``$VESUKIT_FAULTS`` value (see :mod:`vesukit.runtime.faults`): several faults,
each an exception type at a stage for one volume or all, firing once, twice or every time;
stages include making a fallback and reading state on resume. :func:`run_plan` runs predict
with a plan, then ``--resume`` with a second plan, and returns every broken promise: after
each run the zip must be valid and hold every test id, the exit code must be 0 or 3, and
run.json must name each fallback or degraded volume and why. Used by the CI test (a dozen
plans) and by ``scripts/chaos.py --plans N``.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import zipfile
from pathlib import Path

from vesukit.runtime import faults

RESUME_STAGES = ("resume", "assemble", "read", "teacher", "save", "fallback")


def random_plan(rng: random.Random, ids: list[str], stages=faults.STAGES, most: int = 4) -> str:
    """A ``$VESUKIT_FAULTS`` value with 1..``most`` faults drawn from ``rng``."""
    entries = []
    for _ in range(rng.randint(1, most)):
        stage = rng.choice(stages)
        kind = rng.choice(sorted(faults.KINDS))
        volume = rng.choice([*ids, "*"])
        times = rng.choice([1, 1, 2, 0])
        entries.append(f"{stage}:{kind}:{volume}:{times}")
    return ";".join(entries)


def run_plan(plan: str, resume_plan: str, root: Path, teachers: Path, folder: Path,
             audit: bool = False) -> list[str]:
    """Predict under ``plan``, then resume under ``resume_plan``; the broken promises."""
    from vesukit.data import list_test_ids
    from vesukit.runtime.pipeline import PredictConfig, run_predict
    from vesukit.submission import validate_zip

    ids = list_test_ids(root)
    problems: list[str] = []
    out, work = folder / "submission.zip", folder / "work"
    for label, value, resume in (("run", plan, False), ("resume", resume_plan, True)):
        faults.reset()
        os.environ[faults.ENV] = value
        try:
            config = PredictConfig(teachers, out, data=root, device="cpu", workdir=work,
                                   resume=resume, audit=folder / "audit" if audit else None)
            result = run_predict(config, progress_stream=io.StringIO())
            code = result.exit_code
        except Exception as exc:  # noqa: BLE001 - exactly what a plan must never cause
            problems.append(f"{label} [{value}]: raised {type(exc).__name__}: {exc}")
            continue
        finally:
            os.environ.pop(faults.ENV, None)
        where = f"{label} [{value}]"
        if code not in (0, 3):
            problems.append(f"{where}: exit code {code}")
        report = validate_zip(out, root)
        if not report.valid or sorted(report.files) != sorted(ids):
            problems.append(f"{where}: zip invalid or incomplete: "
                            + "; ".join(e.message for e in report.errors))
        problems += [f"{where}: {p}" for p in _check_record(work / "run.json", ids, out)]
    return problems


def _check_record(path: Path, ids: list[str], out: Path) -> list[str]:
    """run.json names every volume once, and each fallback or degraded one with a reason."""
    import numpy as np

    from vesukit.data import read_volume_pillow

    record = json.loads(path.read_text())
    problems = []
    volumes = {v["volume_id"]: v for v in record["volumes"]}
    if sorted(volumes) != sorted(ids) or len(record["volumes"]) != len(ids):
        problems.append(f"run.json lists {sorted(volumes)}, expected {sorted(ids)}")
    fallbacks = sorted(i for i, v in volumes.items() if v["status"] != "done")
    if sorted(record.get("fallbacks") or []) != fallbacks:
        problems.append(f"run.json 'fallbacks' {record.get('fallbacks')} != {fallbacks}")
    for volume_id, volume in volumes.items():
        if volume["status"] != "done" and not volume.get("reason"):
            problems.append(f"fallback '{volume_id}' has no reason")
        if any(not text for text in volume.get("degraded") or []):
            problems.append(f"volume '{volume_id}' has an empty degradation")
    with zipfile.ZipFile(out) as archive:
        for volume_id in fallbacks:
            mask = read_volume_pillow(io.BytesIO(archive.read(f"{volume_id}.tif")))
            if np.any(mask):
                problems.append(f"fallback '{volume_id}' is not an empty mask")
    return problems


def make_fixture(folder: Path, n_test: int = 3, seed: int = 0) -> tuple[Path, Path]:
    """A tiny synthetic root (non-cubic volumes) and two tiny teachers under ``folder``."""
    from vesukit.synth import make_competition_root
    from vesukit.teachers import write_preset

    root = make_competition_root(folder / "comp", n_test=n_test, n_train=0,
                                 shapes=[(8, 20, 16), (10, 16, 16), (8, 16, 24)], seed=seed)
    teachers = folder / "teachers"
    write_preset(teachers, preset="seed9", size="tiny", seed=0)
    manifest = json.loads((teachers / "teachers.json").read_text())
    keep = ("v1_default", "v1_segformer_mit_b2")  # an smp U-Net (2.5D) and a SegFormer
    manifest["teachers"] = [t for t in manifest["teachers"] if t["name"] in keep]
    (teachers / "teachers.json").write_text(json.dumps(manifest, indent=2))
    return root, teachers


def run_plans(n: int, seed: int, folder: Path, log=print) -> tuple[int, list[str]]:
    """``n`` seeded plans over one fixture; returns (plans run, problems)."""
    from vesukit.data import list_test_ids

    root, teachers = make_fixture(folder / "fixture")
    ids = list_test_ids(root)
    rng = random.Random(seed)
    problems: list[str] = []
    for index in range(n):
        plan = random_plan(rng, ids)
        resume_plan = random_plan(rng, ids, stages=RESUME_STAGES, most=2)
        run_folder = folder / f"plan{index:04d}"
        found = run_plan(plan, resume_plan, root, teachers, run_folder, audit=index % 4 == 0)
        shutil.rmtree(run_folder, ignore_errors=True)
        log(f"plan {index + 1}/{n}: {'ok' if not found else 'FAILED'}  [{plan}] then [{resume_plan}]")
        problems += found
    return n, problems
