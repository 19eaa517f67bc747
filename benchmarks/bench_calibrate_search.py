"""The calibration search at scale: the default (ranked, on Dask) against the exhaustive one.

    PYTHONPATH=src python benchmarks/bench_calibrate_search.py --volumes 4 --size 64 \
        --steps winners --runs default,workers1,inprocess,exhaustive
    PYTHONPATH=src python benchmarks/bench_calibrate_search.py --data DIR --volumes 100 \
        --size 320 --teachers TEACHERS --overlap 0 --steps winners --runs default
    PYTHONPATH=src python benchmarks/bench_calibrate_search.py --profile 320
    PYTHONPATH=src python benchmarks/bench_calibrate_search.py --median 320

Writes a synthetic competition root with ``--volumes`` labelled train volumes of ``--size``^3
and one defective probability map per volume (vesukit.synth_defects: holes, tears, bridges,
merges, dust, a per-volume bias), then runs `vesukit calibrate --maps` (the library call the
command makes) once per run:

- ``default``: the command's defaults (the ranked search: bounds decide, the 3 finalists of
  each search get the full scorer; a local Dask cluster, one worker per core);
- ``workers1`` / ``workers2``: the same with 1 or 2 local workers;
- ``inprocess``: the same search without Dask (``--scheduler none``);
- ``screened``: the exact-by-construction screened search (``--finalists 0``);
- ``exhaustive``: every mask through the full scorer (``--exhaustive``), on the local cluster.

Per run: wall seconds, masks, candidates rescored exactly, the chosen decision, its exact mean
score on all volumes (the final search), the out-of-fold figure, and the load average. The
decisions of the screened runs are compared with the exhaustive one's.

With ``--teachers``, each run is `vesukit calibrate --teachers` instead: the teachers' maps of
the labelled volumes are made once into a cache under ``--data`` (inference, timed apart and not
counted: a GPU's work in a Kaggle session), then the command runs as a second call does, reusing
the cache, so its wall time is the search and the held-back check.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

RUNS = {
    "default": {},
    "unsampled": {"sample": "off"},  # the ranked search on every whole volume (before the sample)
    "workers1": {"workers": 1},
    "workers2": {"workers": 2},
    "inprocess": {"scheduler": "none"},
    "screened": {"finalists": 0},
    "exhaustive": {"exhaustive": True},
}


BIASES = [-1.0, 0.5, 0.0, 1.0, -0.5, 1.5]


def make_data(folder: Path, volumes: int, size: int, seed: int) -> tuple[Path, Path]:
    """The root and one defective map per train volume, made on every core (the same data
    whatever the core count: each volume and map has its own seed)."""
    from concurrent.futures import ProcessPoolExecutor

    from vesukit.data import list_ids
    from vesukit.synth import make_competition_root

    workers = os.cpu_count() or 1
    root = make_competition_root(folder / "root", n_test=1, n_train=volumes,
                                 shapes=[(size, size, size)], seed=seed, workers=workers)
    maps = folder / "maps"
    maps.mkdir()
    jobs = [(root, maps, volume_id, seed + index, BIASES[index % len(BIASES)])
            for index, volume_id in enumerate(list_ids(root, "train"))]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write_map, jobs))
    return root, maps


def _write_map(job) -> None:
    from vesukit.data import read_volume
    from vesukit.synth_defects import Defects, defective_map

    root, maps, volume_id, map_seed, bias = job
    label = read_volume(root / "train_labels" / f"{volume_id}.tif")
    p = defective_map(label, map_seed, Defects(bias=bias))
    np.save(maps / f"{volume_id}.npy", p.astype(np.float16))


def whole_mean(root: Path, maps: Path, volume_ids, calibration) -> float:
    """The decision's exact mean score on the whole volumes, as predict would decide them."""
    from vesukit.data import read_volume
    from vesukit.decide.apply import decide
    from vesukit.maps import maps_from_probability
    from vesukit.metric import score_volume

    scores = []
    for volume_id in volume_ids:
        mask, _ = decide(maps_from_probability(np.load(maps / f"{volume_id}.npy")), calibration)
        scores.append(score_volume(mask, read_volume(root / "train_labels" / f"{volume_id}.tif")).score)
    return float(np.mean(scores))


