"""The presets with public code against the teams' own code, side by side, same process, same mask.

The teams' code is not in this repository: ``--reference DIR`` names a folder holding the
functions reconstructed from the teams' public repositories (docs/winners.md says which and how):
``first_ref.postprocess_cpu(mask)``, ``second_ref.second_place(probability)`` (run after
``numpy.random.seed(3)``, the seed vesukit's step gets), ``ninth_ref.apply_post_processing(mask)``
and ``tenth_ref.postprocess_mask_voxel(mask)``. The mask: ``bench_decide_speed.make_probability``
(a synthetic label through ``vesukit.synth_defects``) at ``--size``^3, thresholded at each
preset's threshold with ``vesukit.decide.binarize``.

vesukit runs the preset's chain (``apply_postprocess``), best of ``--repeat``, its numba kernels
compiled first on a 64^3 volume (not counted). The team's code works on the whole volume once per
sheet (1st) or component (10th); ``--team-limit N`` runs it on the first N of them only and scales
its time by their count (said in the output), since the 10th place's takes about a minute per
component at 320^3 on 2 cores. With the limit off (0) the two masks are compared too (Dice).
The 2nd place's code is compiled first too (its numba rasterisation). ``--team-blas one`` runs
the team's code with BLAS/LAPACK on one thread, as vesukit's ``second_place`` runs its fits;
``both`` times it as published and then again on one thread. The load average is printed
before and after. ``--save DIR`` writes the team's mask there (bit-packed npz with the
fingerprint of its thresholded input, as tests/data/winners holds them).

    PYTHONPATH=src python -m benchmarks.bench_winners --reference /tmp/winners-ref [--size 320] \
        [--presets first_place,second_place,ninth_place,tenth_place] [--team-limit N] [--repeat 1] \
        [--cache DIR] [--save DIR] [--team-blas published|one|both]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from benchmarks.bench_decide_speed import make_probability
from vesukit.decide.calibration import binarize
from vesukit.decide.presets import PRESETS
from vesukit.decide.steps import apply_postprocess
from vesukit.maps import maps_from_probability

TEAM = {"first_place": ("first_ref", "postprocess_cpu"),
        "second_place": ("second_ref", "second_place"),
        "ninth_place": ("ninth_ref", "apply_post_processing"),
        "tenth_place": ("tenth_ref", "postprocess_mask_voxel")}
MAP_SEED = 3          # make_probability's map; the 2nd place's random draws are seeded with it too


def run_ours(preset: str, mask: np.ndarray, probability: np.ndarray) -> np.ndarray:
    """The preset's chain; the 2nd place's starts from the map, its draws seeded as the team's."""
    chain, maps = PRESETS[preset]["postprocess"], None
    if preset == "second_place":
        chain, maps = [{**step, "seed": MAP_SEED} for step in chain], maps_from_probability(probability)
    return apply_postprocess(mask, chain, maps)


def run_team(preset: str, function, mask: np.ndarray, probability: np.ndarray) -> np.ndarray:
    """The team's function: the 2nd place's on the map after ``numpy.random.seed``, the others'
    on the thresholded mask."""
    if preset == "second_place":
        np.random.seed(MAP_SEED)
        return function(probability)
    return function(mask.copy())


def one_blas_thread(function):
    def limited(*arguments):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return function(*arguments)
    return limited


def team_units(preset: str, mask: np.ndarray) -> tuple[list[np.ndarray], int]:
    """The pieces the team's code loops over, as masks that hold only the first few of them,
    and how many there are: sheets (26-connected, after its border and 6-connected dust, at
    most 40) for the 1st place, components of >= 3000 voxels for the 10th. The 9th runs whole."""
    if preset in ("ninth_place", "second_place"):
        return [], 0
    volume = mask.astype(bool)
    if preset == "first_place":
        volume[:3], volume[-3:], volume[:, :3], volume[:, -3:], volume[:, :, :3], volume[:, :, -3:] = (0,) * 6
        labels, count = ndimage.label(volume)
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        big = sizes >= 20000
        big[0] = False
        volume = big[labels]
        labels, count = ndimage.label(volume, np.ones((3, 3, 3)))
        return [labels == i for i in range(1, min(count, 40) + 1)], min(count, 40)
    labels, count = ndimage.label(volume)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    big = np.flatnonzero(sizes >= 3000)
    big = big[big > 0]
    return [labels == i for i in big], len(big)


