"""The ensemble's maps of one volume, the value every stage after inference works on.

Torch-free on purpose: threshold rules, post-processing and the audit take numpy arrays as
well as tensors, and must import where torch does not.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        return x.detach().cpu().numpy()
    return np.asarray(x)


@dataclass(frozen=True)
class EnsembleMaps:
    """Weighted mean probability, variance and disagreement, each (Z, Y, X) float32.

    The maps are torch tensors as the accumulator returns them, or numpy arrays after
    :meth:`to_numpy`.
    """

    mean: Any
    variance: Any
    disagreement: Any
    n_teachers: int = 1
    total_weight: float = 1.0
    mode: str = "probability"

    def to_numpy(self) -> EnsembleMaps:
        return replace(self, mean=_to_numpy(self.mean), variance=_to_numpy(self.variance),
                       disagreement=_to_numpy(self.disagreement))

    def half(self) -> EnsembleMaps:
        """fp16 copies of the maps, for audit files (half the bytes)."""

        def conv(x):
            return x.half() if hasattr(x, "half") and hasattr(x, "detach") else \
                np.asarray(x).astype(np.float16)

        return replace(self, mean=conv(self.mean), variance=conv(self.variance),
                       disagreement=conv(self.disagreement))
