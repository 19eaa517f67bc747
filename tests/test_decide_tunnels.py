"""fill_tunnels against the masks its implementation at main 0707583 made, voxel for voxel.

The cases (tests/data/tunnels, written by make_references.py there with that implementation)
are synthetic volumes with defective maps and smoothed random fields at several shapes,
thresholds and parameters; together they run every path of a round (balls kept, bridges
refused, recentred balls) and up to 13 rounds. The step has since been made faster (one
labelling for all rounds, one sort of the filtration, the round's balls in one kernel); its
output must not move.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from vesukit.maps import maps_from_probability

pytest.importorskip("numba")

CASES = sorted((Path(__file__).parent / "data" / "tunnels").glob("*.npz"))


def test_the_reference_cases_are_there():
    assert len(CASES) == 6


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_fill_tunnels_equals_the_reference_implementation(case):
    from vesukit.decide.steps import fill_tunnels

    data = np.load(case)
    probability = data["probability"]
    mask = (probability.astype(np.float32) >= np.float32(data["threshold"])).astype(np.uint8)
    params = ast.literal_eval(str(data["params"]))
    expected = np.unpackbits(data["expected"], count=mask.size).reshape(mask.shape)
    out = fill_tunnels(mask, maps_from_probability(probability), **params)
    assert out.dtype == np.uint8
    assert int(out.sum()) > int(mask.sum())                     # the case fills something
    assert np.array_equal(out, expected), f"{int((out != expected).sum())} voxels differ"
