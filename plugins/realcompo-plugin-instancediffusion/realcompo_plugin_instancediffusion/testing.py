"""Tiny InstanceDiffusion models and folders for tests: built from configs, randomised so that
nothing is a no-op (a fresh model has closed gates, zero ScaleU and zero-initialised layers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .unet import build_instdiff_unet, save_instdiff_unet

# SD-shaped in miniature: attention at the two highest resolutions, as SD1.5 at 64/32/16.
TINY_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [32, 64, 64],
    "layers_per_block": 2,
    "cross_attention_dim": 32,
    "attention_head_dim": 2,
    "norm_num_groups": 32,
    "attention_type": "gated",
}
# A small mask encoder (the official one is ConvNeXt-T on 512² masks: ~1 s per sample on a CPU).
TINY_POSITION_NET_CONFIG: dict[str, Any] = {
    "in_dim": 32, "out_dim": 32, "mid_dim": 64,
    "seg_size": 128, "convnext_dims": [8, 16, 32, 48], "convnext_depths": [1, 1, 1, 1],
}  # fmt: skip


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every parameter a non-degenerate random value (gates open, ScaleU and nulls non-zero),
    from a forked RNG: the caller's random state is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name, p in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("alpha_attn", "alpha_dense"):
                p.uniform_(0.5, 1.5)
            elif leaf.startswith("scaleu_"):
                p.normal_(0.0, 0.5)
            elif leaf.startswith("null_") or leaf == "pos_embedding":
                p.normal_(0.0, 1.0 if leaf.startswith("null_") else 0.02)
            elif leaf == "gamma":
                p.uniform_(0.1, 1.0)
            elif "norm" in name and p.dim() == 1:
                p.copy_((1.0 if leaf == "weight" else 0.0) + 0.1 * torch.randn_like(p))
            elif p.dim() == 1:
                p.normal_(0.0, 0.02)
            else:
                fan_in = p[0].numel()
                p.normal_(0.0, fan_in**-0.5)
    return module


def tiny_instdiff_unet(seed: int = 0) -> Any:
    unet = build_instdiff_unet(TINY_UNET_CONFIG, TINY_POSITION_NET_CONFIG)
    return randomize_(unet, seed).eval().requires_grad_(False)


def save_tiny_instdiff_folder(path: str | Path, *, seed: int = 0) -> Path:
    """A converted-style folder: unet/ + instancediffusion.json + tiny SD1.5 parts."""
    from realcompo_sdk.testing.components import tiny_sd_components

    from .sampler import official_scheduler

    path = Path(path)
    parts = tiny_sd_components(seed)
    save_instdiff_unet(tiny_instdiff_unet(seed), path, {
        "format": "realcompo-instancediffusion", "converter_version": 1,
        "position_net": TINY_POSITION_NET_CONFIG, "source": {"file": "tiny test model"},
    })  # fmt: skip
    parts["vae"].save_pretrained(path / "vae")
    parts["text_encoder"].save_pretrained(path / "text_encoder")
    parts["tokenizer"].save_pretrained(path / "tokenizer")
    official_scheduler().save_pretrained(path / "scheduler")
    return path


def official_names(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Our UNet state dict renamed to the official (LDM) names — the inverse of the converter's
    map — so tests can fabricate official checkpoints of any size (a full-size test checks the
    names against the recorded official key list). Fuser keys live inside the attention blocks
    and keep their inner names, as in the official checkpoint."""
    from realcompo_sdk.testing.single_file import unet_key_to_ldm

    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("instdiff_scaleu."):
            out[key.removeprefix("instdiff_scaleu.")] = value
        elif key.startswith("position_net."):
            out[key] = value
        else:
            out[unet_key_to_ldm(key, config)] = value
    return out
