"""Train the Shapes models in one time-boxed run: VAE → text encoder + UNet → GLIGEN fuser.

    python -m realcompo_plugin_shapes.training.train_all --out DIR --device cuda --budget-seconds 420

Writes `DIR/shapes-sd/` (a StableDiffusionPipeline folder) and `DIR/shapes-gligen/` (a
StableDiffusionGLIGENPipeline folder), fp16 safetensors, plus `DIR/training_log.json` (steps,
losses, wall time, device) and `DIR/train_log.jsonl` (the loss curve). Stage checkpoints go to
`DIR/checkpoints/`; running the same command again resumes (finished stages are skipped, a
stage cut short continues where it stopped). With `--eval-prompts N` (default 32 on CUDA) the
saved folders are loaded back, sampled on N held-out captions and scored by the evaluator.

The budget covers scene generation, the three stages (split 20/50/30 % of what is left by
default) and saving; the optional evaluation comes after it. Seeds are fixed (`--seed`).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .data import PHRASES, build_pool, caption_token_ids, gligen_inputs
from .grounding_attention import GroundingAuxiliary
from .loop import JsonlLog, StageResult, count, device_name, train_stage, versions
from .models import MAX_OBJS, scheduler_config, text_config, unet_config, vae_config

STAGES = ("vae", "unet", "gligen")


# --------------------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m realcompo_plugin_shapes.training.train_all",
        description="Train the Shapes world's SD and GLIGEN folders in one time-boxed run.",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--budget-seconds", type=float, default=420.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--pool-size", type=int, default=None, help="scenes generated up front (default 100000 on CUDA, 2000 on CPU)"
    )
    p.add_argument("--batch-size", type=int, default=None, help="default 512 on CUDA, 16 on CPU")
    p.add_argument("--split", default="0.15,0.5,0.35", help="budget fractions of the vae,unet,gligen stages")
    p.add_argument("--lr-vae", type=float, default=1e-3)
    p.add_argument("--lr-unet", type=float, default=8e-4)
    p.add_argument("--lr-gligen", type=float, default=1e-3)
    p.add_argument(
        "--vae-batch-size",
        type=int,
        default=None,
        help="default 128 on CUDA (the VAE needs steps more than samples), 16 on CPU",
    )
    p.add_argument(
        "--caption-dropout", type=float, default=0.1, help="empty captions in the UNet stage (classifier-free guidance)"
    )
    p.add_argument(
        "--gligen-caption-dropout",
        type=float,
        default=0.5,
        help="empty captions in the GLIGEN stage: without a caption, only the grounding tokens say what goes where, which makes the fusers learn to use them quickly",
    )
    p.add_argument("--grounding-dropout", type=float, default=0.1)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--checkpoint-every", type=float, default=60.0, help="seconds between checkpoints")
    p.add_argument("--max-steps", type=int, default=None, help="cap on the steps of every stage (smoke tests)")
    p.add_argument("--workers", type=int, default=None, help="processes generating scenes")
    p.add_argument(
        "--eval-prompts",
        type=int,
        default=None,
        help="held-out captions sampled after training (default 32 on CUDA, 0 on CPU)",
    )
    p.add_argument(
        "--gligen-beta", type=float, default=1.0, help="gligen_scheduled_sampling_beta used by the evaluation"
    )
    p.add_argument(
        "--t2i-from",
        type=Path,
        default=None,
        help="a trained shapes-sd folder: reuse its VAE, text encoder and UNet and spend the whole budget on GLIGEN",
    )
    p.add_argument(
        "--gligen-init",
        type=Path,
        default=None,
        help="a trained shapes-gligen folder that starts the GLIGEN stage (continue training; use with --t2i-from): its "
        "fuser layers and position net, and with --gligen-base trainable or scratch its whole UNet",
    )
    p.add_argument(
        "--gligen-noise-bias",
        type=float,
        default=1.0,
        help="GLIGEN stage: draw t = 999 * u**(1/k); k=1 is uniform, k=2 makes high-noise steps (where the layout is decided) three times as likely as low-noise ones",
    )
    p.add_argument(
        "--gligen-loss-weight",
        choices=["min-snr", "x0"],
        default="min-snr",
        help="GLIGEN stage loss weighting: min-snr (as the UNet stage) or x0 = the error of the predicted clean latent, "
        "capped at --x0-weight-cap; x0 weighs the high-noise steps, where the layout is decided and an epsilon loss barely "
        "notices it",
    )
    p.add_argument("--x0-weight-cap", type=float, default=20.0)
    p.add_argument(
        "--gligen-max-objects",
        type=int,
        default=None,
        help="GLIGEN stage: train only on scenes with at most this many objects (a curriculum: with one object, "
        "where it is can only come from its box)",
    )
    p.add_argument(
        "--gligen-base",
        choices=["trainable", "frozen", "scratch"],
        default="frozen",
        help="GLIGEN stage: train only the fusers and position net on the frozen T2I UNet, as GLIGEN does (frozen), "
        "train the whole UNet from the T2I weights (trainable), or start it from random weights (scratch)",
    )
    p.add_argument(
        "--gligen-attention-loss",
        type=float,
        default=0.0,
        help="GLIGEN stage: weight of the fuser attention supervision on pure noise (grounding_attention.py); "
        "0 = GLIGEN's diffusion loss alone",
    )
    p.add_argument(
        "--gligen-position-loss",
        type=float,
        default=0.0,
        help="GLIGEN stage: weight of the position heads on the fusers' inputs (grounding_attention.py; the heads are "
        "not saved)",
    )
    p.add_argument(
        "--gligen-flat-fraction",
        type=float,
        default=0.8,
        help="GLIGEN stage: share of targets in the world's flat style (an L2I model that composes well but looks "
        "plainer than its T2I model, as real ones do)",
    )
    p.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.pool_size = args.pool_size or (100_000 if cuda else 2_000)
    args.batch_size = args.batch_size or (512 if cuda else 16)
    args.vae_batch_size = args.vae_batch_size or (128 if cuda else 16)
    args.eval_prompts = (32 if cuda else 0) if args.eval_prompts is None else args.eval_prompts
    if args.gligen_attention_loss < 0 or args.gligen_position_loss < 0:
        p.error("--gligen-attention-loss and --gligen-position-loss must be ≥ 0")
    if not 0.0 <= args.gligen_flat_fraction <= 1.0:
        p.error(f"--gligen-flat-fraction must be between 0 and 1, got {args.gligen_flat_fraction}")
    fractions = [float(x) for x in args.split.split(",")]
    if len(fractions) != 3 or any(f <= 0 for f in fractions):
        p.error(f"--split needs three positive fractions (vae,unet,gligen), got {args.split!r}")
    args.fractions = [f / sum(fractions) for f in fractions]
    return args


# --------------------------------------------------------------------------- helpers


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    t_start = time.perf_counter()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoints").mkdir(exist_ok=True)
    if args.no_resume:
        (out / "train_log.jsonl").unlink(missing_ok=True)
    log = JsonlLog(out / "train_log.jsonl")

    # Scenes first, in forked processes, before anything touches the GPU.
    pool = build_pool(args.pool_size, args.seed, args.workers)
    # The same scenes in the flat style, for the GLIGEN stage's plainer targets.
    flat_pool = build_pool(args.pool_size, args.seed, args.workers, style="flat") if args.gligen_flat_fraction > 0 else None
    t_pool = time.perf_counter() - t_start
    print(f"[data] {len(pool.captions)} scenes in {t_pool:.1f}s", flush=True)

    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from ..tokenizer import write_tokenizer

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    amp_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else None

    def autocast() -> Any:
        if amp_dtype is None:
            return torch.autocast(device.type, enabled=False)
        return torch.autocast(device.type, dtype=amp_dtype)

    if args.t2i_from is not None:
        tokenizer = CLIPTokenizer.from_pretrained(args.t2i_from, subfolder="tokenizer")
    else:
        tok_dir = out / "checkpoints" / "tokenizer"
        write_tokenizer(tok_dir)
        tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    max_len = tokenizer.model_max_length
    ids_np = caption_token_ids(pool.captions, tokenizer, max_len)
    empty_ids = torch.as_tensor(
        tokenizer("", padding="max_length", max_length=max_len, return_tensors="np").input_ids[0], device=device
    )

    images = torch.as_tensor(pool.images).permute(0, 3, 1, 2).contiguous().to(device)  # uint8
    token_ids = torch.as_tensor(ids_np, device=device)
    boxes = torch.as_tensor(pool.boxes, device=device)
    phrase_idx = torch.as_tensor(pool.phrase_idx, device=device)
    n_pool = images.shape[0]
    gen = torch.Generator(device=device).manual_seed(args.seed)
    bs = args.batch_size

    def batch_index(size: int = bs) -> torch.Tensor:
        return torch.randint(0, n_pool, (size,), device=device, generator=gen)

    reserve = min(30.0, 0.05 * args.budget_seconds)  # saving the folders
    remaining = max(args.budget_seconds - (time.perf_counter() - t_start) - reserve, 3.0)
    allot = {s: remaining * f for s, f in zip(STAGES, args.fractions)}
    if args.t2i_from is not None:  # the T2I stages are loaded, not trained
        allot = {"vae": 0.0, "unet": 0.0, "gligen": remaining}
    results: dict[str, StageResult] = {}
    ckpt = {s: out / "checkpoints" / f"{s}.pt" for s in STAGES}

    # ---------------- stage 1: VAE
    torch.manual_seed(args.seed + 1)
    if args.t2i_from is not None:
        vae = AutoencoderKL.from_pretrained(args.t2i_from, subfolder="vae", torch_dtype=torch.float32).to(device)
    else:
        vae = AutoencoderKL(**vae_config()).to(device)
    vae.train()
    kl_weight = 1e-7

    def vae_loss(step: int) -> torch.Tensor:
        x = images[batch_index(args.vae_batch_size)].float() / 127.5 - 1.0
        with autocast():
            posterior = vae.encode(x).latent_dist
            rec = vae.decode(posterior.sample()).sample
        rec = rec.float()
        kl = posterior.kl().float().mean()
        return F.l1_loss(rec, x) + F.mse_loss(rec, x) + kl_weight * kl

    if args.t2i_from is not None:
        results["vae"] = StageResult("vae", done=True, extra={"loaded_from": args.t2i_from.name})
    else:
        results["vae"] = train_stage(
            "vae", list(vae.parameters()), vae_loss, lr=args.lr_vae, allotted=allot["vae"],
            batch_size=args.vae_batch_size, args=args, ckpt_path=ckpt["vae"], modules={"vae": vae}, log=log,
        )  # fmt: skip
    vae.eval().requires_grad_(False)

    # Latents of the whole pool (posterior mean and std), and SD's scaling factor 1/std.
    t_enc = time.perf_counter()
    means, stds = [], []
    with torch.no_grad(), autocast():
        for i in range(0, n_pool, 1024):
            dist = vae.encode(images[i : i + 1024].float() / 127.5 - 1.0).latent_dist
            means.append(dist.mean.to(amp_dtype or torch.float32))
            stds.append(dist.std.to(amp_dtype or torch.float32))
    lat_mean, lat_std = torch.cat(means), torch.cat(stds)
    flat_mean = flat_std = None
    if flat_pool is not None:
        means, stds = [], []
        flat_images = torch.as_tensor(flat_pool.images).permute(0, 3, 1, 2).contiguous()
        with torch.no_grad(), autocast():
            for i in range(0, n_pool, 1024):
                dist = vae.encode(flat_images[i : i + 1024].to(device).float() / 127.5 - 1.0).latent_dist
                means.append(dist.mean.to(amp_dtype or torch.float32))
                stds.append(dist.std.to(amp_dtype or torch.float32))
        flat_mean, flat_std = torch.cat(means), torch.cat(stds)
    probe = lat_mean[:4096].float() + lat_std[:4096].float() * torch.randn_like(lat_mean[:4096].float())
    scaling_factor = float(1.0 / probe.std())
    if args.t2i_from is not None:  # the loaded UNet was trained with the folder's factor
        scaling_factor = float(vae.config.scaling_factor)
    vae.register_to_config(scaling_factor=round(scaling_factor, 5))
    results["vae"].extra.update(scaling_factor=scaling_factor, encode_seconds=time.perf_counter() - t_enc)
    print(f"[vae] scaling_factor {scaling_factor:.5f}", flush=True)

    # ---------------- stage 2: text encoder + UNet
    torch.manual_seed(args.seed + 2)
    if args.t2i_from is not None:
        te = CLIPTextModel.from_pretrained(args.t2i_from, subfolder="text_encoder", torch_dtype=torch.float32).to(device)
        unet = UNet2DConditionModel.from_pretrained(args.t2i_from, subfolder="unet", torch_dtype=torch.float32).to(device)
    else:
        te = CLIPTextModel(
            CLIPTextConfig(**text_config(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, max_len))
        ).to(device)
        unet = UNet2DConditionModel(**unet_config()).to(device)
    te.train()
    unet.train()
    sched = DDIMScheduler(**scheduler_config())
    alphas_cumprod = sched.alphas_cumprod.to(device=device, dtype=torch.float32)
    snr = alphas_cumprod / (1 - alphas_cumprod)
    min_snr_weight = torch.clamp(snr, max=5.0) / snr  # min-SNR-5 weighting for epsilon targets
    # |x0 error|² = |eps error|² / snr: weighting the epsilon loss by 1/snr (capped) trains on x0.
    x0_weight = torch.clamp(1.0 / snr, max=args.x0_weight_cap)

    def noisy_latents(
        idx: torch.Tensor, noise_bias: float = 1.0, flat_fraction: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, sd = lat_mean[idx].float(), lat_std[idx].float()
        if flat_fraction > 0 and flat_mean is not None:
            flat = (torch.rand(idx.shape[0], device=device, generator=gen) < flat_fraction)[:, None, None, None]
            mu = torch.where(flat, flat_mean[idx].float(), mu)
            sd = torch.where(flat, flat_std[idx].float(), sd)
        z0 = (mu + sd * torch.randn_like(mu)) * scaling_factor
        if noise_bias == 1.0:
            t = torch.randint(0, 1000, (idx.shape[0],), device=device, generator=gen)
        else:
            u = torch.rand(idx.shape[0], device=device, generator=gen)
            t = (999.999 * u ** (1.0 / noise_bias)).long()
        noise = torch.randn_like(z0)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        return a.sqrt() * z0 + (1 - a).sqrt() * noise, noise, t

    def dropped_captions(idx: torch.Tensor, p: float) -> torch.Tensor:
        ids = token_ids[idx]
        drop = torch.rand(idx.shape[0], device=device, generator=gen) < p
        return torch.where(drop[:, None], empty_ids[None, :], ids)

    def unet_loss(step: int) -> torch.Tensor:
        idx = batch_index()
        zt, noise, t = noisy_latents(idx)
        with autocast():
            context = te(dropped_captions(idx, args.caption_dropout))[0]
            pred = unet(zt, t, context).sample
        per_sample = F.mse_loss(pred.float(), noise, reduction="none").mean(dim=(1, 2, 3))
        return (per_sample * min_snr_weight[t]).mean()

    if args.t2i_from is not None:
        results["unet"] = StageResult("unet", done=True, extra={"loaded_from": args.t2i_from.name})
    else:
        results["unet"] = train_stage(
            "unet", list(te.parameters()) + list(unet.parameters()), unet_loss, lr=args.lr_unet,
            allotted=allot["unet"], batch_size=bs, args=args, ckpt_path=ckpt["unet"],
            modules={"text_encoder": te, "unet": unet}, log=log,
        )  # fmt: skip
    te.eval().requires_grad_(False)
    unet.eval().requires_grad_(False)

    # ---------------- stage 3: GLIGEN (gated UNet: fuser layers, position net and, unless frozen, the UNet)
    torch.manual_seed(args.seed + 3)
    gunet = UNet2DConditionModel(**unet_config(gated=True)).to(device)
    if args.gligen_base != "scratch":
        missing, unexpected = gunet.load_state_dict(unet.state_dict(), strict=False)
        new_keys = [k for k in missing if not is_grounding_key(k)]
        if new_keys or unexpected:
            raise RuntimeError(
                f"gated UNet does not extend the T2I UNet: missing {new_keys[:5]}, unexpected {unexpected[:5]}"
            )
    if args.gligen_init is not None:
        load_grounding_layers(gunet, args.gligen_init, whole_unet=args.gligen_base != "frozen")
    else:
        open_fuser_gates(gunet)
    if args.gligen_base == "frozen":
        gunet.requires_grad_(False)
        trainable = [p for n, p in gunet.named_parameters() if is_grounding_key(n)]
    else:
        trainable = list(gunet.parameters())
    aux = GroundingAuxiliary(gunet, MAX_OBJS, attention_weight=args.gligen_attention_loss,
                             position_weight=args.gligen_position_loss)  # fmt: skip
    gligen_modules: dict[str, torch.nn.Module] = {"gligen_unet": gunet}
    if aux.position is not None:
        aux.position.to(device)
        gligen_modules["position_heads"] = aux.position
    gunet.train()
    with torch.no_grad():
        # Exactly what StableDiffusionGLIGENPipeline feeds: pooler_output of each phrase alone.
        enc = tokenizer(PHRASES, padding=True, return_tensors="pt").to(device)
        phrase_table = te(**enc).pooler_output.float()  # (n_phrases, D)

    gligen_pool = None
    if args.gligen_max_objects is not None:
        gligen_pool = torch.as_tensor(scenes_with_at_most(pool.n_objects, args.gligen_max_objects), device=device)

    def gligen_loss(step: int) -> torch.Tensor:
        if gligen_pool is None:
            idx = batch_index()
        else:
            idx = gligen_pool[torch.randint(0, gligen_pool.numel(), (bs,), device=device, generator=gen)]
        zt, noise, t = noisy_latents(idx, args.gligen_noise_bias, args.gligen_flat_fraction)
        b = idx.shape[0]
        keep = (torch.rand(b, device=device, generator=gen) >= args.grounding_dropout).float()
        grounding = gligen_inputs(boxes[idx], phrase_idx[idx], phrase_table, keep)
        with torch.no_grad(), autocast():
            context = te(dropped_captions(idx, args.gligen_caption_dropout))[0]
        with autocast(), aux.watch():
            pred = gunet(
                zt, t, context,
                cross_attention_kwargs={"gligen": grounding},
            ).sample  # fmt: skip
        per_sample = F.mse_loss(pred.float(), noise, reduction="none").mean(dim=(1, 2, 3))
        weight = x0_weight if args.gligen_loss_weight == "x0" else min_snr_weight
        loss = (per_sample * weight[t]).mean()
        if aux.active:
            with autocast():
                extra, _ = aux.loss(gunet, boxes[idx].float(), keep, grounding, context, gen)
            loss = loss + extra.float()
        return loss

    results["gligen"] = train_stage(
        "gligen", trainable + aux.parameters(), gligen_loss, lr=args.lr_gligen, allotted=allot["gligen"],
        batch_size=bs, args=args, ckpt_path=ckpt["gligen"], modules=gligen_modules, log=log,
    )  # fmt: skip
    gunet.eval().requires_grad_(False)

    # ---------------- save the two folders (fp16 safetensors)
    t_save = time.perf_counter()
    folders = save_folders(out, vae, te, tokenizer, unet, gunet)
    save_seconds = time.perf_counter() - t_save
    train_wall = time.perf_counter() - t_start

    summary: dict[str, Any] = {
        "command": "python -m realcompo_plugin_shapes.training.train_all "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "seed": args.seed,
        "device": device_name(device),
        "budget_seconds": args.budget_seconds,
        "wall_seconds": round(train_wall, 2),
        "pool": {"scenes": n_pool, "seconds": round(t_pool, 2)},
        "batch_size": bs,
        "vae_batch_size": args.vae_batch_size,
        "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "amp": str(amp_dtype) if amp_dtype else "fp32",
        "stages": {k: vars(v) for k, v in results.items()},
        "save_seconds": round(save_seconds, 2),
        "parameters": {
            "vae": count(vae),
            "text_encoder": count(te),
            "unet": count(unet),
            "gligen_unet": count(gunet),
            "gligen_trainable": sum(p.numel() for p in trainable),
        },  # fmt: skip
        "folders": folders,
        "versions": versions(),
    }
    (out / "training_log.json").write_text(json.dumps(summary, indent=2, default=str))
    if args.eval_prompts > 0:
        try:
            summary["evaluation"] = evaluate_folders(out, args, device)
        except Exception as exc:  # the models are saved; a failed check must not lose them
            summary["evaluation"] = {"error": f"{type(exc).__name__}: {exc}"}
        (out / "training_log.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"[done] {out} in {train_wall:.0f}s: " + json.dumps(summary.get("evaluation", {}))[:2000], flush=True)
    return summary


def scenes_with_at_most(n_objects: np.ndarray, max_objects: int) -> np.ndarray:
    """Indices of the pool's scenes with at most `max_objects` objects (GLIGEN curriculum)."""
    chosen = np.flatnonzero(np.asarray(n_objects) <= max_objects)
    if chosen.size == 0:
        raise ValueError(f"no scene in the pool has at most {max_objects} objects")
    return chosen


