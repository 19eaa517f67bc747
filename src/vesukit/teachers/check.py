"""`teachers check`: load every teacher of a folder and run one forward on a dummy patch."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from vesukit.teachers.nnunet import NnUNetSpec
from vesukit.teachers.spec import Manifest, TeacherError, TeacherSpec, load_manifest


@dataclass(frozen=True)
class CheckRow:
    name: str
    arch: str
    encoder: str | None
    parameters: int
    input: str                  # e.g. "2.5d x5 ax0" or "3d"
    patch: tuple[int, ...]
    weight: float
    load_seconds: float
    forward_seconds: float
    error: str | None = None    # None = loaded, ran, output shape and values as promised

    @property
    def ok(self) -> bool:
        return self.error is None


def describe_input(spec: TeacherSpec) -> str:
    if spec.input_kind == "3d":
        return "3d"
    return f"2.5d x{spec.context} ax{''.join(map(str, spec.axes))}"


def dummy_batch(spec: TeacherSpec, seed: int = 0):
    """A normalised random uint8 patch shaped like the teacher's input."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    voxels = torch.randint(0, 256, (1, spec.in_channels, *spec.patch), generator=generator,
                           dtype=torch.uint8)
    norm = spec.normalization
    return (voxels.float() * norm.scale - norm.mean) / norm.std


def check_teacher(spec: TeacherSpec | NnUNetSpec, manifest: Manifest,
                  device: str = "cpu") -> CheckRow:
    import torch

    from vesukit.teachers.load import load_teacher

    nnunet = isinstance(spec, NnUNetSpec)
    base = dict(name=spec.name, arch=spec.arch, encoder=spec.encoder, input=describe_input(spec),
                patch=() if nnunet else tuple(spec.patch), weight=spec.weight)
    start = time.perf_counter()
    try:
        model = load_teacher(spec, manifest.root, device=device)
    except TeacherError as exc:
        return CheckRow(**base, parameters=0, load_seconds=time.perf_counter() - start,
                        forward_seconds=0.0, error=str(exc))
    load_seconds = time.perf_counter() - start
    parameters = sum(p.numel() for p in model.parameters())
    if nnunet:
        # The plans give the patch and the heads; the input is already normalised (z-scores).
        base["patch"] = tuple(model.plan.patch)
        x = torch.randn((1, 1, *model.plan.patch), generator=torch.Generator().manual_seed(0))
        x = x.to(device)
        out_channels = model.plan.heads
    else:
        x = dummy_batch(spec).to(device)
        out_channels = spec.out_channels
    error = None
    try:
        with torch.inference_mode():
            model(x)                      # warm-up: first-call allocation and kernel choice
            _sync(device)
            start = time.perf_counter()
            y = model(x)
            _sync(device)
    except RuntimeError as exc:
        start = time.perf_counter()
        y, error = None, f"forward failed: {exc}"
    forward_seconds = time.perf_counter() - start
    if y is not None:
        want = (1, out_channels, *base["patch"])
        if tuple(y.shape) != want:
            error = (f"output shape {tuple(y.shape)}, expected {want} (out_channels and full "
                     "input resolution)")
        elif not bool(torch.isfinite(y).all()):
            error = "output has NaN or inf values"
        elif not nnunet and spec.output == "probability" and not bool(((y >= 0) & (y <= 1)).all()):
            error = ("output is declared 'probability' but has values outside [0, 1]; "
                     "is it a logit?")
    return CheckRow(**base, parameters=parameters, load_seconds=load_seconds,
                    forward_seconds=forward_seconds, error=error)


def _sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def check_teachers(folder: str | Path, device: str = "cpu") -> list[CheckRow]:
    manifest = load_manifest(folder)
    return [check_teacher(spec, manifest, device) for spec in manifest.teachers]
