"""Write tiny Stable Diffusion / GLIGEN folders to disk, so adapters load them through the real
`from_pretrained` code paths, as they load hub models."""

from __future__ import annotations

from pathlib import Path

import torch

from .components import tiny_sd_components, tiny_unet


def save_tiny_sd_folder(path: str | Path, *, seed: int = 0, prediction_type: str = "epsilon",
                        gligen: bool = False) -> Path:
    """A StableDiffusionPipeline folder (or a GLIGEN one, with a gated UNet whose gates are open,
    since a fresh GLIGEN's zero gates would make the layout a no-op)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    parts = tiny_sd_components(seed)
    parts["scheduler"] = DDIMScheduler.from_config(parts["scheduler"].config, prediction_type=prediction_type)
    if gligen:
        from diffusers import StableDiffusionGLIGENPipeline

        unet = tiny_unet(seed, attention_type="gated")
        with torch.no_grad():
            for name, p in unet.named_parameters():
                if name.endswith(("alpha_attn", "alpha_dense")):
                    p.fill_(1.0)
        parts["unet"] = unet
        pipe = StableDiffusionGLIGENPipeline(**parts, requires_safety_checker=False)
    else:
        pipe = StableDiffusionPipeline(**parts, requires_safety_checker=False)
    path = Path(path)
    pipe.save_pretrained(path, safe_serialization=True)
    return path
