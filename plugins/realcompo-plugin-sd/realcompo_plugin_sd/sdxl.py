"""`sdxl`: a Stable Diffusion XL base model — diffusers folder, hub id or single .safetensors file.

What SDXL adds to the shared `UNetAdapter` machinery, done as diffusers' SDXL pipeline does:

- two CLIP text encoders; the prompt embedding is their penultimate hidden states concatenated
  along the feature axis (text_encoder then text_encoder_2), and the pooled embedding is
  text_encoder_2's projected output;
- the UNet's added conditioning ``added_cond_kwargs={"text_embeds": pooled, "time_ids": ...}``
  with time ids (original size, crop top-left, target size) = (H, W, 0, 0, H, W), per branch;
- an empty negative prompt is encoded as zeros when the model says ``force_zeros_for_empty_prompt``
  (SDXL base does), as the pipeline does for a missing negative prompt;
- the VAE decodes in float32 when its config asks for it (``force_upcast``: the SDXL VAE
  overflows in float16), unless a float16-safe VAE is given with ``vae=...``.

Token positions: both tokenizers of SDXL base split a prompt into the same tokens (they differ
only in their padding token), and cross-attention attends over one token axis of the concatenated
embedding, so a phrase's positions are the same for both encoders. They are computed with
`tokenizer` and checked against `tokenizer_2`; a model whose tokenizers disagree is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch

from realcompo_sdk.diffusers_loading import (
    check_model_reference,
    describe_folder,
    expect_kind,
    low_memory_kwargs,
    read_latent_spec,
)
from realcompo_sdk.errors import RealCompoError
from realcompo_sdk.interfaces import Branch, GenerationRequest, LatentSpec, StepInfo, T2IAdapter
from realcompo_sdk.tokens import align_phrases, warn_if_truncated
from realcompo_sdk.unet_adapter import (
    TorchModelOptions,
    UNetAdapter,
    UNetState,
    latent_spec_from,
    place,
    resolve_device_dtype,
)

FP16_FIX_VAE = "madebyollin/sdxl-vae-fp16-fix"


@dataclass(frozen=True)
class SDXLTimeIds:
    """SDXL's micro-conditioning (original size, crop, target size), (B, 6)."""

    time_ids: torch.Tensor


class SDXLOptions(TorchModelOptions):
    model: str = "stabilityai/stable-diffusion-xl-base-1.0"
    variant: str | None = None  # e.g. "fp16" for hub folders that ship fp16 files
    vae: str | None = None  # folder/hub id of another AutoencoderKL, e.g. "madebyollin/sdxl-vae-fp16-fix"
    single_file_config: str | None = None  # a diffusers folder/hub id giving configs for a single-file checkpoint
    force_zeros_for_empty_prompt: bool | None = None  # None: as the model's model_index.json says


@dataclass
class SDXLComponents:
    unet: Any
    vae: Any
    text_encoder: Any
    text_encoder_2: Any
    tokenizer: Any
    tokenizer_2: Any
    scheduler_config: dict[str, Any]
    force_zeros_for_empty_prompt: bool


