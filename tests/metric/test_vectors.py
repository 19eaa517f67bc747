"""Every metric-vectors pair (scored by the official topometrics-3d 0.1.0) must be reproduced:
topology counts identical, score / TopoScore / surface Dice / VOI within 1e-9."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

pytest.importorskip("numba")

from vesukit.metric import PreparedLabel, score_volume  # noqa: E402

VECTORS = Path(__file__).resolve().parents[1] / "data" / "metric-vectors"
EXPECTED = json.loads((VECTORS / "expected.json").read_text())
FLOAT_KEYS = ("score", "toposcore", "surface_dice", "voi_score", "voi_split", "voi_merge")


def _load(case: str) -> tuple[np.ndarray, np.ndarray]:
    return (tifffile.imread(VECTORS / "pred" / f"{case}.tif"),
            tifffile.imread(VECTORS / "labels" / f"{case}.tif"))


def _assert_matches(result: dict, expected: dict, case: str) -> None:
    assert result["topo_counts"] == expected["topo_counts"], case
    for key in FLOAT_KEYS:
        assert abs(result[key] - expected[key]) <= 1e-9, (case, key, result[key], expected[key])


def test_vectors_are_complete():
    cases = sorted(EXPECTED)
    assert len(cases) == 58
    for case in cases:
        assert (VECTORS / "pred" / f"{case}.tif").is_file()
        assert (VECTORS / "labels" / f"{case}.tif").is_file()


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_official_vector(case):
    pred, label = _load(case)
    assert list(pred.shape) == EXPECTED[case]["shape"]
    result = score_volume(pred, label, workers=2, name=case).to_json()
    _assert_matches(result, EXPECTED[case], case)


def test_prepared_label_is_reusable_across_predictions():
    """One PreparedLabel scores several candidate predictions exactly like fresh calls, in
    any order (nothing of one candidate leaks into the next)."""
    case = "v11_005_holes"
    pred, label = _load(case)
    candidates = [pred, (label == 1).astype(np.uint8), np.roll(pred, 2, axis=1),
                  np.zeros_like(pred), pred[:, ::-1, :].copy()]
    fresh = [score_volume(c, label) for c in candidates]
    prepared = PreparedLabel(label, name=case, workers=2)
    for order in (range(len(candidates)), reversed(range(len(candidates)))):
        for i in order:
            assert prepared.score(candidates[i]) == fresh[i]
    _assert_matches(prepared.score(pred).to_json(), EXPECTED[case], case)
    assert len({r.score for r in fresh}) > 2  # the candidates really differ
