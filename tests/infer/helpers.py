"""Small real models and a plain reference blend used by the inference tests."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from vesukit.infer.windows import axis_starts, importance_map


class PointwiseNet(nn.Module):
    """A 1x1x1 convolution + sigmoid: each output voxel depends on its own input voxel only."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, dims: int = 3, seed: int = 0):
        super().__init__()
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        torch.manual_seed(seed)
        self.conv = conv(in_channels, out_channels, 1)

    def forward(self, x):
        return torch.sigmoid(self.conv(x))


class TinyConvNet(nn.Module):
    """Two 3x3(x3) convolutions: windows see their neighbourhood, so blending matters."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, dims: int = 3, seed: int = 0):
        super().__init__()
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        torch.manual_seed(seed)
        self.body = nn.Sequential(conv(in_channels, 4, 3, padding=1), nn.ReLU(), conv(4, out_channels, 3, padding=1))

    def forward(self, x):
        return self.body(x)


def reference_blend(volume: torch.Tensor, model, patch, overlap=0.5, sigma_scale=0.125, blend="gaussian"):
    """One window at a time, written as plainly as possible: (C, *S) -> (C_out, *S), no padding."""
    spatial = volume.shape[1:]
    weight = importance_map(tuple(patch), mode=blend, sigma_scale=sigma_scale).double()
    total = None
    weights = torch.zeros(spatial, dtype=torch.float64)
    starts = [axis_starts(s, p, overlap) for s, p in zip(spatial, patch)]
    with torch.no_grad():
        for corner in itertools.product(*starts):
            sl = tuple(slice(c, c + p) for c, p in zip(corner, patch))
            out = model(volume[(slice(None), *sl)][None].float())[0].double()
            if total is None:
                total = torch.zeros((out.shape[0],) + tuple(spatial), dtype=torch.float64)
            total[(slice(None), *sl)] += out * weight
            weights[sl] += weight
    return (total / weights).float()
