"""Fourier features of coordinates, InstanceDiffusion's layout encoding.

For frequencies f_k = temperature ** (k / num_freqs), k = 0..num_freqs-1, the output holds, per
frequency, sin(f_k · x) for every coordinate and then cos(f_k · x) for every coordinate. This is
GLIGEN's box embedding generalised to any number of coordinates (points: 2, scribbles: 40,
polygons: 512); diffusers' helper only handles the 4 of a box.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def fourier_features(x: torch.Tensor, num_freqs: int = 16, temperature: float = 100.0) -> torch.Tensor:
    """(..., n) coordinates → (..., 2 · num_freqs · n) features, computed in float32."""
    x = x.float()
    # Same float32 arithmetic as the reference: temperature ** (arange / num_freqs), then f · x.
    freqs = temperature ** (torch.arange(num_freqs, device=x.device) / num_freqs)
    angles = freqs.view(num_freqs, 1) * x.unsqueeze(-2)  # (..., F, n)
    return torch.stack((angles.sin(), angles.cos()), dim=-2).flatten(-3)  # (..., F, 2, n) → (..., 2Fn)
