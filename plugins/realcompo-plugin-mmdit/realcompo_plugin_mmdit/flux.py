"""`flux`: FLUX.1 [dev] / [schnell] — a `FluxTransformer2DModel` MMDiT.

Flux reads T5 tokens as its text sequence and CLIP's pooled vector; object tokens are T5
positions. FLUX.1-dev is guidance-distilled: it takes the guidance scale as an input of one
conditional forward and was never trained with an unconditional branch, so this adapter declares
``guidance = "distilled"`` and the sampler never asks it for one (faking an "uncond" pass by
re-running the conditional one would double the cost and change nothing). Latents are (B, 16,
h, w) for the sampler; the adapter packs 2×2 cells into tokens as diffusers' Flux pipeline does,
and timesteps follow that pipeline (sigmas 1 → 1/n, resolution-dependent shift).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field

from realcompo_sdk.interfaces import Branch, GuidanceKind, LatentSpec, StepInfo, T2IAdapter
from realcompo_sdk.joint_attention import flux_queries_keys
from realcompo_sdk.mmdit_adapter import MMDiTAdapter, MMDiTOptions
from realcompo_sdk.tokens import align_phrases, warn_if_truncated
from realcompo_sdk.unet_adapter import UNetState, place, resolve_device_dtype

from .loading import check_folder, load_pipeline, peek_spec, spec_from_configs


class FluxOptions(MMDiTOptions):
    model: str = "black-forest-labs/FLUX.1-dev"
    variant: str | None = None
    max_sequence_length: int = Field(512, ge=1, le=512, description="T5 tokens read (FLUX.1-dev: 512, schnell: 256)")
    default_size: int = Field(1024, ge=16, description="image side in pixels when the call gives none (FLUX.1: 1024)")


class FluxModel(MMDiTAdapter):
    """Flux's text stack and packed transformer forward, shared by the `flux` T2I adapter and the
    Flux ControlNet adapters. Guidance-distilled: one forward per step."""

    Options = FluxOptions
    options: FluxOptions
    queries_keys = staticmethod(flux_queries_keys)
    guidance: ClassVar[GuidanceKind] = "distilled"
    pipe: Any

    def _setup_pipeline(self, pipe: Any, device: torch.device, dtype: torch.dtype) -> None:
        self.pipe = pipe
        for name in ("text_encoder", "text_encoder_2"):
            place(getattr(pipe, name), device, dtype)
        pipe.tokenizer_2.model_max_length = self.options.max_sequence_length
        spec = spec_from_configs(pipe.vae.config, pipe.transformer.config, dict(pipe.scheduler.config), "flux",
                                 default_size=self.options.default_size)
        self.setup_models(transformer=pipe.transformer, scheduler_config={"_class_name": type(pipe.scheduler).__name__,
                          **pipe.scheduler.config}, latent_spec=spec, device=device, dtype=dtype, patch_size=2)

    def timestep_kwargs(self, height: int, width: int, num_steps: int) -> dict[str, Any]:
        """As diffusers' Flux pipeline: sigmas from 1 to 1/n, shifted by the image's token count."""
        kwargs = super().timestep_kwargs(height, width, num_steps)
        if not self.scheduler_config.get("use_flow_sigmas"):
            kwargs["sigmas"] = np.linspace(1.0, 1 / num_steps, num_steps)
        return kwargs

    # ---- text ----------------------------------------------------------------------------
    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        warn_if_truncated(self.pipe.tokenizer_2, prompts, f"adapter {self.name!r} (T5)")
        embeds, pooled, _ = self.pipe.encode_prompt(prompt=prompts, prompt_2=None, device=self.device,
                                                    max_sequence_length=self.options.max_sequence_length)
        return embeds.to(self.dtype), pooled.to(self.dtype)

    def phrase_token_positions(self, prompt: str, phrases: list[str], *, append_missing: bool = False) -> tuple[str, list[list[int]]]:
        return align_phrases(self.pipe.tokenizer_2, prompt, phrases, append_missing=append_missing)

    # ---- model ---------------------------------------------------------------------------
    def transformer_kwargs(self, packed: torch.Tensor, step: StepInfo, state: UNetState, common: dict[str, Any]) -> dict[str, Any]:
        """Extra transformer arguments: the ControlNet adapter adds its block residuals here."""
        return {}

    def flux_inputs(self, latents: torch.Tensor, step: StepInfo, state: UNetState, branches: tuple[Branch, ...],
                    guidance_scale: float) -> tuple[torch.Tensor, dict[str, Any]]:
        """Packed latents and the arguments the transformer and a Flux ControlNet share."""
        from diffusers import FluxPipeline

        sample = torch.cat([latents] * len(branches)).to(self.dtype)
        b, c, h, w = sample.shape
        packed = FluxPipeline._pack_latents(sample, b, c, h, w)
        embeds, pooled = self.branch_text(state, branches)
        t = step.timestep if torch.is_tensor(step.timestep) else torch.tensor(float(step.timestep))
        common = {
            "timestep": t.to(sample.device).expand(b).to(self.dtype) / 1000,
            "pooled_projections": pooled,
            "encoder_hidden_states": embeds,
            "txt_ids": torch.zeros(embeds.shape[1], 3, device=sample.device, dtype=self.dtype),
            "img_ids": FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, sample.device, self.dtype),
        }
        return packed, common

    def run_model(self, latents: torch.Tensor, step: StepInfo, state: UNetState, branches: tuple[Branch, ...],
                  guidance_scale: float) -> torch.Tensor:
        from diffusers import FluxPipeline

        packed, common = self.flux_inputs(latents, step, state, branches, guidance_scale)
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full((packed.shape[0],), float(guidance_scale), device=packed.device, dtype=torch.float32)
        extra = self.transformer_kwargs(packed, step, state, {**common, "guidance_scale": guidance_scale})
        out = self.transformer(hidden_states=packed, guidance=guidance, return_dict=False, **common, **extra)[0]
        h, w = latents.shape[-2:]
        f = self.latent_spec.vae_scale_factor
        return FluxPipeline._unpack_latents(out, h * f, w * f, f)


def load_flux(model: str, options: FluxOptions, adapter_id: str) -> tuple[Any, torch.device, torch.dtype]:
    """The Flux pipeline of `model`, its device and dtype."""
    device, dtype = resolve_device_dtype(options)
    return load_pipeline("flux", model, dtype, adapter_id=adapter_id, variant=options.variant), device, dtype


class FluxAdapter(FluxModel, T2IAdapter):
    """Text-to-image with FLUX.1; owns the VAE."""

    id = "flux"
    mixed_batches = True

    @classmethod
    def peek_latent_spec(cls, options: FluxOptions) -> LatentSpec | None:
        return peek_spec(options.model, "flux")

    @classmethod
    def check_files(cls, options: FluxOptions) -> None:
        check_folder(options.model, "flux", cls.id)

    def __init__(self, *, pipeline: Any = None, **options: Any) -> None:
        """Load `model`, or wrap `pipeline`: a `FluxPipeline` already in memory (see `SD3Adapter`)."""
        super().__init__(**options)
        if pipeline is None:
            pipeline, device, dtype = load_flux(self.options.model, self.options, self.id)
        else:
            device, dtype = resolve_device_dtype(self.options)
        self._setup_pipeline(pipeline, device, dtype)
        self.vae = place(pipeline.vae, device, dtype)