@torch.no_grad()
def open_fuser_gates(gunet: torch.nn.Module, gate: float = 0.5) -> None:
    """Start every fuser as the identity with open gates, instead of GLIGEN's closed gates.

    GLIGEN initialises the gates alpha to 0, so x + tanh(alpha) * attn(...) starts as the
    identity; but then the attention weights get no gradient until alpha drifts away from 0,
    which takes GLIGEN's hundreds of thousands of steps (in a few-minute run alpha_attn stayed
    at ~0 and the grounding did nothing). Zeroing the output projections of the fuser's
    attention and feed-forward keeps the identity start while every weight gets a gradient from
    step one. The architecture and the saved keys are GLIGEN's.
    """
    for module in gunet.modules():
        if type(module).__name__ == "GatedSelfAttentionDense":
            module.alpha_attn.fill_(gate)
            module.alpha_dense.fill_(gate)
            out_attn = module.attn.to_out[0]
            out_ff = module.ff.net[-1]
            for layer in (out_attn, out_ff):
                layer.weight.zero_()
                if layer.bias is not None:
                    layer.bias.zero_()


@torch.no_grad()
def is_grounding_key(name: str) -> bool:
    """A parameter GLIGEN adds to the UNet: fuser layers and the position net."""
    return ".fuser." in name or name.startswith("position_net.")