def one_run(name: str, root: Path, maps: Path, out: Path, steps: str, folds: int,
            take: int | None = None, score_whole: bool = False) -> dict:
    from vesukit.calibrate.runner import run_calibration_from_maps
    from vesukit.calibrate.sample import SearchSample

    settings = dict(RUNS[name])
    if settings.get("sample") == "off":
        settings["sample"] = SearchSample(volumes=0, crop=0)
    start = time.perf_counter()
    oof = run_calibration_from_maps(maps, root, out, folds=folds, winners=steps == "winners",
                                    progress=lambda text: print("   ", text, flush=True),
                                    volumes=take, **settings)
    wall = time.perf_counter() - start
    written = json.loads(out.read_text())
    winner = oof.final.winner
    volumes = written["evidence"]["volumes"]
    whole = whole_mean(root, maps, volumes, winner.candidate.calibration()) if score_whole else None
    return {"run": name, "settings": {k: str(v) for k, v in settings.items()},
            "wall_s": round(wall, 1), "volumes": len(volumes), "whole_mean": whole,
            "masks": oof.masks_scored, "load_after": os.getloadavg()[0],
            "engine": written["evidence"]["search_engine"],
            "decision": winner.candidate.describe(), "decision_key": winner.candidate.key,
            "exact_mean": winner.mean, "oof_winner_mean": oof.winner_mean,
            "oof_gain": oof.winner_mean - oof.baseline_mean,
            "candidates": {c.candidate.key: c.mean for c in oof.final.evaluated if c.exact}}


def teacher_run(name: str, root: Path, teachers: Path, cache: Path, out: Path, steps: str,
                take: int | None, tta: str, overlap: float, holdout: float = 0.25) -> dict:
    """`vesukit calibrate --teachers` (the library call): the teachers' maps are made once into
    ``cache`` (timed apart: inference, which a GPU does in a Kaggle session), then the command
    runs as a user's second call does, reusing the cache, so its wall time is the search's."""
    from vesukit.calibrate.runner import cached_ensemble_pass, run_calibration
    from vesukit.calibrate.sample import SearchSample

    settings = dict(RUNS[name])
    if settings.get("sample") == "off":
        settings["sample"] = SearchSample(volumes=0, crop=0)
    say = lambda text: print("   ", text, flush=True)  # noqa: E731
    start = time.perf_counter()
    cached_ensemble_pass(root, teachers, cache, take, "cpu", tta, overlap, "float16", say)
    inference = time.perf_counter() - start
    start = time.perf_counter()
    chosen = run_calibration(root, teachers, out, volumes=take, cache_dir=cache, device="cpu",
                             tta=tta, overlap=overlap, winners=steps == "winners", progress=say,
                             holdout=holdout, **settings)
    wall = time.perf_counter() - start
    written = json.loads(out.read_text())
    winner = chosen.outcome.search.winner
    held = written["evidence"].get("held_back", {})
    return {"run": f"teachers-{name}", "settings": {k: str(v) for k, v in settings.items()},
            "wall_s": round(wall, 1), "inference_s": round(inference, 1),
            "volumes": len(written["evidence"]["fit_volumes"])
            + len(written["evidence"]["held_back_volumes"]),
            "whole_mean": None, "masks": chosen.outcome.search.masks_scored,
            "load_after": os.getloadavg()[0], "engine": written["evidence"]["search_engine"],
            "decision": winner.candidate.describe(), "decision_key": winner.candidate.key,
            "exact_mean": winner.mean, "held_back": held,
            "candidates": {c.candidate.key: c.mean for c in chosen.outcome.search.evaluated
                           if c.exact}}


