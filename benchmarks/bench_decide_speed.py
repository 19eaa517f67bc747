"""Cost of vesukit's own per-sheet chain per volume: vesukit against a plain scipy/scikit-image run.

The chain is ``SHEET_CHAIN``: vesukit's per-sheet steps (sheet_close, patch_holes, plug_holes)
as the ``first_place`` preset ran them before it became the 1st place's own code (issue 25;
``benchmarks.bench_winners`` times that against the team's code).

The mask: a synthetic ``--size``^3 label (``vesukit.synth``) through ``vesukit.synth_defects``
(holes, tears, bridges, merges, dust), thresholded at the preset's 0.26. Both sides run the
same steps with the same parameters, in this process, on the same mask:

- vesukit: ``apply_postprocess`` with ``SHEET_CHAIN`` (per-sheet work on each
  sheet's own voxels with numba, cc3d labelling when installed; the kernels are compiled on a
  small volume first, and that time is printed apart);
- plain: what a straightforward CPU implementation does: skimage ``remove_small_objects`` and
  ``label``; per sheet on the whole volume, ``ndimage.binary_closing`` with the oriented
  ellipsoid, the same height-map patch, the 2x2x2 plug pass and skimage ``euler_number``, the
  3x3x3 paste guard by ``binary_dilation`` of the placed sheets; ``binary_fill_holes``.

Best of ``--repeat``; the plain side can be limited to ``--plain-sheets`` sheets and is then
scaled by sheet count (said in the output; ``--plain-sheets 0`` skips it). ``--tunnels`` also
times the ``fifth_place`` chain's ``fill_tunnels`` (13 rounds) on the same map, thresholded at
0.3 (numba only). ``VESUKIT_DISABLE=numba`` times the steps' numpy form instead. ``--cache
DIR`` keeps the synthetic map as ``.npy`` between runs (building it at 320^3 takes about 40 s).

    PYTHONPATH=src python -m benchmarks.bench_decide_speed [--size 320] [--repeat 1] \
        [--plain-sheets N] [--tunnels] [--cache DIR]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage


def make_probability(size: int, seed: int = 3, cache: str | None = None) -> np.ndarray:
    """A synthetic label's probability map with the defects real ensembles make."""
    from pathlib import Path

    from vesukit.synth import synth_volume
    from vesukit.synth_defects import Defects, defective_map

    saved = Path(cache) / f"decide_speed_{size}_{seed}.npy" if cache else None
    if saved is not None and saved.exists():
        return np.load(saved)
    _, label = synth_volume((size, size, size), seed=seed)
    scale = (size / 64) ** 2
    probability = defective_map(label, seed, Defects(holes=int(6 * scale), bridges=int(4 * scale),
                                                     merges=2, tears=1, dust=int(60 * scale)))
    if saved is not None:
        saved.parent.mkdir(parents=True, exist_ok=True)
        np.save(saved, probability)
    return probability


SHEET_CHAIN = [
    {"step": "zero_border", "width": 3}, {"step": "remove_small", "min_voxels": 20000},
    {"step": "keep_sheets", "count": 40}, {"step": "sheet_close", "radius": 3, "thin": 1.5},
    {"step": "patch_holes", "max_area": 4096}, {"step": "sheet_close", "radius": 3, "thin": 1.5},
    {"step": "plug_holes", "passes": 2}, {"step": "fill_holes", "max_voxels": 0},
    {"step": "zero_border", "width": 3},
]


def compile_kernels() -> float:
    """Seconds to compile (or load from numba's cache) the decide kernels, on a small volume."""
    from vesukit.decide.presets import PRESETS
    from vesukit.decide.sheets import kernels
    from vesukit.decide.steps import apply_postprocess
    from vesukit.maps import maps_from_probability

    if kernels() is None:
        return 0.0  # numba missing (or VESUKIT_DISABLE=numba): the numpy form runs
    t0 = time.perf_counter()
    probability = make_probability(48)
    maps = maps_from_probability(probability)
    for steps in (SHEET_CHAIN, PRESETS["fifth_place"]["postprocess"]):
        # without the dust steps, whose 320^3 sizes would leave nothing at 48^3 to run on
        chain = [s for s in steps if s["step"] not in ("remove_small", "keep_sheets")]
        apply_postprocess((probability >= 0.3).astype(np.uint8), chain, maps)
    return time.perf_counter() - t0


