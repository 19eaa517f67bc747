"""A teacher's network with its weights, whatever kind of teacher it is: the one entry point
above the checkpoint reader (:mod:`vesukit.teachers.checkpoint`) and the nnU-Net loader
(:mod:`vesukit.teachers.nnunet_model`), which both build on it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vesukit.teachers.base import TeacherError
from vesukit.teachers.checkpoint import load_weights, read_state_dict
from vesukit.teachers.nnunet import NnUNetSpec
from vesukit.teachers.registry import build_model
from vesukit.teachers.spec import resolve_checkpoint

if TYPE_CHECKING:
    import torch

    from vesukit.teachers.spec import TeacherSpec


def load_teacher(spec: TeacherSpec, root: str | Path, device: str | torch.device = "cpu",
                 strict: bool = True) -> torch.nn.Module:
    """Build ``spec``'s network, load its checkpoint (relative to ``root``), put it in eval
    mode on ``device``. An nnU-Net teacher gives its folds as one module (mean logits)."""
    if isinstance(spec, NnUNetSpec):
        from vesukit.teachers.nnunet_model import load_nnunet_teacher

        return load_nnunet_teacher(spec, root, device)
    path = resolve_checkpoint(root, spec)
    if not path.exists():
        raise TeacherError(f"teacher '{spec.name}': field 'checkpoint': {path} does not exist")
    state, report = read_state_dict(path, key=spec.checkpoint_key, spec=spec)
    # Strict loading overwrites every parameter (or fails), so random init would be wasted.
    model = build_model(spec, init_weights=not strict)
    load_weights(model, state, report, strict=strict, who=f"teacher '{spec.name}' ({path})")
    model.vesukit_load_report = report  # type: ignore[attr-defined]  # for `teachers check`
    return model.to(device).eval()
