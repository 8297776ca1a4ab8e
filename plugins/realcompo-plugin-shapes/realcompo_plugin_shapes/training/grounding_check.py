"""Does a Shapes GLIGEN folder use its boxes? Denoising loss with the true boxes, with the boxes
mirrored left–right, and with no grounding at all, per noise band, on held-out scenes.

    python -m realcompo_plugin_shapes.training.grounding_check FOLDER [--scenes 128]

A GLIGEN that follows its boxes predicts noise better with the true boxes than with mirrored ones,
most at high noise where the layout is still open. Equal losses mean the boxes are ignored (the
phrases alone can still help: compare with "none").

The loss moves little even for a model that places objects well (at t = 900 an object is a small
part of the clean latent), so the check also looks at *where* the predicted clean image puts
colour: for scenes whose first object's box and its mirror image do not overlap, the share of the
decoded x0-prediction's saturation that falls in the true box rather than in the mirrored one
("box share"), for predictions made with the true boxes and with the mirrored boxes. Objects are
saturated and backgrounds are not, so a model that follows its boxes scores above 0.5 with the
true boxes and below 0.5 with the mirrored ones; one that ignores them scores the same with both.
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
    """{"t700-1000": {"true": mse, "mirrored": mse, "none": mse, "box_share_true": s, "box_share_mirrored": s},
    ...}: epsilon MSE per grounding, and the box share of the x0-predictions (see the module docstring)."""
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
            if box is not None:
                x0 = (zt - (1 - a).sqrt() * pred) / a.sqrt()
                image = (vae.decode(x0 / vae.config.scaling_factor).sample.clamp(-1, 1) + 1) / 2
                band[f"box_share_{name}"] = box_share(image, boxes[:, 0], mirrored[:, 0])
        result[f"t{lo}-{hi}"] = band
    return result


def box_share(images: torch.Tensor, boxes: torch.Tensor, mirrored: torch.Tensor) -> float:
    """Mean share of saturation inside `boxes` vs `mirrored` (B, 4 normalised), over the images
    (B, 3, H, W in [0, 1]) whose two boxes do not overlap horizontally."""
    bright, dark = images.max(dim=1).values, images.min(dim=1).values
    saturation = (bright - dark) / (bright + 1e-3)
    h, w = saturation.shape[-2:]
    shares = []
    for sat, box, mirror in zip(saturation, boxes.tolist(), mirrored.tolist()):
        if not (mirror[2] <= box[0] or mirror[0] >= box[2]):
            continue
        mass = [float(sat[round(b[1] * h) : round(b[3] * h), round(b[0] * w) : round(b[2] * w)].sum()) for b in (box, mirror)]
        total = mass[0] + mass[1]
        shares.append(mass[0] / total if total > 1e-6 else 0.5)  # no colour in either box: no evidence
    return float(sum(shares) / len(shares)) if shares else float("nan")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m realcompo_plugin_shapes.training.grounding_check", description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="a shapes-gligen folder")
    parser.add_argument("--scenes", type=int, default=128)
    parser.add_argument("--seed", type=int, default=999)
    args = parser.parse_args(argv)
    losses = grounding_losses(args.folder, args.scenes, args.seed)
    print(f"{'noise band':12s} {'true boxes':>11s} {'mirrored':>11s} {'no grounding':>13s} {'mirrored/true':>14s}"
          f" {'box share (true)':>17s} {'box share (mirrored)':>21s}")  # fmt: skip
    for band, v in losses.items():
        print(f"{band:12s} {v['true']:11.5f} {v['mirrored']:11.5f} {v['none']:13.5f} {v['mirrored'] / v['true']:14.4f}"
              f" {v['box_share_true']:17.3f} {v['box_share_mirrored']:21.3f}")  # fmt: skip
    print(json.dumps(losses))
    return losses


if __name__ == "__main__":
    main()
