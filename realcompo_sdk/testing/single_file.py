"""Write a diffusers Stable Diffusion folder as one `.safetensors` file in the original LDM
checkpoint format (`model.diffusion_model.*`, `first_stage_model.*`,
`cond_stage_model.transformer.text_model.*`), as community SD 1.x checkpoints ship.

The key mapping is the inverse of diffusers' `convert_ldm_unet_checkpoint`,
`convert_ldm_vae_checkpoint` and `convert_ldm_clip_checkpoint`
(diffusers/loaders/single_file_utils.py), with block indices computed from the folder's configs,
so it works for tiny test models as well as full-size ones. Only SD 1.x-style folders (CLIP text
encoder, `UNet2DConditionModel` with an int `layers_per_block`, `AutoencoderKL`) are supported.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
                "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
_UNET_FIXED = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
               "time_embedding.linear_2": "time_embed.2", "conv_norm_out": "out.0", "conv_out": "out.2"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename_first(rest: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if rest.startswith(old + "."):
            return new + rest[len(old):]
    return rest


def unet_key_to_ldm(key: str, config: dict[str, Any]) -> str:
    """`down_blocks.1.resnets.0.norm1.weight` -> `input_blocks.4.0.in_layers.0.weight` etc."""
    layers = config["layers_per_block"]
    if not isinstance(layers, int):
        raise ValueError(f"only an int layers_per_block is supported, got {layers!r}")
    per_level = layers + 1
    for old, new in _UNET_FIXED.items():
        if key.startswith(old + "."):
            return new + key[len(old):]
    if m := re.fullmatch(r"add_embedding\.linear_([12])\.(.+)", key):  # SDXL's time-ids embedding
        return f"label_emb.0.{0 if m[1] == '1' else 2}.{m[2]}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        b, i, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{1 + b * per_level + i}.0.{_rename_first(rest, _UNET_RESNET)}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        b, i, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{1 + b * per_level + i}.1.{rest}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        b, rest = int(m[1]), m[2]
        return f"input_blocks.{1 + b * per_level + layers}.0.op.{rest}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{_rename_first(m[2], _UNET_RESNET)}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        b, i, rest = int(m[1]), int(m[2]), m[3]
        return f"output_blocks.{b * per_level + i}.0.{_rename_first(rest, _UNET_RESNET)}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        b, i, rest = int(m[1]), int(m[2]), m[3]
        return f"output_blocks.{b * per_level + i}.1.{rest}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        b, rest = int(m[1]), m[2]
        # the upsampler follows the resnet (index 1) or the resnet and the attention (index 2)
        slot = 2 if "CrossAttn" in config["up_block_types"][b] else 1
        return f"output_blocks.{b * per_level + layers}.{slot}.conv.{rest}"
    raise ValueError(f"no LDM name for UNet weight {key!r}")


def vae_key_to_ldm(key: str, config: dict[str, Any]) -> str:
    """`decoder.up_blocks.0.resnets.1.conv1.weight` -> `decoder.up.1.block.1.conv1.weight` etc.
    (LDM numbers decoder levels from the highest resolution, diffusers from the lowest)."""
    num_up = len(config["up_block_types"])
    if m := re.fullmatch(r"(encoder|decoder)\.conv_norm_out\.(.+)", key):
        return f"{m[1]}.norm_out.{m[2]}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{_rename_first(m[3], {'conv_shortcut': 'nin_shortcut'})}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        level = num_up - 1 - int(m[1])
        return f"decoder.up.{level}.block.{m[2]}.{_rename_first(m[3], {'conv_shortcut': 'nin_shortcut'})}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        return f"decoder.up.{num_up - 1 - int(m[1])}.upsample.conv.{m[2]}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{_rename_first(m[3], {'conv_shortcut': 'nin_shortcut'})}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
        return f"{m[1]}.mid.attn_1.{_rename_first(m[2], _VAE_ATTENTION)}"
    if re.fullmatch(r"(encoder|decoder)\.(conv_in|conv_out)\.(weight|bias)|(post_)?quant_conv\.(weight|bias)", key):
        return key
    raise ValueError(f"no LDM name for VAE weight {key!r}")


def clip_key_to_ldm(key: str) -> str:
    """transformers >= 5.6 flattens CLIPTextModel (no `text_model.` level); LDM files keep it."""
    return key if key.startswith("text_model.") else "text_model." + key


def _unet_and_vae_items(folder: Path) -> list[tuple[str, torch.Tensor]]:
    """(LDM name, tensor) of a diffusers folder's UNet and VAE."""
    from safetensors.torch import load_file

    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    items = [(UNET_PREFIX + unet_key_to_ldm(k, unet_config), v)
             for k, v in load_file(folder / "unet" / "diffusion_pytorch_model.safetensors").items()]  # fmt: skip
    for key, value in load_file(folder / "vae" / "diffusion_pytorch_model.safetensors").items():
        ldm_key = vae_key_to_ldm(key, vae_config)
        # LDM's VAE attention uses 1x1 convolutions; diffusers squeezes them back to linear
        if ".mid.attn_1." in ldm_key and ldm_key.endswith(".weight") and value.dim() == 2:
            value = value[:, :, None, None]
        items.append((VAE_PREFIX + ldm_key, value))
    return items


def ldm_state_dict(folder: str | Path) -> dict[str, torch.Tensor]:
    """The weights of a diffusers SD folder, renamed to the original LDM checkpoint layout."""
    from safetensors.torch import load_file

    folder = Path(folder)
    out: dict[str, torch.Tensor] = {}

    def put(key: str, value: torch.Tensor) -> None:
        if key in out:
            raise ValueError(f"two weights map to {key!r}")
        out[key] = value.contiguous()

    for key, value in _unet_and_vae_items(folder):
        put(key, value)
    for key, value in load_file(folder / "text_encoder" / "model.safetensors").items():
        if key.endswith("position_ids"):
            continue
        put(CLIP_PREFIX + clip_key_to_ldm(key), value)
    return out


