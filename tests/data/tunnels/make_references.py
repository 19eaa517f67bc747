"""Writes the fill_tunnels reference cases: inputs and the masks the implementation at main 0707583 made.

    PYTHONPATH=/path/to/vesukit-at-0707583/src python tests/data/tunnels/make_references.py

Each case (one .npz) holds the probability (float16, as saved maps are), the threshold that makes
the input mask (probability >= threshold, as float32), the step's parameters and the expected
output, bit-packed. The inputs are `vesukit.synth` volumes with `synth_defects` maps (holes,
tears, bridges: what the step is for) and a smoothed random field (many small tunnels), at
several shapes, thresholds and parameters. tests/test_decide_tunnels.py checks the current
fill_tunnels against them voxel for voxel.
"""

from pathlib import Path

import numpy as np
from scipy import ndimage

from vesukit.decide.steps import fill_tunnels
from vesukit.maps import maps_from_probability
from vesukit.synth import synth_volume
from vesukit.synth_defects import Defects, defective_map

HERE = Path(__file__).parent


def synth_case(shape, seed, bias):
    _, label = synth_volume(shape, seed)
    return defective_map(label, seed, Defects(bias=bias)).astype(np.float16)


def field_case(shape, seed):
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
    return (1 / (1 + np.exp(-field / field.std() * 2))).astype(np.float16)


CASES = {
    "synth64_seed1": (lambda: synth_case((64, 64, 64), 1, 0.0), 0.5, {}),
    "synth64_seed2_bias": (lambda: synth_case((64, 64, 64), 2, 1.0), 0.6, {"low": 0.3}),
    "synth_flat_seed3": (lambda: synth_case((40, 80, 72), 3, -0.5), 0.4,
                         {"min_radius": 1.5, "max_radius": 4.0}),
    "synth64_seed4_two_rounds": (lambda: synth_case((64, 64, 64), 4, 0.5), 0.5,
                                 {"rounds": 2, "min_radius": 2.0, "max_radius": 2.0}),
    "field48_seed5": (lambda: field_case((48, 48, 48), 5), 0.6, {"low": 0.2}),
    "field_flat_seed6": (lambda: field_case((24, 64, 56), 6), 0.55,
                         {"low": 0.35, "min_radius": 2.5, "max_radius": 5.0}),
}


def main():
    for name, (make, threshold, params) in CASES.items():
        probability = make()
        mask = (probability.astype(np.float32) >= np.float32(threshold)).astype(np.uint8)
        out = fill_tunnels(mask, maps_from_probability(probability), **params)
        np.savez_compressed(HERE / f"{name}.npz", probability=probability, threshold=threshold,
                            params=repr(params), shape=np.array(mask.shape),
                            expected=np.packbits(out.astype(bool).ravel()))
        print(name, mask.shape, "mask", int(mask.sum()), "filled", int(out.sum() - mask.sum()))


if __name__ == "__main__":
    main()
