"""Load SD3 / Flux pipelines and ControlNets from diffusers folders or hub ids, with errors that say
what was found; read their latent facts from config files before any weights load."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from realcompo_sdk.diffusers_loading import check_model_reference, config_reader, describe_folder, low_memory_kwargs
from realcompo_sdk.errors import RealCompoError
from realcompo_sdk.interfaces import LatentSpec
from realcompo_sdk.mmdit_adapter import latent_spec_for_transformer

# model family -> (pipeline class names of its folders, how it packs latents into tokens)
FAMILIES = {
    "sd3": ("StableDiffusion3Pipeline", "StableDiffusion3ControlNetPipeline"),
    "flux": ("FluxPipeline", "FluxControlNetPipeline"),
}
CONTROLNET_CLASSES = {"sd3": "SD3ControlNetModel", "flux": "FluxControlNetModel"}


def folder_family(path: Path) -> str | None:
    """'sd3', 'flux', another pipeline's class name, or None when the folder has no model_index.json."""
    index = path / "model_index.json"
    if not index.exists():
        return None
    found = json.loads(index.read_text()).get("_class_name", "")
    for family, classes in FAMILIES.items():
        if found in classes:
            return family
    return found or "unknown"


def check_folder(model: str, family: str, adapter_id: str) -> Path | None:
    """Refuse, before loading, a local folder of another model family; None for a hub id."""
    path = check_model_reference(model)
    if not path.exists():
        return None
    if path.is_file():
        raise RealCompoError(f"adapter {adapter_id!r} loads diffusers folders or hub ids, not single files ({path.name}); "
                             "convert it with diffusers' from_single_file(...).save_pretrained(folder)")
    found = folder_family(path)
    if found != family:
        wanted = " or ".join(FAMILIES[family])
        raise RealCompoError(f"adapter {adapter_id!r} cannot load {model}: it is {describe_folder(path)}, not a {wanted} folder. "
                             + ("Use 'flux' for Flux folders." if found == "flux" else
                                "Use 'sd3' for SD3 folders." if found == "sd3" else
                                "Use 'sd' / 'sdxl' for Stable Diffusion 1.x, 2.x and SDXL folders."))
    return path


def _read(path: Path, *parts: str) -> dict[str, Any] | None:
    try:
        return json.loads(path.joinpath(*parts).read_text())
    except (OSError, ValueError):
        return None


def read_config(model: str | None, *subfolder: str) -> dict[str, Any] | None:
    """The `config.json` (in `subfolder`) of a local folder or of a hub model already in the local
    Hugging Face cache; None otherwise (never touches the network)."""
    read = config_reader(model)
    return read(*subfolder, "config.json") if read is not None else None


# Every SD3 / SD3.5 pipeline ships the same VAE, and every FLUX.1 pipeline another: a hub id of the
# family that is not in the local cache has these latent facts (the loaded models are compared again).
FAMILY_SPECS = {
    "sd3": LatentSpec(channels=16, vae_scale_factor=8, scaling_factor=1.5305, shift_factor=0.0609, prediction_type="flow",
                      default_resolution=(1024, 1024), family="sd3", resolution_multiple=16),
    "flux": LatentSpec(channels=16, vae_scale_factor=8, scaling_factor=0.3611, shift_factor=0.1159, prediction_type="flow",
                       default_resolution=(1024, 1024), family="flux", resolution_multiple=16),
}


def peek_spec(model: str | None, family: str) -> LatentSpec | None:
    """The latent facts of an SD3 / Flux model from its config files (a local folder, or a hub id
    in the local cache), else the family's for an uncached hub id; None for a folder of another
    kind or one this cannot read (the loader then reports what is wrong)."""
    read = config_reader(model)
    if read is None:
        return FAMILY_SPECS[family] if model is not None and model.count("/") == 1 and not Path(model).exists() else None
    index = read("model_index.json")
    if index is None:
        return None if Path(str(model)).expanduser().exists() else FAMILY_SPECS[family]
    if index.get("_class_name") not in FAMILIES[family]:
        return None
    vae, transformer = read("vae", "config.json"), read("transformer", "config.json")
    scheduler = read("scheduler", "scheduler_config.json")
    if vae is None or transformer is None or scheduler is None:
        return None
    return spec_from_configs(vae, transformer, scheduler, family)