def plain_first_place(mask: np.ndarray, sheets_limit: int | None = None) -> tuple[np.ndarray, int]:
    """The same chain written plainly with scipy/scikit-image on whole volumes."""
    from skimage.measure import euler_number, label
    from skimage.morphology import remove_small_objects

    from vesukit.decide.components import main_axis
    from vesukit.decide.sheets import ellipsoid, height_patch, plug_pass

    out = mask.astype(bool)
    out[:3], out[-3:], out[:, :3], out[:, -3:], out[:, :, :3], out[:, :, -3:] = (False,) * 6
    out = remove_small_objects(out, max_size=20000 - 1, connectivity=3)  # drops < 20000, as ours
    labels = label(out, connectivity=3)
    sizes = np.bincount(labels.ravel())
    order = np.argsort(-sizes[1:])[:40] + 1
    if sheets_limit:
        order = order[:sheets_limit]
    placed = np.zeros_like(out)
    cube = np.ones((3, 3, 3), bool)
    for index in order:
        sheet = labels == index
        axis = main_axis(sheet)
        radii = [3.0, 3.0, 3.0]
        radii[axis] = 1.5
        element = ellipsoid(tuple(radii))
        repaired = ndimage.binary_closing(sheet, element, border_value=0) | sheet
        repaired = height_patch(repaired, 4096) | repaired
        repaired = ndimage.binary_closing(repaired, element, border_value=0) | repaired
        allowed = ndimage.binary_dilation(repaired, cube)
        plugged = plug_pass(plug_pass(repaired, allowed), allowed)
        if euler_number(plugged, connectivity=3) > euler_number(repaired, connectivity=3):
            repaired = plugged
        others = ndimage.binary_dilation(placed, cube)
        placed |= sheet | (repaired & ~others)
    out = ndimage.binary_fill_holes(placed)
    out[:3], out[-3:], out[:, :3], out[:, -3:], out[:, :, :3], out[:, :, -3:] = (False,) * 6
    return out.astype(np.uint8), len(order)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--plain-sheets", type=int, default=None,
                        help="run the plain side on this many sheets only and scale (0: skip it)")
    parser.add_argument("--tunnels", action="store_true",
                        help="also time fifth_place's fill_tunnels on the same map")
    parser.add_argument("--cache", default=None, help="folder to keep the synthetic map in")
    args = parser.parse_args(argv)

    from vesukit.decide.presets import PRESETS
    from vesukit.decide.sheets import kernels
    from vesukit.decide.steps import apply_postprocess, label_components

    if kernels() is None:
        print("numba not used: the per-sheet steps run their numpy form")
    else:
        print(f"numba kernels compiled or loaded in {compile_kernels():.1f} s (not counted below)")
    start = time.perf_counter()
    probability = make_probability(args.size, cache=args.cache)
    mask = (probability >= PRESETS["first_place"]["threshold"]).astype(np.uint8)
    sheets = label_components(mask)[1]
    print(f"mask {args.size}^3: {100 * mask.mean():.2f} % surface, {sheets} components "
          f"(built in {time.perf_counter() - start:.1f} s)")
    chain = SHEET_CHAIN

    def timed_chain() -> list[tuple[str, float]]:
        per_step, current = [], mask
        for step in chain:
            t0 = time.perf_counter()
            current = apply_postprocess(current, [step])
            per_step.append((step["step"], time.perf_counter() - t0))
        return per_step

    runs = [timed_chain() for _ in range(args.repeat)]
    per_step = min(runs, key=lambda r: sum(t for _, t in r))
    ours = sum(t for _, t in per_step)
    print(f"vesukit per-sheet chain: {ours:.2f} s per volume")
    for name, seconds in per_step:
        print(f"  {name:14s} {seconds:6.2f} s")
    if args.tunnels:
        time_tunnels(probability, PRESETS["fifth_place"])
    if args.plain_sheets == 0:
        return 0
    t0 = time.perf_counter()
    _, done = plain_first_place(mask, args.plain_sheets)
    plain = time.perf_counter() - t0
    kept = min(40, label_components(apply_postprocess(mask, chain[:2]))[1])
    note = ""
    if args.plain_sheets and done < kept:
        plain = plain * kept / max(done, 1)
        note = f" (measured on {done} of {kept} sheets, scaled)"
    print(f"plain scipy/scikit-image: {plain:.2f} s per volume{note}; "
          f"vesukit is {plain / ours:.1f}x faster")
    return 0


def time_tunnels(probability: np.ndarray, preset: dict) -> None:
    """fifth_place's dust removal, then its fill_tunnels timed, with what it changed."""
    from vesukit.decide.components import euler_number
    from vesukit.decide.steps import apply_postprocess
    from vesukit.maps import maps_from_probability

    maps = maps_from_probability(probability)
    dust, tunnels = preset["postprocess"]
    mask = apply_postprocess((probability >= preset["threshold"]).astype(np.uint8), [dust], maps)
    t0 = time.perf_counter()
    filled = apply_postprocess(mask, [tunnels], maps)
    seconds = time.perf_counter() - t0
    print(f"fifth_place fill_tunnels: {seconds:.2f} s per volume; {int((filled & ~mask).sum())} "
          f"voxels added, Euler number {euler_number(mask)} -> {euler_number(filled)}")


if __name__ == "__main__":
    raise SystemExit(main())
