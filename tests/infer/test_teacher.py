import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.infer.helpers import TinyConvNet, reference_blend
from vesukit.data import read_volume, write_volume
from vesukit.infer import (
    EnsembleAccumulator,
    TeacherError,
    normalize_volume,
    predict_slices_multi_axis,
    predict_teacher,
    tta_views,
)
from vesukit.synth import synth_volume


@dataclass(frozen=True)
class Norm:
    scale: float = 1 / 255
    mean: float = 0.35
    std: float = 0.2


@dataclass(frozen=True)
class Spec:
    """Same fields as vesukit.teachers.TeacherSpec (the engine only reads attributes)."""

    name: str
    arch: str
    encoder: str | None
    input_kind: str
    patch: tuple[int, ...]
    checkpoint: str = "model.safetensors"
    axes: tuple[int, ...] = (0,)
    context: int = 1
    normalization: Norm = field(default_factory=Norm)
    output: str = "logit"
    out_channels: int = 1
    channel: int = 0
    weight: float = 1.0
    tta: tuple[str, ...] = ("flip", "rot90")

    @property
    def in_channels(self) -> int:
        return self.context if self.input_kind == "2.5d" else 1


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    # A real multipage TIFF, read back as the pipeline would.
    image, _label = synth_volume((20, 26, 18), seed=3)
    path = write_volume(tmp_path_factory.mktemp("vol") / "v.tif", image)
    return read_volume(path)


class Sigmoid(torch.nn.Module):
    def __init__(self, model, channel=0):
        super().__init__()
        self.model, self.channel = model, channel

    def forward(self, x):
        return torch.sigmoid(self.model(x)[:, self.channel : self.channel + 1])


def test_3d_teacher_is_the_blend_of_window_probabilities(volume):
    spec = Spec("unet3d", "resenc_unet3d", None, "3d", (16, 16, 16), out_channels=2, channel=1)
    model = TinyConvNet(1, 2).eval()
    out = predict_teacher(volume, model, spec, device="cpu", batch_size=4)
    assert out.shape == volume.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    x = normalize_volume(volume, spec.normalization, "cpu")
    assert torch.allclose(x, (torch.from_numpy(volume).float() / 255 - 0.35) / 0.2, atol=1e-6)
    expected = reference_blend(x[None], Sigmoid(model, 1), (16, 16, 16))[0]
    assert torch.allclose(out, expected, atol=1e-5)


def test_probability_output_is_not_squashed_again(volume):
    spec = Spec("p", "x", None, "3d", (16, 16, 16), output="probability")
    model = Sigmoid(TinyConvNet(1, 1)).eval()
    out = predict_teacher(volume, model, spec, device="cpu")
    x = normalize_volume(volume, spec.normalization, "cpu")
    assert torch.allclose(out, reference_blend(x[None], model, (16, 16, 16))[0], atol=1e-5)


def test_25d_teacher_over_several_axes(volume):
    spec = SimpleNamespace(
        name="unet25d", input_kind="2.5d", patch=(16, 16), axes=(0, 2), context=3,
        normalization=Norm(), output="logit", channel=0, tta=("flip", "rot90"),
    )
    model = TinyConvNet(3, 1, dims=2).eval()
    out = predict_teacher(volume, model, spec, device="cpu", tta="full", batch_size=16)
    x = normalize_volume(volume, spec.normalization, "cpu")
    expected = predict_slices_multi_axis(
        x, Sigmoid(model), axes=(0, 2), context=3, patch=(16, 16), views=tta_views("full", 2), batch_size=16
    )[0]
    assert out.shape == volume.shape
    assert torch.allclose(out, expected, atol=1e-6)


def test_tta_preset_is_restricted_to_what_the_teacher_tolerates(volume):
    strict = Spec("strict", "x", None, "3d", (16, 16, 16), tta=())
    model = TinyConvNet().eval()
    none = predict_teacher(volume, model, strict, device="cpu", tta="none")
    full = predict_teacher(volume, model, strict, device="cpu", tta="full")
    assert torch.equal(none, full)
    tolerant = Spec("tolerant", "x", None, "3d", (16, 16, 16))
    assert not torch.allclose(predict_teacher(volume, model, tolerant, device="cpu", tta="full"), none, atol=1e-4)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(input_kind="4d"), "input_kind"),
        (dict(patch=(16, 16)), "patch"),
        (dict(input_kind="2.5d", patch=(16, 16), context=4), "context"),
        (dict(output="softmax"), "output"),
    ],
)
def test_bad_specs_name_the_teacher(volume, changes, message):
    fields = dict(name="broken_teacher", arch="x", encoder=None, input_kind="3d", patch=(16, 16, 16))
    fields.update(changes)
    with pytest.raises(TeacherError, match=f"broken_teacher.*{message}"):
        predict_teacher(volume, TinyConvNet(), Spec(**fields), device="cpu")
    with pytest.raises(TeacherError, match="tta"):
        predict_teacher(volume, TinyConvNet(), Spec("t", "x", None, "3d", (16, 16, 16)), device="cpu", tta="max")


def test_two_teachers_into_the_ensemble(volume):
    teachers = [
        (Spec("a", "x", None, "3d", (16, 16, 16), weight=2.0), TinyConvNet(seed=1)),
        (Spec("b", "x", None, "2.5d", (16, 16), context=3, weight=1.0), TinyConvNet(3, 1, dims=2, seed=2)),
    ]
    acc = EnsembleAccumulator(volume.shape, "cpu")
    maps = []
    for spec, model in teachers:
        prob = predict_teacher(volume, model, spec, device="cpu", tta="flip")
        maps.append(prob)
        acc.add(prob, spec.weight, name=spec.name)
    result = acc.result()
    assert torch.allclose(result.mean, (2 * maps[0] + maps[1]) / 3, atol=1e-6)
    assert result.n_teachers == 2 and result.total_weight == 3.0


def test_importing_vesukit_does_not_import_torch():
    code = "import sys, vesukit; assert 'torch' not in sys.modules, 'torch imported'"
    src = Path(__file__).resolve().parents[2] / "src"
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(src)})
