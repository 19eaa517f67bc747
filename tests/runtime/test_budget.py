"""The time-budget planner degrades in the stated order, only when behind."""

from __future__ import annotations

from vesukit.runtime.budget import TimeBudget

VIEWS = {"none": 1, "flip": 4, "full": 8}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def make(seconds, tta="full"):
    clock = Clock()
    weights = {"a": 1.0, "b": 0.5, "c": 2.0}
    budget = TimeBudget(seconds, weights, lambda name, level: VIEWS[level], tta, clock=clock,
                        reserve_per_volume=0.0)
    return budget, clock


def test_nothing_changes_before_costs_are_known():
    budget, _ = make(1.0)
    assert budget.replan(voxels_left=10**9, volumes_left=100) == []
    assert budget.plan.tta == "full" and budget.plan.teachers == ["a", "b", "c"]


def test_on_time_keeps_the_plan():
    budget, clock = make(1000.0)
    # each teacher: 1 s per 1000 voxels at full TTA (8 views)
    budget.observe({"a": 1.0, "b": 1.0, "c": 1.0}, voxels=1000, tta="full")
    clock.now = 3.0
    assert budget.replan(voxels_left=10_000, volumes_left=10) == []  # needs ~33 s of 997
    assert budget.plan.tta == "full"


def test_behind_degrades_tta_first_then_lowest_weight_teachers():
    budget, clock = make(100.0)
    budget.observe({"a": 1.0, "b": 1.0, "c": 1.0}, voxels=1000, tta="full")
    clock.now = 3.0
    # full: 3 s per 1000 voxels; 40k voxels -> 132 s > 97 s left. flip halves it -> 66 s fits.
    decisions = budget.replan(voxels_left=40_000, volumes_left=40)
    assert budget.plan.tta == "flip" and budget.plan.teachers == ["a", "b", "c"]
    assert len(decisions) == 1 and "TTA full -> flip" in decisions[0]

    # far behind: none TTA, then drop b (weight 0.5) then a (1.0); c (2.0) stays
    clock.now = 99.0
    decisions = budget.replan(voxels_left=40_000, volumes_left=40)
    assert budget.plan.tta == "none"
    assert budget.plan.teachers == ["c"] and budget.plan.dropped == ["b", "a"]
    assert any("dropping teacher 'b' (weight 0.5)" in d for d in decisions)
    assert "fallback masks" in decisions[-1]  # still behind with the cheapest settings


def test_expiry():
    budget, clock = make(5.0)
    assert not budget.expired() and budget.remaining() == 5.0
    clock.now = 5.0
    assert budget.expired()


def test_the_cost_model_counts_the_forward_passes_each_teacher_really_runs():
    """The planner's view count per (teacher, level) is what predict runs: an nnU-Net teacher
    mirrors over 8 views (not flip's 4), and a teacher whose own TTA is lower than the run's
    level runs its own. Counted on the real networks, sample by sample."""
    import dataclasses
    from pathlib import Path

    import numpy as np
    import pytest

    torch = pytest.importorskip("torch")
    pytest.importorskip("nnunetv2")
    from tests.fixtures import teacher_spec
    from vesukit.infer import predict_teacher
    from vesukit.runtime.worker import _views_counter
    from vesukit.teachers.nnunet import NnUNetSpec
    from vesukit.teachers.nnunet_model import load_nnunet_teacher

    folder = (Path(__file__).resolve().parents[1] / "data" / "nnunet" / "Dataset501_VesukitCT"
              / "nnUNetTrainer__nnUNetPlans__3d_fullres")
    nnunet = NnUNetSpec(name="nn", model=str(folder), folds=("all",), checkpoint="final")
    unet = dataclasses.replace(teacher_spec("unet", "3d"), tta=("flip",))
    models = [load_nnunet_teacher(nnunet, folder.parent),
              torch.nn.Conv3d(1, 1, 3, padding=1)]
    volume = np.random.default_rng(0).integers(0, 255, (16, 24, 16)).astype(np.uint8)

    def samples(spec, model, level):
        seen = []
        hook = model.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape[0]))
        try:
            predict_teacher(volume, model, spec, device="cpu", tta=level)
        finally:
            hook.remove()
        return sum(seen)

    count = _views_counter([nnunet, unet], models)
    for spec, model in zip([nnunet, unet], models):
        once = samples(spec, model, "none")
        assert count(spec.name, "none") == 1
        for level in ("flip", "full"):
            assert samples(spec, model, level) == count(spec.name, level) * once
    assert count("nn", "flip") == 8 and count("unet", "flip") == 4
    own = _views_counter([nnunet, unet], models, teacher_tta={"unet": "none", "nn": "flip"})
    assert own("unet", "full") == 1 and own("nn", "full") == 8 and own("nn", "none") == 1
