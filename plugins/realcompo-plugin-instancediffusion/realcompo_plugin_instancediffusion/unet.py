"""The InstanceDiffusion UNet in diffusers terms, and its folder format.

A stock `UNet2DConditionModel(attention_type="gated")` already has InstanceDiffusion's fusers
(GLIGEN's gated self-attention, same names, same place in every transformer block). We replace its
position net with ours and attach ScaleU (`unet.instdiff_scaleu`); the UNet's code is untouched.

Folder format written by the converter (and the test kit):

    FOLDER/instancediffusion.json   position-net config + conversion record
    FOLDER/unet/config.json         the diffusers config (attention_type "gated")
    FOLDER/unet/diffusion_pytorch_model.safetensors   every UNet tensor, including
                                    `position_net.*` (float32) and `instdiff_scaleu.scaleu_{b,s}_{k}`
    FOLDER/{vae,text_encoder,tokenizer,scheduler}/    optional: SD1.5's, copied by the converter
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .position_net import InstDiffPositionNet
from .scaleu import InstDiffScaleU, backbone_channels

METADATA_FILE = "instancediffusion.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"

# Stable Diffusion 1.5's UNet (the base InstanceDiffusion was trained on), with gated fusers.
SD15_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "attention_type": "gated",
}
SD15_POSITION_NET_CONFIG: dict[str, Any] = {"in_dim": 768, "out_dim": 768, "mid_dim": 3072}


def diffusers_config_from_official(params: dict[str, Any]) -> dict[str, Any]:
    """The diffusers UNet config equal to an official `UNetModel` config (its `params` dict)."""
    mult = list(params["channel_mult"])
    base = int(params["model_channels"])
    attention = {int(r) for r in params["attention_resolutions"]}
    if int(params.get("transformer_depth", 1)) != 1:
        raise ValueError("only transformer_depth 1 (as in every InstanceDiffusion config) is supported")
    with_attention = [2**level in attention for level in range(len(mult))]
    return {
        "sample_size": int(params["image_size"]),
        "in_channels": int(params["in_channels"]),
        "out_channels": int(params["out_channels"]),
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in with_attention],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(with_attention)],
        "block_out_channels": [base * m for m in mult],
        "layers_per_block": int(params["num_res_blocks"]),
        "cross_attention_dim": int(params["context_dim"]),
        "attention_head_dim": int(params["num_heads"]),  # diffusers' legacy name for the head count
        "norm_num_groups": 32,
        "attention_type": "gated",
    }


def build_instdiff_unet(config: dict[str, Any], position_net_config: dict[str, Any] | None = None) -> Any:
    """A gated diffusers UNet with our position net and ScaleU (random or meta weights: use the
    current default device, e.g. under `torch.device("meta")`)."""
    from diffusers import UNet2DConditionModel

    config = {**config, "attention_type": "gated"}
    unet = UNet2DConditionModel(**config)
    net_config = dict(position_net_config or {})
    net_config.setdefault("in_dim", config["cross_attention_dim"])
    net_config.setdefault("out_dim", config["cross_attention_dim"])
    unet.position_net = InstDiffPositionNet(**net_config)
    unet.instdiff_scaleu = InstDiffScaleU(backbone_channels(config))
    unet.instdiff_scaleu.attach(unet)
    return unet


def fusers(unet: Any) -> list[Any]:
    return [m for m in unet.modules() if type(m).__name__ == "GatedSelfAttentionDense"]


def set_grounding(unet: Any, enabled: bool) -> None:
    """Fusers on or off (official fuser scale 1 or 0); ScaleU stays on either way."""
    for fuser in fusers(unet):
        fuser.enabled = enabled


def is_instdiff_folder(path: str | Path) -> bool:
    return (Path(path) / METADATA_FILE).is_file()


def read_metadata(folder: str | Path) -> dict[str, Any]:
    return json.loads((Path(folder) / METADATA_FILE).read_text())


def load_instdiff_unet(folder: str | Path, dtype: torch.dtype = torch.float32) -> Any:
    """Build the UNet from `folder` and load its safetensors strictly (no pickle anywhere)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    metadata = read_metadata(folder)
    config = json.loads((folder / "unet" / "config.json").read_text())
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    with torch.device("meta"):
        unet = build_instdiff_unet(config, metadata.get("position_net", {}))
    state = load_file(folder / "unet" / WEIGHTS_FILE)
    unet.load_state_dict(state, strict=True, assign=True)
    unet.instdiff_scaleu.attach(unet)
    # Everything in `dtype` but the position net, which stays as stored (float32 for sin/cos of
    # coordinates × 100; it runs once per request).
    position_net = unet.position_net
    unet.position_net = None
    unet = unet.to(dtype)
    unet.position_net = position_net.float()
    return unet.eval().requires_grad_(False)


def save_instdiff_unet(unet: Any, folder: str | Path, metadata: dict[str, Any], dtype: torch.dtype | None = None) -> None:
    """Write `unet/` (config + one safetensors file) and `instancediffusion.json`."""
    from safetensors.torch import save_file

    folder = Path(folder)
    (folder / "unet").mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    config["_class_name"] = "UNet2DConditionModel"
    (folder / "unet" / "config.json").write_text(json.dumps(config, indent=2, default=list))
    def stored(key: str, value: torch.Tensor) -> torch.Tensor:
        keep = dtype is None or not value.is_floating_point() or key.startswith("position_net.")
        return (value if keep else value.to(dtype)).contiguous()

    # `dtype` (fp16 from the converter) for the UNet; the position net keeps full precision.
    state = {k: stored(k, v) for k, v in unet.state_dict().items()}
    save_file(state, folder / "unet" / WEIGHTS_FILE, metadata={"format": "pt"})
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
