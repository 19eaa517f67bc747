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
