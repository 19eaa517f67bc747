"""`vesukit calibrate`: choose the threshold rule and post-processing on labelled volumes."""

from __future__ import annotations

import argparse
from pathlib import Path

from vesukit.commands._arguments import (
    add_device_argument,
    add_labelled_data_argument,
    add_map_cache_arguments,
    add_teachers_argument,
    check_overlap,
)
from vesukit.commands._output import progress_line

DESCRIPTION = """
Run the ensemble once per labelled train volume (maps cached on disk), or read probability maps
already saved (--maps), score every threshold rule, its parameters and post-processing choices
with the local scorer, and write the best as calibration.json with the scores of every candidate.
With --teachers some volumes are held back to check the winner against the best fixed threshold;
with --maps the check is out-of-fold (--folds) with a per-step ablation table. Use the file with
`vesukit predict --calibration` or `vesukit postprocess --calibration`."""


def add_ensemble_arguments(parser: argparse.ArgumentParser, teachers_required: bool = True) -> None:
    """Arguments shared by calibrate and ablate: data, teachers, the cached ensemble pass."""
    add_labelled_data_argument(parser)
    add_teachers_argument(parser, required=teachers_required)
    parser.add_argument("--volumes", type=int, default=None, metavar="N",
                        help="use the first N labelled volumes (default: all)")
    add_device_argument(parser)
    add_map_cache_arguments(parser, "per-teacher probability maps (default: calibration-cache/ beside the "
                            "output); reused while teachers and settings match")


