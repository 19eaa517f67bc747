"""Small conversions shared by the stages that accept torch tensors or numpy arrays.

The ensemble maps come out of inference as torch tensors (possibly on a GPU) and out of the
calibration cache as numpy arrays; thresholds, post-processing and audits work on numpy.
This module never imports torch: a tensor is recognised by its ``cpu`` method.
"""

from __future__ import annotations

import numpy as np


def as_numpy(value, dtype=None) -> np.ndarray:
    """``value`` as a numpy array (a tensor is moved to the CPU first)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    return array if dtype is None else array.astype(dtype, copy=False)


def map_array(maps, name: str, dtype=np.float32) -> np.ndarray:
    """One field (``mean``, ``variance``, ``disagreement``) of an ensemble-maps object."""
    value = getattr(maps, name, None)
    if value is None:
        raise AttributeError(f"the ensemble maps have no '{name}' map")
    return as_numpy(value, dtype)
