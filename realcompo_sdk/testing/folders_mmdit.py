"""Write tiny SD3 and Flux (MMDiT) folders to disk, so adapters load them through the real
`from_pretrained` code paths, as they load hub models.

The tiny models keep what an adapter of these families depends on:
- SD3: two CLIP encoders with projection (penultimate hidden states concatenated, 16 + 16 = 32,
  zero-padded to T5's width, pooled outputs concatenated to 32), a T5 encoder whose tokens follow
  the CLIP ones in the joint sequence, 2×2 patches, 16 latent channels, the VAE's shift and scale
  (0.0609, 1.5305) and a shifted flow-matching Euler scheduler; 4 joint blocks, so tests can pick
  blocks.
- Flux: one CLIP encoder (pooled output only), T5 for the token sequence, 2×2 latent packing into
  64 channels, 3-axis RoPE (2 + 2 + 4 = head width 8), guidance embedding (as FLUX.1-dev; off for
  schnell-like folders), 2 double-stream and 2 single-stream blocks, VAE (0.1159, 0.3611) and the
  dynamically shifted scheduler.

The VAE downsamples by 2, so a 32×32 image is a 16×16 latent: 64 image tokens for both families.

diffusers' transformers start with random (non-zero) adaLN and output projections, but its
ControlNets zero their input embedding and per-block output projections (as in training, so that a
fresh ControlNet is a no-op); those get small random weights here so the control image matters.

ControlNet-Union in diffusers 0.42: Flux expresses it by `FluxControlNetModel(num_mode=N)` (a mode
embedding prepended to the text tokens; forward `controlnet_mode`, pipeline `control_mode`). SD3
has no union ControlNet (no mode config field or argument), so `union=True` is refused there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .components import tiny_clip_with_projection, tiny_t5_encoder, tiny_t5_tokenizer, tiny_text_encoder, tiny_tokenizer

SD3_SCALING_FACTOR, SD3_SHIFT_FACTOR = 1.5305, 0.0609
FLUX_SCALING_FACTOR, FLUX_SHIFT_FACTOR = 0.3611, 0.1159
FLUX_UNION_MODES = 10  # as the InstantX / Shakker-Labs Flux union ControlNets
CLIP_HIDDEN = 16  # each CLIP encoder's width (and projection width)
T5_D_MODEL = 32

SD3_TRANSFORMER_CONFIG: dict[str, Any] = dict(
    sample_size=16, patch_size=2, in_channels=16, out_channels=16, num_layers=4, attention_head_dim=8,
    num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=T5_D_MODEL,
    pooled_projection_dim=2 * CLIP_HIDDEN, pos_embed_max_size=32,
)
FLUX_TRANSFORMER_CONFIG: dict[str, Any] = dict(
    patch_size=1, in_channels=64, num_layers=2, num_single_layers=2, attention_head_dim=8, num_attention_heads=4,
    joint_attention_dim=T5_D_MODEL, pooled_projection_dim=CLIP_HIDDEN, axes_dims_rope=(2, 2, 4),
)


def _unzero(model: torch.nn.Module, std: float) -> torch.nn.Module:
    """Give zero-initialised weight matrices / kernels small random values (biases may stay 0)."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                torch.nn.init.normal_(p, std=std)
    return model


def _seeded(seed: int, build: Any, std: float = 0.02) -> Any:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _unzero(build(), std)


def tiny_mmdit_vae(seed: int = 0, scaling_factor: float = SD3_SCALING_FACTOR,
                   shift_factor: float = SD3_SHIFT_FACTOR) -> Any:
    """AutoencoderKL with 16 latent channels, downsampling factor 2 and no quant convs (as SD3's and Flux's)."""
    from diffusers import AutoencoderKL

    return _seeded(seed, lambda: AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=16, norm_num_groups=8, sample_size=32, use_quant_conv=False, use_post_quant_conv=False,
        scaling_factor=scaling_factor, shift_factor=shift_factor,
    ))


def tiny_sd3_transformer(seed: int = 0, **overrides: Any) -> Any:
    from diffusers import SD3Transformer2DModel

    return _seeded(seed, lambda: SD3Transformer2DModel(**{**SD3_TRANSFORMER_CONFIG, **overrides}))


def tiny_flux_transformer(seed: int = 0, guidance_embeds: bool = True, **overrides: Any) -> Any:
    from diffusers import FluxTransformer2DModel

    config = {**FLUX_TRANSFORMER_CONFIG, "guidance_embeds": guidance_embeds, **overrides}
    return _seeded(seed, lambda: FluxTransformer2DModel(**config))