def spec_from_configs(vae: Any, transformer: Any, scheduler: dict[str, Any], family: str,
                      default_size: int | None = None) -> LatentSpec:
    """SD3 patchifies latents with the transformer's patch_size; Flux packs 2×2 latent cells into one
    token (its transformer's in_channels are 4 × the latent channels) and its config names no
    default size (`default_size` pixels, 1024 for FLUX.1)."""
    get = (lambda c, k, d=None: c.get(k, d)) if isinstance(transformer, dict) else (lambda c, k, d=None: getattr(c, k, d))
    if family == "flux":
        patch, channels = 2, get(transformer, "in_channels") // 4
    else:
        patch, channels = get(transformer, "patch_size", 2), get(transformer, "out_channels") or get(transformer, "in_channels")
    spec = latent_spec_for_transformer(vae, transformer, scheduler, family=family, patch_size=patch, channels=channels)
    if family == "flux":
        size = (default_size or 1024) // spec.resolution_multiple * spec.resolution_multiple
        spec = dataclasses.replace(spec, default_resolution=(size, size))
    return spec


@contextlib.contextmanager
def _quiet_dtype_rename() -> Iterator[None]:
    """Silence two FutureWarnings about diffusers' own code, which our users cannot act on: the
    `torch_dtype` → `dtype` rename (the old name works in every supported version) and the Flux
    ControlNet building its position embedding from a deprecated import path."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch_dtype.*deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*FluxPosEmbed.*deprecated", category=FutureWarning)
        yield


def load_pipeline(family: str, model: str, dtype: torch.dtype, *, adapter_id: str, variant: str | None = None,
                  **components: Any) -> Any:
    """The diffusers pipeline of `model` (its VAE, text encoders, tokenizers, transformer, scheduler);
    `components` replace parts (``text_encoder_3=None`` skips SD3's T5)."""
    import diffusers

    check_folder(model, family, adapter_id)
    cls = getattr(diffusers, FAMILIES[family][0])
    try:
        with _quiet_dtype_rename():
            return cls.from_pretrained(model, torch_dtype=dtype, variant=variant, **components, **low_memory_kwargs())
    except OSError as exc:
        raise RealCompoError(f"adapter {adapter_id!r}: could not load {model!r}: {exc}") from exc


def check_controlnet_folder(family: str, source: str, adapter_id: str) -> None:
    """Refuse a local folder that is not this family's ControlNet, naming what it is."""
    cls_name = CONTROLNET_CLASSES[family]
    path = check_model_reference(source)
    if path.exists():
        config = _read(path, "config.json")
        found = config.get("_class_name") if config else None
        if found != cls_name:
            what = f"a diffusers {found} folder" if found else describe_folder(path)
            raise RealCompoError(f"adapter {adapter_id!r} cannot load ControlNet {source}: it is {what}, not a {cls_name} "
                                 f"folder. Pass the ControlNet as controlnet=... and the {family} model as base=...")


def load_controlnet(family: str, source: str, dtype: torch.dtype, *, adapter_id: str, variant: str | None = None) -> Any:
    """An `SD3ControlNetModel` / `FluxControlNetModel` from a folder or hub id."""
    import diffusers

    cls_name = CONTROLNET_CLASSES[family]
    check_controlnet_folder(family, source, adapter_id)
    try:
        with _quiet_dtype_rename():
            return getattr(diffusers, cls_name).from_pretrained(source, torch_dtype=dtype, variant=variant, **low_memory_kwargs())
    except OSError as exc:
        raise RealCompoError(f"adapter {adapter_id!r}: could not load ControlNet {source!r}: {exc}") from exc
