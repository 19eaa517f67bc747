"""Cost of the `first_place` chain per volume: vesukit against a plain scipy/scikit-image run.

The mask: a synthetic ``--size``^3 label (``vesukit.synth``) through ``vesukit.synth_defects``
(holes, tears, bridges, merges, dust), thresholded at the preset's 0.26. Both sides run the
same steps with the same parameters, in this process, on the same mask:

- vesukit: ``apply_postprocess`` with the ``first_place`` preset (per-sheet work on each
  sheet's bounding box, cc3d labelling when installed);
- plain: what a straightforward CPU implementation does: skimage ``remove_small_objects`` and
  ``label``; per sheet on the whole volume, ``ndimage.binary_closing`` with the oriented
  ellipsoid, the same height-map patch, the 2x2x2 plug pass and skimage ``euler_number``, the
  3x3x3 paste guard by ``binary_dilation`` of the placed sheets; ``binary_fill_holes``.

Best of ``--repeat``; the plain side can be limited to ``--plain-sheets`` sheets and is then
scaled by sheet count (said in the output).

    PYTHONPATH=src python -m benchmarks.bench_decide_speed [--size 320] [--repeat 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

from benchmarks.timing import best_of


def make_mask(size: int, seed: int = 3) -> np.ndarray:
    from vesukit.synth import synth_volume
    from vesukit.synth_defects import Defects, defective_map

    _, label = synth_volume((size, size, size), seed=seed)
    scale = (size / 64) ** 2
    probability = defective_map(label, seed, Defects(holes=int(6 * scale), bridges=int(4 * scale),
                                                     merges=2, tears=1, dust=int(60 * scale)))
    return (probability >= 0.26).astype(np.uint8)


def plain_first_place(mask: np.ndarray, sheets_limit: int | None = None) -> tuple[np.ndarray, int]:
    """The same chain written plainly with scipy/scikit-image on whole volumes."""
    from skimage.measure import euler_number, label
    from skimage.morphology import remove_small_objects

    from vesukit.decide.components import main_axis
    from vesukit.decide.sheets import ellipsoid, height_patch, plug_pass

    out = mask.astype(bool)
    out[:3], out[-3:], out[:, :3], out[:, -3:], out[:, :, :3], out[:, :, -3:] = (False,) * 6
    out = remove_small_objects(out, 20000, connectivity=3)
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
                        help="run the plain side on this many sheets only and scale")
    args = parser.parse_args(argv)

    from vesukit.decide.presets import PRESETS
    from vesukit.decide.steps import apply_postprocess, label_components

    start = time.perf_counter()
    mask = make_mask(args.size)
    sheets = label_components(mask)[1]
    print(f"mask {args.size}^3: {100 * mask.mean():.2f} % surface, {sheets} components "
          f"(built in {time.perf_counter() - start:.1f} s)")
    chain = PRESETS["first_place"]["postprocess"]
    ours = best_of(args.repeat, lambda: apply_postprocess(mask, chain))
    per_step = []
    current = mask
    for step in chain:
        t0 = time.perf_counter()
        current = apply_postprocess(current, [step])
        per_step.append((step["step"], time.perf_counter() - t0))
    print(f"vesukit first_place: {ours:.2f} s per volume")
    for name, seconds in per_step:
        print(f"  {name:14s} {seconds:6.2f} s")
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


if __name__ == "__main__":
    raise SystemExit(main())
