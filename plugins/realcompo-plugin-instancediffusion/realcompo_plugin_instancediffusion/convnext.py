"""A ConvNeXt trunk (no head, no final norm): InstanceDiffusion's encoder of instance masks.

Written from the ConvNeXt paper (Liu et al., 2022) with the attribute names of its reference
implementation (`downsample_layers`, `stages`, `dwconv`, `norm`, `pwconv1`, `pwconv2`, `gamma`)
so that InstanceDiffusion's `position_net.convnext_tiny_backbone.*` weights load one to one. Not
torchvision's or timm's model: their parameter names differ and their constructors may download
ImageNet weights; here every weight comes from the converted checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn

TINY_DIMS = (96, 192, 384, 768)
TINY_DEPTHS = (3, 3, 9, 3)


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channel axis of (B, C, H, W): explicit mean and biased variance."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ConvNeXtBlock(nn.Module):
    """Depthwise 7×7 conv → LayerNorm → 4× MLP (exact GELU) → layer scale γ, residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)  # channels last for the norm and the MLP
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class ConvNeXtFeatures(nn.Module):
    """Stem (4×4 stride 4 + norm), then per stage: [downsample (norm + 2×2 stride 2)] + blocks.
    Output: (B, dims[-1], H/32, W/32)."""

    def __init__(self, in_channels: int = 3, dims: tuple[int, ...] = TINY_DIMS, depths: tuple[int, ...] = TINY_DEPTHS) -> None:
        super().__init__()
        if len(dims) != 4 or len(depths) != 4:
            raise ValueError(f"ConvNeXt has 4 stages; got dims={dims}, depths={depths}")
        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(in_channels, dims[0], kernel_size=4, stride=4), ChannelsFirstLayerNorm(dims[0]))]
            + [
                nn.Sequential(ChannelsFirstLayerNorm(dims[i]), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2))
                for i in range(3)
            ]
        )
        self.stages = nn.ModuleList([nn.Sequential(*[ConvNeXtBlock(d) for _ in range(n)]) for d, n in zip(dims, depths)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        return x
