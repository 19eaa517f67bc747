"""Post-processing of binary masks: an ordered chain of named steps.

A step is a mapping like ``{"step": "remove_small", "min_voxels": 5000}``; the chain runs in
the given order. Each step is a pure function ``(mask, maps, **params) -> mask`` over a uint8
(Z, Y, X) 0/1 mask; ``maps`` are the volume's ensemble maps (for steps that need them).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import ndimage

from vesukit.errors import VesukitError

_CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)


def zero_border(mask: np.ndarray, maps=None, width: int = 3) -> np.ndarray:
    """Clear ``width`` voxels at every face (the volumes carry a ~3-voxel zero border)."""
    out = mask.copy()
    if width <= 0:
        return out
    for axis in range(out.ndim):
        index = [slice(None)] * out.ndim
        index[axis] = slice(0, width)
        out[tuple(index)] = 0
        index[axis] = slice(max(out.shape[axis] - width, 0), None)
        out[tuple(index)] = 0
    return out


def remove_small(mask: np.ndarray, maps=None, min_voxels: int = 1000) -> np.ndarray:
    """Drop 26-connected components smaller than ``min_voxels``."""
    labels, count = ndimage.label(mask, structure=_CONNECTIVITY_26)
    if count == 0:
        return mask.copy()
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[labels].astype(np.uint8)


# name -> step. The calibration work adds more steps here.
STEPS: dict[str, Callable[..., np.ndarray]] = {
    "zero_border": zero_border,
    "remove_small": remove_small,
}


class PostprocessError(VesukitError):
    """A post-processing chain names an unknown step or bad parameters."""


def check_steps(steps: Sequence[Mapping[str, Any]], where: str = "postprocess") -> None:
    import inspect

    for index, step in enumerate(steps):
        name = step.get("step")
        if name not in STEPS:
            raise PostprocessError(
                f"{where}: postprocess step {index} is '{name}', which is unknown. Known steps: "
                f"{', '.join(sorted(STEPS))}."
            )
        accepted = set(inspect.signature(STEPS[name]).parameters) - {"mask", "maps"}
        unknown = set(step) - {"step"} - accepted
        if unknown:
            raise PostprocessError(
                f"{where}: postprocess step {index} ('{name}') has unknown parameter(s) "
                f"{sorted(unknown)}; it accepts {sorted(accepted)}."
            )


def apply_postprocess(mask: np.ndarray, steps: Sequence[Mapping[str, Any]], maps=None) -> np.ndarray:
    """Run the chain in order; an empty chain returns the mask unchanged."""
    for step in steps:
        params = {k: v for k, v in step.items() if k != "step"}
        mask = STEPS[step["step"]](mask, maps, **params)
    return mask
