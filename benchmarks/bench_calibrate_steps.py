"""The calibration search's per-mask costs at 320³, this checkout against an older one, same run.

    PYTHONPATH=src python -m benchmarks.bench_calibrate_steps --old /work/main/src [--size 320]

On one `vesukit.synth` volume and its `synth_defects` map (as `bench_calibrate_search.py
--profile` makes them; the mask at threshold 0.5), each part the search pays per mask or per
volume (the winners' steps, the threshold rules, label preparation, the screening bound) runs
in a worker process per checkout: the old one (``--old``: another checkout's ``src``) and this
one, alternately, ``--repeat`` times (old, new, old, new...), so both meet the same load. Each
worker loads the compiled kernels on a small crop first. Per part: the best thread CPU seconds
of each side (one thread; other load on the machine inflates them less than wall time), the
ratio, and whether the outputs are equal (masks voxel for voxel, rule
thresholds and bound scores and counts exactly). Exits 1 on any difference. Without ``--old``
only this checkout is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

STEPS = [
    ("fill_tunnels", {"low": 0.15, "rounds": 13}),
    ("median_filter", {"rounds": 3}),
    ("median_filter", {"rounds": 7, "size": 3, "connectivity": 6}),
    ("plug_holes", {"passes": 2}),
    ("sheet_close", {"radius": 3, "thin": 1.5}),
    ("patch_holes", {"max_area": 4095}),
    ("close", {"radius": 1}),
    ("fill_holes", {"max_voxels": 983}),
    ("remove_small", {"min_voxels": 3277}),
]
RULES = [("foreground_fraction", {"fraction": 0.03}), ("otsu", {"floor": 0.02}), ("valley", {})]


def make_data(folder: Path, size: int, seed: int) -> None:
    from vesukit.synth import synth_volume
    from vesukit.synth_defects import defective_map

    _, label = synth_volume((size, size, size), seed)
    np.save(folder / "label.npy", label)
    np.save(folder / "probability.npy", defective_map(label, seed).astype(np.float16))


def worker(folder: Path, side: str) -> None:
    """Time every part on the saved data with the vesukit on sys.path; write outputs and times."""
    from vesukit.decide import ThresholdRule, binarize
    from vesukit.decide.steps import apply_postprocess
    from vesukit.maps import maps_from_probability
    from vesukit.metric import PreparedLabel

    def timed(fn):
        start = time.thread_time()
        out = fn()
        return out, time.thread_time() - start

    label = np.load(folder / "label.npy")
    maps = maps_from_probability(np.load(folder / "probability.npy"))
    mask = binarize(maps.mean, 0.5)
    crop = (slice(0, 32),) * 3
    small = maps_from_probability(np.asarray(maps.mean[crop]))
    PreparedLabel(label[crop]).bound(mask[crop])                     # load the compiled kernels
    times, outputs = {}, {}
    for name, options in STEPS:
        key = f"{name} {json.dumps(options)}"
        step = {"step": name, **options}
        apply_postprocess(mask[crop], (step,), small)
        out, times[key] = timed(lambda s=step: apply_postprocess(mask, (s,), maps))
        outputs[key] = np.packbits(out.astype(bool).ravel())
    for name, options in RULES:
        key = f"rule {name} {json.dumps(options)}"
        value, times[key] = timed(lambda n=name, o=options: ThresholdRule(n, dict(o))(maps))
        outputs[key] = np.float64(value)
    prepared, times["label preparation"] = timed(lambda: PreparedLabel(label, name="bench", workers=1))
    bound, times["screening bound"] = timed(lambda: prepared.bound(mask))
    outputs["screening bound"] = np.array([bound.score] + [x for c in sorted(bound.topo_counts.items())
                                                           for x in (c[0], *c[1])], dtype=np.float64)
    np.savez(folder / f"outputs_{side}.npz", **{k.replace("/", "_"): v for k, v in outputs.items()})
    (folder / f"times_{side}.json").write_text(json.dumps(times))


def run_side(folder: Path, src: str, side: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, str(HERE.parent)]),
               OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "benchmarks.bench_calibrate_steps", "--worker", str(folder),
                    "--side", side], env=env, check=True, cwd=HERE.parent)
    return json.loads((folder / f"times_{side}.json").read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default=None, help="the older checkout's src folder")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--side", default="new", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.side)
        return 0
    new_src = str(HERE.parent / "src")
    sides = {"new": new_src} if args.old is None else {"old": str(Path(args.old).resolve()), "new": new_src}
    print(f"cores={os.cpu_count()} load={os.getloadavg()} size={args.size}^3 sides={sides}", flush=True)
    best: dict[str, dict[str, float]] = {side: {} for side in sides}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_data(folder, args.size, args.seed)
        for attempt in range(args.repeat):
            for side, src in sides.items():
                times = run_side(folder, src, side)
                for key, seconds in times.items():
                    best[side][key] = min(best[side].get(key, np.inf), seconds)
                print(f"  {side} run {attempt + 1} done (load {os.getloadavg()[0]:.1f})", flush=True)
        outputs = {side: dict(np.load(folder / f"outputs_{side}.npz")) for side in sides}
    different = []
    for key in best["new"]:
        new = best["new"][key]
        if "old" not in sides:
            print(f"{key:60s} {new:7.2f} CPU-s")
            continue
        old = best["old"][key]
        stored = key.replace("/", "_")
        equal = stored not in outputs["new"] or np.array_equal(outputs["old"][stored], outputs["new"][stored])
        if not equal:
            different.append(key)
        print(f"{key:60s} old {old:7.2f} CPU-s  new {new:7.2f} CPU-s  {old / new:5.1f}x  "
              f"{'equal' if equal else 'DIFFERENT'}")
    print(f"load at the end {os.getloadavg()}")
    if different:
        print(f"outputs differ: {different}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
