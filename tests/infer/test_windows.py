import pytest
import torch

from vesukit.infer.windows import MIN_IMPORTANCE, axis_starts, importance_map, window_grid


@pytest.mark.parametrize("size", [1, 7, 64, 65, 100, 128, 129, 320, 384])
@pytest.mark.parametrize("patch", [16, 64, 128])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.75])
def test_axis_starts_cover_the_axis_evenly(size, patch, overlap):
    starts = axis_starts(size, patch, overlap)
    assert starts[0] == 0
    if size <= patch:
        assert starts == [0]
        return
    assert starts[-1] == size - patch  # last window flush with the border
    steps = [b - a for a, b in zip(starts, starts[1:])]
    assert all(s > 0 for s in steps)
    assert max(steps) <= max(1, int(patch * (1 - overlap)))  # never less overlap than asked
    assert max(steps) - min(steps) <= 1  # spread evenly


def test_axis_starts_match_the_usual_grid_where_it_divides():
    assert axis_starts(320, 128, 0.5) == [0, 64, 128, 192]
    assert axis_starts(128, 64, 0.5) == [0, 32, 64]


def test_window_grid_is_the_product_of_axes():
    grid = window_grid((100, 64, 30), (64, 64, 64), 0.5)
    assert len(grid) == len(axis_starts(100, 64, 0.5))
    assert all(len(corner) == 3 for corner in grid)


def test_bad_arguments():
    with pytest.raises(ValueError):
        axis_starts(10, 4, 1.0)
    with pytest.raises(ValueError):
        window_grid((10, 10), (4, 4, 4), 0.5)
    with pytest.raises(ValueError):
        importance_map((8, 8), mode="triangle")


def test_gaussian_importance_map_shape_peak_floor_and_cache():
    w = importance_map((16, 20, 9), sigma_scale=0.125)
    assert w.shape == (16, 20, 9) and w.dtype == torch.float32
    assert float(w.min()) == pytest.approx(MIN_IMPORTANCE)
    assert float(w.max()) <= 1.0 and float(w.max()) > 0.9
    # separable and symmetric
    assert torch.allclose(w, w.flip(0)) and torch.allclose(w, w.flip(1)) and torch.allclose(w, w.flip(2))
    assert importance_map((16, 20, 9), sigma_scale=0.125) is w  # cached
    assert importance_map((16, 20, 9), sigma_scale=0.25) is not w
    assert torch.equal(importance_map((4, 4), mode="constant"), torch.ones(4, 4))