def load_sdxl_components(model: str, dtype: torch.dtype, *, variant: str | None = None,
                         single_file_config: str | None = None) -> SDXLComponents:
    """UNet, VAE, both text encoders and tokenizers, scheduler config of an SDXL base model."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    path = check_model_reference(model)
    if path.suffix == ".safetensors":
        from diffusers import StableDiffusionXLPipeline

        kwargs = {"config": single_file_config} if single_file_config else {}
        pipe = StableDiffusionXLPipeline.from_single_file(str(path), torch_dtype=dtype, add_watermarker=False, **kwargs)
        return SDXLComponents(pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2, pipe.tokenizer,
                              pipe.tokenizer_2, dict(pipe.scheduler.config),
                              bool(pipe.config.get("force_zeros_for_empty_prompt", True)))
    if path.exists():
        index = json.loads((path / "model_index.json").read_text()) if (path / "model_index.json").exists() else {}
        if index and not index.get("text_encoder", [None])[0]:
            raise RealCompoError(
                f"adapter 'sdxl' cannot load {model}: it has no first text encoder ({describe_folder(path)}); "
                "SDXL refiner folders are not base models. Use an SDXL base model such as "
                "'stabilityai/stable-diffusion-xl-base-1.0'."
            )
    common = {"torch_dtype": dtype, "variant": variant}
    try:
        unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", **common, **low_memory_kwargs())
        vae = AutoencoderKL.from_pretrained(model, subfolder="vae", **common, **low_memory_kwargs())
        text_encoder = CLIPTextModel.from_pretrained(model, subfolder="text_encoder", **common)
        text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(model, subfolder="text_encoder_2", **common)
        tokenizer = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer")
        tokenizer_2 = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer_2")
        scheduler_config = dict(EulerDiscreteScheduler.load_config(model, subfolder="scheduler"))
        index = dict(_load_model_index(model))
    except OSError as exc:
        raise RealCompoError(f"could not load SDXL model {model!r}: {exc}") from exc
    return SDXLComponents(unet, vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, scheduler_config,
                          bool(index.get("force_zeros_for_empty_prompt", True)))


def _load_model_index(model: str) -> dict[str, Any]:
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.load_config(model)


class StableDiffusionXLAdapter(UNetAdapter, T2IAdapter):
    """Text-to-image with an SDXL base UNet and its two text encoders; owns the VAE."""

    id = "sdxl"
    Options = SDXLOptions
    mixed_batches = True  # each sample's prompt is encoded; no layout conditioning

    @classmethod
    def peek_latent_spec(cls, options: SDXLOptions) -> LatentSpec | None:
        return None if options.vae is not None else read_latent_spec(options.model)  # another VAE: other facts

    text_encoder_2: Any
    tokenizer_2: Any

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        opts = self.options
        expect_kind(opts.model, {"sdxl", "single-file"}, self.id,
                    "Use 'sd' for SD 1.x/2.x folders and 'gligen' for GLIGEN folders.")
        device, dtype = resolve_device_dtype(opts)
        parts = load_sdxl_components(opts.model, dtype, variant=opts.variant, single_file_config=opts.single_file_config)
        if parts.unet.config.addition_embed_type != "text_time":
            raise RealCompoError(
                f"adapter 'sdxl' cannot use {opts.model}: its UNet has addition_embed_type="
                f"{parts.unet.config.addition_embed_type!r}, SDXL base has 'text_time'. Use 'sd' for SD 1.x/2.x models."
            )
        projection_dim = parts.text_encoder_2.config.projection_dim
        passed = parts.unet.config.addition_time_embed_dim * 6 + projection_dim
        expected = parts.unet.add_embedding.linear_1.in_features
        if passed != expected:
            raise RealCompoError(
                f"{opts.model}: the UNet's added embedding takes {expected} features, but 6 time ids x "
                f"{parts.unet.config.addition_time_embed_dim} + text_encoder_2 projection {projection_dim} = {passed}"
            )
        vae = parts.vae
        if opts.vae is not None:
            from diffusers import AutoencoderKL

            try:
                vae = AutoencoderKL.from_pretrained(opts.vae, torch_dtype=dtype, **low_memory_kwargs())
            except OSError as exc:
                raise RealCompoError(f"could not load VAE {opts.vae!r}: {exc}") from exc
        self.force_zeros_for_empty_prompt = (parts.force_zeros_for_empty_prompt if opts.force_zeros_for_empty_prompt is None
                                             else opts.force_zeros_for_empty_prompt)
        spec = latent_spec_from(vae.config, parts.unet.config, parts.scheduler_config, family="sdxl")
        self.setup_models(unet=parts.unet, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer,
                    scheduler_config=parts.scheduler_config, latent_spec=spec, device=device, dtype=dtype)
        self.text_encoder_2 = place(parts.text_encoder_2, device, dtype)
        self.tokenizer_2 = parts.tokenizer_2
        upcast = dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))
        self.vae = place(vae, device, torch.float32 if upcast else dtype)

    # ---- text ----------------------------------------------------------------------------
    def phrase_token_positions(self, prompt: str, phrases: list[str], *, append_missing: bool = False) -> tuple[str, list[list[int]]]:
        prompt, positions = align_phrases(self.tokenizer, prompt, phrases, append_missing=append_missing)
        _, positions_2 = align_phrases(self.tokenizer_2, prompt, phrases)
        if positions != positions_2:
            raise RealCompoError(
                f"adapter {self.name!r}: the two tokenizers of {self.options.model} place the phrases at "
                f"different tokens ({positions} vs {positions_2}); cross-attention maps cannot be read "
                "consistently for this model."
            )
        return prompt, positions

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, 77, D1 + D2) penultimate hidden states of both encoders, and (B, P) pooled embeddings."""
        hidden = []
        pooled = None
        warn_if_truncated(self.tokenizer, texts, f"adapter {self.name!r}")  # both tokenizers share the 77-token limit
        for tokenizer, encoder in ((self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2)):
            ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length,
                            truncation=True, return_tensors="pt").input_ids.to(self.device)
            out = encoder(ids, output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            if encoder is self.text_encoder_2:
                pooled = out[0]
        return torch.cat(hidden, dim=-1), pooled

    def prepare(self, request: GenerationRequest) -> UNetState:
        b = request.batch_size
        cond, pooled_c = self.encode_text(request.sample_prompts())
        if self.force_zeros_for_empty_prompt and not request.negative_prompt:
            uncond, pooled_u = torch.zeros_like(cond), torch.zeros_like(pooled_c)
        else:
            uncond, pooled_u = self.encode_text([request.negative_prompt] * b)
        h, w = request.height, request.width
        time_ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=self.dtype, device=self.device).expand(b, -1)
        state = UNetState(cond=cond, uncond=uncond, pooled={"cond": pooled_c, "uncond": pooled_u})
        state.add(SDXLTimeIds(time_ids))
        self.prepare_conditioning(request, state)
        return state

    def unet_kwargs(self, state: UNetState, branches: tuple[Branch, ...], step: StepInfo) -> dict[str, Any]:
        return {"added_cond_kwargs": {
            "text_embeds": torch.cat([state.pooled[b] for b in branches]),
            "time_ids": torch.cat([state.get(SDXLTimeIds).time_ids] * len(branches)),
        }}

    # ---- decoding ------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        images = self.vae.decode((latents / self.latent_spec.scaling_factor).to(self.vae.dtype), return_dict=False)[0]
        if not bool(torch.isfinite(images).all()):
            raise RealCompoError(
                f"adapter {self.name!r}: the VAE decoded NaN/inf pixels ({self.vae.dtype}). The SDXL VAE "
                f"overflows in float16: use vae='{FP16_FIX_VAE}', or dtype='float32' / 'bfloat16'."
            )
        return (images.float() / 2 + 0.5).clamp(0, 1).cpu()
