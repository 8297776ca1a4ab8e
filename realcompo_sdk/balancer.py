"""The RealCompo balancer: influence logits, softmax mixing, the attention-region loss, the update.

See docs/algorithm.md. Per adapter k and sample b the balancer keeps a float32 logit map
c_k (B, 1, h, w) at latent resolution; weights are softmax over k; the composed noise is
Σ_k w_k ⊙ ε_k. The loss Σ_k Σ_j (1 − in-region mass / total mass) of each adapter's attention
map of object j drives c ← c − η_i ∂L/∂c with η_i = scale_factor · sqrt(linspace(a, b)[i]).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .layout import Layout


class BalanceOptions(BaseModel):
    """Balancer and sampler settings. Defaults follow the paper; switches reproduce the official code."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scale_factor: float = Field(1e6, ge=0, allow_inf_nan=False, description="step size of the influence update (official: 1e6)")
    scale_range: tuple[float, float] = Field((1.0, 0.5), description="sqrt-schedule end points over the steps")
    t0: int | None = Field(None, ge=0, description="warm-up steps following the L2I model alone; None: 40% of the steps (20 of 50)")
    t1: int | None = Field(None, ge=0, description="stop updating the influence after this step (None: update to the end)")
    attention_resolution: int | None = Field(None, gt=0, description="attention map height; None: latent height / 4")
    init: Literal["equal", "random"] = Field("equal", description="equal logits (paper) or N(0, 1) from the user's generator (official)")
    updates_during_warmup: bool = Field(False, description="official: update the influence during warm-up too")
    lookahead_noise: Literal["guided", "cond"] = Field("guided", description="official layout variant: 'cond' (no CFG in the look-ahead)")
    detach_t2i_attention: bool = Field(False, description="official layout variant: the T2I attention carries no gradient")
    lookahead: Literal["scheduler", "ddim"] = Field("scheduler", description="official layout variant: a DDIM formula whatever the scheduler")

    @field_validator("scale_range")
    @classmethod
    def _scale_range_finite_and_non_negative(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(math.isfinite(v) and v >= 0 for v in value):  # the schedule takes their square root
            raise ValueError(f"scale_range must be two finite numbers ≥ 0 (start, end), got {value}")
        return value

    def warmup_steps(self, num_steps: int) -> int:
        """t0 for a run of `num_steps` (None: 40 % of the steps)."""
        return round(0.4 * num_steps) if self.t0 is None else min(self.t0, num_steps)

    def step_sizes(self, num_steps: int) -> torch.Tensor:
        """The influence update's step size at each step: `scale_factor` times the sqrt schedule."""
        a, b = self.scale_range
        return self.scale_factor * torch.sqrt(torch.linspace(a, b, num_steps, dtype=torch.float64))

    def updates_at(self, index: int, num_steps: int) -> bool:
        """Whether the influence maps are updated at step `index`."""
        mixing = index >= self.warmup_steps(num_steps)
        in_window = self.t1 is None or index < self.t1
        return (mixing or self.updates_during_warmup) and in_window and self.scale_factor > 0


def initial_logits(num_adapters: int, shape: tuple[int, int, int], init: str, generators: list[torch.Generator],
                   device: torch.device) -> torch.Tensor:
    """(K, B, 1, h, w) float32 logits; random init draws per sample from that sample's generator."""
    batch, h, w = shape
    if init == "equal":
        return torch.zeros(num_adapters, batch, 1, h, w, device=device)
    per_sample = [torch.randn(num_adapters, 1, h, w, generator=g, device=g.device).to(device) for g in generators]
    return torch.stack(per_sample, dim=1)


def compose(noises: list[torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
    """Σ_k softmax(c)_k ⊙ ε_k; weights broadcast over latent channels."""
    weights = torch.softmax(logits, dim=0)
    return sum(w * eps for w, eps in zip(weights, noises))


def region_masks(layout: Layout, height: int, width: int, device: torch.device) -> torch.Tensor:
    """(J, height, width) float masks of each object's region at attention resolution.

    Boxes are quantised as the official code does (int(coord · size)), with at least one cell;
    masks are area-resampled and thresholded at one half; keypoints use their padded bounding box.
    """
    regions = []
    for obj in layout.objects:
        if obj.mask is not None:
            m = torch.tensor(obj.mask.to_rows(), dtype=torch.float32)[None, None]
            m = torch.nn.functional.interpolate(m, size=(height, width), mode="area")[0, 0]
            region = (m >= 0.5).float()
            if region.sum() == 0:
                region = (m == m.max()).float()
        else:
            box = obj.bounding_box()
            x0, x1 = int(box.x0 * width), max(int(box.x1 * width), int(box.x0 * width) + 1)
            y0, y1 = int(box.y0 * height), max(int(box.y1 * height), int(box.y0 * height) + 1)
            region = torch.zeros(height, width)
            region[y0:y1, x0:x1] = 1.0
        regions.append(region)
    return torch.stack(regions).to(device)


def batch_regions(layouts: list[Layout], height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample regions of a batch whose samples may have different layouts: (B, J, h, w) masks
    padded to the largest object count J, and (B, J) booleans saying which objects are real."""
    per_sample = [region_masks(layout, height, width, device) for layout in layouts]
    most = max(r.shape[0] for r in per_sample)
    regions = torch.zeros(len(layouts), most, height, width, device=device)
    valid = torch.zeros(len(layouts), most, dtype=torch.bool, device=device)
    for b, r in enumerate(per_sample):
        regions[b, : r.shape[0]] = r
        valid[b, : r.shape[0]] = True
    return regions, valid


def region_loss(maps: torch.Tensor, regions: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_b Σ_j (1 − mass of map j inside region j / total mass of map j).  maps: (B, J, h, w);
    regions (J, h, w) shared by the batch or (B, J, h, w) per sample; `valid` (B, J) drops the
    padding objects of a mixed batch (their terms are constants, so they add no gradient)."""
    inside = (maps * (regions if regions.dim() == 4 else regions[None])).sum(dim=(-2, -1))
    total = maps.sum(dim=(-2, -1))
    # A map that underflowed to all zeros (low precision) says nothing: its term is a constant 1
    # with no gradient, instead of 0/0 = NaN poisoning every influence map.
    safe = total.clamp_min(torch.finfo(total.dtype).tiny)
    share = torch.where(total > 0, inside / safe, torch.zeros_like(total))
    terms = 1.0 - share
    if valid is not None:
        terms = torch.where(valid, terms, torch.zeros_like(terms))
    return terms.sum()
