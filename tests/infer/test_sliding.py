import pytest
import torch

from tests.infer.helpers import PointwiseNet, TinyConvNet, reference_blend
from vesukit.infer import SlidingWindowInferer, sliding_window_3d, tta_views
from vesukit.infer.memory import InferenceMemoryError, OomPolicy, batch_size_from_free_memory, is_out_of_memory


def identity(batch):
    return batch


@pytest.mark.parametrize("shape", [(37, 50, 23), (16, 16, 16), (5, 40, 3), (64, 17, 33)])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.8])
@pytest.mark.parametrize("pad_mode", ["replicate", "reflect", "constant"])
def test_identity_model_returns_its_input(shape, overlap, pad_mode):
    torch.manual_seed(1)
    x = torch.rand(shape)
    out = sliding_window_3d(x, identity, (16, 16, 16), overlap=overlap, pad_mode=pad_mode, batch_size=3)
    assert out.shape == (1,) + shape and out.dtype == torch.float32
    # exact up to float32 rounding of the weighted sums (many windows overlap at 0.8)
    assert torch.allclose(out[0], x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(7, 9, 11), (1, 1, 1), (20, 3, 30)])
def test_volume_smaller_than_the_patch_is_padded_and_cropped(shape):
    x = torch.rand(shape)
    model = PointwiseNet(1, 2)
    out = sliding_window_3d(x, model, (16, 16, 16))
    with torch.no_grad():
        expected = model(x[None, None])[0]
    assert out.shape == (2,) + shape
    assert torch.allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize("blend", ["constant", "gaussian"])
def test_pointwise_model_blend_equals_whole_volume(blend):
    x = torch.rand(2, 30, 41, 26)  # two input channels, odd shape
    model = PointwiseNet(2, 3)
    with torch.no_grad():
        expected = model(x[None])[0]
    out = sliding_window_3d(x, model, (12, 16, 10), overlap=0.5, blend=blend, batch_size=5)
    assert torch.allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize("batch_size", [1, 4, 64])
def test_conv_model_matches_a_plain_window_loop(batch_size):
    torch.manual_seed(2)
    x = torch.rand(1, 40, 24, 32)
    model = TinyConvNet().eval()
    expected = reference_blend(x, model, (16, 16, 16), overlap=0.5)
    out = sliding_window_3d(x, model, (16, 16, 16), overlap=0.5, batch_size=batch_size)
    assert torch.allclose(out, expected, atol=1e-5)


def test_conv_model_matches_monai():
    monai_inferers = pytest.importorskip("monai.inferers")
    torch.manual_seed(3)
    x = torch.rand(1, 1, 48, 32, 32)
    model = TinyConvNet().eval()
    # On these sizes both grids put windows at the same places.
    with torch.no_grad():
        expected = monai_inferers.sliding_window_inference(
            x, (16, 16, 16), 4, model, overlap=0.5, mode="gaussian", sigma_scale=0.125
        )
    out = sliding_window_3d(x, model, (16, 16, 16), overlap=0.5, batch_size=4)
    assert out.shape == expected.shape
    assert torch.allclose(out, expected, atol=1e-5)


def test_flip_tta_equals_the_mean_of_flipped_runs():
    torch.manual_seed(4)
    x = torch.rand(1, 24, 20, 28)
    model = TinyConvNet().eval()
    views = tta_views("full", 3)
    assert len(views) == 8
    out = sliding_window_3d(x, model, (16, 16, 16), views=views, batch_size=6)
    manual = torch.zeros_like(out)
    for view in views:
        dims = [1 + a for a in view.flips]
        flipped = x.flip(dims) if dims else x
        run = sliding_window_3d(flipped, model, (16, 16, 16), batch_size=6)
        manual += run.flip(dims) if dims else run
    manual /= len(views)
    assert torch.allclose(out, manual, atol=1e-5)


def test_tta_with_a_flip_invariant_model_changes_nothing():
    x = torch.rand(1, 21, 18, 25)
    model = PointwiseNet()
    plain = sliding_window_3d(x, model, (16, 16, 16))
    augmented = sliding_window_3d(x, model, (16, 16, 16), views=tta_views("flip", 3), batch_size=7)
    assert torch.allclose(plain, augmented, atol=1e-6)


def test_batched_inputs_and_inferer_wrapper():
    x = torch.rand(3, 1, 20, 20, 20)
    inferer = SlidingWindowInferer(patch=(16, 16, 16), batch_size=5)
    out = inferer(x, identity)
    assert out.shape == (3, 1, 20, 20, 20)
    assert torch.allclose(out, x, atol=1e-6)


def test_predictor_with_wrong_output_shape_is_refused():
    with pytest.raises(ValueError, match="must return"):
        sliding_window_3d(torch.rand(20, 20, 20), lambda b: b[:, :, :8], (16, 16, 16))


