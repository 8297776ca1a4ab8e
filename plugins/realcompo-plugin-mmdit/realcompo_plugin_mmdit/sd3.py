"""`sd3`: Stable Diffusion 3 / 3.5 (medium, large, large-turbo) — an `SD3Transformer2DModel` MMDiT.

The text stack is diffusers' own (`StableDiffusion3Pipeline.encode_prompt`): CLIP-L and CLIP-G
token features side by side (77 tokens, zero-padded to T5's width), then T5's tokens; pooled
vectors of both CLIPs. An object's tokens are therefore its CLIP positions plus 77 + its T5
positions, each found with that encoder's own tokenizer. Sampling is flow matching with CFG.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from realcompo_sdk.errors import TokenAlignmentError
from realcompo_sdk.interfaces import Branch, LatentSpec, StepInfo, T2IAdapter
from realcompo_sdk.joint_attention import sd3_queries_keys
from realcompo_sdk.mmdit_adapter import MMDiTAdapter, MMDiTOptions
from realcompo_sdk.tokens import align_phrases, warn_if_truncated
from realcompo_sdk.unet_adapter import UNetState, place, resolve_device_dtype

from .loading import check_folder, load_pipeline, peek_spec, spec_from_configs


class SD3Options(MMDiTOptions):
    # SD3-medium: the public SD3 pose ControlNets (InstantX) fit it, not SD3.5 (see docs/plugins/mmdit.md)
    model: str = "stabilityai/stable-diffusion-3-medium-diffusers"
    variant: str | None = None  # e.g. "fp16" for hub folders that ship fp16 files
    max_sequence_length: int = Field(256, ge=1, le=512, description="T5 tokens read (diffusers' default 256)")
    t5: bool = Field(True, description="load the T5-XXL encoder (4.7B parameters); False: CLIP tokens only, "
                                       "less memory, weaker prompt following (T5's slots are zeros, as in diffusers)")


class SD3Model(MMDiTAdapter):
    """SD3's text stack and transformer forward, shared by the `sd3` T2I adapter and the SD3
    ControlNet adapters (which run on the same pipeline, loaded or shared)."""

    Options = SD3Options
    options: SD3Options
    queries_keys = staticmethod(sd3_queries_keys)
    pipe: Any

    def _setup_pipeline(self, pipe: Any, device: torch.device, dtype: torch.dtype) -> None:
        """Place the text encoders and the transformer; shared with the ControlNet adapter's base."""
        for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
            if getattr(pipe, name, None) is not None:
                place(getattr(pipe, name), device, dtype)
        if pipe.tokenizer_3 is not None:  # positions past the T5 tokens the pipeline reads are not seen
            pipe.tokenizer_3.model_max_length = self.options.max_sequence_length
        self.pipe = pipe
        config = pipe.transformer.config
        spec = spec_from_configs(pipe.vae.config, config, dict(pipe.scheduler.config), "sd3")
        self.setup_models(transformer=pipe.transformer, scheduler_config={"_class_name": type(pipe.scheduler).__name__,
                          **pipe.scheduler.config}, latent_spec=spec, device=device, dtype=dtype, patch_size=config.patch_size)

    # ---- text ----------------------------------------------------------------------------
    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        pipe = self.pipe
        # the longest reader decides what is lost: T5 when loaded (CLIP's 77 tokens are a prefix of it)
        reader, which = (pipe.tokenizer_3, "T5") if pipe.tokenizer_3 is not None else (pipe.tokenizer, "CLIP")
        warn_if_truncated(reader, prompts, f"adapter {self.name!r} ({which})")
        embeds, _, pooled, _ = pipe.encode_prompt(prompt=prompts, prompt_2=None, prompt_3=None, device=self.device,
                                                  do_classifier_free_guidance=False,
                                                  max_sequence_length=self.options.max_sequence_length)
        return embeds.to(self.dtype), pooled.to(self.dtype)

    def phrase_token_positions(self, prompt: str, phrases: list[str], *, append_missing: bool = False) -> tuple[str, list[list[int]]]:
        pipe = self.pipe
        prompt, clip = align_phrases(pipe.tokenizer, prompt, phrases, append_missing=append_missing,
                                     beyond_context="drop" if pipe.tokenizer_3 is not None else "error")
        if pipe.tokenizer_3 is None:
            return prompt, clip
        prompt, t5 = align_phrases(pipe.tokenizer_3, prompt, phrases, append_missing=append_missing, beyond_context="drop")
        offset = pipe.tokenizer_max_length  # the CLIP tokens come first
        positions = [c + [offset + p for p in t] for c, t in zip(clip, t5)]
        for index, (phrase, found) in enumerate(zip(phrases, positions)):
            if not found:
                raise TokenAlignmentError(
                    f"object {index} ({phrase!r}) lies beyond both CLIP's {offset} tokens and the "
                    f"{self.options.max_sequence_length} T5 tokens read; shorten the prompt or raise max_sequence_length")
        return prompt, positions

    # ---- model ---------------------------------------------------------------------------
    def transformer_kwargs(self, sample: torch.Tensor, step: StepInfo, state: UNetState, branches: tuple[Branch, ...],
                           embeds: torch.Tensor, pooled: torch.Tensor) -> dict[str, Any]:
        """Extra transformer arguments: the ControlNet adapter adds its block residuals here."""
        return {}

    def run_model(self, latents: torch.Tensor, step: StepInfo, state: UNetState, branches: tuple[Branch, ...],
                  guidance_scale: float) -> torch.Tensor:
        sample = torch.cat([latents] * len(branches)).to(self.dtype)
        embeds, pooled = self.branch_text(state, branches)
        timestep = step.timestep.expand(sample.shape[0]) if torch.is_tensor(step.timestep) else \
            torch.full((sample.shape[0],), float(step.timestep), device=sample.device)
        extra = self.transformer_kwargs(sample, step, state, branches, embeds, pooled)
        return self.transformer(hidden_states=sample, timestep=timestep, encoder_hidden_states=embeds,
                                pooled_projections=pooled, return_dict=False, **extra)[0]


def load_sd3(model: str, options: SD3Options, adapter_id: str) -> tuple[Any, torch.device, torch.dtype]:
    """The SD3 pipeline of `model` (without T5 when ``options.t5`` is off), its device and dtype."""
    device, dtype = resolve_device_dtype(options)
    extra = {} if options.t5 else {"text_encoder_3": None, "tokenizer_3": None}
    return load_pipeline("sd3", model, dtype, adapter_id=adapter_id, variant=options.variant, **extra), device, dtype


class SD3Adapter(SD3Model, T2IAdapter):
    """Text-to-image with SD3 / SD3.5; owns the VAE."""

    id = "sd3"
    mixed_batches = True  # no layout conditioning; each sample's prompt is encoded

    @classmethod
    def peek_latent_spec(cls, options: SD3Options) -> LatentSpec | None:
        return peek_spec(options.model, "sd3")

    @classmethod
    def check_files(cls, options: SD3Options) -> None:
        check_folder(options.model, "sd3", cls.id)

    def __init__(self, *, pipeline: Any = None, **options: Any) -> None:
        """Load `model`, or wrap `pipeline`: a `StableDiffusion3Pipeline` already in memory (built
        on the meta device, quantised, or shared with other code); `model` then only names it."""
        super().__init__(**options)
        if pipeline is None:
            pipeline, device, dtype = load_sd3(self.options.model, self.options, self.id)
        else:
            device, dtype = resolve_device_dtype(self.options)
        self._setup_pipeline(pipeline, device, dtype)
        self.vae = place(pipeline.vae, device, dtype)
