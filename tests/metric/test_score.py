from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("numba")

from vesukit.metric import PreparedLabel, VolumeScore, score_volume  # noqa: E402
from vesukit.synth import synth_volume  # noqa: E402


def _label():
    _, label = synth_volume((20, 22, 24), 5)
    return label


def test_json_round_trip_and_keys():
    label = _label()
    result = score_volume((label == 1).astype(np.uint8), label)
    data = json.loads(json.dumps(result.to_json()))
    assert list(data["topo_counts"]) == ["0", "1", "2"]
    assert VolumeScore.from_json(data) == result
    assert result.score == pytest.approx(1.0)


def test_float_nan_and_255_predictions_binarise_like_the_scorer():
    label = _label()
    pred = (label == 1).astype(np.uint8) * 255
    as_float = pred.astype(np.float32)
    as_float[0, 0, 0] = np.nan  # NaN counts as background
    assert score_volume(as_float, label) == score_volume(
        np.where(np.isnan(as_float), 0, as_float) != 0, label)
    assert score_volume(pred, label) == score_volume(pred // 255, label)


def test_ignored_voxels_do_not_count():
    label = _label()
    assert (label == 2).any()
    pred = (label == 1).astype(np.uint8)
    noisy = pred.copy()
    noisy[label == 2] = 1  # predictions inside the ignore region are erased first
    prepared = PreparedLabel(label)
    assert prepared.score(noisy) == prepared.score(pred)
