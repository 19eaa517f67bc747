"""TransUNet: a CNN encoder, a transformer over its deepest feature map, a U-Net decoder.

After Chen et al. 2021 ("TransUNet"): the CNN (any smp encoder, or a timm one as ``tu-``)
produces features at strides 2..2**depth; the deepest map is projected to ``hidden_size``
tokens, run through ``num_layers`` pre-norm transformer layers, and decoded back to full
resolution with skip connections from the shallower CNN stages. The paper's R50-ViT-B/16 is
``encoder_name="resnet50", encoder_depth=4`` with the default transformer: 102.0M parameters
(the paper's 105.3M has 9 instead of 6 ResNet blocks in stage 3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vesukit.teachers.nets.activation import apply_activation, check_activation


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TransformerBottleneck(nn.Module):
    """Tokens from a (B, C, h, w) map, ``num_layers`` transformer layers, back to a map.

    The learned position embedding is stored for a ``grid`` x ``grid`` map and resized
    bilinearly when a patch gives another size, so one model serves several tile sizes.
    """

    def __init__(self, in_channels: int, hidden_size: int, num_layers: int, num_heads: int,
                 mlp_dim: int, dropout: float, grid: int):
        super().__init__()
        self.grid = grid
        self.embed = nn.Conv2d(in_channels, hidden_size, kernel_size=1)
        self.position = nn.Parameter(torch.zeros(1, hidden_size, grid, grid))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(hidden_size, num_heads, mlp_dim, dropout,
                                           activation="gelu", batch_first=True,
                                           norm_first=True)
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        b, c, h, w = x.shape
        position = self.position
        if (h, w) != (self.grid, self.grid):
            position = F.interpolate(position, size=(h, w), mode="bilinear",
                                     align_corners=False)
        tokens = (x + position).flatten(2).transpose(1, 2)          # (B, h*w, C)
        tokens = self.norm(self.layers(self.dropout(tokens)))
        return tokens.transpose(1, 2).reshape(b, c, h, w)


class DecoderBlock(nn.Module):
    """x2 upsampling, concatenation with the skip (if any), two conv-BN-ReLU."""

    def __init__(self, cin: int, skip: int, cout: int):
        super().__init__()
        self.conv1 = _conv_bn_relu(cin + skip, cout)
        self.conv2 = _conv_bn_relu(cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


def _drop_unused_stages(encoder: nn.Module, depth: int) -> None:
    """smp's ResNet/SENet encoders keep ``layer4`` at depth 4 but never run it: replace the
    stages the forward skips so no dead weights are built or saved. (timm ``tu-`` encoders
    already stop at the last stage used.)"""
    if not hasattr(encoder, "_depth"):
        return
    for stage in range(depth, 5):                  # layerN runs only when depth >= N + 1
        if isinstance(getattr(encoder, f"layer{stage}", None), nn.Module):
            setattr(encoder, f"layer{stage}", nn.Identity())


class TransUNet(nn.Module):
    def __init__(self, encoder_name: str = "resnet50", in_channels: int = 3, classes: int = 1,
                 encoder_depth: int = 4, hidden_size: int = 768, num_layers: int = 12,
                 num_heads: int = 12, mlp_dim: int = 3072, dropout: float = 0.0,
                 grid: int = 16, head_channels: int = 512,
                 decoder_channels: Sequence[int] = (256, 128, 64, 16),
                 activation: str | None = None, **encoder_kwargs):
        super().__init__()
        from segmentation_models_pytorch.encoders import get_encoder

        if len(decoder_channels) != encoder_depth:
            raise ValueError(f"decoder_channels needs one entry per encoder stage "
                             f"(encoder_depth={encoder_depth}), got {list(decoder_channels)}")
        check_activation(activation)
        self.encoder = get_encoder(encoder_name, in_channels=in_channels, depth=encoder_depth,
                                   weights=None, **encoder_kwargs)
        _drop_unused_stages(self.encoder, encoder_depth)
        channels = list(self.encoder.out_channels)                  # stride 1, 2, 4, ...
        self.bottleneck = TransformerBottleneck(channels[-1], hidden_size, num_layers,
                                                num_heads, mlp_dim, dropout, grid)
        self.head = _conv_bn_relu(hidden_size, head_channels)
        # Skips from stride 2**(depth-1) down to stride 2; the last block (to stride 1)
        # has none: the raw input is not a useful skip.
        skips = channels[1:-1][::-1] + [0]
        blocks, cin = [], head_channels
        for skip, cout in zip(skips, decoder_channels):
            blocks.append(DecoderBlock(cin, skip, cout))
            cin = cout
        self.decoder = nn.ModuleList(blocks)
        self.segmentation_head = nn.Conv2d(cin, classes, kernel_size=3, padding=1)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        y = self.head(self.bottleneck(features[-1]))
        skips = features[1:-1][::-1] + [None]
        for block, skip in zip(self.decoder, skips):
            # Stages reported with 0 channels (e.g. MiT's stride-2 placeholder) are not skips.
            y = block(y, skip if skip is not None and skip.shape[1] > 0 else None)
        return apply_activation(self.segmentation_head(y), self.activation)
