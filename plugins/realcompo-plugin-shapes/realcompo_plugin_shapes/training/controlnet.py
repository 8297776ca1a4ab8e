"""Train the Shapes ControlNet: a diffusers `ControlNetModel` on the frozen `shapes-sd` UNet, read from
the segmentation map that the `controlnet-seg` adapter paints from a layout.

    python -m realcompo_plugin_shapes.training.controlnet --t2i-from SD_FOLDER --out DIR --budget-seconds 2400

The control maps are the adapter's own (`realcompo_plugin_controlnet.segmentation`, checked equal by
the tests) with the world's label palette (`world.control_palette`, the `palette` option of the
`shapes-controlnet` preset): each object in the label colour of its colour–shape pair, as a filled box
(what a box layout gives) or, for `--mask-fraction` of the samples, as its mask. Boxes rasterised into
a map are pixel-aligned with the latents, so the ControlNet grounds by construction; a label per
object says which object goes where (an earlier run that painted objects by their order in the
caption, the adapter's fallback, bound colours and shapes to places far less well).

The targets are mostly the world's flat style (`--flat-fraction`): like a real L2I model, the
ControlNet composes well but looks plainer than its T2I model, the trade-off RealCompo balances.

Writes `DIR/shapes-controlnet/` (a `ControlNetModel` folder, fp16 safetensors, to be loaded with
`base=` the T2I folder), `DIR/controlnet_log.json` and the loss curve `DIR/train_log.jsonl`;
`DIR/checkpoints/controlnet.pt` every minute, so running the same command again resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..world import control_palette
from .data import PHRASES, build_pool, caption_token_ids, control_maps
from .loop import JsonlLog, count, device_name, train_stage, versions

CONDITIONING_CHANNELS = (16, 32)  # one stride-2 stage: a 64×64 map for the 32×32 latent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m realcompo_plugin_shapes.training.controlnet",
        description="Train the Shapes segmentation ControlNet on a trained shapes-sd folder.",
    )
    p.add_argument("--t2i-from", required=True, type=Path, help="the shapes-sd folder whose frozen UNet it steers")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--budget-seconds", type=float, default=1800.0, help="training time (data and saving excluded)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool-size", type=int, default=None, help="scenes (default 100000 on CUDA, 16000 on CPU)")
    p.add_argument("--batch-size", type=int, default=None, help="default 256 on CUDA, 32 on CPU")
    p.add_argument("--init", type=Path, default=None, help="a shapes-controlnet folder to continue from (a new run)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--flat-fraction", type=float, default=0.8, help="share of flat-style targets")
    p.add_argument("--mask-fraction", type=float, default=0.3, help="share of control maps painted from masks")
    p.add_argument("--caption-dropout", type=float, default=0.1, help="empty captions (the CFG branch)")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--checkpoint-every", type=float, default=60.0, help="seconds between checkpoints")
    p.add_argument("--max-steps", type=int, default=None, help="cap on the steps (smoke tests)")
    p.add_argument("--workers", type=int, default=None, help="processes generating scenes")
    p.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.pool_size = args.pool_size or (100_000 if cuda else 16_000)
    args.batch_size = args.batch_size or (256 if cuda else 32)
    for name in ("flat_fraction", "mask_fraction", "caption_dropout"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            p.error(f"--{name.replace('_', '-')} must be between 0 and 1, got {getattr(args, name)}")
    if not (args.t2i_from / "unet" / "config.json").exists():
        p.error(f"--t2i-from {args.t2i_from}: not a Stable Diffusion folder (no unet/config.json)")
    if args.init is not None and not (args.init / "config.json").exists():
        p.error(f"--init {args.init}: not a ControlNet folder (no config.json)")
    return args


@torch.no_grad()
def encode_latents(vae: Any, images: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of uint8 (N, 64, 64, 3) images, in chunks."""
    means, stds = [], []
    for i in range(0, len(images), 512):
        x = torch.as_tensor(images[i : i + 512], device=device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        dist = vae.encode(x).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
    from realcompo_plugin_controlnet.segmentation import palette_color
    from transformers import CLIPTextModel, CLIPTokenizer

    t_start = time.perf_counter()
    out: Path = args.out
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    if args.no_resume:
        (out / "train_log.jsonl").unlink(missing_ok=True)
    log = JsonlLog(out / "train_log.jsonl")
    device = torch.device(args.device)

    # The same scenes in both styles (one seed → one set of layouts), with masks for the maps.
    flat = build_pool(args.pool_size, args.seed, args.workers, style="flat", masks=True)
    real = build_pool(args.pool_size, args.seed, args.workers, style="real")
    t_pool = time.perf_counter() - t_start
    print(f"[data] {len(flat.captions)} scenes, two styles, in {t_pool:.1f}s", flush=True)

    src = args.t2i_from
    vae = AutoencoderKL.from_pretrained(src, subfolder="vae", torch_dtype=torch.float32).to(device).eval()
    te = CLIPTextModel.from_pretrained(src, subfolder="text_encoder", torch_dtype=torch.float32).to(device).eval()
    tokenizer = CLIPTokenizer.from_pretrained(src, subfolder="tokenizer")
    unet = UNet2DConditionModel.from_pretrained(src, subfolder="unet", torch_dtype=torch.float32).to(device).eval()
    for module in (vae, te, unet):
        module.requires_grad_(False)
    scaling = float(vae.config.scaling_factor)
    mean_flat, std_flat = encode_latents(vae, flat.images, device)
    mean_real, std_real = encode_latents(vae, real.images, device)
    max_len = tokenizer.model_max_length
    token_ids = torch.as_tensor(caption_token_ids(flat.captions, tokenizer, max_len), device=device)
    empty_ids = torch.as_tensor(
        tokenizer("", padding="max_length", max_length=max_len, return_tensors="np").input_ids[0], device=device
    )
    boxes = torch.as_tensor(flat.boxes, device=device)
    masks = torch.as_tensor(flat.masks, device=device)
    phrase_idx = torch.as_tensor(flat.phrase_idx, device=device)
    labels = torch.tensor([palette_color(p, control_palette()) for p in PHRASES], dtype=torch.uint8, device=device)
    print(f"[data] latents of both styles in {time.perf_counter() - t_start - t_pool:.1f}s", flush=True)

    torch.manual_seed(args.seed)
    if args.init is not None:
        controlnet = ControlNetModel.from_pretrained(args.init, torch_dtype=torch.float32).to(device)
    else:
        controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=CONDITIONING_CHANNELS).to(device)
    controlnet.train()
    alphas = DDIMScheduler.from_pretrained(src, subfolder="scheduler").alphas_cumprod.to(device)
    snr = alphas / (1 - alphas)
    min_snr_weight = torch.clamp(snr, max=5.0) / snr  # as the UNet stage of train_all
    gen = torch.Generator(device=device).manual_seed(args.seed)
    n_pool, bs = len(flat.captions), args.batch_size

    def uniform(size: int) -> torch.Tensor:
        return torch.rand(size, device=device, generator=gen)

    def loss_fn(step: int) -> torch.Tensor:
        idx = torch.randint(0, n_pool, (bs,), device=device, generator=gen)
        use_flat = (uniform(bs) < args.flat_fraction)[:, None, None, None]
        mu = torch.where(use_flat, mean_flat[idx], mean_real[idx])
        sd = torch.where(use_flat, std_flat[idx], std_real[idx])
        z0 = (mu + sd * torch.randn(mu.shape, device=device, generator=gen)) * scaling
        t = torch.randint(0, 1000, (bs,), device=device, generator=gen)
        noise = torch.randn(z0.shape, device=device, generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        ids = torch.where((uniform(bs) < args.caption_dropout)[:, None], empty_ids[None], token_ids[idx])
        with torch.no_grad():
            context = te(ids)[0]
        objects = phrase_idx[idx]
        cond = control_maps(boxes[idx], masks[idx], labels[objects.clamp(min=0)], objects >= 0, uniform(bs) < args.mask_fraction)
        down, mid = controlnet(zt, t, context, controlnet_cond=cond, return_dict=False)
        pred = unet(
            zt, t, context, down_block_additional_residuals=down, mid_block_additional_residual=mid
        ).sample
        per_sample = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
        return (per_sample * min_snr_weight[t]).mean()

    result = train_stage(
        "controlnet", list(controlnet.parameters()), loss_fn, lr=args.lr, allotted=args.budget_seconds,
        batch_size=bs, args=args, ckpt_path=out / "checkpoints" / "controlnet.pt",
        modules={"controlnet": controlnet}, log=log,
    )  # fmt: skip
    folder = out / "shapes-controlnet"
    controlnet.to("cpu", torch.float16).save_pretrained(folder, safe_serialization=True)
    summary = {
        "command": "python -m realcompo_plugin_shapes.training.controlnet "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "device": device_name(device),
        "pool": {"scenes": n_pool, "seconds": round(t_pool, 2)},
        "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "stage": vars(result),
        "parameters": count(controlnet),
        "bytes": sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()),
        "wall_seconds": round(time.perf_counter() - t_start, 2),
        "versions": versions(),
    }
    (out / "controlnet_log.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"[done] {folder} ({summary['bytes'] / 1e6:.1f} MB) in {summary['wall_seconds']:.0f}s", flush=True)
    return summary


if __name__ == "__main__":
    main()
