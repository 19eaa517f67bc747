from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")

from vesukit.metric.surface_dice import ball_offsets, surface_dice, surfel_area_table  # noqa


def test_area_table_first_principles():
    table = surfel_area_table((1.0, 1.0, 1.0))
    assert table[0] == 0 and table[255] == 0
    assert table[1] == pytest.approx(np.sqrt(3) / 8)  # one corner: a triangle
    assert table[0b11110000] == pytest.approx(1.0)  # half the window: a unit square
    # complement symmetry: a window and its complement bound the same surface
    assert np.allclose(table[1:255], table[254:0:-1])


def test_area_table_equals_surface_distance_package():
    lookup = pytest.importorskip("surface_distance.lookup_tables")
    for spacing in [(1.0, 1.0, 1.0), (1.0, 2.0, 0.5), (0.7, 1.3, 2.1)]:
        ours = surfel_area_table(spacing)
        theirs = lookup.create_table_neighbour_code_to_surface_area(spacing)
        assert np.abs(ours - theirs).max() < 1e-12


def test_ball_offsets():
    assert len(ball_offsets(2.0, (1.0, 1.0, 1.0))) == 33
    assert len(ball_offsets(1.0, (1.0, 1.0, 1.0))) == 7
    assert len(ball_offsets(0.0, (1.0, 1.0, 1.0))) == 1


def test_empty_cases():
    empty = np.zeros((5, 6, 7), bool)
    full = np.zeros((5, 6, 7), bool)
    full[2, 3, 3] = True
    assert surface_dice(empty, empty) == 1.0
    assert surface_dice(full, empty) == 0.0
    assert surface_dice(empty, full) == 0.0
    assert surface_dice(full, full) == 1.0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("seed", range(6))
def test_matches_surface_distance_package(seed):
    metrics = pytest.importorskip("surface_distance.metrics")
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(6, 20, size=3))
    gt = rng.random(shape) < 0.25
    pred = gt.copy()
    flip = rng.random(shape) < 0.15
    pred[flip] = ~pred[flip]
    pred[: rng.integers(0, 4)] = False  # make the bounding boxes differ
    for tol in (0.0, 1.0, 1.5, 2.0, 3.0):
        dists = metrics.compute_surface_distances(gt, pred, (1, 1, 1))
        theirs = metrics.compute_surface_dice_at_tolerance(dists, tol)
        assert abs(surface_dice(gt, pred, tolerance=tol) - theirs) < 1e-12, tol
