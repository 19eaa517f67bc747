"""Chaos runs: seeded random fault plans through the real predict pipeline.

Two families, drawn in turn by :func:`run_plans`:

- *exception plans*, in process: a plan is a ``$VESUKIT_FAULTS`` value (see
  :mod:`vesukit.runtime.faults`): several faults, each an exception type at a stage for one
  volume or all, firing once, twice or every time; stages include making a fallback and
  reading state on resume. :func:`run_plan` runs predict with a plan, then ``--resume`` with
  a second plan, and returns every broken promise: after each run the zip must be valid and
  hold every test id, the exit code must be 0 or 3, and run.json must name each fallback or
  degraded volume and why;
- *scenarios* (:class:`Scenario`), each a real `vesukit predict` process: two workers with
  one SIGKILLed at a random moment, a forward pass hanging past the time budget, one teacher
  failing on one random volume only, and odd test folders (a row without a volume, a row
  twice, a volume without a row, a zero-size volume). :func:`run_scenario` checks the
  promise: a valid zip with every test id, every volume not faulted identical to the clean
  run's, the fault named in run.json, exit 3 (0 for an oddity that costs nothing: a row
  twice, a volume without a row), and a wall time within the budget.

Used by the CI tests (a sample of each) and by ``scripts/chaos.py --plans N``.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
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


SCENARIOS = ("kill", "hang", "teacher", "oddities")
ODDITIES = ("missing", "duplicate", "extra", "zero")
HANG_BUDGET = 25.0  # seconds: room for two workers to start on a busy CPU, then the wall
HANG_SECONDS = 600  # the hung forward pass; far past the budget


@dataclass(frozen=True)
class Scenario:
    """One drawn failure of the kinds a Kaggle run meets (see the module docstring)."""

    kind: str                       # one of SCENARIOS
    faults: str = ""                # $VESUKIT_FAULTS for the run
    workers: int = 1
    budget: float | None = None     # --time-budget
    volume: str = ""                # the faulted volume (hang, teacher, oddity "missing")
    kill_after: int = 0             # kill: saved volumes before the kill
    kill_worker: int = 0            # kill: which of the two workers
    oddities: tuple[str, ...] = ()  # oddities: which

    def describe(self) -> str:
        details = {"kill": f"worker {self.kill_worker} after {self.kill_after} volume(s)",
                   "hang": f"'{self.volume}' hangs, {self.workers} worker(s), budget {self.budget:g}s"
                   if self.budget else "",
                   "teacher": f"first teacher fails on '{self.volume}' only [{self.faults}]",
                   "oddities": ", ".join(self.oddities)
                   + (f" ('{self.volume}')" if "missing" in self.oddities else "")}
        return f"{self.kind}: {details[self.kind]}"


def draw_scenario(rng: random.Random, ids: list[str], kind: str | None = None) -> Scenario:
    kind = kind or rng.choice(SCENARIOS)
    volume = rng.choice(ids)
    if kind == "kill":
        # each forward pass takes a second, so the workers are busy when one is killed
        return Scenario(kind, "teacher:sleep1:*:0", workers=2,
                        kill_after=rng.randrange(max(len(ids) - 1, 1)), kill_worker=rng.randrange(2))
    if kind == "hang":
        return Scenario(kind, f"teacher:sleep{HANG_SECONDS}:{volume}:1", workers=rng.choice([1, 2]),
                        budget=HANG_BUDGET, volume=volume)
    if kind == "teacher":
        # both CPU attempts (as configured, batch 1) of the first teacher on that volume
        error = rng.choice(sorted(set(faults.KINDS) - {"CudaOOM"}))
        return Scenario(kind, f"teacher:{error}:{volume}:2", volume=volume)
    if kind == "oddities":
        chosen = tuple(o for o in ODDITIES if rng.random() < 0.5) or (rng.choice(ODDITIES),)
        return Scenario(kind, oddities=chosen, volume=volume)
    raise ValueError(f"unknown scenario {kind!r}; choose one of {', '.join(SCENARIOS)}")


def predict_command(root: Path, teachers: Path, out: Path, work: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vesukit", "predict", "--data", str(root), "--teachers",
            str(teachers), "--out", str(out), "--workdir", str(work), "--device", "cpu", *extra]


def _env(fault_plan: str = "") -> dict:
    # one thread per process: float results, and so masks, are comparable across runs
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop(faults.ENV, None)
    if fault_plan:
        env[faults.ENV] = fault_plan
    return env


def zip_masks(path: Path) -> dict:
    from vesukit.data import read_volume_pillow

    with zipfile.ZipFile(path) as archive:
        return {n[:-4]: read_volume_pillow(io.BytesIO(archive.read(n))) for n in archive.namelist()}


def clean_masks(root: Path, teachers: Path, folder: Path) -> dict:
    """The masks of a run without faults: what every volume not faulted must match."""
    out = folder / "clean.zip"
    done = subprocess.run(predict_command(root, teachers, out, folder / "clean-work"),
                          capture_output=True, text=True, env=_env(), timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"the clean run failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return zip_masks(out)


def worker_processes(pid: int) -> list[int]:
    """The spawned worker processes of ``pid`` (not multiprocessing's resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and "spawn_main" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def make_oddities(root: Path, folder: Path, scenario: Scenario) -> tuple[Path, list[str]]:
    """A copy of ``root`` with the scenario's oddities; returns it and the ids that must be
    fallbacks (a row without a volume, a zero-size volume)."""
    import numpy as np

    from vesukit.data import write_volume

    odd = folder / "odd-root"
    shutil.copytree(root, odd)
    rows = (odd / "test.csv").read_text().splitlines()
    header, body = rows[0], rows[1:]
    empty = []
    if "missing" in scenario.oddities:
        (odd / "test_images" / f"{scenario.volume}.tif").unlink()
        empty.append(scenario.volume)
    if "duplicate" in scenario.oddities:
        body.append(body[0])
    if "extra" in scenario.oddities:
        write_volume(odd / "test_images" / "no-row.tif", np.zeros((8, 16, 16), np.uint8))
    if "zero" in scenario.oddities:
        import zarr

        zarr.open_array(str(odd / "test_images" / "zero-z.zarr"), mode="w", shape=(0, 16, 16),
                        dtype="uint8")
        body.append("zero-z," + body[0].split(",", 1)[1] if "," in body[0] else "zero-z")
        empty.append("zero-z")
    (odd / "test.csv").write_text("\n".join([header, *body]) + "\n")
    return odd, empty


def run_scenario(scenario: Scenario, root: Path, teachers: Path, clean: dict,
                 folder: Path) -> list[str]:
    """Run `vesukit predict` under ``scenario``; the broken promises (none: [])."""
    from vesukit.data import list_test_ids
    from vesukit.submission import validate_zip

    folder.mkdir(parents=True, exist_ok=True)
    expected_empty: list[str] = []
    if scenario.kind == "oddities":
        root, expected_empty = make_oddities(root, folder, scenario)
    ids = list_test_ids(root)
    out, work = folder / "submission.zip", folder / "work"
    extra = ["--workers", str(scenario.workers)]
    if scenario.budget:
        extra += ["--time-budget", str(scenario.budget)]
    process = subprocess.Popen(predict_command(root, teachers, out, work, *extra),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=_env(scenario.faults))
    killed = _kill_when_due(process, scenario, work) if scenario.kind == "kill" else None
    try:
        _, stderr = process.communicate(timeout=HANG_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        return [f"{scenario.describe()}: predict still running after {HANG_SECONDS}s"]
    where = scenario.describe()
    problems = []
    # an oddity that costs nothing (a row twice, a volume without a row) only warns: exit 0
    expected_code = 0 if scenario.kind == "oddities" and not expected_empty else 3
    if process.returncode != expected_code:
        problems.append(f"{where}: exit code {process.returncode}, expected {expected_code} "
                        f"({stderr.strip().splitlines()[-1:] or ''})")
    if not out.is_file() or not (work / "run.json").is_file():
        return problems + [f"{where}: no zip or no run.json"]
    report = validate_zip(out, root)
    if not report.valid or sorted(report.files) != sorted(ids):
        problems.append(f"{where}: zip invalid or incomplete: "
                        + "; ".join(e.message for e in report.errors))
    record = json.loads((work / "run.json").read_text())
    problems += [f"{where}: {p}" for p in _check_record(work / "run.json", ids, out)]
    problems += [f"{where}: {p}" for p in
                 _check_scenario(scenario, record, zip_masks(out), clean, expected_empty, killed)]
    return problems


def _kill_when_due(process: subprocess.Popen, scenario: Scenario, work: Path) -> int | None:
    """SIGKILL one worker once ``kill_after`` volumes are saved; its pid (None: too late)."""
    while process.poll() is None:
        saved = len(list((work / "state").glob("*.json"))) if (work / "state").is_dir() else 0
        workers = worker_processes(process.pid)
        if saved >= scenario.kill_after and len(workers) == 2:
            os.kill(workers[scenario.kill_worker], signal.SIGKILL)
            return workers[scenario.kill_worker]
        time.sleep(0.05)
    return None


def _check_scenario(scenario: Scenario, record: dict, got: dict, clean: dict,
                    expected_empty: list[str], killed: int | None) -> list[str]:
    """The scenario's fault is named in run.json; every volume not faulted is the clean one."""
    problems = []
    events = " ".join(e["message"] for e in record["events"])
    volumes = {v["volume_id"]: v for v in record["volumes"]}
    faulted = set(expected_empty)
    if scenario.kind == "kill":
        deaths = record.get("worker_deaths") or []
        if killed is not None and not any(d["cause"] == "killed by SIGKILL" for d in deaths):
            problems.append("the killed worker is not in run.json 'worker_deaths'")
    elif scenario.kind == "hang":
        if "the hard wall" not in events:
            problems.append("run.json does not name the hard wall")
        faulted |= {i for i, v in volumes.items() if v["status"] != "done" or v["degraded"]}
        if volumes[scenario.volume]["status"] == "done":
            problems.append(f"the hung volume '{scenario.volume}' is not a fallback")
        margin = record.get("finish_margin_seconds") or 0
        if record.get("wall_seconds", 0) > scenario.budget + margin:
            problems.append(f"wall {record.get('wall_seconds'):.1f}s > budget {scenario.budget:g}s "
                            f"+ finish margin {margin:g}s")
    elif scenario.kind == "teacher":
        faulted.add(scenario.volume)
        degraded = volumes[scenario.volume]["degraded"]
        if not any("on this volume" in d for d in degraded):
            problems.append(f"'{scenario.volume}' does not name the teacher that failed on it")
    elif scenario.kind == "oddities":
        named = {"missing": "no such file", "duplicate": "listed twice",
                 "extra": "have no row in", "zero": "zero-size dimension"}
        problems += [f"run.json does not name the {o} oddity" for o in scenario.oddities
                     if named[o] not in events]
    for volume_id in expected_empty:
        if volumes.get(volume_id, {}).get("status") != "fallback":
            problems.append(f"'{volume_id}' should be a flagged fallback")
    import numpy as np

    for volume_id, mask in got.items():
        if volume_id in faulted:
            continue
        if volumes[volume_id]["status"] != "done" or volumes[volume_id]["degraded"]:
            problems.append(f"'{volume_id}' was not faulted but is {volumes[volume_id]['status']} "
                            f"{volumes[volume_id]['degraded']}")
        elif volume_id not in clean or not np.array_equal(mask, clean[volume_id]):
            problems.append(f"'{volume_id}' differs from the clean run's mask")
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


def run_plans(n: int, seed: int, folder: Path, log=print, max_seconds: float | None = None,
              kind: str | None = None) -> tuple[int, list[str]]:
    """``n`` seeded plans over one fixture, every other one a scenario; (plans run, problems).

    ``max_seconds``: start no plan after that long (the count returned says how many ran).
    ``kind``: only scenarios of that kind (one of :data:`SCENARIOS`)."""
    from vesukit.data import list_test_ids

    root, teachers = make_fixture(folder / "fixture", n_test=4)
    ids = list_test_ids(root)
    clean = clean_masks(root, teachers, folder / "fixture")
    rng = random.Random(seed)
    problems: list[str] = []
    start = time.perf_counter()
    for index in range(n):
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            return index, problems
        run_folder = folder / f"plan{index:04d}"
        if index % 2 or kind:
            scenario = draw_scenario(rng, ids, kind or SCENARIOS[(index // 2) % len(SCENARIOS)])
            label = scenario.describe()
            found = run_scenario(scenario, root, teachers, clean, run_folder)
        else:
            plan = random_plan(rng, ids)
            resume_plan = random_plan(rng, ids, stages=RESUME_STAGES, most=2)
            label = f"[{plan}] then [{resume_plan}]"
            found = run_plan(plan, resume_plan, root, teachers, run_folder, audit=index % 8 == 0)
        shutil.rmtree(run_folder, ignore_errors=True)
        log(f"plan {index + 1}/{n}: {'ok' if not found else 'FAILED'}  {label}")
        problems += found
    return n, problems
