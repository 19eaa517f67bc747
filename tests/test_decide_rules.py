"""Threshold rules on crafted ensemble maps, and the calibration file round trip."""

from functools import partial

import numpy as np
import pytest

from vesukit.decide import THRESHOLD_RULES, Calibration, CalibrationError, ThresholdRule, binarize, load_calibration
from vesukit.decide.rules import probability_histogram
from vesukit.maps import EnsembleMaps

Maps = partial(EnsembleMaps, n_teachers=3, total_weight=3.0)


def make_maps(mean, disagreement=None):
    mean = np.asarray(mean, dtype=np.float32)
    if disagreement is None:
        disagreement = np.zeros_like(mean)
    return Maps(mean, np.zeros_like(mean), np.asarray(disagreement, dtype=np.float32))


def two_population_volume(low, high, fraction_high, shape=(20, 20, 20), seed=0, spread=0.03):
    """Background around ``low`` and a ``fraction_high`` share of voxels around ``high``."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    values = np.clip(rng.normal(low, spread, n), 0, 1)
    count = int(round(fraction_high * n))
    values[:count] = np.clip(rng.normal(high, spread, count), 0, 1)
    return rng.permutation(values).reshape(shape).astype(np.float32)


def test_every_rule_is_registered():
    assert set(THRESHOLD_RULES) == {"fixed", "foreground_fraction", "otsu", "valley",
                                    "uncertainty"}


def test_fixed_ignores_the_maps():
    maps = make_maps(np.full((4, 4, 4), 0.9))
    assert ThresholdRule("fixed", {"threshold": 0.33})(maps) == pytest.approx(0.33)


def test_histogram_bins_match_the_mask_rule():
    values = np.array([0.0, 0.2499, 0.25, 0.5, 1.0, 1.2, -0.1], dtype=np.float32)
    counts = probability_histogram(values, bins=4)
    assert counts.tolist() == [3, 1, 1, 2]


@pytest.mark.parametrize("fraction", [0.02, 0.1, 0.3])
def test_foreground_fraction_marks_that_share(fraction):
    rng = np.random.default_rng(1)
    mean = rng.random((30, 30, 30)).astype(np.float32) * 0.8
    threshold = THRESHOLD_RULES["foreground_fraction"](make_maps(mean), fraction=fraction,
                                                        lo=0.0, hi=1.0)
    marked = binarize(mean, threshold).mean()
    assert marked >= fraction
    assert marked == pytest.approx(fraction, abs=0.004)  # one 1/1024 bin of slack


def test_foreground_fraction_is_clamped():
    mean = np.zeros((10, 10, 10), dtype=np.float32)
    assert THRESHOLD_RULES["foreground_fraction"](make_maps(mean), fraction=0.05, lo=0.2,
                                                   hi=0.6) == pytest.approx(0.2)


@pytest.mark.parametrize("rule", ["otsu", "valley"])
@pytest.mark.parametrize("low,high", [(0.1, 0.8), (0.05, 0.45)])
def test_histogram_rules_cut_between_two_populations(rule, low, high):
    mean = two_population_volume(low, high, 0.1)
    threshold = THRESHOLD_RULES[rule](make_maps(mean), lo=0.0, hi=1.0)
    assert low + 0.05 < threshold < high - 0.05
    # the cut separates the two populations almost perfectly
    assert binarize(mean, threshold).mean() == pytest.approx(0.1, abs=0.01)


def test_histogram_rules_follow_a_shifted_volume():
    """A less confident volume (surface at 0.3 rather than 0.8) gets a lower threshold."""
    sure = make_maps(two_population_volume(0.05, 0.8, 0.2, (40, 40, 40), spread=0.06))
    unsure = make_maps(two_population_volume(0.05, 0.3, 0.2, (40, 40, 40), spread=0.06))
    for rule in ("otsu", "valley"):
        assert THRESHOLD_RULES[rule](unsure, lo=0.0, hi=1.0) < THRESHOLD_RULES[rule](
            sure, lo=0.0, hi=1.0)


def test_valley_without_a_surface_mode_falls_back_to_the_default():
    mean = two_population_volume(0.02, 0.02, 0.0)  # only background
    assert THRESHOLD_RULES["valley"](make_maps(mean), lo=0.1, hi=0.7) == pytest.approx(0.4)


def test_uncertainty_rule_rises_with_disagreement():
    mean = two_population_volume(0.05, 0.7, 0.1)
    calm = make_maps(mean, np.zeros_like(mean))
    torn = make_maps(mean, np.where(mean > 0.4, 0.6, 0.0))
    rule = THRESHOLD_RULES["uncertainty"]
    assert rule(calm, base=0.3, gain=0.5) == pytest.approx(0.3)
    assert rule(torn, base=0.3, gain=0.5) == pytest.approx(0.3 + 0.5 * 0.6, abs=1e-6)
    assert rule(torn, base=0.3, gain=0.5, hi=0.5) == pytest.approx(0.5)
    # nothing above the base: the base itself
    assert rule(make_maps(np.zeros((5, 5, 5))), base=0.3, gain=0.5) == pytest.approx(0.3)


def test_rules_accept_torch_tensors():
    torch = pytest.importorskip("torch")
    mean = two_population_volume(0.1, 0.8, 0.1)
    as_numpy = make_maps(mean, mean * 0.2)
    as_torch = Maps(torch.from_numpy(mean), torch.zeros(mean.shape),
                    torch.from_numpy(mean * 0.2))
    for name in THRESHOLD_RULES:
        assert THRESHOLD_RULES[name](as_torch) == THRESHOLD_RULES[name](as_numpy)


def test_calibration_round_trip_with_every_rule(tmp_path):
    import json

    for name in THRESHOLD_RULES:
        calibration = Calibration(ThresholdRule(name, {"lo": 0.2} if name != "fixed" else
                                                {"threshold": 0.3}),
                                  ({"step": "close", "radius": 1},))
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(calibration.to_json()))
        assert load_calibration(path) == calibration


def test_calibration_rejects_unknown_rule_parameters(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"format": 1, "threshold": {"rule": "otsu", "cutoff": 0.3}}')
    with pytest.raises(CalibrationError, match="cutoff"):
        load_calibration(path)
    path.write_text('{"format": 1, "threshold": {"rule": "otsu", "lo": "low"}}')
    with pytest.raises(CalibrationError, match="expected a number"):
        load_calibration(path)
