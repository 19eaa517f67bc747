from __future__ import annotations

import numpy as np
import pytest

from vesukit.metric.voi import label26, voi_from_labels, voi_score


def test_label26_joins_diagonals():
    mask = np.zeros((3, 3, 4), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = mask[0, 0, 3] = True
    labels = label26(mask)
    assert labels[0, 0, 0] == labels[1, 1, 1] != 0
    assert labels[0, 0, 3] not in (0, labels[0, 0, 0])


def test_split_and_merge_by_hand():
    gt = np.zeros((1, 1, 8), bool)
    gt[0, 0, 0:4] = True  # one gt component of 4 voxels
    pred = np.zeros_like(gt)
    pred[0, 0, 0:2] = True
    pred[0, 0, 3:4] = True  # pred splits it in two (2 + 1 voxels), misses one voxel
    split, merge = voi_from_labels(label26(gt), label26(pred))
    # union = 4 voxels, gt labels all 1; pred labels (1,1,0,2): H(pred|gt) = H(pred)
    h_pred = -(0.5 * np.log2(0.5) + 2 * 0.25 * np.log2(0.25))
    assert split == pytest.approx(h_pred)
    assert merge == pytest.approx(0.0)
    assert voi_score(split, merge) == pytest.approx(1 / (1 + 0.3 * h_pred))


def test_both_empty():
    empty = np.zeros((2, 2, 2), int)
    assert voi_from_labels(empty, empty) == (0.0, 0.0)


@pytest.mark.parametrize("density", [0.08, 0.35, 0.6])
def test_voi_from_runs_equals_the_label_volumes_exactly(density):
    """The runs' VOI (what the scorer and the screening bound use; joint counts from a table of
    component pairs, or a sort when that table would be large) is the label volumes' VOI (np.unique
    on every voxel) to the last bit: dust (hundreds of components on both sides: the sort) and
    dense noise (a few components: the table)."""
    pytest.importorskip("numba")
    from vesukit.metric import voi

    rng = np.random.default_rng(int(density * 100))
    gt = rng.random((24, 40, 36)) < density
    pred = gt ^ (rng.random(gt.shape) < 0.1)
    expected = voi.voi_from_labels(label26(gt), label26(pred))
    assert voi.voi_from_runs(voi.fg_runs(gt), voi.fg_runs(pred)) == expected


def test_joint_sums_table_equals_the_sort():
    from vesukit.metric.voi import _grouped_sums, _joint_sums

    rng = np.random.default_rng(5)
    la = rng.choice(np.array([0, 3, 17, 900, 12345]), 5000)
    lb = rng.choice(np.array([0, 1, 2, 77, 100000]), 5000)
    values = rng.integers(1, 300, 5000)
    table = _joint_sums(la, lb, values)
    assert table.dtype == np.int64
    assert np.array_equal(table, _grouped_sums(la * (int(lb.max()) + 1) + lb, values))