def register(subparsers) -> None:
    from vesukit.calibrate.sample import SEARCH_CROP, SEARCH_VOLUMES

    parser = subparsers.add_parser(
        "calibrate", help="choose threshold rule + post-processing on labelled volumes", description=DESCRIPTION)
    add_ensemble_arguments(parser, teachers_required=False)
    parser.add_argument("--maps", type=Path, default=None, metavar="DIR",
                        help="fit from saved probability maps instead of running teachers: "
                        "<id>.npy (predict --save-maps), nnU-Net <id>.npz, <id>.tif, <id>.zarr")
    parser.add_argument("--folds", type=int, default=3,
                        help="with --maps: out-of-fold folds (3)")
    parser.add_argument("--budget-hours", type=float, default=None, metavar="H",
                        help="time one mask, then search only as many volumes as fit H hours "
                        "(e.g. 8 for a working day; with --teachers they then run on those "
                        "volumes only, their time not counted); default: all volumes")
    parser.add_argument("--steps", default="winners", choices=["basic", "winners"],
                        help="post-processing steps searched: basic (border, dust, closing, "
                        "cavities) or winners (plus per-sheet closing, patching, plugging, median; "
                        "default)")
    parser.add_argument("--out", type=Path, required=True, help="calibration.json to write")
    parser.add_argument("--holdout", type=float, default=0.25,
                        help="share of the volumes held back for the check (0.25; 0 = none)")
    parser.add_argument("--top-k", type=int, default=3,
                        help="rule candidates whose post-processing is searched (3)")
    parser.add_argument("--rules", default=None, metavar="NAME,...",
                        help="search only these threshold rules (default: all of fixed, "
                        "foreground_fraction, otsu, valley, uncertainty)")
    parser.add_argument("--fusion", action="store_true",
                        help="also fit the teachers' weights and fusion mode (probability or "
                        "logit mean) out-of-fold from the cached maps; written into the output "
                        "with the evidence, plus teachers.fused.json beside it")
    parser.add_argument("--finalists", type=int, default=3, metavar="N",
                        help="candidates are scored with a cheap upper bound (surface Dice, VOI, "
                        "Betti numbers exact; dimension-1 matches bounded); the search decides "
                        "on it and gives only the N best of each search the full scorer (3; a "
                        "heuristic, measured against --exhaustive in docs/benchmarks.md). 0: "
                        "the full scorer wherever a bound could change a decision (the "
                        "exhaustive search's decisions, at close to its cost)")
    parser.add_argument("--exhaustive", action="store_true",
                        help="run the full scorer on every candidate, on every whole volume")
    parser.add_argument("--search-volumes", type=int, default=SEARCH_VOLUMES, metavar="N",
                        help=f"the search screens on at most N volumes, spread over the sorted "
                        f"ids ({SEARCH_VOLUMES}; 0: every volume); the folds are judged on every "
                        "volume, whole")
    parser.add_argument("--search-crop", type=int, default=SEARCH_CROP, metavar="EDGE",
                        help=f"... each cut to its centre EDGE^3 crop ({SEARCH_CROP}; 0: whole "
                        "volumes); rules still threshold the whole map")
    parser.add_argument("--scheduler", default="local", metavar="ADDRESS",
                        help="'local' (a Dask LocalCluster here, default), a Dask scheduler "
                        "address (tcp://host:8786) or 'none' (no Dask, one process)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="with --scheduler local: worker processes (default: one per core)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vesukit.calibrate.runner import run_calibration
    from vesukit.errors import UsageError

    if (args.teachers is None) == (args.maps is None):
        raise UsageError("calibrate needs exactly one of --teachers DIR (run the ensemble) "
                         "and --maps DIR (saved probability maps).")
    if args.fusion and args.maps is not None:
        raise UsageError("--fusion fits teacher weights from the teachers' cached maps; use it "
                         "with --teachers, not --maps (saved maps carry the fusion they were "
                         "made with, and the calibration records it).")
    if args.folds < 1:
        raise UsageError(f"--folds {args.folds}: must be >= 1.")
    if args.budget_hours is not None and args.budget_hours <= 0:
        raise UsageError(f"--budget-hours {args.budget_hours}: must be > 0.")
    check_overlap(args.overlap)
    if args.maps is not None and (args.tta is not None or args.overlap is not None):
        raise UsageError("--tta and --overlap set how teachers run; with --maps the maps are "
                         "already made (their maps.json says with which settings).")
    if not 0 <= args.holdout < 1:
        raise UsageError(f"--holdout {args.holdout}: must be in [0, 1).")
    if args.finalists < 0:
        raise UsageError(f"--finalists {args.finalists}: must be >= 0 (0: exact screening).")
    if args.search_volumes < 0 or args.search_crop < 0 or 0 < args.search_crop < 16:
        raise UsageError(f"--search-volumes {args.search_volumes} / --search-crop "
                         f"{args.search_crop}: must be >= 0 (0: all volumes / whole volumes), "
                         "and a crop at least 16 voxels a side.")
    if args.top_k < 1:
        raise UsageError(f"--top-k {args.top_k}: must be >= 1.")
    if args.workers is not None and (args.workers < 1 or args.scheduler != "local"):
        raise UsageError(f"--workers {args.workers}: must be >= 1, and only with --scheduler local; "
                         "an existing scheduler uses the workers started with it "
                         "(`dask worker ADDRESS`).")
    from vesukit.calibrate.search import RULE_GRID

    grid = RULE_GRID
    if args.rules:
        names = [n.strip() for n in args.rules.split(",") if n.strip()]
        unknown = [n for n in names if n not in RULE_GRID]
        if unknown or not names:
            raise UsageError(f"--rules {args.rules}: unknown rule(s) {unknown}; choose from "
                             f"{', '.join(RULE_GRID)}.")
        grid = {n: RULE_GRID[n] for n in names}
    if args.maps is not None:
        return _run_from_maps(args, grid)
    calibrated = run_calibration(args.data, args.teachers, args.out, volumes=args.volumes,
                                 cache_dir=args.cache, device=args.device, tta=args.tta,
                                 overlap=args.overlap, holdout=args.holdout,
                                 dtype=args.cache_dtype, top_k=args.top_k, grid=grid,
                                 winners=args.steps == "winners", fusion=args.fusion,
                                 progress=progress_line, exhaustive=args.exhaustive,
                                 scheduler=args.scheduler, workers=args.workers,
                                 finalists=args.finalists, sample=_sample(args),
                                 budget_hours=args.budget_hours)
    outcome, fusion = calibrated.outcome, calibrated.fusion
    if calibrated.budget:
        print(budget_summary(calibrated.budget))
    if fusion is not None:
        oof = fusion["evidence"]["out_of_fold"]
        weights = ", ".join(f"{n}={w:g}" for n, w in fusion["weights"].items())
        print(f"fusion: {fusion['mode']} mean, weights {weights} ({fusion['label']}); the rule "
              "and chain below were searched on the fused maps")
        if oof:
            print(f"  out-of-fold: fitted {oof['score']:.4f} vs equal-weight probability "
                  f"{oof['equal_probability']:.4f}")
        print(f"wrote {fusion['manifest']} (use it with predict --teachers)")
    result = outcome.search
    ranked = sorted((c for c in result.evaluated if c.exact), key=lambda c: -c.mean)
    print(f"{len(result.evaluated)} candidates on {measured_on(result.winner.scores)} "
          f"({result.masks_scored} masks scored). Best:")
    for c in ranked[:8]:
        print(f"  {c.mean:.4f} +- {c.std:.4f} (min {c.worst:.4f})  {c.candidate.describe()}")
    if result.best_fixed is not None:
        print(f"best fixed threshold: {result.best_fixed.mean:.4f}  "
              f"{result.best_fixed.candidate.describe()}")
    if result.held_back:
        held = result.held_back
        print(f"held back ({len(held['volumes'])} volume(s)): winner "
              f"{held['winner']['mean']:.4f}, best fixed (chosen on fit) "
              f"{held['best_fixed_on_fit']['mean']:.4f}, best fixed measured there "
              f"{held['best_fixed_on_held_back']['mean']:.4f}")
        if not held["winner_holds_up"]:
            print("WARNING: the winner scores below the best fixed threshold on the held-back "
                  "volumes; consider more volumes or the fixed threshold.")
    print(f"wrote {args.out}: {result.winner.candidate.describe()}; score on the "
          f"{measured_on(result.winner.scores, fit=True)} {result.winner.mean:.6f}")
    return 0


def budget_summary(b: dict) -> str:
    """What --budget-hours allowed, as printed after the search."""
    return (f"budget {b['hours']} h: at most {b['seconds_per_volume_at_most']:.1f} s per volume "
            f"({b['screened_masks_per_volume_bound']} screened + "
            f"{b['exact_masks_per_volume_bound']} exact masks per searched volume, "
            f"{b['whole_masks_per_judged_volume']} whole per judged volume): searched "
            f"{b['volumes_searched']} of {b['volumes_available']} volume(s) "
            f"(at most {b['estimated_hours_at_most']:.2f} h)")


def measured_on(scores, fit: bool = False) -> str:
    from vesukit.calibrate.sample import measured_on as words

    said = words(scores)
    return f"{len(scores)} fit volume(s)" if fit and said.endswith("volume(s)") else said


def _sample(args: argparse.Namespace):
    from vesukit.calibrate.sample import SearchSample

    return SearchSample(volumes=args.search_volumes, crop=args.search_crop)


def _run_from_maps(args: argparse.Namespace, grid) -> int:
    from vesukit.calibrate.runner import run_calibration_from_maps

    oof = run_calibration_from_maps(args.maps, args.data, args.out, volumes=args.volumes,
                                    folds=args.folds, top_k=args.top_k, grid=grid,
                                    winners=args.steps == "winners",
                                    budget_hours=args.budget_hours, progress=progress_line,
                                    exhaustive=args.exhaustive, scheduler=args.scheduler,
                                    workers=args.workers, finalists=args.finalists,
                                    sample=_sample(args))
    if oof.budget:
        print(budget_summary(oof.budget))
    print(f"out-of-fold ({len(oof.folds)} fold(s), {sum(map(len, oof.folds))} volume(s), "
          f"{oof.masks_scored} masks scored in {oof.seconds:.1f} s, "
          f"{oof.seconds / max(oof.masks_scored, 1):.2f} s/mask):")
    print(f"  calibrated rule + chain       {oof.winner_mean:.4f}")
    print(f"  best fixed, no post-processing {oof.baseline_mean:.4f}")
    print(f"  gain                          {oof.winner_mean - oof.baseline_mean:+.4f}")
    for note in oof.notes:
        print(f"  note: {note}")
    if oof.ablation:
        print("ablation, out-of-fold (score of each fold's winner, and with the step removed):")
        print(f"  {'step':28s} {'with':>7s} {'without':>8s} {'delta':>8s}  folds")
        for row in sorted(oof.ablation, key=lambda r: -r["delta"]):
            print(f"  {row['step']:28s} {row['with']:7.4f} {row['without']:8.4f} "
                  f"{row['delta']:+8.4f}  {row['folds']}")
    print(f"wrote {args.out}: {oof.final.winner.candidate.describe()}; score on the "
          f"{measured_on(oof.final.winner.scores)} {oof.final.winner.mean:.6f}")
    return 0
