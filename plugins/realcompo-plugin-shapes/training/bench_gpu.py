"""Step time of each training stage's model against batch size (development aid).

PYTHONPATH=plugins/realcompo-plugin-shapes python3 plugins/realcompo-plugin-shapes/training/bench_gpu.py
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from realcompo_plugin_shapes.training.models import MAX_OBJS, TEXT_HIDDEN, text_config, unet_config, vae_config
from transformers import CLIPTextConfig, CLIPTextModel

dev = torch.device("cuda")
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.benchmark = True


def timeit(step, n=12, warm=4) -> float:
    for _ in range(warm):
        step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / n


def make_step(models, loss_fn):
    params = [p for m in models for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


vae = AutoencoderKL(**vae_config()).to(dev)
te = CLIPTextModel(CLIPTextConfig(**text_config(609, 607, 608, 32))).to(dev)
unet = UNet2DConditionModel(**unet_config()).to(dev)
gunet = UNet2DConditionModel(**unet_config(gated=True)).to(dev)
for name, p in gunet.named_parameters():
    p.requires_grad_(".fuser." in name or name.startswith("position_net."))


def bench(bs: int) -> None:
    x = torch.randn(bs, 3, 64, 64, device=dev)
    z = torch.randn(bs, 4, 32, 32, device=dev)
    ids = torch.randint(0, 600, (bs, 32), device=dev)
    t = torch.randint(0, 1000, (bs,), device=dev)
    g = {
        "boxes": torch.rand(bs, MAX_OBJS, 4, device=dev),
        "positive_embeddings": torch.randn(bs, MAX_OBJS, TEXT_HIDDEN, device=dev),
        "masks": (torch.arange(MAX_OBJS, device=dev) < 3).float().expand(bs, -1).contiguous(),
    }

    def vae_loss():
        post = vae.encode(x).latent_dist
        return F.mse_loss(vae.decode(post.sample()).sample.float(), x)

    def unet_loss():
        return F.mse_loss(unet(z, t, te(ids)[0]).sample.float(), z)

    def gligen_loss():
        with torch.no_grad():
            ctx = te(ids)[0]
        return F.mse_loss(gunet(z, t, ctx, cross_attention_kwargs={"gligen": dict(g)}).sample.float(), z)

    for name, models, fn in (
        ("vae", [vae], vae_loss),
        ("unet", [te, unet], unet_loss),
        ("gligen", [gunet], gligen_loss),
    ):
        s = timeit(make_step(models, fn))
        print(f"{name:6s} bs {bs:5d}: {s * 1000:7.1f} ms/step  {bs / s:9.0f} samples/s", flush=True)


for batch_size in (256, 512, 1024):
    bench(batch_size)
