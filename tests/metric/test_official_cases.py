"""vesukit's scorer against the official one on pairs beyond the metric vectors.

tests/data/metric-official holds 25 small pairs (synth labels against thresholded
synth_defects maps, random masks, masks with many small holes and dust, smoothed noise with
tunnels and cavities, flipped and transposed copies) and the output of the official scorer
rebuilt from source (Betti-Matching-3D, surface-distance, cc3d; docs/metric.md, "The official
scorer, rebuilt"; benchmarks/make_official_cases.py made them). Every topology count must be
equal, and score, TopoScore, surface Dice and VOI within 1e-9, through both paths a user runs:
`score_volume` (vesukit score) and `PreparedLabel.score` (the calibration search).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba")

from benchmarks.official_metric import unpack_pairs  # noqa: E402
from vesukit.metric import PreparedLabel, score_volume  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "metric-official"
EXPECTED = json.loads((DATA / "expected.json").read_text())
PAIRS = unpack_pairs(DATA / "pairs.npz")
FLOAT_KEYS = ("score", "toposcore", "surface_dice", "voi_score", "voi_split", "voi_merge")
# Where the rebuilt official scorer lives on a machine that has one (docs/metric.md).
OFFICIAL_PYTHON = os.environ.get("VESUKIT_OFFICIAL_PYTHON", "/tmp/official-scorer/venv/bin/python")


def _assert_official(result: dict, expected: dict, case: str) -> None:
    assert result["topo_counts"] == expected["topo_counts"], case
    for key in FLOAT_KEYS:
        assert abs(result[key] - expected[key]) <= 1e-9, (case, key, result[key], expected[key])


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_score_volume_equals_the_official_scorer(case):
    pred, label = PAIRS[case]
    _assert_official(score_volume(pred, label, workers=2, name=case).to_json(), EXPECTED[case], case)


def test_prepared_label_equals_the_official_scorer():
    for case in sorted(EXPECTED):
        pred, label = PAIRS[case]
        _assert_official(PreparedLabel(label, name=case).score(pred).to_json(), EXPECTED[case], case)


def test_the_cases_can_tell_a_wrong_scorer_apart():
    """The set has power: matches in every dimension, and copies whose counts change with the axis
    order (a scorer that ignored the official lexicographic order would fail on them)."""
    counts = [case["topo_counts"] for case in EXPECTED.values()]
    for dim in "012":
        assert sum(c[dim][0] for c in counts) > 0, f"no match in dim {dim}"
    assert len(PAIRS) == len(EXPECTED) == 25
    twins = [(name, name.rsplit("_", 1)[0]) for name, case in EXPECTED.items() if case["view"] != "as made"]
    changed = [name for name, original in twins
               if original in EXPECTED and EXPECTED[name]["topo_counts"] != EXPECTED[original]["topo_counts"]]
    assert changed, "no flipped or transposed copy changes the official counts"


def _official_available() -> bool:
    return Path(OFFICIAL_PYTHON).is_file() and subprocess.run(
        [OFFICIAL_PYTHON, str(ROOT / "benchmarks" / "official_metric.py"), "--check"],
        capture_output=True).returncode == 0


@pytest.mark.skipif(not _official_available(), reason="no rebuilt official scorer here (docs/metric.md)")
def test_bench_score_official_side_by_side_on_a_real_vector():
    """bench_score --official's own helpers, run against the real rebuilt scorer on a shipped vector."""
    from benchmarks.official_side_by_side import differences, official_command, run_official

    vectors = ROOT / "tests" / "data" / "metric-vectors"
    case = "v11_010_noise"
    official = run_official(official_command(OFFICIAL_PYTHON), vectors / "pred" / f"{case}.tif",
                            vectors / "labels" / f"{case}.tif")
    expected = json.loads((vectors / "expected.json").read_text())[case]
    assert differences(official, expected) == []
    assert official["seconds"] > 0 and official["cpu_seconds"] > 0
    assert set(official["seconds_by_term"]) == {"topology", "surface_dice", "voi"}
    wrong = {**official, "topo_counts": {**official["topo_counts"], "1": [9, 271, 8]}}
    assert differences(wrong, expected) == ["dim 1 (m, p, g): ours [9, 271, 8], official [8, 271, 8]"]


def test_bench_score_refuses_an_official_path_that_cannot_run(tmp_path):
    """--official with a python that lacks betti_matching: exit 1 at once, saying what is missing
    and where the build is described, before any scoring."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_score.py"), "--official", sys.executable],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                          timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "cannot import betti_matching" in proc.stderr and "docs/metric.md" in proc.stderr
    assert "workers=" not in proc.stdout  # nothing was scored
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_score.py"), "--official",
                           str(tmp_path / "missing")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "neither a python executable nor a folder" in proc.stderr
