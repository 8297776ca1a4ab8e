"""Does a Shapes GLIGEN folder use its boxes? Denoising loss with the true boxes, with the boxes
mirrored left–right, and with no grounding at all, per noise band, on held-out scenes.

    python -m realcompo_plugin_shapes.training.grounding_check FOLDER [--scenes 128]

A GLIGEN that follows its boxes predicts noise better with the true boxes than with mirrored ones,
most at high noise where the layout is still open. Equal losses mean the boxes are ignored (the
phrases alone can still help: compare with "none").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

BANDS = ((700, 1000), (400, 700), (100, 400))


@torch.no_grad()
def grounding_losses(folder: str | Path, scenes: int = 128, seed: int = 999) -> dict[str, dict[str, float]]:
    """{"t700-1000": {"true": mse, "mirrored": mse, "none": mse}, ...} (epsilon MSE)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from .data import PHRASES, build_pool, gligen_inputs

    folder = Path(folder)
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=torch.float32).eval()
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32).eval()
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").eval()
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    alphas = DDIMScheduler.from_pretrained(folder, subfolder="scheduler").alphas_cumprod
    pool = build_pool(scenes, seed=seed, workers=1)
    images = torch.as_tensor(pool.images).permute(0, 3, 1, 2).float() / 127.5 - 1
    z0 = vae.encode(images).latent_dist.mean * vae.config.scaling_factor
    ids = tokenizer(pool.captions, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids  # fmt: skip
    context = text_encoder(ids)[0]
    table = text_encoder(**tokenizer(PHRASES, padding=True, return_tensors="pt")).pooler_output
    index = torch.as_tensor(pool.phrase_idx)
    boxes = torch.as_tensor(pool.boxes)
    mirrored = torch.stack([1 - boxes[..., 2], boxes[..., 1], 1 - boxes[..., 0], boxes[..., 3]], dim=-1)
    if getattr(unet, "position_net", None) is None:
        raise ValueError(f"{folder} has no GLIGEN position net (attention_type {unet.config.attention_type!r})")
    n = boxes.shape[0]

    def grounding(box: torch.Tensor | None) -> dict[str, torch.Tensor]:
        if box is None:  # no grounding: every slot off, which the position net turns into its nulls
            return gligen_inputs(boxes, index, table, keep=torch.zeros(n))
        return gligen_inputs(box, index, table)

    generator = torch.Generator().manual_seed(seed)
    result: dict[str, dict[str, float]] = {}
    for lo, hi in BANDS:
        t = torch.randint(lo, hi, (n,), generator=generator)
        noise = torch.randn(z0.shape, generator=generator)
        a = alphas[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        band: dict[str, float] = {}
        for name, box in (("true", boxes), ("mirrored", mirrored), ("none", None)):
            pred = unet(zt, t, context, cross_attention_kwargs={"gligen": grounding(box)}).sample
            band[name] = float(((pred - noise) ** 2).mean())
        result[f"t{lo}-{hi}"] = band
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m realcompo_plugin_shapes.training.grounding_check", description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="a shapes-gligen folder")
    parser.add_argument("--scenes", type=int, default=128)
    parser.add_argument("--seed", type=int, default=999)
    args = parser.parse_args(argv)
    losses = grounding_losses(args.folder, args.scenes, args.seed)
    print(f"{'noise band':12s} {'true boxes':>11s} {'mirrored':>11s} {'no grounding':>13s} {'mirrored/true':>14s}")
    for band, v in losses.items():
        print(f"{band:12s} {v['true']:11.5f} {v['mirrored']:11.5f} {v['none']:13.5f} {v['mirrored'] / v['true']:14.4f}")
    print(json.dumps(losses))
    return losses


if __name__ == "__main__":
    main()
