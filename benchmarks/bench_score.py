"""Local scorer vs the official one on the two 320^3 metric vectors.

    PYTHONPATH=src python benchmarks/bench_score.py [--workers N] [--repeat R]

Each volume runs in its own subprocess so its peak RSS is its own. Per volume it prints:
cold seconds (score_volume: label preparation + scoring), warm seconds
(PreparedLabel.score with the label already prepared, as calibration uses it), the
official scorer's seconds from expected.json (topometrics-3d 0.1.0 on a 2-core machine),
the ratios, the breakdown (CPU seconds of the thread that ran each stage, summed over the
octants; stages overlap when workers > 1, and other load on the machine does not inflate them), the
peak RSS, and whether the result equals expected.json. The numba JIT cost (compile from an
empty cache, and load from a warm cache) is measured separately in fresh subprocesses.
The surface-distance package (DeepMind, the official scorer's surface-Dice code) is run
side by side on the same pair when installed.

    PYTHONPATH=src python benchmarks/bench_score.py --official /tmp/official-scorer/venv/bin/python

``--official PATH`` also runs the official scorer itself in the same run, after ours on each
pair (its own subprocess, never at once with ours): Betti-Matching-3D rebuilt from source,
surface-distance and cc3d, combined as the leaderboard does (benchmarks/official_metric.py).
PATH is a python that imports ``betti_matching``, ``surface_distance`` and ``cc3d``, or a folder
holding the compiled ``betti_matching`` (benchmarks/official_side_by_side.py; how to build it:
docs/metric.md, "The official scorer, rebuilt"). Per pair it prints the official seconds (per
term), the same-run ratios, and whether every topology count and float equals ours; the run
exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "tests" / "data" / "metric-vectors"
BIG = ("v555_000_identity", "v555_001_shift1")


def _load(case):
    import tifffile

    return (tifffile.imread(VECTORS / "pred" / f"{case}.tif"),
            tifffile.imread(VECTORS / "labels" / f"{case}.tif"))


def one_volume(case: str, workers: int, repeat: int) -> dict:
    """Runs in the subprocess: time one pair, return a JSON-able record."""
    from vesukit.metric import PreparedLabel, score_volume

    expected = json.loads((VECTORS / "expected.json").read_text())[case]
    pred, label = _load(case)
    score_volume(pred[:8, :8, :8], label[:8, :8, :8])  # load the kernels outside the timing
    cold, cold_cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), _cpu()
        result = score_volume(pred, label, workers=workers, name=case)
        cold.append(time.perf_counter() - t0)
        cold_cpu.append(_cpu() - c0)
    t0 = time.perf_counter()
    prepared = PreparedLabel(label, name=case, workers=workers)
    prepare_s = time.perf_counter() - t0
    warm, warm_cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), _cpu()
        warm_result = prepared.score(pred)
        warm.append(time.perf_counter() - t0)
        warm_cpu.append(_cpu() - c0)
    got = result.to_json()
    exact = got["topo_counts"] == expected["topo_counts"] and all(
        abs(got[k] - expected[k]) <= 1e-9 for k in
        ("score", "toposcore", "surface_dice", "voi_score", "voi_split", "voi_merge"))
    record = {
        "case": case, "official_s": expected["official_seconds"], "cold_s": min(cold),
        "warm_s": min(warm), "prepare_label_s": prepare_s,
        "breakdown_thread_s": {k: round(v, 3) for k, v in warm_result.timings.items()},
        "exact": bool(exact and warm_result == result), "result": got,
        "cold_cpu_s": min(cold_cpu), "warm_cpu_s": min(warm_cpu),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }
    peer = _peer_surface_dice(pred, label)
    if peer is not None:
        record["peer_surface_dice_s"], record["peer_equal"] = peer[0], bool(abs(
            peer[1] - got["surface_dice"]) < 1e-12)
        t0 = time.perf_counter()
        from vesukit.metric.surface_dice import surface_dice
        gt = (label == 1)
        ours = surface_dice(gt, (pred != 0) & (label != 2))
        record["our_surface_dice_s"] = time.perf_counter() - t0
        assert abs(ours - got["surface_dice"]) < 1e-12
    return record


def _cpu() -> float:
    """CPU seconds of this process, all threads (robust to other load on the machine)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peer_surface_dice(pred, label):
    try:
        import warnings

        from surface_distance import metrics
    except ImportError:
        return None
    gt = label == 1
    pr = (pred != 0) & (label != 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        dists = metrics.compute_surface_distances(gt, pr, (1.0, 1.0, 1.0))
        value = metrics.compute_surface_dice_at_tolerance(dists, 2.0)
    return time.perf_counter() - t0, value


def jit_seconds() -> dict:
    """First-call cost in a fresh process: compile from an empty cache, then a cached load."""
    code = ("import time, numpy as np; t=time.perf_counter(); "
            "from vesukit.metric import score_volume; "
            "a=np.zeros((9,9,9),np.uint8); a[2:6,2:6,2:6]=1; a[3:5,3:5,3:5]=0; "
            "score_volume(a, a, workers=1); print(time.perf_counter()-t)")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env["NUMBA_CACHE_DIR"] = cache
        for name in ("compile_empty_cache_s", "load_warm_cache_s"):
            proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                  text=True, check=True)
            out[name] = round(float(proc.stdout.strip().splitlines()[-1]), 2)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--official", metavar="PATH",
                        help="also time the rebuilt official scorer: its python, or the folder of betti_matching")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_volume(args.one, args.workers, args.repeat)))
        return 0
    official = _official_or_exit(args.official) if args.official else None
    print(f"workers={args.workers} cores={os.cpu_count()} load={os.getloadavg()}")
    print("numba JIT (fresh process, 9^3 volume):", jit_seconds())
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    ok = True
    for case in BIG:
        proc = subprocess.run([sys.executable, __file__, "--one", case, "--workers",
                               str(args.workers), "--repeat", str(args.repeat)],
                              env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr)
            return 1
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        ok &= r["exact"]
        print(f"\n{case}: exact={r['exact']}  official {r['official_s']:.1f} s")
        print(f"  cold (prepare label + score) {r['cold_s']:.2f} s wall -> "
              f"{r['official_s'] / r['cold_s']:.1f}x faster; {r['cold_cpu_s']:.2f} CPU-s")
        print(f"  warm (PreparedLabel.score)   {r['warm_s']:.2f} s wall -> "
              f"{r['official_s'] / r['warm_s']:.1f}x faster; {r['warm_cpu_s']:.2f} CPU-s "
              f"(prepare once: {r['prepare_label_s']:.2f} s)")
        print(f"  breakdown, thread CPU seconds per stage (wall: the call's wall time): "
              f"{r['breakdown_thread_s']}")
        if "peer_surface_dice_s" in r:
            print(f"  surface Dice alone: ours {r['our_surface_dice_s']:.2f} s, "
                  f"surface-distance package {r['peer_surface_dice_s']:.2f} s "
                  f"(equal: {r['peer_equal']})")
        print(f"  peak RSS of our scorer {r['peak_rss_gb']:.2f} GB   "
              f"load now {os.getloadavg()[0]:.1f}")
        if official:
            ok &= _official_same_run(official, case, r)
    return 0 if ok else 1


