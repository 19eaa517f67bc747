"""Small teacher specs shared by the teacher tests (tiny members of every registered family).

A uniquely named module rather than conftest.py, so tests elsewhere cannot shadow it."""

from __future__ import annotations

from vesukit.teachers import TeacherSpec
from vesukit.teachers.registry import TINY_MIT

TINY_RESNET = {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64]}
TINY_DECODER = {"decoder_channels": [16, 16, 8, 8, 8]}
TINY_TRANSFORMER = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "mlp_dim": 32,
                    "grid": 2, "head_channels": 16, "decoder_channels": [16, 8, 8, 8]}


def tiny_spec(arch: str, name: str | None = None, **overrides) -> TeacherSpec:
    """A tiny, fast teacher of ``arch`` (32x32 tiles or a 16^3 cube)."""
    base = {
        "smp.Unet": dict(encoder="tu-resnet18", model_kwargs={**TINY_RESNET, **TINY_DECODER}),
        "smp.UnetPlusPlus": dict(encoder="tu-seresnext26d_32x4d", model_kwargs={
            **TINY_RESNET, "cardinality": 4, "base_width": 32, **TINY_DECODER}),
        # GroupNorm needs more than one value per group at stride 32: 64x64 tiles.
        "smp.FPN": dict(encoder="tu-resnet34", patch=(64, 64), model_kwargs={
            **TINY_RESNET, "decoder_pyramid_channels": 32,
            "decoder_segmentation_channels": 32}),
        "smp.Segformer": dict(encoder=TINY_MIT,
                              model_kwargs={"decoder_segmentation_channels": 8}),
        "transunet": dict(encoder="tu-resnet50", model_kwargs={**TINY_RESNET,
                                                                **TINY_TRANSFORMER}),
        "resenc_unet3d": dict(encoder=None, input_kind="3d", patch=(16, 16, 16), context=1,
                              axes=(), model_kwargs={"widths": [4, 8, 8],
                                                     "blocks": [1, 2, 1]}),
    }[arch]
    fields = dict(name=name or arch.replace(".", "_").lower(), arch=arch, input_kind="2.5d",
                  patch=(32, 32), context=3, checkpoint=f"{name or 'model'}.safetensors")
    fields.update(base)
    fields.update(overrides)
    return TeacherSpec(**fields)


ALL_ARCHS = ("smp.Unet", "smp.UnetPlusPlus", "smp.FPN", "smp.Segformer", "transunet",
             "resenc_unet3d")