def profile(size: int, seed: int) -> None:
    """Where one candidate's time goes on one size^3 volume: its threshold, each
    post-processing step, the exact scorer per term, the screening bound, prefix reuse."""
    from vesukit.calibrate.engine import PrefixCache, chain_mask
    from vesukit.calibrate.search import RULE_GRID, LabelledVolume, postprocess_options
    from vesukit.decide import ThresholdRule, binarize
    from vesukit.decide.steps import apply_postprocess
    from vesukit.maps import maps_from_probability
    from vesukit.metric import PreparedLabel
    from vesukit.synth import synth_volume
    from vesukit.synth_defects import defective_map

    def timed(fn):
        start = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - start

    _, label = synth_volume((size, size, size), seed)
    maps = maps_from_probability(defective_map(label, seed).astype(np.float16))
    PreparedLabel(label[:16, :16, :16]).score(label[:16, :16, :16])  # load the kernels
    prepared, seconds = timed(lambda: PreparedLabel(label, name="profile", workers=1))
    print(f"label preparation {seconds:.2f} s")
    for name, options in RULE_GRID.items():
        if name == "uncertainty":
            continue  # saved maps carry no disagreement
        threshold, seconds = timed(lambda n=name, o=options[0]: ThresholdRule(n, dict(o))(maps))
        print(f"rule {name} {dict(options[0])}: threshold {threshold:.3f} in {seconds:.2f} s")
    mask, seconds = timed(lambda: binarize(maps.mean, 0.5))
    print(f"binarize {seconds:.2f} s (foreground {mask.mean():.3f})")
    options = postprocess_options(mask.size, winners=True, disagreement=False)
    for slot, choices in options.items():
        for choice in choices:
            if choice is not None:
                step = {"step": slot, **choice}
                _, seconds = timed(lambda s=step: apply_postprocess(mask, (s,), maps))
                print(f"step {slot} {choice}: {seconds:.2f} s")
    exact, seconds = timed(lambda: prepared.score(mask, workers=1))
    print(f"exact score {exact.score:.6f} in {seconds:.2f} s, one thread; per term (s): "
          f"{ {k: round(v, 2) for k, v in exact.timings.items()} }; counts {exact.topo_counts}")
    bound, seconds = timed(lambda: prepared.bound(mask))
    print(f"screening bound {bound.score:.6f} in {seconds:.2f} s; counts {bound.topo_counts}")
    volume = LabelledVolume("profile", maps, prepared)
    chain = ({"step": "zero_border", "width": 3}, {"step": "remove_small", "min_voxels": 3277},
             {"step": "close", "radius": 1})
    cache = PrefixCache()
    _, cold = timed(lambda: chain_mask(volume, 0.5, chain, "p", cache))
    other = chain[:2] + ({"step": "fill_holes", "max_voxels": 0},)
    _, warm = timed(lambda: chain_mask(volume, 0.5, other, "p", cache))
    print(f"chain of 3 steps from scratch {cold:.2f} s; another last step on the cached "
          f"2-step prefix {warm:.2f} s")


