"""The student's description and its parts (encoder, decoder, head) for progressive unfreezing.

A student is an ordinary :class:`vesukit.teachers.TeacherSpec` of any registered
architecture, so the folder a training run writes is a teacher folder `predict` loads like any
other. Sizes: ``tiny`` (tests, seconds) and ``small`` (the default: a few hundred thousand
parameters, cheap next to a nine-teacher ensemble).
"""

from __future__ import annotations

from typing import Any

from vesukit.teachers.spec import TeacherSpec
from vesukit.train import TrainError

STUDENT_SIZES = ("tiny", "small")
DEFAULT_ARCH = "smp.Unet"
STAGES = ("all", "head", "decoder", "encoder")
# Top-level children that belong to the encoder / head; every other child is the decoder
# (smp decoders, the 3D U-Net's upsampling path, TransUNet's bottleneck and decoder).
ENCODER_CHILDREN = ("encoder", "stem")
HEAD_CHILDREN = ("segmentation_head",)

_RESNET = {"tiny": {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64]},
           "small": {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128]}}
_DECODER = {"tiny": [32, 16, 16, 8, 8], "small": [64, 32, 16, 16, 16]}
_UNET3D = {"tiny": {"widths": [4, 8, 16], "blocks": [1, 1, 1]},
           "small": {"widths": [8, 16, 32, 64], "blocks": [1, 1, 2, 2]}}
_PATCH_2D = {"tiny": 32, "small": 64}
_PATCH_3D = {"tiny": 16, "small": 32}


def student_spec(arch: str = DEFAULT_ARCH, size: str = "small", *, name: str = "student",
                 encoder: str | None = None, context: int = 5, patch: int | None = None,
                 model_kwargs: dict[str, Any] | None = None, axes=(0,)) -> TeacherSpec:
    """A student spec of ``arch`` at ``size``; ``encoder``/``model_kwargs``/``patch``
    override the size's choices (an smp arch gets a shrunken timm ResNet-18 by default)."""
    from vesukit.teachers.registry import ARCHITECTURES

    if size not in STUDENT_SIZES:
        raise TrainError(f"student size {size!r}: choose one of {', '.join(STUDENT_SIZES)}")
    if arch not in ARCHITECTURES:
        raise TrainError(f"student architecture {arch!r} is not registered; known: "
                         + ", ".join(sorted(ARCHITECTURES)))
    kind = ARCHITECTURES[arch].input_kind
    kwargs: dict[str, Any]
    if kind == "3d":
        kwargs = dict(_UNET3D[size]) if arch == "resenc_unet3d" else {}
        side = patch or _PATCH_3D[size]
        spec_patch: tuple[int, ...] = (side,) * 3
        encoder, context, axes = None, 1, ()
    else:
        kwargs = {}
        if encoder is None:
            encoder = "tu-resnet18"
            kwargs = dict(_RESNET[size])
        if arch == "smp.Unet" and model_kwargs is None:
            kwargs["decoder_channels"] = _DECODER[size]
        side = patch or _PATCH_2D[size]
        spec_patch = (side, side)
    if model_kwargs is not None:
        kwargs.update(model_kwargs)
    return TeacherSpec(name=name, arch=arch, encoder=encoder, input_kind=kind,
                       patch=spec_patch, axes=tuple(axes), context=context,
                       checkpoint=f"{name}.safetensors", model_kwargs=kwargs, tta=("flip",))


def part_of(child: str) -> str:
    if child in ENCODER_CHILDREN:
        return "encoder"
    if child in HEAD_CHILDREN:
        return "head"
    return "decoder"


def parts(model) -> dict[str, list[str]]:
    """``{"encoder": [...], "decoder": [...], "head": [...]}``: the model's top-level children
    with parameters, by part. Raises when a part is missing (the order cannot be followed)."""
    found: dict[str, list[str]] = {"encoder": [], "decoder": [], "head": []}
    for name, child in model.named_children():
        if any(True for _ in child.parameters()):
            found[part_of(name)].append(name)
    empty = [p for p, names in found.items() if not names]
    if empty:
        raise TrainError(f"{type(model).__name__}: cannot tell its {', '.join(empty)} apart "
                         f"(children: {[n for n, _ in model.named_children()]}); progressive "
                         "unfreezing needs 'encoder', a decoder and 'segmentation_head'")
    return found


def trainable_parts(stage: str) -> tuple[str, ...]:
    """Parts trained in a stage: head -> decoder adds the decoder -> encoder adds the encoder."""
    order = {"head": ("head",), "decoder": ("head", "decoder"),
             "encoder": ("head", "decoder", "encoder"), "all": ("head", "decoder", "encoder")}
    if stage not in order:
        raise TrainError(f"stage {stage!r}: choose one of {', '.join(STAGES)}")
    return order[stage]


def set_stage(model, stage: str) -> list:
    """Freeze everything the stage does not train (``requires_grad`` off, and eval mode so
    frozen normalisation statistics stay put too); return the trainable parameters."""
    model.train()
    keep = trainable_parts(stage)
    by_part = parts(model)
    trainable = []
    for part, names in by_part.items():
        for name in names:
            child = getattr(model, name)
            on = part in keep
            for param in child.parameters():
                param.requires_grad_(on)
            if on:
                trainable.extend(child.parameters())
            else:
                child.eval()
    return trainable
