"""Tiny diffusers / transformers components built from configs: no download, seconds on a CPU.

Weights are random but deterministic: each factory seeds a forked RNG, so the caller's global
random state is untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

TOKENIZER_DIR = Path(__file__).parent / "data" / "tiny-clip-tokenizer"
T5_TOKENIZER_DIR = Path(__file__).parent / "data" / "tiny-t5-tokenizer"


def tiny_tokenizer(model_max_length: int = 77) -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(TOKENIZER_DIR, model_max_length=model_max_length)


def tiny_t5_tokenizer(model_max_length: int = 512) -> Any:
    """T5 tokenizer (Unigram, "▁" word starts, </s> appended) over the same words as `tiny_tokenizer`."""
    from transformers import T5Tokenizer

    return T5Tokenizer.from_pretrained(T5_TOKENIZER_DIR, model_max_length=model_max_length)


def tiny_unet(seed: int = 0, in_channels: int = 4, cross_attention_dim: int = 32, **overrides: Any) -> Any:
    """SD-shaped UNet: three levels, cross-attention at the two lower ones, 16×16 latents."""
    from diffusers import UNet2DConditionModel

    config = dict(
        sample_size=16,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    config.update(overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**config)
        # conv_out starts near zero in some inits; make the noise prediction depend on the input
        for p in unet.parameters():
            if p.abs().sum() == 0 and p.dim() > 1:
                torch.nn.init.normal_(p, std=0.02)
    return unet


def tiny_vae(seed: int = 0) -> Any:
    """AutoencoderKL with downsampling factor 2 and 4 latent channels."""
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKL(
            block_out_channels=(16, 32),
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            latent_channels=4,
            norm_num_groups=8,
            sample_size=32,
        )


def _tiny_clip(model_class: Any, seed: int, hidden_size: int, tokenizer: Any | None, **extra: Any) -> Any:
    """A two-layer CLIP text model of `model_class` over the tiny tokenizer, seeded."""
    from transformers import CLIPTextConfig

    tokenizer = tokenizer or tiny_tokenizer()
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model_class(config).eval()


def tiny_text_encoder(seed: int = 0, hidden_size: int = 32, tokenizer: Any | None = None) -> Any:
    from transformers import CLIPTextModel

    return _tiny_clip(CLIPTextModel, seed, hidden_size, tokenizer)


def tiny_clip_with_projection(seed: int = 0, hidden_size: int = 16, projection_dim: int = 16,
                              tokenizer: Any | None = None) -> Any:
    """CLIP text encoder with the text projection (SDXL's second, SD3's first two encoders)."""
    from transformers import CLIPTextModelWithProjection

    return _tiny_clip(CLIPTextModelWithProjection, seed, hidden_size, tokenizer, projection_dim=projection_dim)


def tiny_t5_encoder(seed: int = 0, d_model: int = 32, tokenizer: Any | None = None) -> Any:
    """T5 encoder (relative position buckets, no position limit), as SD3's and Flux's T5-XXL."""
    from transformers import T5Config, T5EncoderModel

    tokenizer = tokenizer or tiny_t5_tokenizer()
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_ff=37,
        d_kv=8,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return T5EncoderModel(config).eval()


def tiny_scheduler_config() -> dict[str, Any]:
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return dict(sched.config)


def tiny_sd_components(seed: int = 0) -> dict[str, Any]:
    """Components of a tiny StableDiffusionPipeline (for save_pretrained round trips)."""
    from diffusers import DDIMScheduler

    tokenizer = tiny_tokenizer()
    return {
        "unet": tiny_unet(seed),
        "vae": tiny_vae(seed),
        "text_encoder": tiny_text_encoder(seed, tokenizer=tokenizer),
        "tokenizer": tokenizer,
        "scheduler": DDIMScheduler.from_config(tiny_scheduler_config()),
        "safety_checker": None,
        "feature_extractor": None,
    }
