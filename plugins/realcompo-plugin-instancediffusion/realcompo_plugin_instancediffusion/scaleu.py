"""ScaleU: InstanceDiffusion's learned re-weighting of the UNet's decoder inputs.

Before each decoder resnet k concatenates its skip connection, the backbone feature h is scaled
per channel by tanh(b_k) + 1 and the skip's lowest spatial frequencies (the 2×2 centre of its
shifted spectrum) by tanh(s_k) + 1. Both start at 0 (identity) and are always on: they do not
follow the grounding schedule. FreeU is a fixed-constant relative and cannot be combined with it.

diffusers' up blocks compute `resnet(torch.cat([h, skip], dim=1), temb)`, so a forward pre-hook
on each up-block resnet splits that input at h's channel count, rescales both parts and joins them
again: the UNet code stays stock diffusers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def low_frequency_scale(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Multiply the 2×2 centre of x's fftshift-ed 2-D spectrum by `scale` (the FFT runs in float32)."""
    spectrum = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    h, w = spectrum.shape[-2:]
    weights = torch.ones(spectrum.shape, device=x.device)
    weights[..., h // 2 - 1 : h // 2 + 1, w // 2 - 1 : w // 2 + 1] = scale.float()
    spectrum = torch.fft.ifftshift(spectrum * weights, dim=(-2, -1))
    return torch.fft.ifftn(spectrum, dim=(-2, -1)).real.to(x.dtype)


def backbone_channels(unet_config: Any) -> list[int]:
    """Channels of h (the part before the skip) at the input of every up-block resnet, in order."""
    reversed_out = list(reversed(unet_config["block_out_channels"]))
    layers = unet_config["layers_per_block"]
    layers = layers if isinstance(layers, int) else list(reversed(layers))[0]
    channels = []
    for i, out in enumerate(reversed_out):
        previous = reversed_out[max(i - 1, 0)]
        channels += [previous] + [out] * layers  # resnet 0 gets the previous block's output
    return channels


class InstDiffScaleU(nn.Module):
    """Holds `scaleu_b_{k}` (per channel) and `scaleu_s_{k}` (scalar), k over the decoder resnets."""

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        self.channels = list(channels)
        for k, c in enumerate(self.channels):
            self.register_parameter(f"scaleu_b_{k}", nn.Parameter(torch.zeros(c)))
            self.register_parameter(f"scaleu_s_{k}", nn.Parameter(torch.zeros(1)))
        self.active = True
        self._handles: list[Any] = []

    def attach(self, unet: nn.Module) -> None:
        """Hook every up-block resnet of `unet` (in execution order)."""
        if any(getattr(block, "b1", None) is not None for block in unet.up_blocks):
            raise ValueError("FreeU is enabled on this UNet; ScaleU replaces it — call unet.disable_freeu() first")
        resnets = [r for block in unet.up_blocks for r in block.resnets]
        if len(resnets) != len(self.channels):
            raise ValueError(f"ScaleU has {len(self.channels)} entries but the UNet has {len(resnets)} decoder resnets")
        self.detach()
        for k, resnet in enumerate(resnets):
            skip = resnet.in_channels - self.channels[k]
            if skip <= 0:
                raise ValueError(f"decoder resnet {k} takes {resnet.in_channels} channels, fewer than ScaleU's {self.channels[k]}")
            self._handles.append(resnet.register_forward_pre_hook(self._hook(k)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, k: int) -> Any:
        def rescale(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            if not self.active:
                return None
            x = args[0]
            h, skip = x[:, : self.channels[k]], x[:, self.channels[k] :]
            b = torch.tanh(getattr(self, f"scaleu_b_{k}")) + 1
            s = torch.tanh(getattr(self, f"scaleu_s_{k}")) + 1
            h = h * b.to(h.dtype)[None, :, None, None]
            skip = low_frequency_scale(skip, s)
            return (torch.cat([h, skip], dim=1), *args[1:])

        return rescale