def load_grounding_layers(gunet: torch.nn.Module, folder: Path, whole_unet: bool = False) -> None:
    """Copy the fuser layers and position net of a trained GLIGEN folder into `gunet` (with
    `whole_unet`, every weight: a GLIGEN trained with its base UNet)."""
    from safetensors.torch import load_file

    files = sorted((folder / "unet").glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"--gligen-init: no unet/*.safetensors in {folder}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(f))
    grounding = {k: v.float() for k, v in state.items() if is_grounding_key(k)}
    own = {k for k in gunet.state_dict() if is_grounding_key(k)}
    if set(grounding) != own:
        missing, extra = sorted(own - set(grounding)), sorted(set(grounding) - own)
        raise ValueError(
            f"--gligen-init: {folder} does not match the Shapes GLIGEN UNet (missing {missing[:3]}, unexpected {extra[:3]})"
        )
    if whole_unet:
        gunet.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        return
    gunet.load_state_dict(grounding, strict=False)


def save_folders(out: Path, vae: Any, te: Any, tokenizer: Any, unet: Any, gunet: Any) -> dict[str, Any]:
    """Write DIR/shapes-sd and DIR/shapes-gligen as fp16 safetensors pipeline folders."""
    from diffusers import DDIMScheduler, StableDiffusionGLIGENPipeline, StableDiffusionPipeline

    def half(m: torch.nn.Module) -> torch.nn.Module:
        return copy.deepcopy(m).to("cpu", torch.float16)

    vae16, te16 = half(vae), half(te)
    common = dict(
        vae=vae16, text_encoder=te16, tokenizer=tokenizer, scheduler=DDIMScheduler(**scheduler_config()),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    info = {}
    for name, cls, u in (
        ("shapes-sd", StableDiffusionPipeline, unet),
        ("shapes-gligen", StableDiffusionGLIGENPipeline, gunet),
    ):
        folder = out / name
        cls(unet=half(u), **common).save_pretrained(folder, safe_serialization=True)
        # transformers ≥ 5 loads a model in its config's dtype by default, diffusers in float32:
        # with "float16" recorded, a plain from_pretrained would pair an fp16 text encoder with
        # an fp32 UNet and fail. The weights stay fp16; torch_dtype=float16 still gives fp16.
        te_config = folder / "text_encoder" / "config.json"
        cfg = json.loads(te_config.read_text())
        for key in ("dtype", "torch_dtype"):
            if key in cfg:
                cfg[key] = "float32"
        te_config.write_text(json.dumps(cfg, indent=2) + "\n")
        # transformers 5 saves only tokenizer.json; the slow CLIPTokenizer of transformers 4
        # needs vocab.json and merges.txt, so the original files are written next to it (with
        # their plain tokenizer_config.json, which both major versions read).
        from ..tokenizer import write_tokenizer

        write_tokenizer(folder / "tokenizer")
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        info[name] = {"path": str(folder), "bytes": size}
    info["total_bytes"] = info["shapes-sd"]["bytes"] + info["shapes-gligen"]["bytes"]
    return info


def held_out_scenes(n: int, seed: int) -> Iterator[Any]:
    from ..scenes import generate_scenes

    return iter(generate_scenes(n, 1_000_003 + seed, masks=False))


@torch.no_grad()
def evaluate_folders(out: Path, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Load the saved folders back, sample held-out captions, score them with the evaluator."""
    from diffusers import StableDiffusionGLIGENPipeline, StableDiffusionPipeline
    from PIL import Image

    from ..evaluate import evaluate_image, realism_score, summarize

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    scenes = list(held_out_scenes(args.eval_prompts, args.seed))
    captions = [s.caption for s in scenes]
    t0 = time.perf_counter()
    sd = StableDiffusionPipeline.from_pretrained(out / "shapes-sd", torch_dtype=dtype).to(device)
    sd.set_progress_bar_config(disable=True)
    g = torch.Generator(device="cpu").manual_seed(args.seed)
    sd_images = []
    for i in range(0, len(captions), 64):
        res = sd(captions[i : i + 64], num_inference_steps=25, guidance_scale=5.0, generator=g, output_type="np")
        sd_images += [(im * 255).round().astype(np.uint8) for im in res.images]
    gl = StableDiffusionGLIGENPipeline.from_pretrained(out / "shapes-gligen", torch_dtype=dtype).to(device)
    gl.set_progress_bar_config(disable=True)
    gl_images = []
    for s in scenes:
        res = gl(
            s.caption, gligen_phrases=[o.phrase for o in s.objects], gligen_boxes=[list(o.box) for o in s.objects],
            gligen_scheduled_sampling_beta=args.gligen_beta, num_inference_steps=25, guidance_scale=5.0,
            generator=g, output_type="np",
        )  # fmt: skip
        gl_images.append((res.images[0] * 255).round().astype(np.uint8))
    report: dict[str, Any] = {
        "captions": len(captions),
        "sampler": "DDIM 25 steps, guidance 5",
        "gligen_beta": args.gligen_beta,
    }
    for name, imgs in (("shapes-sd", sd_images), ("shapes-gligen", gl_images)):
        evs = [evaluate_image(im, s.caption, planned=[o.box for o in s.objects]) for im, s in zip(imgs, scenes)]
        report[name] = summarize(evs) | {"realism": float(np.mean([realism_score(im) for im in imgs]))}
        grid = (
            np.concatenate([np.concatenate(imgs[r * 8 : (r + 1) * 8], 1) for r in range(min(4, len(imgs) // 8))], 0)
            if len(imgs) >= 8
            else np.concatenate(imgs, 1)
        )
        Image.fromarray(grid).save(out / f"samples_{name}.png")
    real = [s.image for s in scenes]
    report["ground_truth"] = summarize(
        evaluate_image(s.image, s.caption, planned=[o.box for o in s.objects]) for s in scenes
    ) | {"realism": float(np.mean([realism_score(im) for im in real]))}
    (out / "samples_captions.txt").write_text("\n".join(captions) + "\n")
    report["seconds"] = round(time.perf_counter() - t0, 2)
    return report


if __name__ == "__main__":
    main()
