"""`gligen`: a diffusers GLIGEN folder (gated UNet + position net), boxes and phrases.

Depends on the UNet and position-net modules only (diffusers deprecated its GLIGEN pipeline);
the grounding inputs are built exactly as that pipeline did: up to 30 objects, phrase
embeddings = the text encoder's pooled output, the uncond branch with all object masks off, and
the gated layers on for the first `scheduled_sampling_beta` fraction of the steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import Field

from realcompo_sdk.diffusers_loading import expect_kind, load_sd_components, read_latent_spec
from realcompo_sdk.errors import RealCompoError
from realcompo_sdk.interfaces import Branch, GenerationRequest, L2IAdapter, LatentSpec, StepInfo
from realcompo_sdk.layout import Layout, LayoutObject, RegionKind
from realcompo_sdk.unet_adapter import TorchModelOptions, UNetAdapter, UNetState, latent_spec_from, resolve_device_dtype

MAX_OBJECTS = 30


@dataclass(frozen=True)
class GligenGrounding:
    """The position net's inputs for a request, padded to MAX_OBJECTS, batched (B, ...)."""

    boxes: torch.Tensor  # (B, 30, 4) x0, y0, x1, y1 in [0, 1]
    positive_embeddings: torch.Tensor  # (B, 30, D) pooled phrase embeddings
    masks: torch.Tensor  # (B, 30) 1 for real objects


class GligenOptions(TorchModelOptions):
    model: str = "masterful/gligen-1-4-generation-text-box"
    variant: str | None = None
    scheduled_sampling_beta: float = Field(1.0, ge=0.0, le=1.0, description="fraction of steps with grounding on (official RealCompo: 1.0)")
    ground_by_bounding_box: bool = Field(False, description="also accept mask and keypoint objects, grounded by their bounding box (keypoints padded, as the balancer's regions); lets GLIGEN join a ControlNet in one balance")


class GligenAdapter(UNetAdapter, L2IAdapter):
    """Layout-to-image with GLIGEN's gated self-attention grounding on boxes."""

    id = "gligen"
    Options = GligenOptions
    accepted_kinds: ClassVar[frozenset[RegionKind]] = frozenset({"box"})
    max_objects: ClassVar[int | None] = MAX_OBJECTS
    mixed_batches = True  # grounding inputs per sample

    @classmethod
    def peek_latent_spec(cls, options: GligenOptions) -> LatentSpec | None:
        return read_latent_spec(options.model)

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        opts = self.options
        expect_kind(opts.model, {"gligen"}, self.id, "A GLIGEN folder has a UNet with attention_type='gated'; use 'sd' for plain SD.")
        device, dtype = resolve_device_dtype(opts)
        parts = load_sd_components(opts.model, dtype, variant=opts.variant)
        if getattr(parts.unet, "position_net", None) is None:
            raise RealCompoError(f"{opts.model}: the UNet has no GLIGEN position net (attention_type={parts.unet.config.attention_type!r})")
        spec = latent_spec_from(parts.vae.config, parts.unet.config, parts.scheduler_config, family="sd1")
        self.setup_models(unet=parts.unet, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer,
                    scheduler_config=parts.scheduler_config, latent_spec=spec, device=device, dtype=dtype)
        self._fusers = [m for m in self.unet.modules() if type(m).__name__ == "GatedSelfAttentionDense"]

    def check_layout(self, layout: Layout) -> None:
        if self.options.ground_by_bounding_box:  # every region kind has a bounding box
            layout = Layout(prompt=layout.prompt, objects=[
                LayoutObject(phrase=o.phrase, box=o.bounding_box()) for o in layout.objects])
        super().check_layout(layout)

    def prepare_conditioning(self, request: GenerationRequest, state: UNetState) -> None:
        if not request.is_mixed:
            one = self._grounding(request.layout)
            b = request.batch_size
            state.add(GligenGrounding(boxes=one.boxes.expand(b, -1, -1), masks=one.masks.expand(b, -1),
                                      positive_embeddings=one.positive_embeddings.expand(b, -1, -1)))
            return
        each = [self._grounding(layout) for layout in request.sample_layouts()]
        state.add(GligenGrounding(boxes=torch.cat([g.boxes for g in each]), masks=torch.cat([g.masks for g in each]),
                                  positive_embeddings=torch.cat([g.positive_embeddings for g in each])))

    def _grounding(self, layout: Layout) -> GligenGrounding:
        """One layout's grounding inputs, batch of one."""
        self.check_layout(layout)
        phrases = [o.phrase for o in layout.objects]
        ids = self.tokenizer(phrases, padding=True, return_tensors="pt").input_ids.to(self.device)
        with torch.no_grad():
            pooled = self.text_encoder(ids).pooler_output
        n, dim = len(phrases), self.unet.config.cross_attention_dim
        boxes = torch.zeros(MAX_OBJECTS, 4, device=self.device, dtype=self.dtype)
        boxes[:n] = torch.tensor([o.bounding_box().as_tuple() for o in layout.objects], dtype=self.dtype)
        embeddings = torch.zeros(MAX_OBJECTS, dim, device=self.device, dtype=self.dtype)
        embeddings[:n] = pooled.to(self.dtype)
        masks = torch.zeros(MAX_OBJECTS, device=self.device, dtype=self.dtype)
        masks[:n] = 1
        return GligenGrounding(boxes=boxes[None], positive_embeddings=embeddings[None], masks=masks[None])

    def unet_kwargs(self, state: UNetState, branches: tuple[Branch, ...], step: StepInfo) -> dict[str, Any]:
        grounded = step.index < int(self.options.scheduled_sampling_beta * step.num_steps)
        for fuser in self._fusers:
            fuser.enabled = grounded
        g = state.get(GligenGrounding)
        masks = [g.masks if b == "cond" else torch.zeros_like(g.masks) for b in branches]
        return {"cross_attention_kwargs": {"gligen": {
            "boxes": torch.cat([g.boxes] * len(branches)),
            "positive_embeddings": torch.cat([g.positive_embeddings] * len(branches)),
            "masks": torch.cat(masks),
        }}}
