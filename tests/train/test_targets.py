"""Soft targets and confidence weights (pure numpy)."""

import numpy as np

from vesukit.train.targets import confidence_weights, distill_targets, label_targets


def test_confidence_falls_as_the_variance_rises():
    variance = np.array([0.0, 0.01, 0.05, 0.1, 0.2, 0.25], dtype=np.float32)
    confidence = confidence_weights(variance)
    assert confidence[0] == 1.0 and confidence[-1] == 0.0
    assert np.all(np.diff(confidence) < 0)
    sharper = confidence_weights(variance, gamma=2.0)
    assert np.all(sharper[1:-1] < confidence[1:-1])


def test_disagreement_lowers_the_confidence():
    variance = np.full(3, 0.04, np.float32)
    confidence = confidence_weights(variance, disagreement=np.array([0.0, 0.25, 0.5]))
    np.testing.assert_allclose(confidence, 0.84 * np.array([1.0, 0.75, 0.5]), rtol=1e-6)


def test_hard_labels_pull_the_target_and_label_2_leaves_the_teachers_alone():
    mean = np.array([0.2, 0.9, 0.7], np.float32)
    confidence = np.array([0.5, 0.5, 0.4], np.float32)
    label = np.array([1, 0, 2], np.uint8)
    target, weight = distill_targets(mean, confidence, label, label_weight=0.5)
    np.testing.assert_allclose(target, [0.6, 0.45, 0.7])
    np.testing.assert_allclose(weight, [0.75, 0.75, 0.4])
    target, weight = distill_targets(mean, confidence, label, label_weight=0.0)
    np.testing.assert_allclose(target, mean)
    np.testing.assert_allclose(weight, confidence)


def test_labels_only_targets_ignore_label_2():
    target, weight = label_targets(np.array([0, 1, 2], np.uint8))
    np.testing.assert_array_equal(target, [0, 1, 0])
    np.testing.assert_array_equal(weight, [1, 1, 0])
