"""Test-time augmentation: invertible views of a window batch.

A :class:`TTAView` flips some spatial axes and then rotates the last two (in-plane) axes by
``k * 90`` degrees; :meth:`TTAView.undo` maps a prediction of the view back exactly. Views act
on batches shaped ``(B, C, *spatial)``; axis numbers are spatial (0 = first spatial axis).

Presets (``tta_views``):

- ``none``: the identity only.
- ``flip``: the identity plus one flip per spatial axis (4 views in 3D, 3 in 2D).
- ``full``: every subset of flipped axes (8 views in 3D, 4 in 2D); for 2D/2.5D additionally
  each of those rotated by 90 degrees, i.e. the 8 symmetries of the square.

``allowed`` holds the families a teacher tolerates (``"flip"``, ``"rot90"``); a view needing a
family that is not allowed is dropped. A 90-degree rotation of a non-square window changes
its shape, so it could not be batched with the other views: rot90 views are only produced
when ``square`` is true (the caller passes whether its in-plane window is square).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# The one list of presets: predict, calibrate and both commands' --tta choices read it, so this
# module imports torch only where a view is applied (the CLI parser must stay torch-free).
PRESETS = ("none", "flip", "full")


@dataclass(frozen=True)
class TTAView:
    """Flip ``flips`` (spatial axes), then rotate the last two spatial axes by ``rot90`` x 90°."""

    flips: tuple[int, ...] = ()
    rot90: int = 0

    @property
    def is_identity(self) -> bool:
        return not self.flips and self.rot90 % 4 == 0

    def _dims(self, x: torch.Tensor) -> list[int]:
        spatial = x.dim() - 2
        for axis in self.flips:
            if not 0 <= axis < spatial:
                raise ValueError(f"flip axis {axis} out of range for {spatial} spatial dims")
        return [2 + a for a in self.flips]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        if self.flips:
            x = torch.flip(x, self._dims(x))
        if self.rot90 % 4:
            x = torch.rot90(x, self.rot90 % 4, dims=(-2, -1))
        return x

    def undo(self, y: torch.Tensor) -> torch.Tensor:
        import torch

        if self.rot90 % 4:
            y = torch.rot90(y, -(self.rot90 % 4), dims=(-2, -1))
        if self.flips:
            y = torch.flip(y, self._dims(y))
        return y


IDENTITY = TTAView()


def tta_views(
    preset: str,
    spatial_dims: int,
    allowed: tuple[str, ...] | None = ("flip", "rot90"),
    *,
    square: bool = True,
) -> tuple[TTAView, ...]:
    """The views of ``preset`` for ``spatial_dims``-d windows, restricted to ``allowed``.

    ``rot90`` views are only produced for ``spatial_dims == 2`` and ``square`` windows.
    The identity always comes first.
    """
    if preset not in PRESETS:
        raise ValueError(f"TTA preset must be one of {PRESETS}, got {preset!r}")
    allowed_set = set(("flip", "rot90") if allowed is None else allowed)
    axes = tuple(range(spatial_dims))
    if preset == "none":
        flip_sets: list[tuple[int, ...]] = [()]
    elif preset == "flip":
        flip_sets = [()] + [(a,) for a in axes]
    else:
        flip_sets = [c for r in range(spatial_dims + 1) for c in itertools.combinations(axes, r)]
    if "flip" not in allowed_set:
        flip_sets = [()]
    rotations = [0]
    if preset == "full" and spatial_dims == 2 and square and "rot90" in allowed_set:
        rotations = [0, 1]
    views = [TTAView(flips=f, rot90=k) for k in rotations for f in flip_sets]
    return tuple(views)
