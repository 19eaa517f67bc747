"""Score of the calibrated decision against the best fixed threshold, out-of-fold.

A labelled synthetic set (``vesukit.synth``) gets probability maps with the defects real
ensembles make (``vesukit.synth_defects``: holes, tears, bridges, merged sheets, dust, and a
per-volume logit offset for over/under-confidence), saved as ``.npy`` like `predict
--save-maps`. Then `calibrate --maps` runs as the user runs it (out-of-fold, the exact scorer),
and the out-of-fold score of the calibrated rule + chain is compared with the best single
fixed threshold without post-processing (chosen on the same fit folds), with the per-step
ablation table and the search cost (masks scored, seconds per mask).

    PYTHONPATH=src python -m benchmarks.bench_decide_score [--volumes 12] [--size 64] [--folds 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def build(folder: Path, volumes: int, size: int, seed: int) -> tuple[Path, Path]:
    from vesukit.data import list_ids, read_volume
    from vesukit.synth import make_competition_root
    from vesukit.synth_defects import Defects, defective_map

    root = make_competition_root(folder / "root", n_test=1, n_train=volumes,
                                 shapes=[(size, size, size)], seed=seed)
    maps = folder / "maps"
    maps.mkdir()
    rng = np.random.default_rng(seed)
    scale = (size / 64) ** 2
    for index, volume_id in enumerate(list_ids(root, "train")):
        label = read_volume(root / "train_labels" / f"{volume_id}.tif")
        defects = Defects(holes=int(rng.integers(2, 8) * scale), tears=int(rng.integers(0, 3)),
                          bridges=int(rng.integers(2, 8) * scale), merges=int(rng.integers(0, 3)),
                          dust=int(rng.integers(20, 120) * scale),
                          bias=float(rng.uniform(-1.5, 1.5)))
        np.save(maps / f"{volume_id}.npy", defective_map(label, seed + index, defects)
                .astype(np.float16))
    return root, maps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--volumes", type=int, default=12)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--steps", default="winners", choices=["basic", "winners"])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from vesukit.calibrate.runner import run_calibration_from_maps

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        root, maps = build(Path(tmp), args.volumes, args.size, args.seed)
        print(f"built {args.volumes} labelled volumes of {args.size}^3 with defective maps in "
              f"{time.perf_counter() - start:.1f} s")
        oof = run_calibration_from_maps(maps, root, Path(tmp) / "calibration.json",
                                        folds=args.folds, winners=args.steps == "winners")
    print(f"out-of-fold, {len(oof.folds)} folds, exact scorer:")
    print(f"  calibrated rule + chain          {oof.winner_mean:.4f}")
    print(f"  best fixed threshold, no post     {oof.baseline_mean:.4f}")
    print(f"  gain                             {oof.winner_mean - oof.baseline_mean:+.4f}")
    wins = sum(oof.winner_scores[v] > oof.baseline_scores[v] for v in oof.winner_scores)
    print(f"  volumes improved                 {wins} of {len(oof.winner_scores)}")
    print("fold winners:")
    for text in oof.fold_winners:
        print(f"  {text}")
    print("ablation (out-of-fold; each fold's winner with one step removed):")
    print(f"  {'step':24s} {'with':>7s} {'without':>8s} {'delta':>8s}  folds")
    for row in sorted(oof.ablation, key=lambda r: -r["delta"]):
        print(f"  {row['step']:24s} {row['with']:7.4f} {row['without']:8.4f} "
              f"{row['delta']:+8.4f}  {row['folds']}")
    per_mask = oof.seconds / max(oof.masks_scored, 1)
    print(f"search: {oof.masks_scored} masks scored in {oof.seconds:.1f} s ({per_mask:.3f} s "
          f"per mask of {args.size}^3); final: {oof.final.winner.candidate.describe()}")
    if args.json:
        args.json.write_text(json.dumps(oof.to_json(), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
