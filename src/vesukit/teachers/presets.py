"""Ready-made teacher folders with random weights: the nine-teacher ``seed9`` ensemble and a
single 3D U-Net (``unet3d``), each ``full`` (real architectures and sizes) or ``tiny`` (the
same families shrunk so the CPU tests and the dry run are fast).

``seed9`` mirrors the nine models a competitor trained (V1/V2/V3 generations). Choices made
here, since the originals are only known by name:

* "default" is a U-Net: V1 ``smp.Unet`` + ``resnet34``; V2 ``smp.UnetPlusPlus`` +
  ``se_resnext50_32x4d`` (emitting 2 channels, surface = channel 1, to exercise ``channel``).
* ``segformer.mit.bN`` is ``smp.Segformer`` with the ``mit_bN`` encoder.
* ``transunetseresnext`` is vesukit's TransUNet on ``se_resnext50_32x4d``; ``transunet`` is the
  paper's R50-ViT-B/16 (``resnet50``, stride 16, ViT-Base bottleneck).
* Inputs are 2.5D stacks of 3, 5 or 7 slices along Z (one SegFormer also along Y and X);
  normalisation, TTA, output kind and checkpoint format vary between teachers on purpose so
  every path of the engine and the loader is exercised. Weights are all 1 (placeholders:
  real weights come from calibration).

Tiny variants keep each family: timm ResNet/SE-ResNeXt (``tu-``) with 1 block per stage and
8-64 channels, a 4-stage MiT of width 8-64 (``vesukit-mit_tiny``), a 2-layer transformer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vesukit.teachers.registry import TINY_MIT
from vesukit.teachers.spec import (
    Manifest,
    Normalization,
    TeacherError,
    TeacherSpec,
    load_manifest,
    resolve_checkpoint,
    save_manifest,
)

PRESETS = ("seed9", "unet3d")
SIZES = ("tiny", "full")

_TINY_RESNET = {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64]}
_TINY_SERESNEXT = {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64], "cardinality": 4,
                   "base_width": 32}
_TINY_UNET_DECODER = {"decoder_channels": [32, 16, 16, 8, 8]}
_TINY_TRANSFORMER = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "mlp_dim": 64,
                     "grid": 4, "head_channels": 32, "decoder_channels": [32, 16, 16, 8]}

# name, arch, (full encoder, full kwargs), (tiny encoder, tiny kwargs), per-teacher settings
_SEED9: list[tuple[str, str, tuple, tuple, dict[str, Any]]] = [
    ("v1_default", "smp.Unet",
     ("resnet34", {}), ("tu-resnet34", {**_TINY_RESNET, **_TINY_UNET_DECODER}),
     {"context": 5, "checkpoint": "v1_default"}),                      # smp save_pretrained
    ("v1_segformer_mit_b2", "smp.Segformer",
     ("mit_b2", {}), (TINY_MIT, {"decoder_segmentation_channels": 16}),
     {"context": 5, "tta": ("flip",)}),
    ("v1_transunet_seresnext", "transunet",
     ("se_resnext50_32x4d", {}), ("tu-seresnext50_32x4d", {**_TINY_SERESNEXT,
                                                          **_TINY_TRANSFORMER}),
     {"context": 5}),
    ("v1_segformer_mit_b4", "smp.Segformer",
     ("mit_b4", {}), (TINY_MIT, {"decoder_segmentation_channels": 16}),
     {"context": 7, "normalization": Normalization(1 / 255, 0.5, 0.5)}),
    ("v2_default", "smp.UnetPlusPlus",
     ("se_resnext50_32x4d", {}), ("tu-seresnext50_32x4d", {**_TINY_SERESNEXT,
                                                          **_TINY_UNET_DECODER}),
     {"context": 5, "out_channels": 2, "channel": 1,
      "checkpoint": "v2_default.pth"}),                                # DDP 'module.' keys
    ("v2_segformer_mit_b2", "smp.Segformer",
     ("mit_b2", {}), (TINY_MIT, {"decoder_segmentation_channels": 16}),
     {"context": 5, "axes": (0, 1, 2)}),
    ("v2_transunet_seresnext", "transunet",
     ("se_resnext50_32x4d", {}), ("tu-seresnext50_32x4d", {**_TINY_SERESNEXT,
                                                          **_TINY_TRANSFORMER}),
     {"context": 3, "normalization": Normalization(1.0, 110.0, 50.0)}),
    ("v2_transunet", "transunet",
     ("resnet50", {"activation": "sigmoid"}),
     ("tu-resnet50", {**_TINY_RESNET, **_TINY_TRANSFORMER, "activation": "sigmoid"}),
     {"context": 5, "output": "probability",
      "checkpoint": "v2_transunet.pt"}),                               # {"model_state_dict"}
    ("v3_transunet", "transunet",
     ("resnet50", {}), ("tu-resnet50", {**_TINY_RESNET, **_TINY_TRANSFORMER}),
     {"context": 7, "checkpoint": "v3_transunet.ckpt"}),               # Lightning 'model.'
]

_PATCH = {"tiny": 64, "full": 256}
_UNET3D = {"tiny": ({"widths": [4, 8, 16], "blocks": [1, 1, 1]}, (32, 32, 32)),
           "full": ({}, (128, 128, 128))}


def preset_specs(preset: str = "seed9", size: str = "tiny") -> tuple[TeacherSpec, ...]:
    """The teacher descriptions of a preset (no files written)."""
    if preset not in PRESETS:
        raise TeacherError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if size not in SIZES:
        raise TeacherError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    if preset == "unet3d":
        kwargs, patch = _UNET3D[size]
        return (TeacherSpec(name="unet3d_resenc", arch="resenc_unet3d", encoder=None,
                            input_kind="3d", patch=patch, axes=(), context=1,
                            checkpoint="unet3d_resenc.safetensors", model_kwargs=kwargs),)
    specs = []
    for name, arch, full, tiny, extra in _SEED9:
        encoder, kwargs = full if size == "full" else tiny
        settings = {"checkpoint": f"{name}.safetensors", **extra}
        specs.append(TeacherSpec(name=name, arch=arch, encoder=encoder, input_kind="2.5d",
                                 patch=(_PATCH[size],) * 2, model_kwargs=kwargs, **settings))
    return tuple(specs)


def write_preset(folder: str | Path, preset: str = "seed9", size: str = "tiny",
                 seed: int = 0) -> Manifest:
    """Build the preset's networks with random weights (deterministic in ``seed``), save
    each checkpoint in its listed form and the manifest; return the loaded manifest."""
    import torch

    from vesukit.teachers.registry import build_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    specs = preset_specs(preset, size)
    for index, spec in enumerate(specs):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 1000 + index)
            model = build_model(spec).eval()
        _save_in_form(model, resolve_checkpoint(folder, spec))
        del model
    save_manifest(folder, specs)
    return load_manifest(folder)


def _save_in_form(model, path: Path) -> None:
    """Save as the file name says: a folder = smp save_pretrained; .safetensors; .pth = DDP
    state dict; .pt = {"model_state_dict": ...}; .ckpt = a Lightning-style checkpoint."""
    import io

    import torch

    from vesukit.data import atomic_write_bytes
    from vesukit.teachers.checkpoint import save_checkpoint

    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        save_checkpoint(model, path)
        return
    if path.suffix == "":
        if hasattr(model, "save_pretrained"):
            model.save_pretrained(str(path))
        else:
            path.mkdir(parents=True, exist_ok=True)
            save_checkpoint(model, path / "model.safetensors")
        return
    if path.suffix == ".pth":
        payload: Any = {f"module.{k}": v for k, v in state.items()}
    elif path.suffix == ".pt":
        payload = {"model_state_dict": state, "epoch": 0}
    elif path.suffix == ".ckpt":
        payload = {"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 0,
                   "global_step": 0, "pytorch-lightning_version": "2.0.0",
                   "hyper_parameters": json.loads(json.dumps({"lr": 1e-3}))}
    else:
        raise TeacherError(f"{path}: no checkpoint form for suffix {path.suffix!r}")
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())
