"""The architecture registry: every family returns full input resolution, nothing is
downloaded, and the full seed9 preset has the real architectures' parameter counts."""

from __future__ import annotations

import socket

import pytest
import torch
from teacher_fixtures import ALL_ARCHS, tiny_spec

from vesukit.teachers import ARCHITECTURES, TeacherError, TeacherSpec, build_model
from vesukit.teachers.presets import preset_specs


def test_registry_covers_the_contract():
    for name in ("smp.Unet", "smp.UnetPlusPlus", "smp.FPN", "smp.Segformer", "transunet",
                 "resenc_unet3d"):
        assert name in ARCHITECTURES
    assert set(ALL_ARCHS) <= set(ARCHITECTURES)


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_models_return_full_input_resolution(arch):
    spec = tiny_spec(arch, out_channels=2, channel=1)
    model = build_model(spec).eval()
    sizes = [spec.patch, tuple(2 * p for p in spec.patch)]
    if spec.input_kind == "2.5d":
        sizes.append((spec.patch[0], 2 * spec.patch[1]))      # non-square tiles
    for size in sizes:
        x = torch.randn(1, spec.in_channels, *size)
        with torch.no_grad():
            y = model(x)
        assert y.shape == (1, 2, *size), (arch, size)
        assert y.dtype == torch.float32 and bool(torch.isfinite(y).all())


def test_probability_output_via_activation():
    spec = tiny_spec("transunet", output="probability",
                     model_kwargs={**tiny_spec("transunet").model_kwargs,
                                   "activation": "sigmoid"})
    with torch.no_grad():
        y = build_model(spec).eval()(torch.randn(1, 3, 32, 32) * 10)
    assert float(y.min()) >= 0 and float(y.max()) <= 1


@pytest.mark.parametrize("encoder", ["resnet18", "tu-resnet18"])
def test_transunet_has_no_dead_weights(encoder):
    """Every parameter takes part in the forward (smp keeps layer4 at depth 4; we drop it)."""
    spec = tiny_spec("transunet", encoder=encoder)
    model = build_model(spec)
    model(torch.randn(2, spec.in_channels, *spec.patch)).sum().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert unused == []


def test_unknown_encoder_and_bad_kwargs_name_the_teacher():
    with pytest.raises(TeacherError, match=r"teacher 'x': field 'encoder': smp has no "
                                           r"encoder 'resnet35'"):
        build_model(tiny_spec("smp.Unet", name="x", encoder="resnet35", model_kwargs={}))
    with pytest.raises(TeacherError, match=r"teacher 'y': cannot build transunet .*"
                                           r"decoder_channels needs one entry per encoder"):
        build_model(tiny_spec("transunet", name="y", model_kwargs={
            **tiny_spec("transunet").model_kwargs, "decoder_channels": [8, 8]}))


def test_nothing_reaches_the_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a teacher build tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for arch in ALL_ARCHS:
        build_model(tiny_spec(arch))
    build_model(TeacherSpec(name="real_encoder", arch="smp.Unet", encoder="resnet18",
                            input_kind="2.5d", patch=(32, 32), context=3,
                            checkpoint="w.safetensors"))


# Real parameter counts (smp 0.6 / timm 1.0, 1 output channel unless stated); the ranges
# allow small differences between library versions, not a different network.
FULL_PARAMETERS = {
    "v1_default": (24.0e6, 25.0e6),              # smp Unet resnet34: 24.44M
    "v1_segformer_mit_b2": (24.5e6, 25.0e6),     # smp Segformer mit_b2: 24.73M
    "v1_transunet_seresnext": (98e6, 108e6),     # TransUNet SE-ResNeXt50 + ViT-B: 102.8M
    "v1_segformer_mit_b4": (60.5e6, 62.0e6),     # smp Segformer mit_b4: 61.38M
    "v2_default": (50.0e6, 52.0e6),              # smp UnetPlusPlus se_resnext50: 51.0M
    "v2_segformer_mit_b2": (24.5e6, 25.0e6),
    "v2_transunet_seresnext": (98e6, 108e6),
    "v2_transunet": (97e6, 107e6),               # R50-ViT-B/16 (paper: 105.3M): 102.0M
    "v3_transunet": (97e6, 107e6),
}


def test_full_seed9_models_have_real_sizes():
    counts = {}
    shapes = {}
    for spec in preset_specs("seed9", "full"):
        assert spec.patch == (256, 256)
        key = (spec.arch, spec.encoder, spec.in_channels, spec.out_channels)
        if key not in shapes:                      # identical networks are built once
            model = build_model(spec)
            shapes[key] = sum(p.numel() for p in model.parameters())
            del model
        counts[spec.name] = shapes[key]
    for name, (low, high) in FULL_PARAMETERS.items():
        assert low <= counts[name] <= high, f"{name}: {counts[name]:,} parameters"
    assert counts["v1_segformer_mit_b4"] > 2 * counts["v1_segformer_mit_b2"]


def test_full_unet3d_is_resenc_m_sized():
    spec = preset_specs("unet3d", "full")[0]
    model = build_model(spec)
    assert 95e6 <= sum(p.numel() for p in model.parameters()) <= 110e6
    assert len(model.encoder) == 6 and [len(stage) for stage in model.encoder] == \
        [1, 3, 4, 6, 6, 6]
