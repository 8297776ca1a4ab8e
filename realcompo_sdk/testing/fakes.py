"""Small real adapters for tests: tiny random UNets with real attention capture, and a planner.

`TinyT2IAdapter` is an SD-shaped text-to-image model; `TinyL2IAdapter` is a layout model that
receives the objects' occupancy map as an extra input channel (the uncond branch gets zeros).
Both run the real `UNetAdapter` machinery, so they exercise the sampler for real.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..balancer import region_masks
from ..interfaces import GenerationRequest, L2IAdapter, LayoutPlanner, T2IAdapter
from ..layout import Box, Layout, LayoutObject, RegionKind
from ..unet_adapter import TorchModelOptions, UNetAdapter, UNetState, latent_spec_from, place
from .components import tiny_scheduler_config, tiny_text_encoder, tiny_tokenizer, tiny_unet, tiny_vae


@dataclass(frozen=True)
class Occupancy:
    """Where each sample's layout has objects, (B, 1, h, w): the tiny L2I model's extra input channel."""

    mask: torch.Tensor


class TinyOptions(TorchModelOptions):
    seed: int = 0
    prediction_type: str = "epsilon"


class _TinyBase(UNetAdapter):
    Options = TinyOptions
    in_channels = 4

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        opts = self.options
        tokenizer = tiny_tokenizer()
        unet = tiny_unet(opts.seed, in_channels=self.in_channels)
        self.vae = tiny_vae(opts.seed)
        if opts.prediction_type == "flow":  # flow matching, as SD3 and Flux sample
            from diffusers import FlowMatchEulerDiscreteScheduler

            scheduler_config = {"_class_name": "FlowMatchEulerDiscreteScheduler", **FlowMatchEulerDiscreteScheduler(shift=1.0).config}
        else:
            scheduler_config = {**tiny_scheduler_config(), "prediction_type": opts.prediction_type}
        device = torch.device("cpu" if opts.device == "auto" else opts.device)
        dtype = torch.float32 if opts.dtype == "auto" else getattr(torch, opts.dtype)
        spec = latent_spec_from(self.vae.config, unet.config, scheduler_config, family="tiny")
        self.setup_models(unet=unet, text_encoder=tiny_text_encoder(opts.seed, tokenizer=tokenizer), tokenizer=tokenizer,
                    scheduler_config=scheduler_config, latent_spec=spec, device=device, dtype=dtype)
        self.vae = place(self.vae, device, dtype)


class TinyT2IAdapter(_TinyBase, T2IAdapter):
    id = "tiny-t2i"
    mixed_batches = True


class TinyL2IAdapter(_TinyBase, L2IAdapter):
    id = "tiny-l2i"
    accepted_kinds: ClassVar[frozenset[RegionKind]] = frozenset({"box", "mask", "keypoints"})
    max_objects: ClassVar[int | None] = 8
    in_channels = 5
    mixed_batches = True

    def prepare_conditioning(self, request: GenerationRequest, state: UNetState) -> None:
        f = self.latent_spec.vae_scale_factor
        masks = []
        for layout in request.sample_layouts():
            self.check_layout(layout)
            masks.append(region_masks(layout, request.height // f, request.width // f, self.device).amax(dim=0))
        state.add(Occupancy(torch.stack(masks)[:, None].to(self.dtype)))  # (B, 1, h, w)

    def unet_input(self, sample: torch.Tensor, state: UNetState, branches: tuple, step: object) -> torch.Tensor:
        per_branch = sample.shape[0] // len(branches)
        occupancy = state.get(Occupancy).mask
        maps = [occupancy if b == "cond" else torch.zeros_like(occupancy) for b in branches]
        control = torch.cat([m.expand(per_branch, -1, -1, -1) for m in maps])
        return torch.cat([sample, control], dim=1)


class FixedPlanner(LayoutPlanner):
    """Returns one box per word it is given, left to right: deterministic and offline."""

    id = "fixed"

    def plan(self, prompt: str) -> Layout:
        from ..errors import PlannerError

        words = [w for w in prompt.replace(",", " ").split() if w.lower() not in {"a", "an", "the", "and"}]
        if not words:
            raise PlannerError(f"no object word in prompt {prompt!r}")
        n = len(words)
        objects = [LayoutObject(phrase=w, box=Box(x0=i / n, y0=0.25, x1=(i + 0.9) / n, y1=0.75)) for i, w in enumerate(words)]
        return Layout(prompt=prompt, objects=objects)
