"""Streaming weighted ensemble of teacher probability maps.

:class:`EnsembleAccumulator` takes one teacher's map at a time and keeps three float32 volumes
however many teachers come: the running weighted mean, the running weighted sum of squared
deviations (West's weighted form of Welford's update, stable in float32) and the weight of the
teachers voting "surface" (p > 0.5). The disagreement needs the final mean, but not the
teachers' maps: a teacher disagrees when its vote differs from the ensemble's (mean > 0.5),
so disagreement = W_pos / W where the ensemble says background and (W - W_pos) / W where it
says surface.

``mode="probability"`` averages probabilities; ``mode="logit"`` averages logits (clamped to
probabilities in [eps, 1 - eps]) and reports ``sigmoid(mean logit)`` as the mean; the variance
is then that of the logits. Votes always use each teacher's probability.
"""

from __future__ import annotations

import numpy as np
import torch

from vesukit.errors import VesukitError
from vesukit.maps import EnsembleMaps

MODES = ("probability", "logit")
LOGIT_EPS = 1e-6


class EnsembleError(VesukitError):
    """A teacher map does not fit the ensemble (shape, weight)."""


class EnsembleAccumulator:
    """Weighted mean, variance and disagreement over teachers, one map at a time."""

    def __init__(self, shape: tuple[int, ...], device: torch.device | str = "cpu", mode: str = "probability"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.shape = tuple(int(s) for s in shape)
        self.device = torch.device(device)
        self.mode = mode
        self._mean = torch.zeros(self.shape, dtype=torch.float32, device=self.device)
        self._m2 = torch.zeros_like(self._mean)
        self._positive_weight = torch.zeros_like(self._mean)
        self._total_weight = 0.0
        self._n = 0

    @property
    def n_teachers(self) -> int:
        return self._n

    def add(self, prob_map, weight: float = 1.0, name: str = "teacher") -> None:
        """Fold in one teacher's probability map (tensor or array shaped like the volume)."""
        weight = float(weight)
        if not weight > 0 or not np.isfinite(weight):
            raise EnsembleError(f"{name}: ensemble weight must be a positive number, got {weight}")
        p = torch.as_tensor(prob_map).to(device=self.device, dtype=torch.float32)
        if tuple(p.shape) != self.shape:
            raise EnsembleError(
                f"{name}: probability map has shape {tuple(p.shape)} but the volume is {self.shape}; "
                "every teacher must predict the whole volume"
            )
        if self.mode == "logit":
            q = p.clamp(LOGIT_EPS, 1.0 - LOGIT_EPS)
            value = torch.log(q) - torch.log1p(-q)
        else:
            value = p
        self._total_weight += weight
        delta = value - self._mean
        self._mean.add_(delta, alpha=weight / self._total_weight)
        # M2 += w * delta_old * delta_new (weighted Welford/West update)
        delta.mul_(value - self._mean)
        self._m2.add_(delta, alpha=weight)
        self._positive_weight.add_((p > 0.5).float(), alpha=weight)
        self._n += 1

    def result(self) -> EnsembleMaps:
        if self._n == 0:
            raise EnsembleError("the ensemble is empty: add at least one teacher map before asking for the result")
        total = self._total_weight
        mean = torch.sigmoid(self._mean) if self.mode == "logit" else self._mean.clone()
        variance = (self._m2 / total).clamp_(min=0.0)
        ensemble_positive = mean > 0.5
        dissent_weight = torch.where(ensemble_positive, total - self._positive_weight, self._positive_weight)
        disagreement = (dissent_weight / total).clamp_(0.0, 1.0)
        return EnsembleMaps(
            mean=mean,
            variance=variance,
            disagreement=disagreement,
            n_teachers=self._n,
            total_weight=total,
            mode=self.mode,
        )
