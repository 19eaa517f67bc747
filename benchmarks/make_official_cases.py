"""Makes tests/data/metric-official: new small pairs scored by the rebuilt official scorer.

    PYTHONPATH=src python benchmarks/make_official_cases.py --official /tmp/official-scorer/venv/bin/python

Each pair comes from a named recipe and a seed (below): vesukit.synth labels against
thresholded vesukit.synth_defects maps, random masks, calibration-like masks with many small
holes and dust, smoothed noise (tunnels and cavities), and flipped or transposed copies (the
official counts depend on the axis order, docs/metric.md section 7). The pairs are stored as
packed bits (``pairs.npz``: pred, gt and ignore planes per pair) so the test reads exactly
what the official scorer read, whatever numpy or scipy version regenerates the recipes.
``expected.json`` holds the official output per pair (benchmarks/official_metric.py, run by
``--official``: a python that imports the rebuilt ``betti_matching``), with its recipe.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "metric-official"


def synth_defects(shape, seed, threshold):
    """A vesukit.synth label and its synth_defects map thresholded, as calibration scores it."""
    from vesukit.synth import synth_volume
    from vesukit.synth_defects import defective_map

    label = synth_volume(shape, seed)[1]
    return (defective_map(label, seed) > threshold).astype(np.uint8), label


def random_masks(shape, seed, density):
    """Independent random voxels: many tiny components, tunnels and cavities in every octant."""
    rng = np.random.default_rng(seed)
    label = (rng.random(shape) < density).astype(np.uint8)
    label[rng.random(shape) < 0.1] = 2
    return (rng.random(shape) < density).astype(np.uint8), label


def holes_and_dust(shape, seed, holes):
    """The label's surface with many small holes punched through it, dust, and a one-voxel shift."""
    from vesukit.synth import synth_volume

    rng = np.random.default_rng(seed)
    label = synth_volume(shape, seed)[1]
    pred = label == 1
    points = np.argwhere(pred)
    for z, y, x in points[rng.integers(len(points), size=holes)]:
        r = int(rng.integers(0, 2))  # 1-voxel and 3-voxel holes
        pred[max(z - r, 0):z + r + 1, max(y - r, 0):y + r + 1, max(x - r, 0):x + r + 1] = False
    pred |= rng.random(shape) < 0.002  # dust
    if seed % 2:
        pred = np.roll(pred, 1, axis=int(rng.integers(0, 3)))
    return pred.astype(np.uint8), label


def smooth_noise(shape, seed, level):
    """Thresholded smoothed noise: blobs with tunnels and enclosed cavities (dim 1 and 2)."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
    other = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
    label = (field > level).astype(np.uint8)
    pred = (0.8 * field + 0.2 * other > level).astype(np.uint8)
    return pred, label


RECIPES = {"synth_defects": synth_defects, "random": random_masks, "holes": holes_and_dust,
           "smooth_noise": smooth_noise}

# (recipe, shape, seed, parameter, view): view "" as made, "flip" reverses axes 1 and 2,
# "transpose" swaps axes 0 and 2 (both applied to pred and label alike).
CASES = [
    ("synth_defects", (48, 64, 40), 1, 0.5, ""),
    ("synth_defects", (48, 64, 40), 1, 0.3, ""),
    ("synth_defects", (48, 64, 40), 1, 0.7, ""),
    ("synth_defects", (64, 64, 64), 2, 0.5, ""),
    ("synth_defects", (64, 64, 64), 2, 0.5, "flip"),
    ("synth_defects", (64, 64, 64), 2, 0.5, "transpose"),
    ("synth_defects", (96, 80, 72), 3, 0.4, ""),
    ("synth_defects", (32, 32, 32), 4, 0.5, ""),
    ("synth_defects", (80, 96, 64), 5, 0.6, ""),
    ("synth_defects", (96, 96, 96), 6, 0.45, ""),
    ("random", (32, 32, 32), 11, 0.3, ""),
    ("random", (32, 32, 32), 12, 0.5, ""),
    ("random", (36, 33, 35), 13, 0.7, ""),
    ("random", (36, 33, 35), 13, 0.7, "transpose"),
    ("random", (40, 40, 40), 14, 0.85, ""),
    ("holes", (48, 48, 48), 21, 60, ""),
    ("holes", (64, 56, 48), 22, 150, ""),
    ("holes", (64, 56, 48), 22, 150, "flip"),
    ("holes", (80, 80, 80), 23, 300, ""),
    ("holes", (96, 64, 80), 24, 500, ""),
    ("smooth_noise", (40, 40, 40), 31, 0.0, ""),
    ("smooth_noise", (48, 40, 56), 32, 0.1, ""),
    ("smooth_noise", (48, 40, 56), 32, 0.1, "transpose"),
    ("smooth_noise", (64, 64, 64), 33, -0.1, ""),
    ("smooth_noise", (32, 48, 64), 34, 0.15, "flip"),
]


def case_name(recipe, shape, seed, parameter, view) -> str:
    name = f"{recipe}_{'x'.join(map(str, shape))}_s{seed}_{parameter}"
    return f"{name}_{view}" if view else name


def make_pair(recipe, shape, seed, parameter, view):
    pred, label = RECIPES[recipe](shape, seed, parameter)
    if view == "flip":
        pred, label = pred[:, ::-1, ::-1], label[:, ::-1, ::-1]
    elif view == "transpose":
        pred, label = pred.transpose(2, 1, 0), label.transpose(2, 1, 0)
    return np.ascontiguousarray(pred), np.ascontiguousarray(label)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", required=True,
                        help="a python that imports betti_matching, surface_distance and cc3d")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    arrays, recipes = {}, {}
    for recipe, shape, seed, parameter, view in CASES:
        name = case_name(recipe, shape, seed, parameter, view)
        pred, label = make_pair(recipe, shape, seed, parameter, view)
        arrays[f"{name}/shape"] = np.array(pred.shape, dtype=np.int32)
        arrays[f"{name}/pred"] = np.packbits(pred != 0)
        arrays[f"{name}/gt"] = np.packbits(label == 1)
        arrays[f"{name}/ignore"] = np.packbits(label == 2)
        recipes[name] = {"recipe": recipe, "shape": list(shape), "seed": seed, "parameter": parameter,
                         "view": view or "as made"}
    arrays["names"] = np.array(json.dumps(list(recipes)))
    np.savez_compressed(args.out / "pairs.npz", **arrays)
    proc = subprocess.run([args.official, str(ROOT / "benchmarks" / "official_metric.py"),
                           "--npz", str(args.out / "pairs.npz")], capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return 1
    expected = {}
    for line in proc.stdout.splitlines():
        result = json.loads(line)
        name = result.pop("name")
        result.pop("seconds_by_term")
        result.pop("cpu_seconds", None)
        result["official_seconds"] = round(result.pop("seconds"), 3)
        expected[name] = {**recipes[name], **result}
    (args.out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    print(f"{len(expected)} pairs -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
