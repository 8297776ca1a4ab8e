"""Write tiny SDXL and ControlNet folders to disk, so adapters load them through the real
`from_pretrained` code paths, as they load hub models.

The tiny SDXL keeps what makes SDXL SDXL for an adapter: two CLIP text encoders whose penultimate
hidden states are concatenated (hidden sizes 32 and 48, so a concatenation in the wrong order
fails), pooled embeddings from a `CLIPTextModelWithProjection`, the "text_time" added embedding
(six time ids), `force_zeros_for_empty_prompt`, an Euler scheduler and a VAE whose scaling factor
is SDXL's 0.13025 (so an SD1.x model and an SDXL one are told apart exactly as with real weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .components import tiny_scheduler_config, tiny_text_encoder, tiny_tokenizer, tiny_unet

SDXL_SCALING_FACTOR = 0.13025
TEXT_HIDDEN = (32, 48)  # text_encoder, text_encoder_2
PROJECTION_DIM = 24
TIME_EMBED_DIM = 8


def tiny_sdxl_unet(seed: int = 0, **overrides: Any) -> Any:
    """SDXL-shaped UNet: "text_time" added embedding, cross-attention on the concatenated text."""
    config: dict[str, Any] = dict(
        cross_attention_dim=sum(TEXT_HIDDEN),
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=6 * TIME_EMBED_DIM + PROJECTION_DIM,
        transformer_layers_per_block=(1, 1, 2),
        use_linear_projection=True,
    )
    config.update(overrides)
    return tiny_unet(seed, **config)


def tiny_sdxl_vae(seed: int = 0) -> Any:
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKL(
            block_out_channels=(16, 32), in_channels=3, out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            latent_channels=4, norm_num_groups=8, sample_size=32,
            scaling_factor=SDXL_SCALING_FACTOR, force_upcast=True,
        )


def tiny_sdxl_components(seed: int = 0) -> dict[str, Any]:
    """Components of a tiny StableDiffusionXLPipeline."""
    from diffusers import EulerDiscreteScheduler
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    tokenizer = tiny_tokenizer()
    tokenizer_2 = tiny_tokenizer()
    tokenizer_2.pad_token = "!"  # as SDXL's second tokenizer
    config_2 = CLIPTextConfig(
        vocab_size=len(tokenizer_2), hidden_size=TEXT_HIDDEN[1], intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=tokenizer_2.model_max_length, projection_dim=PROJECTION_DIM,
        bos_token_id=tokenizer_2.bos_token_id, eos_token_id=tokenizer_2.eos_token_id, pad_token_id=tokenizer_2.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        text_encoder_2 = CLIPTextModelWithProjection(config_2).eval()
    scheduler_config = {k: v for k, v in tiny_scheduler_config().items() if not k.startswith("_")}
    scheduler_config.update(timestep_spacing="leading", interpolation_type="linear")
    return {
        "unet": tiny_sdxl_unet(seed),
        "vae": tiny_sdxl_vae(seed),
        "text_encoder": tiny_text_encoder(seed, hidden_size=TEXT_HIDDEN[0], tokenizer=tokenizer),
        "text_encoder_2": text_encoder_2,
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer_2,
        "scheduler": EulerDiscreteScheduler.from_config(scheduler_config),
    }


def save_tiny_sdxl_folder(path: str | Path, *, seed: int = 0) -> Path:
    """A StableDiffusionXLPipeline folder (base model: both text encoders)."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline(**tiny_sdxl_components(seed), force_zeros_for_empty_prompt=True,
                                     add_watermarker=False)
    path = Path(path)
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def save_tiny_controlnet_folder(path: str | Path, *, base: str | Path, seed: int = 0) -> Path:
    """A ControlNetModel folder made from the UNet of the tiny SD/SDXL folder `base`.

    Its conditioning embedding downsamples by 2 (the tiny VAE's factor), and its zero-initialised
    output convolutions get small random weights, since a fresh ControlNet's zero convolutions would
    make the control image a no-op.
    """
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16))
        with torch.no_grad():
            for name, p in controlnet.named_parameters():
                if name.startswith(("controlnet_down_blocks", "controlnet_mid_block",
                                    "controlnet_cond_embedding.conv_out")):
                    p.normal_(std=0.05)
    path = Path(path)
    controlnet.save_pretrained(path, safe_serialization=True)
    return path
