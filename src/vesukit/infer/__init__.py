"""Inference engine: sliding window (3D), slice adapter (2.5D), TTA and the ensemble.

Importing this package imports torch; ``import vesukit`` does not import it.
"""

from vesukit.infer.ensemble import EnsembleAccumulator, EnsembleError, EnsembleMaps
from vesukit.infer.memory import InferenceMemoryError, OomPolicy, batch_size_from_free_memory
from vesukit.infer.slices import context_indices, predict_slices, predict_slices_multi_axis
from vesukit.infer.sliding import SlidingWindowInferer, blend_windows, sliding_window_3d
from vesukit.infer.teacher import TeacherError, normalize_volume, predict_teacher, surface_predictor
from vesukit.infer.tta import IDENTITY, PRESETS, TTAView, tta_views
from vesukit.infer.windows import axis_starts, importance_map, window_grid

__all__ = [
    "EnsembleAccumulator",
    "EnsembleError",
    "EnsembleMaps",
    "IDENTITY",
    "InferenceMemoryError",
    "OomPolicy",
    "PRESETS",
    "SlidingWindowInferer",
    "TTAView",
    "TeacherError",
    "axis_starts",
    "batch_size_from_free_memory",
    "blend_windows",
    "context_indices",
    "importance_map",
    "normalize_volume",
    "predict_slices",
    "predict_slices_multi_axis",
    "predict_teacher",
    "sliding_window_3d",
    "surface_predictor",
    "tta_views",
    "window_grid",
]