def _official_or_exit(path: str) -> list[str]:
    sys.path.insert(0, str(ROOT))
    from benchmarks.official_side_by_side import OfficialUnavailable, official_command

    try:
        return official_command(path)
    except OfficialUnavailable as error:
        print(f"bench_score: {error}", file=sys.stderr)
        sys.exit(1)


def _official_same_run(command: list[str], case: str, ours: dict) -> bool:
    """Times the official scorer on the pair ours just scored; True when every count and float is equal."""
    from benchmarks.official_side_by_side import differences, run_official

    load_before = os.getloadavg()[0]
    official = run_official(command, VECTORS / "pred" / f"{case}.tif", VECTORS / "labels" / f"{case}.tif")
    seconds = official["seconds"]
    terms = ", ".join(f"{k} {v:.1f}" for k, v in official["seconds_by_term"].items())
    print(f"  official, same run: {seconds:.1f} s ({terms}); load {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    cpu = official["cpu_seconds"]
    print(f"  same-run ratio: cold {seconds / ours['cold_s']:.1f}x, warm {seconds / ours['warm_s']:.1f}x wall; "
          f"official {cpu:.1f} CPU-s -> cold {cpu / ours['cold_cpu_s']:.1f}x, warm {cpu / ours['warm_cpu_s']:.1f}x "
          f"CPU (expected.json's official: {ours['official_s']:.1f} s)")
    found = differences(ours["result"], official)
    print("  ours = official: every count and float equal" if not found
          else "  OURS DIFFERS FROM THE OFFICIAL SCORER: " + "; ".join(found))
    return not found


if __name__ == "__main__":
    sys.exit(main())