def save_team_mask(folder: str, preset: str, mask: np.ndarray, team: np.ndarray, seed: int) -> Path:
    """The team's mask, bit-packed, with the sha256 of the packed thresholded input it came from."""
    tag = "x".join(str(n) for n in mask.shape)
    path = Path(folder) / f"{preset}_{tag}_benchmap_seed{seed}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, mask=np.packbits((team != 0).ravel()), shape=np.array(mask.shape),
                        input_sha256=np.array(hashlib.sha256(np.packbits(mask.ravel()).tobytes()).hexdigest()))
    return path


def best_of(repeat: int, function, *arguments) -> tuple[float, np.ndarray]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = function(*arguments)
        times.append(time.perf_counter() - start)
    return min(times), out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help="folder of the reconstructed team functions")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--presets", default="first_place,ninth_place,tenth_place")
    parser.add_argument("--team-limit", type=int, default=0,
                        help="run the team's code on this many sheets/components and scale (0: all)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--cache", default=None)
    parser.add_argument("--save", default=None, help="folder for the team's masks (full runs only)")
    parser.add_argument("--team-blas", choices=["published", "one", "both"], default="published",
                        help="the team's code with BLAS as it comes, on one thread (as second_place runs), or both")
    args = parser.parse_args(argv)
    sys.path.insert(0, args.reference)
    print(f"load average before: {os.getloadavg()}")
    probability = make_probability(args.size, seed=MAP_SEED, cache=args.cache)
    small = make_probability(64, seed=MAP_SEED, cache=args.cache)
    rows = []
    for preset in args.presets.split(","):
        threshold = PRESETS[preset]["threshold"]
        run_ours(preset, binarize(small, threshold), small)               # compile the kernels
        mask = binarize(probability, threshold)
        ours, out = best_of(args.repeat, run_ours, preset, mask, probability)
        module_name, function_name = TEAM[preset]
        team_function = getattr(importlib.import_module(module_name), function_name)
        if preset == "second_place":                                      # compile its numba loop
            run_team(preset, team_function, binarize(small, threshold), small)
        units, count = team_units(preset, mask)
        if args.team_limit and count > args.team_limit:
            subset = np.zeros_like(mask, dtype=bool)
            for unit in units[:args.team_limit]:
                subset |= unit
            seconds, _ = best_of(1, run_team, preset, team_function, subset.astype(np.uint8), probability)
            team = seconds * count / args.team_limit
            note, agreement = f"{args.team_limit} of {count} units, scaled", "-"
        else:
            runner = one_blas_thread(run_team) if args.team_blas == "one" else run_team
            team, reference = best_of(1, runner, preset, team_function, mask, probability)
            total = int(out.sum()) + int(reference.sum())
            differ = int(np.count_nonzero((out != 0) != (reference != 0)))
            agreement = f"{2 * int(np.count_nonzero(out & (reference != 0))) / max(total, 1):.6f}"
            agreement += " (equal)" if differ == 0 else f" ({differ} voxels differ)"
            note = f"all {count} units" if count else "whole volume"
            note += ", team with BLAS on 1 thread" if args.team_blas == "one" else ""
            if args.save:
                print(f"team's mask saved: {save_team_mask(args.save, preset, mask, reference, MAP_SEED)}")
        rows.append((preset, ours, team, note, agreement))
        print(f"{preset}: vesukit {ours:.2f} s, team {team:.2f} s ({note}), Dice {agreement}", flush=True)
        if args.team_blas == "both":
            team, _ = best_of(1, one_blas_thread(run_team), preset, team_function, mask, probability)
            rows.append((preset, ours, team, note + ", team with BLAS on 1 thread", "-"))
            print(f"{preset}: team with BLAS on 1 thread {team:.2f} s", flush=True)
    print(f"load average after: {os.getloadavg()}")
    print(f"\n| {args.size}³ volume | vesukit s | team's code s | team / vesukit | team run | Dice |")
    print("|---|---:|---:|---:|---|---:|")
    for preset, ours, team, note, agreement in rows:
        print(f"| `{preset}` | {ours:.2f} | {team:.1f} | {team / ours:.1f}x | {note} | {agreement} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
