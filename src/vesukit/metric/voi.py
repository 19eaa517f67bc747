"""Variation of information over the union of the two foregrounds (26-connected labels).

Components are computed on z-runs (numba), and the contingency table of (gt component,
pred component) comes straight from overlapping runs, so no label volume is materialised.
"""

from __future__ import annotations

import numpy as np

from vesukit.metric._numba import kernels


def fg_runs(mask: np.ndarray) -> tuple:
    """26-connected components of a boolean volume as runs: (row_start, z0, z1, root)."""
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    n0, n1, n2 = mask.shape
    row_start, z0, z1, root, _ = kernels().runs26(mask.reshape(-1), n0, n1, n2, True)
    return row_start, z0, z1, root


def label26(mask: np.ndarray) -> np.ndarray:
    """26-connected component labels as a volume (0 = background; label = root run + 1)."""
    mask = np.asarray(mask, dtype=bool)
    row_start, z0, z1, root = fg_runs(mask)
    labels = np.zeros(mask.shape, dtype=np.int64)
    flat = labels.reshape(-1, mask.shape[2])
    for r in range(flat.shape[0]):
        for i in range(row_start[r], row_start[r + 1]):
            flat[r, z0[i]:z1[i] + 1] = root[i] + 1
    return labels


def _entropy(counts: np.ndarray, total: int) -> float:
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def voi_from_runs(gt_runs: tuple, pred_runs: tuple) -> tuple[float, float]:
    """(split, merge) = (H(pred|gt), H(gt|pred)) in bits over voxels in either foreground.

    The official scorer reports the two conditional entropies in this order (checked on
    metric-vectors, where they differ).
    """
    la, lb, ln = kernels().run_overlaps(*gt_runs, *pred_runs)
    total = int(ln.sum())
    if total == 0:
        return 0.0, 0.0
    h_ab = _entropy(_joint_sums(la, lb, ln), total)
    # roots are run indices: a bincount groups them in the same (ascending) order
    h_a = _entropy(np.bincount(la, weights=ln).astype(np.int64), total)
    h_b = _entropy(np.bincount(lb, weights=ln).astype(np.int64), total)
    return h_ab - h_a, h_ab - h_b


def _joint_sums(la: np.ndarray, lb: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Sums of ``values`` per distinct (la, lb) pair, in ascending (la, lb) order.

    The components are few (hundreds) while the segments are millions, so each label is first
    numbered densely in ascending order and the pairs are counted in a table of
    (labels of a) x (labels of b) cells: no sort of the segments. A table that would be large
    against the segments (many components on both sides) is left to a sort."""
    dense_a, count_a = _dense_numbers(la)
    dense_b, count_b = _dense_numbers(lb)
    if count_a * count_b > 4 * la.size + (1 << 16):
        return _grouped_sums(la * (int(lb.max()) + 1) + lb, values)
    cells = dense_a * count_b + dense_b
    size = count_a * count_b
    present = np.bincount(cells, minlength=size) > 0
    sums = np.bincount(cells, weights=values, minlength=size)  # integers, exact in float64
    return sums[present].astype(np.int64)


def _dense_numbers(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """``labels`` renumbered 0..count - 1 in ascending order of value, and count."""
    present = np.zeros(int(labels.max()) + 1, dtype=bool)
    present[labels] = True
    rank = np.cumsum(present) - 1
    return rank[labels], int(rank[-1]) + 1


def _grouped_sums(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Sums of ``values`` per distinct key, in ascending key order (as np.unique groups them;
    a sort and a reduceat is several times faster than unique's inverse)."""
    order = np.argsort(keys)
    keys = keys[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return np.add.reduceat(values[order].astype(np.int64), starts)


def voi_from_labels(gt_labels: np.ndarray, pred_labels: np.ndarray) -> tuple[float, float]:
    """The same from label volumes (any labelling; 0 = background)."""
    union = (gt_labels != 0) | (pred_labels != 0)
    total = int(union.sum())
    if total == 0:
        return 0.0, 0.0
    a = gt_labels[union].astype(np.int64)
    b = pred_labels[union].astype(np.int64)
    joint = np.unique(a * (int(b.max()) + 1) + b, return_counts=True)[1]
    h_ab = _entropy(joint, total)
    h_a = _entropy(np.unique(a, return_counts=True)[1], total)
    h_b = _entropy(np.unique(b, return_counts=True)[1], total)
    return h_ab - h_a, h_ab - h_b


def voi_score(split: float, merge: float, alpha: float = 0.3) -> float:
    return 1.0 / (1.0 + alpha * (split + merge))
