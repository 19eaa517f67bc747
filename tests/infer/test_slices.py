import numpy as np
import pytest
import torch

from tests.infer.helpers import PointwiseNet, TinyConvNet
from vesukit.infer import context_indices, predict_slices, predict_slices_multi_axis, tta_views


def test_context_indices_at_the_edges():
    assert context_indices(5, 5, "replicate").tolist() == [0, 0, 0, 1, 2, 3, 4, 4, 4]
    assert context_indices(5, 5, "reflect").tolist() == [2, 1, 0, 1, 2, 3, 4, 3, 2]
    assert context_indices(1, 3, "reflect").tolist() == [0, 0, 0]
    assert context_indices(4, 1).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        context_indices(5, 4)


def channel_picker(j):
    """A 'model' that returns context channel j: shows which slice fed each position."""
    return lambda batch: batch[:, j : j + 1]


@pytest.mark.parametrize("edge", ["replicate", "reflect"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_context_channels_hold_the_neighbouring_slices(edge, axis):
    volume = torch.rand(6, 9, 7)
    context = 5
    moved = volume.movedim(axis, 0).numpy()
    n = moved.shape[0]
    for j in range(context):
        out = predict_slices(volume, channel_picker(j), axis=axis, context=context, patch=(8, 8), edge=edge)
        assert out.shape == (1, 6, 9, 7)
        offset = j - context // 2
        if edge == "replicate":
            source = [min(max(s + offset, 0), n - 1) for s in range(n)]
        else:
            source = [abs(s + offset) if s + offset < n else 2 * (n - 1) - (s + offset) for s in range(n)]
        expected = np.moveaxis(moved[source], 0, axis)
        assert np.allclose(out[0].numpy(), expected, atol=1e-6), (j, edge, axis)


@pytest.mark.parametrize("plane", ["tile", "whole"])
def test_pointwise_model_on_odd_planes(plane):
    volume = torch.rand(5, 40, 50)
    model = PointwiseNet(3, 1, dims=2)
    seen = []

    def predictor(batch):
        seen.append(tuple(batch.shape[2:]))
        return model(batch)

    out = predict_slices(volume, predictor, context=3, patch=(32, 32), plane=plane, multiple=32, batch_size=4)
    if plane == "whole":
        assert set(seen) == {(64, 64)}
    else:
        assert set(seen) == {(32, 32)}
    # pointwise across channels: reference built from explicit replicate-edged stacks
    idx = context_indices(5, 3)
    stacks = torch.stack([volume[idx[s : s + 3]] for s in range(5)])
    with torch.no_grad():
        expected = model(stacks)[:, 0]
    assert torch.allclose(out[0], expected, atol=1e-6)


def test_plane_smaller_than_the_patch_is_padded():
    volume = torch.rand(4, 10, 13)
    out = predict_slices(volume, channel_picker(0), context=1, patch=(32, 32))
    assert torch.allclose(out[0], volume, atol=1e-6)


def test_axis_is_consistent_with_transposing_the_volume():
    volume = torch.rand(12, 20, 16)
    model = TinyConvNet(3, 1, dims=2).eval()
    along_y = predict_slices(volume, model, axis=1, context=3, patch=(16, 16))
    transposed = predict_slices(volume.movedim(1, 0).contiguous(), model, axis=0, context=3, patch=(16, 16))
    assert torch.allclose(along_y[0], transposed[0].movedim(0, 1), atol=1e-6)


def test_multi_axis_average():
    volume = torch.rand(12, 20, 16)
    model = TinyConvNet(3, 1, dims=2).eval()
    kwargs = dict(context=3, patch=(16, 16), batch_size=8)
    single = [predict_slices(volume, model, axis=a, **kwargs) for a in (0, 1, 2)]
    averaged = predict_slices_multi_axis(volume, model, axes=(0, 1, 2), **kwargs)
    assert torch.allclose(averaged, sum(single) / 3, atol=1e-6)
    assert not torch.allclose(single[0], single[1], atol=1e-3)  # the axes really differ


def test_full_tta_equals_the_mean_over_the_eight_symmetries():
    volume = torch.rand(6, 24, 24)  # square plane, grid symmetric under the symmetries
    model = TinyConvNet(3, 1, dims=2).eval()
    views = tta_views("full", 2)
    out = predict_slices(volume, model, context=3, patch=(16, 16), views=views, batch_size=16)
    manual = torch.zeros_like(out)
    for view in views:
        transformed = view.apply(volume[None])[0]  # flips/rot90 act on the (Y, X) plane
        run = predict_slices(transformed.contiguous(), model, context=3, patch=(16, 16))
        manual += view.undo(run)  # (1, Z, Y, X): Z plays the channel, (Y, X) the plane
    manual /= len(views)
    assert torch.allclose(out, manual, atol=1e-5)


def test_non_square_patch_with_flip_tta():
    volume = torch.rand(4, 20, 33)
    model = TinyConvNet(1, 1, dims=2).eval()
    views = tta_views("full", 2, square=False)
    out = predict_slices(volume, model, context=1, patch=(16, 24), views=views)
    assert out.shape == (1, 4, 20, 33)
    assert torch.isfinite(out).all()
