"""Can a Shapes GLIGEN learn *where*? A short training probe where only the box can say it.

    python -m realcompo_plugin_shapes.training.grounding_probe --steps 600 --eval-every 150 \\
        --attention-loss 0.5 --attention-input noise --position-loss 1 --log probe.jsonl

One object per scene, at a random place, and (by default) no caption: whatever the model learns
about where the object goes can only come from its box. A gated UNet (the T2I model's weights, or
random ones) is trained with GLIGEN's inputs exactly as the `gligen` adapter builds them, plus the
optional auxiliary losses of `grounding_attention`. Every `--eval-every` steps it prints a JSON line
with the two measures of `grounding_check` on held-out scenes at t = 999, 900 and 700: the box share
of the x0-prediction made with the true boxes (`share_true`) and with mirrored boxes
(`share_mirrored`), and the loss with mirrored boxes over the loss with the true ones. A model that
places objects by their boxes has `share_true` > `share_mirrored`; equal values mean it does not.
Fixed seeds (random draws on the CPU, so a run is the same on any `--device`); about 2 s per step
of 32 on one CPU core.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from .. import WEIGHTS_DIR
from ..scenes import generate_scenes
from .data import PHRASES, gligen_inputs, grounding_phrases
from .grounding_attention import GroundingAuxiliary
from .grounding_check import box_share
from .models import MAX_OBJS, unet_config
from .train_all import open_fuser_gates

EVAL_TIMESTEPS = (999, 900, 700)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m realcompo_plugin_shapes.training.grounding_probe", description=__doc__.split("\n")[0])
    p.add_argument("--t2i-from", type=Path, default=WEIGHTS_DIR / "shapes-sd", help="VAE, text encoder and (with --init t2i) UNet")
    p.add_argument("--init", choices=["t2i", "scratch"], default="t2i", help="the gated UNet starts from the T2I UNet or random weights")
    p.add_argument("--train", choices=["all", "fusers"], default="all", help="train the whole UNet, or only fusers + position net (GLIGEN)")
    p.add_argument("--style", choices=["flat", "real"], default="flat")
    p.add_argument("--caption", type=float, default=0.0, help="share of samples that keep their caption")
    p.add_argument("--attention-loss", type=float, default=0.0, help="weight of FuserAttentionSupervision (0: off)")
    p.add_argument("--attention-target", choices=["share", "absolute"], default="absolute")
    p.add_argument("--attention-input", choices=["batch", "noise"], default="noise",
                   help="supervise the attention of the training forward (the object is visible in the noisy latent "
                        "at low t, so content can stand in for position) or of an extra forward on pure noise at t=999")  # fmt: skip
    p.add_argument("--position-loss", type=float, default=0.0, help="weight of FuserPositionRegression (0: off)")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--eval-every", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--pool-size", type=int, default=6000)
    p.add_argument("--eval-scenes", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--log", type=Path, default=None, help="also append the JSON lines to this file")
    p.add_argument("--save", type=Path, default=None,
                   help="write the trained model as DIR/shapes-gligen (with DIR/shapes-sd, the T2I folder it used), "
                        "for train_all --gligen-init")  # fmt: skip
    args = p.parse_args(argv)
    for name in ("steps", "eval_every", "batch_size", "pool_size", "eval_scenes"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0.0 <= args.caption <= 1.0:
        p.error(f"--caption must be between 0 and 1, got {args.caption}")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    torch.manual_seed(args.seed)
    src = args.t2i_from
    vae = AutoencoderKL.from_pretrained(src, subfolder="vae", torch_dtype=torch.float32).eval().requires_grad_(False)
    te = CLIPTextModel.from_pretrained(src, subfolder="text_encoder", torch_dtype=torch.float32).eval().requires_grad_(False)
    tokenizer = CLIPTokenizer.from_pretrained(src, subfolder="tokenizer")
    alphas = DDIMScheduler.from_pretrained(src, subfolder="scheduler").alphas_cumprod.float()
    scaling = float(vae.config.scaling_factor)

    @torch.no_grad()
    def scenes(n: int, seed: int) -> dict[str, torch.Tensor]:
        batch = generate_scenes(n, seed, style=args.style, masks=False, form_weights={"single": 1.0})  # type: ignore[arg-type]
        idx = torch.full((n, batch.boxes.shape[1]), -1, dtype=torch.long)
        for i, spec in enumerate(batch.specs):
            for k, phrase in enumerate(grounding_phrases(spec)):
                idx[i, k] = PHRASES.index(phrase)
        x = torch.as_tensor(batch.images).permute(0, 3, 1, 2).float() / 127.5 - 1
        dists = [vae.encode(x[i : i + 256]).latent_dist for i in range(0, n, 256)]
        ids = tokenizer(batch.captions, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
        return {"mean": torch.cat([d.mean for d in dists]), "std": torch.cat([d.std for d in dists]),
                "boxes": torch.as_tensor(batch.boxes), "idx": idx, "context": te(ids)[0]}  # fmt: skip

    train, held_out = scenes(args.pool_size, args.seed), scenes(args.eval_scenes, args.seed + 777)
    with torch.no_grad():
        table = te(**tokenizer(PHRASES, padding=True, return_tensors="pt")).pooler_output
        empty = te(tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids)[0]

    device = torch.device(args.device)
    unet = UNet2DConditionModel(**unet_config(gated=True))
    if args.init == "t2i":
        unet.load_state_dict(UNet2DConditionModel.from_pretrained(src, subfolder="unet").state_dict(), strict=False)
    open_fuser_gates(unet)
    unet.to(device)
    vae.to(device)
    train, held_out = ({k: v.to(device) for k, v in d.items()} for d in (train, held_out))
    table, empty, alphas = table.to(device), empty.to(device), alphas.to(device)
    if args.train == "fusers":
        unet.requires_grad_(False)
        params = [p for n, p in unet.named_parameters() if ".fuser." in n or n.startswith("position_net.")]
        for p in params:
            p.requires_grad_(True)
    else:
        params = list(unet.parameters())
    aux = GroundingAuxiliary(unet, MAX_OBJS, attention_weight=args.attention_loss, position_weight=args.position_loss,
                             target=args.attention_target, attention_input=args.attention_input)  # fmt: skip
    if aux.position is not None:
        aux.position.to(device)
    params += aux.parameters()
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    snr = alphas / (1 - alphas)
    x0_weight = torch.clamp(1 / snr, max=20.0)  # the x0 loss of train_all's --gligen-loss-weight x0
    gen = torch.Generator().manual_seed(args.seed + 1)
    n, bs, records = len(train["idx"]), args.batch_size, []
    sums = {"loss": 0.0, "attention": 0.0, "position": 0.0}
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        i = torch.randint(0, n, (bs,), generator=gen).to(device)  # draws on the CPU: same run on any device
        z0 = (train["mean"][i] + train["std"][i] * torch.randn(train["mean"][i].shape, generator=gen).to(device)) * scaling
        t = torch.randint(0, 1000, (bs,), generator=gen).to(device)
        noise = torch.randn(z0.shape, generator=gen).to(device)
        a = alphas[t].view(-1, 1, 1, 1)
        keep = (torch.rand(bs, generator=gen) < args.caption).to(device)[:, None, None]
        context = torch.where(keep, train["context"][i], empty.expand(bs, -1, -1))
        grounded = (torch.rand(bs, generator=gen) >= 0.1).float().to(device)
        inputs = gligen_inputs(train["boxes"][i], train["idx"][i], table, grounded)
        with aux.watch():
            pred = unet(a.sqrt() * z0 + (1 - a).sqrt() * noise, t, context, cross_attention_kwargs={"gligen": inputs}).sample
        loss = (((pred - noise) ** 2).mean(dim=(1, 2, 3)) * x0_weight[t]).mean()
        sums["loss"] += float(loss.detach())
        if aux.active:
            extra, parts = aux.loss(unet, train["boxes"][i], grounded, inputs, context, gen)
            loss = loss + extra
            for name, value in parts.items():
                sums[name] += value
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if step % args.eval_every == 0:
            record = {"step": step, "seconds": round(time.perf_counter() - start, 1)}
            record.update({k: round(v / args.eval_every, 4) for k, v in sums.items()})
            record.update(evaluate(unet, vae, held_out, table, empty, alphas, scaling, args.caption > 0, args.seed))
            sums = dict.fromkeys(sums, 0.0)
            records.append(record)
            line = json.dumps(record)
            print(line, flush=True)
            if args.log is not None:
                with args.log.open("a") as f:
                    f.write(line + "\n")
    if args.save is not None:
        from .train_all import save_folders

        t2i_unet = UNet2DConditionModel.from_pretrained(src, subfolder="unet")
        save_folders(args.save, vae.cpu(), te, tokenizer, t2i_unet, unet.cpu().eval())
    return records


@torch.no_grad()
def evaluate(unet: Any, vae: Any, held_out: dict[str, torch.Tensor], table: torch.Tensor, empty: torch.Tensor,
             alphas: torch.Tensor, scaling: float, caption: bool, seed: int) -> dict[str, Any]:  # fmt: skip
    unet.eval()
    boxes = held_out["boxes"]
    mirrored = torch.stack([1 - boxes[..., 2], boxes[..., 1], 1 - boxes[..., 0], boxes[..., 3]], dim=-1)
    z0 = held_out["mean"] * scaling
    n = len(z0)
    context = held_out["context"] if caption else empty.expand(n, -1, -1)
    gen = torch.Generator().manual_seed(seed + 5)
    out: dict[str, Any] = {}
    for t_value in EVAL_TIMESTEPS:
        t = torch.full((n,), t_value, device=z0.device)
        noise = torch.randn(z0.shape, generator=gen).to(z0.device)
        a = alphas[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        row: dict[str, float] = {}
        for name, grounding in (("true", boxes), ("mirrored", mirrored)):
            pred = unet(zt, t, context, cross_attention_kwargs={"gligen": gligen_inputs(grounding, held_out["idx"], table)}).sample
            x0 = (zt - (1 - a).sqrt() * pred) / a.sqrt()
            image = (vae.decode(x0 / scaling).sample.clamp(-1, 1) + 1) / 2
            row[f"share_{name}"] = round(box_share(image, boxes[:, 0], mirrored[:, 0]), 4)
            row[f"loss_{name}"] = float(((pred - noise) ** 2).mean())
        row["loss_mirrored_over_true"] = round(row.pop("loss_mirrored") / row.pop("loss_true"), 5)
        out[f"t{t_value}"] = row
    unet.train()
    return out


if __name__ == "__main__":
    main()