def save_tiny_single_file(folder: str | Path, path: str | Path) -> Path:
    """Write `folder` (e.g. from `save_tiny_sd_folder`) as one LDM-format `.safetensors` file.

    Load it back with `StableDiffusionPipeline.from_single_file(path, config=folder)`: the file
    carries weights only, so diffusers takes every config (and the tokenizer and scheduler) from
    `folder`."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(ldm_state_dict(folder), str(path))
    return path


CONTROLNET_PREFIX = "control_model."


def controlnet_key_to_ldm(key: str, config: dict[str, Any]) -> str:
    """A diffusers ControlNet weight → its name in an original ControlNet checkpoint.

    The encoder is named as the UNet's; the zero convolutions are `zero_convs.{i}.0` and
    `middle_block_out.0`; the conditioning embedding is `input_hint_block.{0, 2, 4, ..., 14}`
    (convolutions between SiLUs; the last one is always index 14, as diffusers' converter reads it).
    """
    if m := re.fullmatch(r"controlnet_down_blocks\.(\d+)\.(.+)", key):
        return f"zero_convs.{m[1]}.0.{m[2]}"
    if m := re.fullmatch(r"controlnet_mid_block\.(.+)", key):
        return f"middle_block_out.0.{m[1]}"
    if m := re.fullmatch(r"controlnet_cond_embedding\.conv_in\.(.+)", key):
        return f"input_hint_block.0.{m[1]}"
    if m := re.fullmatch(r"controlnet_cond_embedding\.blocks\.(\d+)\.(.+)", key):
        index = 2 * int(m[1]) + 2
        if index >= 14:
            raise ValueError("an original ControlNet checkpoint holds at most 6 conditioning-embedding blocks")
        return f"input_hint_block.{index}.{m[2]}"
    if m := re.fullmatch(r"controlnet_cond_embedding\.conv_out\.(.+)", key):
        return f"input_hint_block.14.{m[1]}"
    return unet_key_to_ldm(key, config)


def save_tiny_controlnet_single_file(folder: str | Path, path: str | Path) -> Path:
    """Write a diffusers ControlNet folder (e.g. from `save_tiny_controlnet_folder`) as one
    original-format `.safetensors` file (`control_model.*`). Load it back with
    `ControlNetModel.from_single_file(path, config=folder)`."""
    from safetensors.torch import load_file, save_file

    folder, path = Path(folder), Path(path)
    config = json.loads((folder / "config.json").read_text())
    state = {CONTROLNET_PREFIX + controlnet_key_to_ldm(k, config): v.contiguous()
             for k, v in load_file(folder / "diffusion_pytorch_model.safetensors").items()}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer."
SDXL_OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."
_OPEN_CLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                    "self_attn.out_proj": "attn.out_proj"}


def open_clip_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A `CLIPTextModelWithProjection` state dict in OpenCLIP's layout (SDXL's second encoder):
    q/k/v fused into `attn.in_proj_*`, `text_projection` transposed."""
    state = {k.removeprefix("text_model."): v for k, v in state.items() if not k.endswith("position_ids")}
    out: dict[str, torch.Tensor] = {
        "token_embedding.weight": state.pop("embeddings.token_embedding.weight"),
        "positional_embedding": state.pop("embeddings.position_embedding.weight"),
        "ln_final.weight": state.pop("final_layer_norm.weight"),
        "ln_final.bias": state.pop("final_layer_norm.bias"),
        "text_projection": state.pop("text_projection.weight").T.contiguous(),
    }
    layers = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.layers.")})
    for i in layers:
        prefix = f"encoder.layers.{i}."
        for kind in ("weight", "bias"):
            out[f"transformer.resblocks.{i}.attn.in_proj_{kind}"] = torch.cat(
                [state.pop(f"{prefix}self_attn.{p}_proj.{kind}") for p in ("q", "k", "v")])
            for ours, theirs in _OPEN_CLIP_LAYER.items():
                out[f"transformer.resblocks.{i}.{theirs}.{kind}"] = state.pop(f"{prefix}{ours}.{kind}")
    if state:
        raise ValueError(f"no OpenCLIP name for {sorted(state)[:5]}")
    return out


def sdxl_ldm_state_dict(folder: str | Path) -> dict[str, torch.Tensor]:
    """The weights of a diffusers SDXL folder in the original SDXL checkpoint layout."""
    from safetensors.torch import load_file

    folder = Path(folder)
    out: dict[str, torch.Tensor] = dict(_unet_and_vae_items(folder))
    for key, value in load_file(folder / "text_encoder" / "model.safetensors").items():
        if not key.endswith("position_ids"):
            out[SDXL_CLIP_PREFIX + clip_key_to_ldm(key)] = value
    for key, value in open_clip_state_dict(load_file(folder / "text_encoder_2" / "model.safetensors")).items():
        out[SDXL_OPEN_CLIP_PREFIX + key] = value
    return {k: v.contiguous() for k, v in out.items()}


def save_tiny_sdxl_single_file(folder: str | Path, path: str | Path) -> Path:
    """Write an SDXL folder (e.g. from `save_tiny_sdxl_folder`) as one original-format file; load
    it back with `StableDiffusionXLPipeline.from_single_file(path, config=folder)`."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sdxl_ldm_state_dict(folder), str(path))
    return path
