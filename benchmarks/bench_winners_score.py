"""What each preset scores on synthetic maps, against plain thresholding at the preset's threshold.

Labelled synthetic volumes (``vesukit.synth``: surfaces 1, unlabelled regions 2) with probability
maps carrying the defects real ensembles make (``vesukit.synth_defects``, default defects: holes,
a tear, bridges, a merge, dust). For each preset: the exact leaderboard score
(``vesukit.metric.score_volume``) of its mask, and of the same map thresholded at the preset's
threshold with no post-processing; the difference is signed (negative: the preset hurt).
The presets' sizes are the teams' for 320^3, applied as they are.

    PYTHONPATH=src python -m benchmarks.bench_winners_score [--volumes 4] [--size 160]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main(argv=None) -> int:
    from vesukit.decide.calibration import binarize
    from vesukit.decide.presets import PRESETS
    from vesukit.decide.steps import apply_postprocess
    from vesukit.maps import maps_from_probability
    from vesukit.metric.score import score_volume
    from vesukit.synth import synth_volume
    from vesukit.synth_defects import defective_map

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=4)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--presets", default=",".join(PRESETS))
    args = parser.parse_args(argv)
    print(f"load average before: {os.getloadavg()}")
    presets = args.presets.split(",")
    rows = {name: ([], [], []) for name in presets}
    for seed in range(1, args.volumes + 1):
        _, label = synth_volume((args.size,) * 3, seed)
        probability = defective_map(label, seed)
        maps = maps_from_probability(probability)
        for name in presets:
            mask = binarize(probability, PRESETS[name]["threshold"])
            start = time.perf_counter()
            out = apply_postprocess(mask, PRESETS[name]["postprocess"], maps)
            seconds = time.perf_counter() - start
            plain, chained = score_volume(mask, label).score, score_volume(out, label).score
            rows[name][0].append(plain)
            rows[name][1].append(chained)
            rows[name][2].append(seconds)
            print(f"seed {seed} {name}: threshold only {plain:.4f}, preset {chained:.4f} ({seconds:.1f} s)",
                  flush=True)
    print(f"load average after: {os.getloadavg()}")
    print(f"\n| preset ({args.volumes} volumes of {args.size}³) | threshold | threshold only | preset | "
          "preset - threshold only | volumes better | s per volume |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in presets:
        plain, chained, seconds = (np.array(v) for v in rows[name])
        print(f"| `{name}` | {PRESETS[name]['threshold']} | {plain.mean():.4f} | {chained.mean():.4f} | "
              f"{chained.mean() - plain.mean():+.4f} | {int((chained > plain).sum())} of {len(plain)} | "
              f"{seconds.mean():.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