class FlakyOnLargeBatches:
    """Raises a CUDA out-of-memory error for batches above ``limit`` (as a GPU would)."""

    def __init__(self, model, limit, error=torch.cuda.OutOfMemoryError):
        self.model, self.limit, self.error, self.failures, self.sizes = model, limit, error, 0, []

    def __call__(self, batch):
        if batch.shape[0] > self.limit:
            self.failures += 1
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.sizes.append(batch.shape[0])
        return self.model(batch)


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError, RuntimeError])
def test_out_of_memory_halves_the_batch_and_gives_the_same_result(error):
    torch.manual_seed(5)
    x = torch.rand(1, 40, 30, 30)
    model = TinyConvNet().eval()
    views = tta_views("flip", 3)
    expected = sliding_window_3d(x, model, (16, 16, 16), views=views, batch_size=16)
    flaky = FlakyOnLargeBatches(model, limit=3, error=error)
    out = sliding_window_3d(x, flaky, (16, 16, 16), views=views, batch_size=16)
    assert flaky.failures == 3  # 16 -> 8 -> 4 -> 2
    assert max(flaky.sizes) == 2
    assert torch.allclose(out, expected, atol=1e-6)


def test_out_of_memory_at_batch_one_on_cpu_gives_a_clear_error():
    flaky = FlakyOnLargeBatches(identity, limit=0)
    with pytest.raises(InferenceMemoryError, match="smaller patch"):
        sliding_window_3d(torch.rand(20, 20, 20), flaky, (16, 16, 16), batch_size=4)


def test_other_errors_are_not_swallowed():
    def broken(batch):
        raise RuntimeError("shape mismatch in layer 3")

    with pytest.raises(RuntimeError, match="layer 3"):
        sliding_window_3d(torch.rand(20, 20, 20), broken, (16, 16, 16))


def test_oom_policy_ladder_halves_then_moves_accumulators_then_raises():
    policy = OomPolicy(batch_size=8, can_move_accumulators=True)
    seen = []
    for _ in range(4):
        policy.on_out_of_memory("teacher a")
        seen.append((policy.batch_size, policy.accumulate_on_cpu))
    assert seen == [(4, False), (2, False), (1, False), (1, True)]
    with pytest.raises(InferenceMemoryError, match="teacher a"):
        policy.on_out_of_memory("teacher a")


def test_out_of_memory_detection_and_batch_from_free_memory():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("x"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not is_out_of_memory(RuntimeError("size mismatch"))
    gib = 1 << 30
    assert batch_size_from_free_memory("cuda", gib, free_bytes=16 * gib, reserve_fraction=0.25) == 12
    assert batch_size_from_free_memory("cuda", 64 * gib, free_bytes=16 * gib) == 1
    assert batch_size_from_free_memory("cuda", 1, free_bytes=16 * gib, max_batch=32) == 32
    assert batch_size_from_free_memory("cpu", gib) >= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_under_autocast():
    x = torch.rand(1, 40, 36, 30)
    model = TinyConvNet().eval()
    cpu = sliding_window_3d(x, model, (16, 16, 16))
    gpu = sliding_window_3d(x, model.cuda(), (16, 16, 16), device="cuda")
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, atol=5e-3)


class FailsFirstCalls:
    """Raises CUDA out-of-memory on its first ``count`` calls, whatever the batch."""

    def __init__(self, model, count):
        self.model, self.count = model, count

    def __call__(self, batch):
        if self.count > 0:
            self.count -= 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return self.model(batch)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_last_resort_moves_the_accumulators_to_the_cpu():
    x = torch.rand(1, 30, 30, 30, device="cuda")
    model = TinyConvNet().cuda().eval()
    expected = sliding_window_3d(x, model, (16, 16, 16), batch_size=4)
    # 4 -> 2 -> 1 -> accumulators to CPU -> succeeds
    out = sliding_window_3d(x, FailsFirstCalls(model, 3 + 1), (16, 16, 16), batch_size=4)
    assert out.device.type == "cpu"
    assert torch.allclose(out, expected.cpu(), atol=1e-5)


def test_without_an_accelerator_the_ladder_ends_after_batch_one():
    x = torch.rand(1, 30, 30, 30)
    model = TinyConvNet().eval()
    expected = sliding_window_3d(x, model, (16, 16, 16), batch_size=4)
    out = sliding_window_3d(x, FailsFirstCalls(model, 2), (16, 16, 16), batch_size=4)  # 4 -> 2 -> 1
    assert torch.allclose(out, expected, atol=1e-6)
    with pytest.raises(InferenceMemoryError):
        sliding_window_3d(x, FailsFirstCalls(model, 3), (16, 16, 16), batch_size=4)