def tiny_sd3_components(seed: int = 0) -> dict[str, Any]:
    """Components of a tiny StableDiffusion3Pipeline. The three text encoders get different seeds,
    so an adapter that swaps them (or the CLIP concatenation order) changes the result."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    tokenizer, tokenizer_2, tokenizer_3 = tiny_tokenizer(), tiny_tokenizer(), tiny_t5_tokenizer()
    tokenizer_2.pad_token = "!"  # as SD3's (and SDXL's) second CLIP tokenizer
    return {
        "transformer": tiny_sd3_transformer(seed),
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0),
        "vae": tiny_mmdit_vae(seed, SD3_SCALING_FACTOR, SD3_SHIFT_FACTOR),
        "text_encoder": tiny_clip_with_projection(seed, CLIP_HIDDEN, CLIP_HIDDEN, tokenizer=tokenizer),
        "tokenizer": tokenizer,
        "text_encoder_2": tiny_clip_with_projection(seed + 1, CLIP_HIDDEN, CLIP_HIDDEN, tokenizer=tokenizer_2),
        "tokenizer_2": tokenizer_2,
        "text_encoder_3": tiny_t5_encoder(seed + 2, T5_D_MODEL, tokenizer=tokenizer_3),
        "tokenizer_3": tokenizer_3,
    }


def tiny_flux_components(seed: int = 0, guidance_embeds: bool = True) -> dict[str, Any]:
    """Components of a tiny FluxPipeline (`guidance_embeds=False`: a schnell-like transformer)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    tokenizer, tokenizer_2 = tiny_tokenizer(), tiny_t5_tokenizer()
    return {
        "transformer": tiny_flux_transformer(seed, guidance_embeds=guidance_embeds),
        "scheduler": FlowMatchEulerDiscreteScheduler(
            shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
            base_image_seq_len=256, max_image_seq_len=4096,
        ),
        "vae": tiny_mmdit_vae(seed, FLUX_SCALING_FACTOR, FLUX_SHIFT_FACTOR),
        "text_encoder": tiny_text_encoder(seed, hidden_size=CLIP_HIDDEN, tokenizer=tokenizer),
        "tokenizer": tokenizer,
        "text_encoder_2": tiny_t5_encoder(seed + 2, T5_D_MODEL, tokenizer=tokenizer_2),
        "tokenizer_2": tokenizer_2,
    }


def save_tiny_sd3_folder(path: str | Path, seed: int = 0) -> Path:
    """A StableDiffusion3Pipeline folder (all three text encoders)."""
    from diffusers import StableDiffusion3Pipeline

    path = Path(path)
    StableDiffusion3Pipeline(**tiny_sd3_components(seed)).save_pretrained(path, safe_serialization=True)
    return path


def save_tiny_flux_folder(path: str | Path, seed: int = 0, guidance_embeds: bool = True) -> Path:
    """A FluxPipeline folder (dev-like with `guidance_embeds`, schnell-like without)."""
    from diffusers import FluxPipeline

    path = Path(path)
    FluxPipeline(**tiny_flux_components(seed, guidance_embeds)).save_pretrained(path, safe_serialization=True)
    return path


def tiny_sd3_controlnet(seed: int = 0, union: bool = False, num_layers: int = 2) -> Any:
    """SD3ControlNetModel with the tiny SD3 transformer's widths; its zero projections made random."""
    from diffusers import SD3ControlNetModel

    if union:
        raise NotImplementedError("diffusers has no union ControlNet for SD3 (SD3ControlNetModel has no mode field)")
    config = {**SD3_TRANSFORMER_CONFIG, "num_layers": num_layers, "extra_conditioning_channels": 0}
    return _seeded(seed, lambda: SD3ControlNetModel(**config), std=0.05)


def tiny_flux_controlnet(seed: int = 0, union: bool = False, guidance_embeds: bool = True,
                         num_layers: int = 1, num_single_layers: int = 1) -> Any:
    """FluxControlNetModel (InstantX-style: control latents packed like the image's, no hint block)."""
    from diffusers import FluxControlNetModel

    config = {**FLUX_TRANSFORMER_CONFIG, "num_layers": num_layers, "num_single_layers": num_single_layers,
              "guidance_embeds": guidance_embeds, "num_mode": FLUX_UNION_MODES if union else None}
    return _seeded(seed, lambda: FluxControlNetModel(**config), std=0.05)


def save_tiny_sd3_controlnet_folder(path: str | Path, seed: int = 0, union: bool = False) -> Path:
    """An SD3ControlNetModel folder for the tiny SD3 folder (2 joint blocks, no extra channels).

    `union=True` raises NotImplementedError: diffusers has no SD3 union ControlNet.
    """
    path = Path(path)
    tiny_sd3_controlnet(seed, union).save_pretrained(path, safe_serialization=True)
    return path


def save_tiny_flux_controlnet_folder(path: str | Path, seed: int = 0, union: bool = False,
                                     guidance_embeds: bool = True) -> Path:
    """A FluxControlNetModel folder for the tiny Flux folder (1 double + 1 single block);
    `union=True` gives it `num_mode=FLUX_UNION_MODES` (the pipelines then need `control_mode`)."""
    path = Path(path)
    tiny_flux_controlnet(seed, union, guidance_embeds).save_pretrained(path, safe_serialization=True)
    return path
