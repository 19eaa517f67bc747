"""The one registry of teacher architectures and the one factory, :func:`build_model`.

Importing this module is torch-free (the manifest validator needs the names); torch, smp and
timm are imported only when a model is built. Weights are never downloaded: smp encoders get
``encoder_weights=None`` and ``HF_HUB_OFFLINE=1`` is set before smp is imported.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vesukit.teachers.base import TeacherError, thaw

if TYPE_CHECKING:
    import torch

    from vesukit.teachers.spec import TeacherSpec

# smp decoders vesukit knows how to build; any smp encoder name works with each of them.
SMP_ARCHS = ("Unet", "UnetPlusPlus", "FPN", "Segformer", "Linknet", "PSPNet", "DeepLabV3Plus",
             "MAnet", "PAN", "UPerNet")

# A small MiT (SegFormer's encoder) registered with smp under this name, so the tiny preset's
# SegFormers are the same family as mit_b2/mit_b4 (smp's own smallest, mit_b0, is 3.3M
# parameters). Widths/depths are a shrunken mit_b0.
TINY_MIT = "vesukit-mit_tiny"


@dataclass(frozen=True)
class Architecture:
    name: str
    input_kind: str                               # "2.5d" or "3d"
    needs_encoder: bool
    build: Callable[[TeacherSpec], Any]            # -> torch.nn.Module
    patch_multiple: Callable[[TeacherSpec], int]   # every patch size must be a multiple
    description: str


ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(arch: Architecture) -> None:
    """Add (or replace) an architecture; its name becomes a valid ``TeacherSpec.arch``."""
    ARCHITECTURES[arch.name] = arch


def patch_multiple(spec: TeacherSpec) -> int:
    return int(ARCHITECTURES[spec.arch].patch_multiple(spec))


def build_model(spec: TeacherSpec, *, init_weights: bool = True) -> torch.nn.Module:
    """A freshly initialised network for ``spec`` (random weights, training mode, on CPU).
    It maps ``(B, spec.in_channels, *patch)`` float32 to ``(B, spec.out_channels, *patch)``.

    ``init_weights=False`` skips the random initialisation of the parameters (seconds for
    the large encoders): they are allocated but hold garbage, so use it only when a
    checkpoint that covers every parameter is loaded next (strict loading does)."""
    try:
        if not init_weights:
            return _build_uninitialised(ARCHITECTURES[spec.arch].build, spec)
        return ARCHITECTURES[spec.arch].build(spec)
    except TeacherError:
        raise
    except (TypeError, KeyError, ValueError, AssertionError, RuntimeError) as exc:
        raise TeacherError(
            f"teacher '{spec.name}': cannot build {spec.arch} (encoder={spec.encoder!r}, "
            f"model_kwargs={thaw(spec.model_kwargs)}): {type(exc).__name__}: {exc}") from None


def _build_uninitialised(build: Callable[[TeacherSpec], Any], spec: TeacherSpec):
    """Build with every parameter registered on the meta device (initialisers become
    no-ops), then give each one real, uninitialised CPU memory. Buffers - running
    statistics, fixed index tables - are built normally, so constructor-computed buffers
    stay correct."""
    import torch
    from torch import nn

    original = nn.Module.register_parameter

    def register_on_meta(module, name, param):
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)
        original(module, name, param)

    nn.Module.register_parameter = register_on_meta
    try:
        model = build(spec)
    finally:
        nn.Module.register_parameter = original
    with torch.no_grad():
        for module in model.modules():
            for name, param in list(module._parameters.items()):
                if param is not None and param.is_meta:
                    module._parameters[name] = nn.Parameter(
                        torch.empty_like(param, device="cpu"), requires_grad=param.requires_grad)
    return model


# -- smp ------------------------------------------------------------------------------------
def _import_smp():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from vesukit._optional import require

    smp = require("segmentation_models_pytorch", "building smp teachers",
                  "segmentation-models-pytorch")
    _register_tiny_encoders(smp)
    return smp


def _register_tiny_encoders(smp) -> None:
    encoders = smp.encoders.encoders
    if TINY_MIT in encoders:
        return
    base = encoders["mit_b0"]
    params = copy.deepcopy(base["params"])
    params.update(embed_dims=[8, 16, 32, 64], num_heads=[1, 1, 2, 2], depths=[1, 1, 1, 1],
                  mlp_ratios=[2, 2, 2, 2], out_channels=[3, 0, 8, 16, 32, 64])
    encoders[TINY_MIT] = {"encoder": base["encoder"], "pretrained_settings": {},
                          "params": params}


def _smp_builder(class_name: str) -> Callable[[TeacherSpec], Any]:
    def build(spec: TeacherSpec):
        smp = _import_smp()
        kwargs = thaw(spec.model_kwargs)
        if not spec.encoder.startswith("tu-") and spec.encoder not in smp.encoders.encoders:
            raise TeacherError(
                f"teacher '{spec.name}': field 'encoder': smp has no encoder "
                f"{spec.encoder!r}; use an smp encoder name (resnet34, se_resnext50_32x4d, "
                f"mit_b2, ...) or a timm one as 'tu-<timm name>'")
        return getattr(smp, class_name)(encoder_name=spec.encoder, encoder_weights=None,
                                        in_channels=spec.in_channels,
                                        classes=spec.out_channels, **kwargs)

    return build


def _depth_multiple(default_depth: int) -> Callable[[TeacherSpec], int]:
    def multiple(spec: TeacherSpec) -> int:
        depth = spec.model_kwargs.get("encoder_depth", default_depth)
        return 2 ** depth if isinstance(depth, int) and 1 <= depth <= 6 else 32

    return multiple


for _name in SMP_ARCHS:
    register_architecture(Architecture(
        name=f"smp.{_name}", input_kind="2.5d", needs_encoder=True,
        build=_smp_builder(_name), patch_multiple=_depth_multiple(5),
        description=f"segmentation_models_pytorch {_name}, any smp/timm encoder"))


# -- written here -----------------------------------------------------------------------------
def _build_transunet(spec: TeacherSpec):
    _import_smp()
    from vesukit.teachers.nets.transunet import TransUNet

    return TransUNet(encoder_name=spec.encoder, in_channels=spec.in_channels,
                     classes=spec.out_channels, **thaw(spec.model_kwargs))


def _build_unet3d(spec: TeacherSpec):
    from vesukit.teachers.nets.unet3d import ResEncUNet3D

    return ResEncUNet3D(in_channels=spec.in_channels, classes=spec.out_channels,
                        **thaw(spec.model_kwargs))


def _unet3d_multiple(spec: TeacherSpec) -> int:
    widths = spec.model_kwargs.get("widths")
    if widths is None:
        # The defaults live with the network; only a spec that relies on them pays the import.
        from vesukit.teachers.nets.unet3d import DEFAULT_WIDTHS as widths
    return 2 ** (len(widths) - 1) if isinstance(widths, (list, tuple)) and widths else 1


register_architecture(Architecture(
    name="transunet", input_kind="2.5d", needs_encoder=True, build=_build_transunet,
    patch_multiple=_depth_multiple(4),
    description="CNN encoder (smp/timm) + transformer bottleneck + U-Net decoder"))
register_architecture(Architecture(
    name="resenc_unet3d", input_kind="3d", needs_encoder=False, build=_build_unet3d,
    patch_multiple=_unet3d_multiple,
    description="3D U-Net with residual encoder blocks (nnU-Net ResEnc style)"))
