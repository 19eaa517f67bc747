"""Per-volume cost of threshold rules, post-processing steps and the audit, with peers.

Peers, run in this process on the same maps and masks:
- 26-connected labelling: scipy.ndimage.label (vesukit's fallback when cc3d is absent, as on
  Kaggle) against cc3d (when installed);
- foreground-fraction threshold: the exact quantile with numpy.partition, against vesukit's
  1024-bin histogram;
- fill_holes: scipy.ndimage.binary_fill_holes (fills every enclosed pocket) against vesukit's
  (same result with ``max_voxels=0``, plus the size limit);
- close: scipy.ndimage.binary_closing without padding against vesukit's padded closing.

The maps are a synthetic surface label blurred into a probability plus noise, ``--size``^3.
Best of ``--repeat`` runs.

    PYTHONPATH=src python -m benchmarks.bench_postprocess [--size 320] [--repeat 2]
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
from scipy import ndimage

from benchmarks.timing import best_of
from vesukit import _optional
from vesukit.decide import binarize
from vesukit.decide.rules import THRESHOLD_RULES
from vesukit.decide.steps import close, drop_uncertain, fill_holes, label_components, remove_small, zero_border
from vesukit.maps import EnsembleMaps
from vesukit.report import volume_audit, write_preview_png
from vesukit.synth import synth_volume

Maps = partial(EnsembleMaps, n_teachers=3, total_weight=3.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    shape = (args.size,) * 3
    image, label = synth_volume(shape, seed=0)
    rng = np.random.default_rng(0)
    surface = ndimage.gaussian_filter((label == 1).astype(np.float32), 1.0)
    mean = np.clip(1.6 * surface + rng.normal(0, 0.05, shape), 0, 1).astype(np.float32)
    disagreement = (np.abs(mean - 0.5) < 0.2).astype(np.float32) * 0.34
    maps = Maps(mean, np.zeros_like(mean), disagreement)
    mask = binarize(mean, 0.4)
    print(f"volume {shape}, {mask.mean():.1%} marked at 0.4; best of {args.repeat}")
    rows = []

    def row(name, seconds, peer=None):
        ratio = f"{seconds / peer:.2f}x" if peer else ""
        rows.append((name, seconds, ratio))
        print(f"{name:<58} {seconds:8.3f} s  {ratio}", flush=True)

    for name, rule in THRESHOLD_RULES.items():
        row(f"rule {name}", best_of(args.repeat, lambda rule=rule: rule(maps)))
    peer = best_of(args.repeat, lambda: np.partition(mean.ravel(), int(0.94 * mean.size)))
    row("peer: exact quantile (np.partition) for foreground_fraction", peer)
    row("rule foreground_fraction vs the exact quantile",
        best_of(args.repeat, lambda: THRESHOLD_RULES["foreground_fraction"](maps)), peer)

    _optional.disable("cc3d")
    scipy_label = best_of(args.repeat, lambda: label_components(mask))
    row("peer: 26-conn labelling, scipy.ndimage.label", scipy_label)
    scipy_small = best_of(args.repeat, lambda: remove_small(mask, None, 3000))
    row("remove_small(3000) with scipy", scipy_small, scipy_label)
    fill_peer = best_of(args.repeat, lambda: ndimage.binary_fill_holes(mask))
    row("peer: scipy.ndimage.binary_fill_holes", fill_peer)
    row("fill_holes(max_voxels=0) with scipy (no cc3d, as on Kaggle)",
        best_of(args.repeat, lambda: fill_holes(mask, None, 0)), fill_peer)
    _optional.enable("cc3d")
    if _optional.has("cc3d"):
        row("26-conn labelling, cc3d", best_of(args.repeat, lambda: label_components(mask)),
            scipy_label)
        row("remove_small(3000) with cc3d", best_of(args.repeat,
                                                    lambda: remove_small(mask, None, 3000)),
            scipy_small)
        row("drop_uncertain(0.5) with cc3d",
            best_of(args.repeat, lambda: drop_uncertain(mask, maps, 0.5)))
    else:
        print("cc3d not installed: no cc3d rows")
    row("zero_border(3)", best_of(args.repeat, lambda: zero_border(mask, None, 3)))
    row("fill_holes(max_voxels=0), cc3d if installed",
        best_of(args.repeat, lambda: fill_holes(mask, None, 0)), fill_peer)
    row("fill_holes(max_voxels=1000), cc3d if installed",
        best_of(args.repeat, lambda: fill_holes(mask, None, 1000)), fill_peer)
    ball = ndimage.generate_binary_structure(3, 1)
    peer = best_of(args.repeat, lambda: ndimage.binary_closing(mask, ball))
    row("peer: scipy.ndimage.binary_closing (no padding)", peer)
    row("close(radius=1)", best_of(args.repeat, lambda: close(mask, None, 1)), peer)
    with tempfile.TemporaryDirectory() as folder:
        row("volume_audit (components, stats, alarms)",
            best_of(args.repeat, lambda: volume_audit("v", image, maps, mask, 0.4, "fixed",
                                                      ["a"], "none", 0.0)))
        row("write_preview_png (Pillow, 12 tiles)",
            best_of(args.repeat, lambda: write_preview_png(Path(folder) / "v.png", image,
                                                           maps, mask)))


if __name__ == "__main__":
    main()
