"""Teachers: described (spec + manifest), built (registry), loaded (checkpoint), made (presets).

Importing this package does not import torch; the torch-backed functions (``build_model``,
``load_teacher``, ``write_preset``, ...) are resolved on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from vesukit.teachers.nnunet import NnUNetSpec
from vesukit.teachers.spec import (
    MANIFEST_NAME,
    FrozenMap,
    Manifest,
    Normalization,
    TeacherError,
    TeacherSpec,
    load_manifest,
    save_manifest,
)

_LAZY = {
    "build_model": "vesukit.teachers.registry",
    "ARCHITECTURES": "vesukit.teachers.registry",
    "register_architecture": "vesukit.teachers.registry",
    "Architecture": "vesukit.teachers.registry",
    "load_teacher": "vesukit.teachers.load",
    "read_state_dict": "vesukit.teachers.checkpoint",
    "load_weights": "vesukit.teachers.checkpoint",
    "save_checkpoint": "vesukit.teachers.checkpoint",
    "LoadReport": "vesukit.teachers.checkpoint",
    "write_preset": "vesukit.teachers.presets",
    "preset_specs": "vesukit.teachers.presets",
    "check_teachers": "vesukit.teachers.check",
    "load_nnunet_teacher": "vesukit.teachers.nnunet_model",
    "import_nnunet": "vesukit.teachers.nnunet_model",
}

__all__ = ["MANIFEST_NAME", "FrozenMap", "Manifest", "NnUNetSpec", "Normalization", "TeacherError",
           "TeacherSpec", "load_manifest", "save_manifest", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vesukit.teachers' has no attribute {name!r}")
