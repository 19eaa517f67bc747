"""Inference engine: sliding window (3D), slice adapter (2.5D), TTA and the ensemble.

Names are resolved on first use, so ``vesukit.infer.tta.PRESETS`` (the command line's --tta
choices) can be read without importing torch; everything else here imports it.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "EnsembleAccumulator": "vesukit.infer.ensemble",
    "EnsembleError": "vesukit.infer.ensemble",
    "EnsembleMaps": "vesukit.infer.ensemble",
    "InferenceMemoryError": "vesukit.infer.memory",
    "OomPolicy": "vesukit.infer.memory",
    "batch_size_from_free_memory": "vesukit.infer.memory",
    "SlidingWindowInferer": "vesukit.infer.sliding",
    "blend_windows": "vesukit.infer.sliding",
    "sliding_window_3d": "vesukit.infer.sliding",
    "context_indices": "vesukit.infer.slices",
    "predict_slices": "vesukit.infer.slices",
    "predict_slices_multi_axis": "vesukit.infer.slices",
    "TeacherError": "vesukit.infer.teacher",
    "normalize_volume": "vesukit.infer.teacher",
    "predict_teacher": "vesukit.infer.teacher",
    "surface_predictor": "vesukit.infer.teacher",
    "IDENTITY": "vesukit.infer.tta",
    "PRESETS": "vesukit.infer.tta",
    "TTAView": "vesukit.infer.tta",
    "tta_views": "vesukit.infer.tta",
    "axis_starts": "vesukit.infer.windows",
    "importance_map": "vesukit.infer.windows",
    "window_grid": "vesukit.infer.windows",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vesukit.infer' has no attribute {name!r}")
