"""The leaderboard metric computed with the official scorer's own pieces, to run vesukit against.

The official scorer is topometrics-3d 0.1.0, a Kaggle package that pip cannot install here. Its
parts are public: Betti-Matching-3D (C++, Python module ``betti_matching``) for the topology
term, DeepMind ``surface-distance`` for surface Dice, ``cc3d`` for the VOI components. This
script combines them as docs/metric.md says the leaderboard does (binarise, ignore label 2,
8 octant blocks, ``compute_matching(~pred, ~gt)`` per block, the F1 per dimension, the weights).
It never imports vesukit. How to build ``betti_matching`` and what this reproduced:
docs/metric.md, "The official scorer, rebuilt".

    PYTHON benchmarks/official_metric.py [--module-dir DIR] PRED.tif LABEL.tif     # one JSON line
    PYTHON benchmarks/official_metric.py [--module-dir DIR] --npz PAIRS.npz        # one line per pair
    PYTHON benchmarks/official_metric.py [--module-dir DIR] --check                # can it run?

PYTHON must import ``betti_matching``, ``surface_distance`` and ``cc3d``; ``--module-dir`` puts
a folder holding the compiled ``betti_matching`` first on the path. ``--npz`` reads the packed
pairs of tests/data/metric-official (see benchmarks/make_official_cases.py). Each line holds
score, toposcore, topo_counts {"0": [m, p, g], ...}, surface_dice, voi_score, voi_split,
voi_merge, and the seconds the scoring took (wall: total and per term; CPU: all threads; reading
files excluded).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import warnings

import numpy as np

TOLERANCE, VOI_ALPHA = 2.0, 0.3
WEIGHTS = {"topo": 0.30, "surface_dice": 0.35, "voi": 0.35}
DIM_WEIGHTS = (0.34, 0.33, 0.33)


def octant_blocks(shape):
    """The 8 blocks of the leaderboard: each axis in two parts, the first larger by at most 1."""
    halves = [((0, (n + 1) // 2), ((n + 1) // 2, n)) for n in shape]
    for a in halves[0]:
        for b in halves[1]:
            for c in halves[2]:
                yield slice(*a), slice(*b), slice(*c)


def topo_counts(pred, gt):
    """(m, p, g) per dimension, summed over the octant blocks (foreground is 0 for the matcher)."""
    import betti_matching

    counts = {k: [0, 0, 0] for k in range(3)}
    for block in octant_blocks(pred.shape):
        if pred[block].size == 0:
            continue
        result = betti_matching.compute_matching((~pred[block]).astype(np.uint8),
                                                 (~gt[block]).astype(np.uint8))
        for k in range(3):
            matched = int(result.num_matched[k])
            counts[k][0] += matched
            counts[k][1] += matched + int(result.num_unmatched_input1[k])
            counts[k][2] += matched + int(result.num_unmatched_input2[k])
    return counts


def toposcore(counts):
    total = weight = 0.0
    for k, w in enumerate(DIM_WEIGHTS):
        m, p, g = counts[k]
        if p == 0 and g == 0:
            continue  # an inactive dimension; the others are renormalised
        total += w * (2.0 * m / (p + g) if g > 0 else 0.5 / (p + 0.5))
        weight += w
    return 1.0 if weight == 0 else total / weight


def surface_dice(gt, pred):
    from surface_distance import metrics

    if not gt.any() and not pred.any():
        return 1.0
    if not gt.any() or not pred.any():
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        distances = metrics.compute_surface_distances(gt, pred, (1.0, 1.0, 1.0))
        return float(metrics.compute_surface_dice_at_tolerance(distances, TOLERANCE))


def _entropy(counts):
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def voi_split_merge(gt, pred):
    """(split, merge) = (H(pred|gt), H(gt|pred)) in bits over the union of both foregrounds."""
    import cc3d

    union = gt | pred
    if not union.any():
        return 0.0, 0.0
    a = cc3d.connected_components(gt.astype(np.uint8), connectivity=26)[union].astype(np.int64)
    b = cc3d.connected_components(pred.astype(np.uint8), connectivity=26)[union].astype(np.int64)
    joint = _entropy(np.unique(a * (int(b.max()) + 1) + b, return_counts=True)[1])
    h_gt = _entropy(np.unique(a, return_counts=True)[1])
    h_pred = _entropy(np.unique(b, return_counts=True)[1])
    return joint - h_gt, joint - h_pred


def _cpu_seconds() -> float:
    """CPU seconds of this process, all threads (Betti-Matching-3D runs dim-1 barcodes in threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def score_pair(pred, label):
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    pred = np.asarray(pred)
    if pred.dtype.kind == "f":
        pred = np.nan_to_num(pred)
    label = np.asarray(label)
    ignore = label == 2
    pred_bin = (pred != 0) & ~ignore
    gt_bin = (label != 0) & ~ignore
    t_topo = time.perf_counter()
    counts = topo_counts(pred_bin, gt_bin)
    t_sd = time.perf_counter()
    sd = surface_dice(gt_bin, pred_bin)
    t_voi = time.perf_counter()
    split, merge = voi_split_merge(gt_bin, pred_bin)
    end = time.perf_counter()
    voi_score = 1.0 / (1.0 + VOI_ALPHA * (split + merge))
    topo = toposcore(counts)
    score = WEIGHTS["topo"] * topo + WEIGHTS["surface_dice"] * sd + WEIGHTS["voi"] * voi_score
    return {
        "score": min(max(score, 0.0), 1.0), "toposcore": topo,
        "topo_counts": {str(k): v for k, v in counts.items()}, "surface_dice": sd,
        "voi_score": voi_score, "voi_split": split, "voi_merge": merge,
        "seconds": end - start, "cpu_seconds": _cpu_seconds() - cpu_start,
        "seconds_by_term": {"topology": t_sd - t_topo, "surface_dice": t_voi - t_sd, "voi": end - t_voi},
    }


def unpack_pairs(path):
    """{name: (pred uint8, label uint8)} from a packed-bits npz (make_official_cases.py)."""
    data = np.load(path)
    pairs = {}
    for name in json.loads(str(data["names"])):
        shape = tuple(int(s) for s in data[f"{name}/shape"])
        size = int(np.prod(shape))

        def plane(key, shape=shape, size=size):
            return np.unpackbits(data[key], count=size).reshape(shape).astype(bool)

        label = plane(f"{name}/gt").astype(np.uint8)
        label[plane(f"{name}/ignore")] = 2
        pairs[name] = (plane(f"{name}/pred").astype(np.uint8), label)
    return pairs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module-dir", help="folder holding the compiled betti_matching module")
    parser.add_argument("--npz", help="packed pairs (tests/data/metric-official/pairs.npz)")
    parser.add_argument("--check", action="store_true", help="only import the pieces; print where they are")
    parser.add_argument("tifs", nargs="*", metavar="PRED.tif LABEL.tif")
    args = parser.parse_args(argv)
    if args.module_dir:
        sys.path.insert(0, args.module_dir)
    try:
        import betti_matching
        import cc3d  # noqa: F401
        import surface_distance  # noqa: F401
    except ImportError as error:
        print(f"official_metric: {sys.executable} cannot import {error.name}: build Betti-Matching-3D "
              "and install surface-distance and connected-components-3d (docs/metric.md, "
              "'The official scorer, rebuilt')", file=sys.stderr)
        return 1
    if args.check:
        print(json.dumps({"betti_matching": betti_matching.__file__, "python": sys.executable}))
        return 0
    if args.npz:
        for name, (pred, label) in unpack_pairs(args.npz).items():
            print(json.dumps({"name": name, **score_pair(pred, label)}), flush=True)
        return 0
    if len(args.tifs) != 2:
        parser.error("give PRED.tif LABEL.tif, or --npz PAIRS.npz")
    import tifffile

    print(json.dumps(score_pair(tifffile.imread(args.tifs[0]), tifffile.imread(args.tifs[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
