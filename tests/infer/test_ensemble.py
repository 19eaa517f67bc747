import numpy as np
import pytest
import torch

from vesukit.infer import EnsembleAccumulator, EnsembleError


def numpy_reference(maps, weights, mode):
    stack = np.stack(maps).astype(np.float64)
    w = np.asarray(weights, dtype=np.float64)
    values = stack
    if mode == "logit":
        # clamp bounds as float32 holds them (the maps are float32 probabilities)
        q = np.clip(stack, np.float32(1e-6), np.float32(1 - 1e-6)).astype(np.float64)
        values = np.log(q) - np.log1p(-q)
    mean = np.average(values, axis=0, weights=w)
    variance = np.average((values - mean) ** 2, axis=0, weights=w)
    prob_mean = 1 / (1 + np.exp(-mean)) if mode == "logit" else mean
    votes = stack > 0.5
    ensemble_vote = prob_mean > 0.5
    dissent = (votes != ensemble_vote[None]).astype(np.float64)
    disagreement = np.average(dissent, axis=0, weights=w)
    return prob_mean, variance, disagreement


@pytest.mark.parametrize("mode", ["probability", "logit"])
@pytest.mark.parametrize("weights", [[1.0] * 9, [0.5, 2.0, 1.0, 3.0, 0.25], [1.0]])
def test_streaming_statistics_equal_numpy_on_stacked_maps(mode, weights):
    rng = np.random.default_rng(len(weights))
    shape = (6, 7, 5)
    base = rng.random(shape)
    maps = [np.clip(base + rng.normal(0, 0.3, shape), 0, 1).astype(np.float32) for _ in weights]
    acc = EnsembleAccumulator(shape, "cpu", mode=mode)
    for m, w in zip(maps, weights):
        acc.add(torch.from_numpy(m) if len(maps) % 2 else m, w)  # tensors and arrays both work
    result = acc.result()
    mean, variance, disagreement = numpy_reference(maps, weights, mode)
    assert result.n_teachers == len(weights)
    assert result.total_weight == pytest.approx(sum(weights))
    tol = 1e-5 if mode == "probability" else 2e-4  # logits reach +-14
    assert np.allclose(result.mean.numpy(), mean, atol=1e-5)
    assert np.allclose(result.variance.numpy(), variance, atol=tol, rtol=1e-4)
    # disagreement is exact except where the mean sits on 0.5 within float32 rounding
    close_to_half = np.abs(mean - 0.5) < 1e-5
    assert np.allclose(result.disagreement.numpy()[~close_to_half], disagreement[~close_to_half], atol=1e-6)
    assert result.mean.dtype == torch.float32


def test_disagreement_example():
    acc = EnsembleAccumulator((3,))
    acc.add(np.array([0.9, 0.9, 0.1], np.float32), 1.0)
    acc.add(np.array([0.8, 0.2, 0.1], np.float32), 1.0)
    acc.add(np.array([0.7, 0.1, 0.4], np.float32), 2.0)
    r = acc.result()
    # voxel 0: all vote yes -> 0; voxel 1: mean 0.325 says no, one teacher (weight 1) says yes
    assert r.disagreement.tolist() == pytest.approx([0.0, 0.25, 0.0])


def test_numpy_and_half_copies():
    acc = EnsembleAccumulator((2, 2))
    acc.add(np.full((2, 2), 0.7, np.float32))
    r = acc.result()
    n = r.to_numpy()
    assert isinstance(n.mean, np.ndarray) and n.mean.dtype == np.float32
    assert r.half().mean.dtype == torch.float16
    assert n.half().variance.dtype == np.float16


def test_bad_inputs_are_named():
    acc = EnsembleAccumulator((4, 4, 4))
    with pytest.raises(EnsembleError, match="unet_a.*shape"):
        acc.add(np.zeros((4, 4, 5), np.float32), name="unet_a")
    with pytest.raises(EnsembleError, match="weight"):
        acc.add(np.zeros((4, 4, 4), np.float32), weight=0.0)
    with pytest.raises(EnsembleError, match="empty"):
        acc.result()
    with pytest.raises(ValueError):
        EnsembleAccumulator((2,), mode="median")
