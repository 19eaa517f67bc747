"""The optional output activation of the networks written here, as smp's ``activation``
argument offers it: logits by default (what the teachers' ``output: logit`` expects)."""

from __future__ import annotations

import torch

ACTIVATIONS = (None, "sigmoid", "softmax")


def check_activation(activation: str | None) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be null, 'sigmoid' or 'softmax', got {activation!r}")


def apply_activation(y: torch.Tensor, activation: str | None) -> torch.Tensor:
    if activation == "sigmoid":
        return torch.sigmoid(y)
    if activation == "softmax":
        return torch.softmax(y, dim=1)
    return y
