"""A 3D U-Net with a residual encoder, in the style of nnU-Net's ResEnc U-Net.

Encoder: a 3x3x3 stem, then one stage per width; each stage is ``blocks[i]`` residual basic
blocks (conv-norm-act-conv-norm + shortcut, then act), the first of which halves the
resolution (except in stage 0). Decoder: transposed-conv x2 upsampling, concatenation with
the encoder stage of the same resolution, ``decoder_blocks`` conv-norm-act. Instance norm
and leaky ReLU as in nnU-Net. Defaults are nnU-Net ResEnc-M's 3D full-resolution plan.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vesukit.teachers.nets.activation import apply_activation, check_activation

# nnU-Net ResEnc-M's plan for 3D full resolution: widths and residual blocks per stage.
DEFAULT_WIDTHS = (32, 64, 128, 256, 320, 320)
DEFAULT_BLOCKS = (1, 3, 4, 6, 6, 6)


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm3d(channels, eps=1e-5, affine=True)


def _act() -> nn.Module:
    return nn.LeakyReLU(0.01, inplace=True)


def _conv_norm_act(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=True),
                         _norm(cout), _act())


class ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = _conv_norm_act(cin, cout, stride)
        self.conv2 = nn.Sequential(nn.Conv3d(cout, cout, 3, padding=1, bias=True), _norm(cout))
        if stride != 1 or cin != cout:
            # nnU-Net ResEnc: average-pool then 1x1 conv on the shortcut when downsampling.
            pool = [nn.AvgPool3d(stride, stride)] if stride != 1 else []
            self.shortcut = nn.Sequential(*pool, nn.Conv3d(cin, cout, 1, bias=False),
                                          _norm(cout))
        else:
            self.shortcut = nn.Identity()
        self.act = _act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResEncUNet3D(nn.Module):
    def __init__(self, in_channels: int = 1, classes: int = 1,
                 widths: Sequence[int] = DEFAULT_WIDTHS,
                 blocks: Sequence[int] = DEFAULT_BLOCKS, decoder_blocks: int = 1,
                 activation: str | None = None):
        super().__init__()
        widths, blocks = list(widths), list(blocks)
        if not widths or len(widths) != len(blocks):
            raise ValueError(f"widths and blocks need one entry per stage, got widths={widths}"
                             f", blocks={blocks}")
        if min(widths) < 1 or min(blocks) < 1 or decoder_blocks < 1:
            raise ValueError("widths, blocks and decoder_blocks must be >= 1")
        check_activation(activation)
        self.stem = _conv_norm_act(in_channels, widths[0])
        stages, cin = [], widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            layers = [ResidualBlock(cin, width, stride)]
            layers += [ResidualBlock(width, width, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            cin = width
        self.encoder = nn.ModuleList(stages)
        self.upsample = nn.ModuleList(
            nn.ConvTranspose3d(widths[i + 1], widths[i], 2, stride=2)
            for i in reversed(range(len(widths) - 1)))
        self.decoder = nn.ModuleList(
            nn.Sequential(_conv_norm_act(2 * widths[i], widths[i]),
                          *[_conv_norm_act(widths[i], widths[i])
                            for _ in range(decoder_blocks - 1)])
            for i in reversed(range(len(widths) - 1)))
        self.segmentation_head = nn.Conv3d(widths[0], classes, 1)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.upsample, self.decoder):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return apply_activation(self.segmentation_head(x), self.activation)
