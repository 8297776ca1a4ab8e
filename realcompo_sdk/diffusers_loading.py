"""Load the parts of a Stable-Diffusion-style model (folder, hub id or single file) for adapters.

One code path for hub ids and local folders (tests use tiny folders, users use the hub), with
errors that say what was found when a folder is missing or of the wrong kind.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import RealCompoError
from .interfaces import LatentSpec


@dataclass
class SDComponents:
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict[str, Any]


def describe_folder(path: Path) -> str:
    """What a folder looks like, for error messages."""
    if (path / "model_index.json").exists():
        index = json.loads((path / "model_index.json").read_text())
        return f"a diffusers {index.get('_class_name', 'pipeline')} folder with {sorted(k for k in index if not k.startswith('_'))}"
    entries = sorted(p.name for p in path.iterdir())[:10]
    return f"a folder containing {entries or 'nothing'}"


def folder_kind(model: str) -> str | None:
    """'sd', 'sdxl', 'gligen', 'instancediffusion' for a local diffusers folder, None for a hub id."""
    path = Path(model).expanduser()
    if not path.exists():
        return None
    if path.is_file():
        return "single-file"
    unet_config = path / "unet" / "config.json"
    if not unet_config.exists():
        raise RealCompoError(f"{path} is not a Stable Diffusion model folder (no unet/config.json): it is {describe_folder(path)}")
    if (path / "text_encoder_2").exists():
        return "sdxl"
    if (path / "instancediffusion.json").exists():  # a gated UNet with InstanceDiffusion's position net
        return "instancediffusion"
    config = json.loads(unet_config.read_text())
    return "gligen" if config.get("attention_type") == "gated" else "sd"


def expect_kind(model: str, wanted: set[str], adapter_id: str, hint: str) -> None:
    kind = folder_kind(model)
    if kind is not None and kind not in wanted:
        raise RealCompoError(
            f"adapter {adapter_id!r} cannot load {model}: it is a {kind} model folder ({describe_folder(Path(model))}). {hint}"
        )


def check_model_reference(model: str) -> Path:
    """Refuse, before any loading, a missing file or folder, a pickle checkpoint, or a malformed
    hub id. Returns the path (which may name a hub id rather than a local path)."""
    path = Path(model).expanduser()
    if path.suffix in {".safetensors", ".ckpt"}:
        if not path.exists():
            raise RealCompoError(f"checkpoint file {path} does not exist")
        if path.suffix == ".ckpt":
            raise RealCompoError(f"{path.name}: .ckpt files are pickles that can run code; convert it to .safetensors first")
    elif not path.exists() and (model.startswith((".", "/", "~")) or model.count("/") != 1):
        raise RealCompoError(f"model {model!r} is neither an existing folder nor a hub id of the form 'owner/name'")
    return path


def config_reader(model: str | None) -> Callable[..., dict[str, Any] | None] | None:
    """`read(*parts)` → the JSON file at `parts` of a local diffusers folder, or of a hub model
    already in the local Hugging Face cache (never the network); None for anything else. A file
    that is missing or unreadable reads as None."""
    if model is None:
        return None
    path = Path(model).expanduser()
    if path.is_dir():
        def read_local(*parts: str) -> dict[str, Any] | None:
            try:
                return json.loads(path.joinpath(*parts).read_text())
            except (OSError, ValueError):
                return None
        return read_local
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") != 1:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None

    def read_cached(*parts: str) -> dict[str, Any] | None:
        try:
            found = try_to_load_from_cache(model, "/".join(parts))
            return json.loads(Path(found).read_text()) if isinstance(found, str) else None
        except (OSError, ValueError):
            return None
    return read_cached


def read_latent_spec(model: str | None) -> LatentSpec | None:
    """The latent facts of a diffusers folder — local, or a hub id whose configs are in the local
    Hugging Face cache — read from its config files (no weights, no network); None when that
    cannot be known so cheaply (the loader reports what is wrong)."""
    from types import SimpleNamespace

    from .unet_adapter import latent_spec_from

    read = config_reader(model)
    if read is None:
        return None
    unet, vae = read("unet", "config.json"), read("vae", "config.json")
    scheduler, text_encoder = read("scheduler", "scheduler_config.json"), read("text_encoder", "config.json")
    if unet is None or vae is None or scheduler is None or text_encoder is None:
        return None
    index = read("model_index.json") or {}
    sdxl = "text_encoder_2" in index or read("text_encoder_2", "config.json") is not None
    family = "sdxl" if sdxl else "sd2" if text_encoder.get("hidden_size") == 1024 else "sd1"
    vae.setdefault("scaling_factor", 0.18215)  # diffusers' AutoencoderKL default
    unet.setdefault("sample_size", 64)
    try:
        return latent_spec_from(SimpleNamespace(**vae), SimpleNamespace(**unet), scheduler, family=family)
    except (AttributeError, TypeError, KeyError):
        return None


def low_memory_kwargs() -> dict[str, Any]:
    """Keyword arguments for a diffusers `from_pretrained`. `accelerate` is a dependency (low-memory
    loading); where it was removed, ask for the plain load that diffusers falls back to anyway, so
    it does not print a multi-line warning per model."""
    import importlib.util

    return {} if importlib.util.find_spec("accelerate") else {"low_cpu_mem_usage": False}


def load_sd_components(model: str, dtype: torch.dtype, *, variant: str | None = None,
                       single_file_config: str | None = None) -> SDComponents:
    """UNet, VAE, text encoder, tokenizer and scheduler config of an SD 1.x/2.x model."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    path = check_model_reference(model)
    if path.suffix == ".safetensors":
        from diffusers import StableDiffusionPipeline

        kwargs = {"config": single_file_config} if single_file_config else {}
        pipe = StableDiffusionPipeline.from_single_file(str(path), torch_dtype=dtype, safety_checker=None, **kwargs)
        return SDComponents(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, dict(pipe.scheduler.config))
    common = {"torch_dtype": dtype, "variant": variant}
    try:
        unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", **common, **low_memory_kwargs())
        vae = AutoencoderKL.from_pretrained(model, subfolder="vae", **common, **low_memory_kwargs())
        text_encoder = CLIPTextModel.from_pretrained(model, subfolder="text_encoder", **common)
        tokenizer = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer")
        scheduler_config = dict(DDIMScheduler.load_config(model, subfolder="scheduler"))
    except OSError as exc:
        raise RealCompoError(f"could not load model {model!r}: {exc}") from exc
    return SDComponents(unet, vae, text_encoder, tokenizer, scheduler_config)
