"""Variation of information over the union of the two foregrounds (26-connected labels)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

_STRUCT_26 = np.ones((3, 3, 3), dtype=bool)


def label26(mask: np.ndarray) -> np.ndarray:
    """26-connected component labels (0 = background)."""
    labels, _ = ndimage.label(mask, structure=_STRUCT_26)
    return labels


def _entropy(counts: np.ndarray, total: int) -> float:
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def voi_from_labels(gt_labels: np.ndarray, pred_labels: np.ndarray) -> tuple[float, float]:
    """(split, merge) = (H(pred|gt), H(gt|pred)) in bits over voxels in either foreground.

    The official scorer reports the two conditional entropies in this order (checked on
    metric-vectors, where they differ).
    """
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
