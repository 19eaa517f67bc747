"""What the student learns from: per-voxel soft targets and confidence weights.

Distillation target (phase B): the ensemble mean, each voxel weighted by the ensemble's
confidence there (teachers agree and their variance is low -> weight near 1). Where a hard
label exists (0 or 1) the target is pulled toward it by ``label_weight``; label 2 (unlabelled)
contributes nothing of its own, so the teachers alone decide there. Training from labels only
is the special case without teachers: target = label, weight 1 on 0/1 and 0 on 2.
"""

from __future__ import annotations

import numpy as np

IGNORE_LABEL = 2
# A probability's variance across teachers is at most 0.25 (half say 0, half say 1).
MAX_VARIANCE = 0.25


def confidence_weights(variance, disagreement=None, gamma: float = 1.0) -> np.ndarray:
    """Per-voxel confidence in [0, 1] (float32): ``(1 - variance / 0.25) ** gamma``, times
    ``1 - disagreement`` when given. One teacher (variance 0, no dissent) gives 1 everywhere."""
    variance = np.asarray(variance, dtype=np.float32)
    confidence = np.clip(1.0 - variance / MAX_VARIANCE, 0.0, 1.0)
    if gamma != 1.0:
        confidence = confidence ** np.float32(gamma)
    if disagreement is not None:
        confidence = confidence * np.clip(1.0 - np.asarray(disagreement, np.float32), 0.0, 1.0)
    return confidence.astype(np.float32, copy=False)


def distill_targets(mean, confidence, label=None, label_weight: float = 0.5
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(target, weight) float32 maps from the ensemble mean and its confidence, mixed with the
    hard label where it is 0 or 1: ``t = a*y + (1-a)*mean``, ``w = a + (1-a)*confidence``."""
    if not 0.0 <= label_weight <= 1.0:
        raise ValueError(f"label_weight must be in [0, 1], got {label_weight}")
    target = np.asarray(mean, dtype=np.float32).copy()
    weight = np.asarray(confidence, dtype=np.float32).copy()
    if label is None or label_weight == 0.0:
        return target, weight
    label = np.asarray(label)
    known = label != IGNORE_LABEL
    hard = (label == 1).astype(np.float32)
    target[known] = label_weight * hard[known] + (1.0 - label_weight) * target[known]
    weight[known] = label_weight + (1.0 - label_weight) * weight[known]
    return target, weight


def label_targets(label) -> tuple[np.ndarray, np.ndarray]:
    """(target, weight) from a 0/1/2 label alone: label 2 gets weight 0."""
    label = np.asarray(label)
    return (label == 1).astype(np.float32), (label != IGNORE_LABEL).astype(np.float32)
