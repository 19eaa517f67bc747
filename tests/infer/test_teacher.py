import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.fixtures import teacher_spec
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
    spec = teacher_spec("unet3d", out_channels=2, channel=1)
    model = TinyConvNet(1, 2).eval()
    out = predict_teacher(volume, model, spec, device="cpu", batch_size=4)
    assert out.shape == volume.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    x = normalize_volume(volume, spec.normalization, "cpu")
    assert torch.allclose(x, (torch.from_numpy(volume).float() / 255 - 0.35) / 0.2, atol=1e-6)
    expected = reference_blend(x[None], Sigmoid(model, 1), (16, 16, 16))[0]
    assert torch.allclose(out, expected, atol=1e-5)


def test_probability_output_is_not_squashed_again(volume):
    spec = teacher_spec("p", output="probability")
    model = Sigmoid(TinyConvNet(1, 1)).eval()
    out = predict_teacher(volume, model, spec, device="cpu")
    x = normalize_volume(volume, spec.normalization, "cpu")
    assert torch.allclose(out, reference_blend(x[None], model, (16, 16, 16))[0], atol=1e-5)


def test_25d_teacher_over_several_axes(volume):
    spec = teacher_spec("unet25d", "2.5d", axes=(0, 2), context=3)
    model = TinyConvNet(3, 1, dims=2).eval()
    out = predict_teacher(volume, model, spec, device="cpu", tta="full", batch_size=16)
    x = normalize_volume(volume, spec.normalization, "cpu")
    expected = predict_slices_multi_axis(
        x, Sigmoid(model), axes=(0, 2), context=3, patch=(16, 16), views=tta_views("full", 2), batch_size=16
    )[0]
    assert out.shape == volume.shape
    assert torch.allclose(out, expected, atol=1e-6)


def test_tta_preset_is_restricted_to_what_the_teacher_tolerates(volume):
    strict = teacher_spec("strict", tta=())
    model = TinyConvNet().eval()
    none = predict_teacher(volume, model, strict, device="cpu", tta="none")
    full = predict_teacher(volume, model, strict, device="cpu", tta="full")
    assert torch.equal(none, full)
    tolerant = teacher_spec("tolerant")
    assert not torch.allclose(predict_teacher(volume, model, tolerant, device="cpu", tta="full"), none, atol=1e-4)


def unchecked(spec, **changes):
    """``spec`` with ``changes`` set past TeacherSpec's checks (see the test below)."""
    copy = object.__new__(type(spec))
    for f in dataclasses.fields(spec):
        object.__setattr__(copy, f.name, changes.get(f.name, getattr(spec, f.name)))
    return copy


@pytest.mark.parametrize(
    "kind, changes, message",
    [
        ("3d", dict(input_kind="4d"), "input_kind"),
        ("3d", dict(patch=(16, 16)), "patch"),
        ("2.5d", dict(context=4), "context"),
        ("3d", dict(output="softmax"), "output"),
    ],
)
def test_bad_specs_name_the_teacher(volume, kind, changes, message):
    spec = teacher_spec("broken_teacher", kind)
    # A user's spec comes through TeacherSpec (teachers.json), which refuses it. The engine reads
    # specs by attribute and checks them again for callers that skip TeacherSpec; a frozen,
    # self-validating TeacherSpec can only carry a refused value when built without __init__.
    with pytest.raises(TeacherError, match=f"broken_teacher.*{message}"):
        dataclasses.replace(spec, **changes)
    with pytest.raises(TeacherError, match=f"broken_teacher.*{message}"):
        predict_teacher(volume, TinyConvNet(), unchecked(spec, **changes), device="cpu")
    with pytest.raises(TeacherError, match="tta"):
        predict_teacher(volume, TinyConvNet(), teacher_spec("t"), device="cpu", tta="max")


def test_two_teachers_into_the_ensemble(volume):
    teachers = [
        (teacher_spec("a", weight=2.0), TinyConvNet(seed=1)),
        (teacher_spec("b", "2.5d", context=3, weight=1.0), TinyConvNet(3, 1, dims=2, seed=2)),
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
