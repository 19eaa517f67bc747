"""Warnings that catch a failing run early, from what the training notes behind vesukit
learned the hard way: gradients that vanish or explode, an output whose magnitude collapses
far below the target's (a smooth, timid map - "0.04 vs 0.77" - that no threshold rescues),
and a prediction that is one giant component. Each warning is raised once per kind and stage
(the log keeps every value)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

VANISHING = 1e-7
EXPLODING = 100.0


@dataclass
class Limits:
    vanishing: float = VANISHING
    exploding: float = EXPLODING
    # the mean prediction on target-surface voxels below this share of the target's mean there
    collapse_ratio: float = 0.25
    # ignore the first steps (a fresh network is timid by construction)
    warmup_steps: int = 20
    # the largest predicted component holds more than this share of the predicted foreground,
    # while the label's largest holds less than giant_label_share
    giant_share: float = 0.9
    giant_label_share: float = 0.6


@dataclass
class Monitor:
    limits: Limits = field(default_factory=Limits)
    warnings: list[str] = field(default_factory=list)
    _said: set = field(default_factory=set)
    _pred_sum: float = 0.0
    _target_sum: float = 0.0
    _count: float = 0.0

    def _warn(self, kind: str, stage: str, text: str) -> str | None:
        if (kind, stage) in self._said:
            return None
        self._said.add((kind, stage))
        message = f"{kind}: {text}"
        self.warnings.append(message)
        return message

    def gradient(self, norm: float, step: int, stage: str) -> str | None:
        """Check the total gradient norm of one step (before clipping)."""
        if not np.isfinite(norm) or norm > self.limits.exploding:
            return self._warn("exploding gradients", stage, f"step {step}: gradient norm "
                              f"{norm:.3g} > {self.limits.exploding:g}; lower the learning "
                              "rate or check the inputs' normalisation")
        if norm < self.limits.vanishing:
            return self._warn("vanishing gradients", stage, f"step {step}: gradient norm "
                              f"{norm:.3g} < {self.limits.vanishing:g}; the trained part "
                              "gets no signal (dead activations, frozen or detached layers)")
        return None

    def magnitude(self, probability, target, weight) -> None:
        """Accumulate the mean predicted probability and mean target over target-surface
        voxels of one batch (numpy or torch)."""
        p, t, w = (np.asarray(a.detach().float().cpu() if hasattr(a, "detach") else a)
                   for a in (probability, target, weight))
        surface = (t > 0.5) & (w > 0)
        self._pred_sum += float(p[surface].sum())
        self._target_sum += float(t[surface].sum())
        self._count += float(surface.sum())

    def collapse(self, step: int, stage: str) -> tuple[str | None, dict]:
        """Compare the accumulated magnitudes (then start a new window)."""
        if self._count == 0:
            return None, {}
        pred, target = self._pred_sum / self._count, self._target_sum / self._count
        self._pred_sum = self._target_sum = self._count = 0.0
        values = {"pred_magnitude": pred, "target_magnitude": target}
        if step < self.limits.warmup_steps or pred >= self.limits.collapse_ratio * target:
            return None, values
        return self._warn("collapsed output", stage, f"step {step}: mean prediction on "
                          f"surface voxels {pred:.3f} vs target {target:.3f}; the output is "
                          "smooth and timid (try more surface in the patches, less label "
                          "smoothing, or a Dice term)"), values

    def components(self, mask, label, volume_id: str, stage: str,
                   step: int | None = None) -> tuple[str | None, dict]:
        """Check a held-back prediction for one giant component (26-connected); quiet before
        ``warmup_steps`` (a fresh network's map is one blob)."""
        share_pred = largest_component_share(np.asarray(mask).astype(bool))
        share_label = largest_component_share(np.asarray(label) == 1)
        values = {"largest_component_share": share_pred,
                  "label_largest_component_share": share_label}
        if step is not None and step < self.limits.warmup_steps:
            return None, values
        if share_pred > self.limits.giant_share and share_label < self.limits.giant_label_share:
            return self._warn("one giant component", stage, f"volume '{volume_id}': the "
                              f"largest component holds {share_pred:.0%} of the predicted "
                              f"surface (the label's largest: {share_label:.0%}); sheets are "
                              "merging (threshold too low or output too smooth)"), values
        return None, values


def largest_component_share(mask: np.ndarray) -> float:
    """Share of the foreground in its largest 26-connected component (0 when empty); from the
    scorer's run-length components, so no labelled volume is allocated."""
    from vesukit.metric.voi import fg_runs

    if not mask.any():
        return 0.0
    _, z0, z1, root = fg_runs(mask)
    sizes = np.bincount(np.asarray(root, dtype=np.intp), weights=np.asarray(z1) - z0 + 1)
    return float(sizes.max() / sizes.sum())
