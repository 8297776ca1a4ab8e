"""Configurations of the Shapes models, sized to fit ≤ 25 MB of fp16 weights for both folders.

Parameter budget (both folders together, fp16): the SD folder holds VAE 0.66 M + text encoder
0.35 M + UNet 4.2 M; the GLIGEN folder repeats VAE and text encoder and holds the gated UNet
(6.0 M: the same UNet plus 1.8 M of fuser layers and the 0.43 M position net). That is ≈ 12.2 M
parameters, ≈ 24.5 MB. Hence a UNet of (32, 64, 128) channels rather than (64, 128, 128), which
would take 37 MB.
"""

from __future__ import annotations

from typing import Any

from ..world import IMAGE_SIZE

LATENT_CHANNELS = 4
VAE_FACTOR = 2
LATENT_SIZE = IMAGE_SIZE // VAE_FACTOR
TEXT_HIDDEN = 128
MAX_OBJS = 30  # what diffusers' StableDiffusionGLIGENPipeline pads grounding inputs to


def vae_config() -> dict[str, Any]:
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 64),  # two levels: one downsampling, factor 2
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=32,
        sample_size=IMAGE_SIZE,
    )


def text_config(vocab_size: int, bos_token_id: int, eos_token_id: int, max_length: int) -> dict[str, Any]:
    # eos_token_id must be the tokenizer's real id: CLIPTextModel pools at its first occurrence
    # (the legacy value 2 would make it pool at argmax(input_ids) instead).
    return dict(
        vocab_size=vocab_size,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=max_length,
        hidden_act="quick_gelu",
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
        projection_dim=TEXT_HIDDEN,
    )


def unet_config(gated: bool = False) -> dict[str, Any]:
    config: dict[str, Any] = dict(
        sample_size=LATENT_SIZE,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        block_out_channels=(32, 64, 128),
        layers_per_block=1,
        # Latent 32×32 → cross-attention at 16×16 and 8×8 (and the 8×8 mid block), like SD's
        # attention at 1/2 and 1/4 of its highest latent resolution.
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=4,  # diffusers' legacy name: this is the number of heads, as in SD 1.x
        norm_num_groups=32,
    )
    if gated:
        config["attention_type"] = "gated"
    return config


def scheduler_config() -> dict[str, Any]:
    """Stable Diffusion's noise schedule (DDIM sampler config)."""
    return dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
