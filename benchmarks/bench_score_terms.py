"""Where the exact scorer's time goes, per term, on the two 320^3 mask types that matter.

    PYTHONPATH=src python benchmarks/bench_score_terms.py [--size 320] [--seed 7]

Cases: the metric vector v555_001_shift1 (pred = GT shifted by one voxel: no octant is
identical) and a calibration mask (a `vesukit.synth` volume, its `synth_defects` map at
threshold 0.5, as `bench_calibrate_search.py --profile` makes it: the kind of mask the
calibration search scores hundreds of times). Per case, best of 2 warm calls
(`PreparedLabel.score`, one thread): wall seconds, the process's CPU seconds, the topology
counts and the CPU seconds of each stage, summed over the 8 octants.

Stage times are read with ``time.thread_time`` (CPU time of the thread running the stage),
which other load on a shared machine does not inflate. To compare with an older checkout,
run this file with ``PYTHONPATH=<that checkout>/src``: the stage clock is set here, so a
checkout that timed stages in wall seconds reports CPU seconds too.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import types
from pathlib import Path

import numpy as np

VECTORS = Path(__file__).resolve().parents[1] / "tests" / "data" / "metric-vectors"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cases(size: int, seed: int):
    import tifffile

    from vesukit.decide import binarize
    from vesukit.maps import maps_from_probability
    from vesukit.synth import synth_volume
    from vesukit.synth_defects import defective_map

    yield "v555_001_shift1", (tifffile.imread(VECTORS / "pred" / "v555_001_shift1.tif"),
                              tifffile.imread(VECTORS / "labels" / "v555_001_shift1.tif"))
    _, label = synth_volume((size, size, size), seed)
    maps = maps_from_probability(defective_map(label, seed).astype(np.float16))
    yield f"calibration mask {size}^3 (seed {seed})", (binarize(maps.mean, 0.5), label)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    from vesukit.metric import PreparedLabel, topology

    topology.time = types.SimpleNamespace(perf_counter=time.thread_time,
                                          thread_time=time.thread_time)
    print(f"cores={os.cpu_count()} load={os.getloadavg()}")
    tiny = np.zeros((16, 16, 16), np.uint8)
    PreparedLabel(tiny).score(tiny)  # load the kernels outside the timing
    for name, (pred, label) in cases(args.size, args.seed):
        prepared = PreparedLabel(label, workers=1)
        best = None
        for _ in range(2):
            t0, c0 = time.perf_counter(), _cpu()
            result = prepared.score(pred, workers=1)
            run = (time.perf_counter() - t0, _cpu() - c0, result)
            best = run if best is None or run[1] < best[1] else best
        wall, cpu, result = best
        terms = ", ".join(f"{k} {v:.2f}" for k, v in sorted(result.timings.items(),
                                                              key=lambda kv: -kv[1])
                          if k != "wall")
        print(f"{name}: one thread, {wall:.2f} s wall, {cpu:.2f} CPU-s; counts "
              f"{result.topo_counts}\n  per stage (thread CPU s): {terms}", flush=True)
    print(f"load now {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
