import pytest
import torch

from vesukit.infer.tta import IDENTITY, TTAView, tta_views


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("preset", ["none", "flip", "full"])
def test_every_view_round_trips(dims, preset):
    shape = (2, 3, 6, 6) if dims == 2 else (2, 3, 5, 6, 6)
    x = torch.rand(shape)
    for view in tta_views(preset, dims):
        y = view.apply(x)
        assert y.shape == x.shape
        assert torch.equal(view.undo(y), x)
        if not view.is_identity:
            assert not torch.equal(y, x)


def test_preset_sizes():
    assert tta_views("none", 3) == (IDENTITY,)
    assert len(tta_views("flip", 3)) == 4
    assert len(tta_views("full", 3)) == 8
    assert len(tta_views("flip", 2)) == 3
    full2 = tta_views("full", 2)
    assert len(full2) == 8  # the 8 symmetries of the square
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    images = {tuple(v.apply(x).flatten().tolist()) for v in full2}
    assert len(images) == 8  # all distinct


def test_allowed_families_and_non_square_planes():
    assert tta_views("full", 2, allowed=("flip",)) == tta_views("full", 2, square=False)
    assert all(v.rot90 == 0 for v in tta_views("full", 2, square=False))
    assert tta_views("full", 3, allowed=()) == (IDENTITY,)
    assert tta_views("full", 2, allowed=("rot90",)) == (IDENTITY, TTAView(rot90=1))
    assert tta_views("full", 3, allowed=("rot90",)) == (IDENTITY,)  # no rot90 for 3D windows
    with pytest.raises(ValueError):
        tta_views("many", 3)


def test_rot90_round_trips_on_a_non_square_tile():
    # Round trip is exact even where the shape changes; batching only avoids it.
    x = torch.rand(1, 1, 4, 7)
    view = TTAView(flips=(0,), rot90=1)
    y = view.apply(x)
    assert y.shape == (1, 1, 7, 4)
    assert torch.equal(view.undo(y), x)


def test_flip_axis_out_of_range():
    with pytest.raises(ValueError):
        TTAView(flips=(3,)).apply(torch.rand(1, 1, 2, 2, 2))