def median_speed(size: int, seed: int) -> None:
    """median_filter with its numba majority against its numpy one (the fallback without
    numba), on the same size^3 mask in one process: seconds, ratio, equal voxel for voxel."""
    from vesukit.decide import binarize, steps
    from vesukit.maps import maps_from_probability
    from vesukit.synth import synth_volume
    from vesukit.synth_defects import defective_map

    _, label = synth_volume((size, size, size), seed)
    mask = binarize(maps_from_probability(defective_map(label, seed).astype(np.float16)).mean, 0.5)
    steps.median_filter(mask[:24, :24, :24])  # load the compiled kernel
    compiled = steps.kernels
    for options in ({"rounds": 3}, {"rounds": 7, "size": 3, "connectivity": 6}):
        start = time.perf_counter()
        fast = steps.median_filter(mask, **options)
        numba_s = time.perf_counter() - start
        steps.kernels = lambda: None
        try:
            start = time.perf_counter()
            slow = steps.median_filter(mask, **options)
            numpy_s = time.perf_counter() - start
        finally:
            steps.kernels = compiled
        print(f"median_filter {options} at {size}^3: numpy {numpy_s:.2f} s, numba {numba_s:.2f} s, "
              f"{numpy_s / numba_s:.1f}x, equal {np.array_equal(fast, slow)}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", default="basic", choices=["basic", "winners"])
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runs", default="default,exhaustive")
    parser.add_argument("--json", type=Path, default=None, help="also write the records here")
    parser.add_argument("--data", type=Path, default=None, metavar="FOLDER",
                        help="keep the synthetic root and maps here (made once, reused after)")
    parser.add_argument("--take", type=int, default=None, metavar="N",
                        help="search the first N volumes of --data only")
    parser.add_argument("--score-whole", action="store_true",
                        help="also score each run's decision on the whole volumes (exact), "
                        "so a search on crops is compared with the exhaustive one fairly")
    parser.add_argument("--teachers", type=Path, default=None, metavar="DIR",
                        help="instead of the saved maps: calibrate from this teachers folder "
                        "(its maps cached once under --data, then the search timed)")
    parser.add_argument("--tta", default="none", help="with --teachers (none)")
    parser.add_argument("--overlap", type=float, default=0.5, help="with --teachers (0.5)")
    parser.add_argument("--holdout", type=float, default=0.25,
                        help="with --teachers: share of the volumes held back (0.25)")
    parser.add_argument("--profile", type=int, default=None, metavar="SIZE",
                        help="instead: where one candidate's time goes on one SIZE^3 volume")
    parser.add_argument("--median", type=int, default=None, metavar="SIZE",
                        help="instead: median_filter's numba majority against its numpy one at SIZE^3")
    args = parser.parse_args()
    if args.median:
        print(f"cores={os.cpu_count()} load={os.getloadavg()}", flush=True)
        median_speed(args.median, args.seed)
        print(f"load at the end {os.getloadavg()}")
        return 0
    if args.profile:
        print(f"cores={os.cpu_count()} load={os.getloadavg()}", flush=True)
        profile(args.profile, args.seed)
        print(f"load at the end {os.getloadavg()}")
        return 0
    names = [n for n in args.runs.split(",") if n]
    print(f"cores={os.cpu_count()} load={os.getloadavg()} volumes={args.volumes} "
          f"size={args.size}^3 steps={args.steps} folds={args.folds}", flush=True)
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        if args.data is not None and (args.data / "maps").is_dir():
            root, maps = args.data / "root", args.data / "maps"
            print(f"data reused from {args.data}", flush=True)
        else:
            folder = args.data or Path(tmp)
            folder.mkdir(parents=True, exist_ok=True)
            root, maps = make_data(folder, args.volumes, args.size, args.seed)
            print(f"data written in {time.perf_counter() - start:.1f} s", flush=True)
        for name in names:
            print(f"run {name} {RUNS[name]} (load {os.getloadavg()[0]:.1f})", flush=True)
            if args.teachers is not None:
                cache = (args.data or Path(tmp)) / f"teacher-cache-{args.tta}-{args.overlap:g}"
                record = teacher_run(name, root, args.teachers, cache, Path(tmp) / f"{name}.json",
                                     args.steps, args.take, args.tta, args.overlap,
                                     args.holdout)
                held = record["held_back"]
                print(f"  inference (made the cache once, not counted): {record['inference_s']} s;"
                      f" held-back check on {len(held.get('volumes', []))} volumes: winner "
                      f"{held.get('winner', {}).get('mean', float('nan')):.6f}, against the best "
                      f"fixed threshold there {held.get('winner_vs_best_fixed_on_held_back', 0):+.4f}"
                      f", against the fit's best fixed {held.get('winner_vs_fixed_on_fit', 0):+.4f}",
                      flush=True)
            else:
                record = one_run(name, root, maps, Path(tmp) / f"{name}.json", args.steps,
                                 args.folds, args.take, args.score_whole)
            records.append(record)
            print(f"  {name}: {record['wall_s']} s, {record['masks']} masks, rescored "
                  f"{record['engine']['candidates_rescored_exactly']}, workers "
                  f"{record['engine']['workers']}, load {record['load_after']:.1f}\n"
                  f"    work: {record['engine']['screened_masks']} screened masks "
                  f"{record['engine']['screened_s']:.1f} s, {record['engine']['exact_masks']} exact "
                  f"masks {record['engine']['exact_s']:.1f} s (worker seconds)\n"
                  f"    decision {record['decision']}\n    exact mean {record['exact_mean']:.6f}"
                  + (f"   out-of-fold {record['oof_winner_mean']:.6f} (gain "
                     f"{record['oof_gain']:+.4f})" if "oof_gain" in record else "")
                  + (f"\n    on the whole volumes {record['whole_mean']:.6f}"
                     if record["whole_mean"] is not None else ""),
                  flush=True)
    by_name = {r["run"].removeprefix("teachers-"): r for r in records}
    if "exhaustive" in by_name:
        reference = by_name["exhaustive"]
        for r in records:
            if r is reference:
                continue
            same = r["decision_key"] == reference["decision_key"]
            # the decision's exact mean on the whole volumes (a search on crops reports its
            # crops' mean, so with --score-whole both are measured the same way)
            mine = r["whole_mean"] if r["whole_mean"] is not None else r["exact_mean"]
            print(f"{r['run']} vs exhaustive: same decision {same}; exact mean on the whole "
                  f"volumes {mine:.6f} vs {reference['exact_mean']:.6f} "
                  f"(difference {reference['exact_mean'] - mine:+.6f}); wall "
                  f"{reference['wall_s'] / r['wall_s']:.1f}x faster")
            if r.get("held_back") and reference.get("held_back"):
                held, theirs = r["held_back"]["winner"]["mean"], reference["held_back"]["winner"]["mean"]
                print(f"  on the held-back volumes, whole: {held:.6f} vs {theirs:.6f} "
                      f"(difference {theirs - held:+.6f})")
    for r in records[1:]:
        if "exhaustive" not in (r["run"].removeprefix("teachers-"),
                                records[0]["run"].removeprefix("teachers-")):
            print(f"{r['run']} identical to {records[0]['run']}: "
                  f"{r['candidates'] == records[0]['candidates'] and r['decision_key'] == records[0]['decision_key']}")
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))
    print(f"load at the end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
