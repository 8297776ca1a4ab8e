"""Convert the official `instancediffusion_sd15.pth` into a safetensors folder, without pickle code.

The released file is a training pickle (model, EMA, optimizer, VAE, text encoder and an OmegaConf
config). It is read with `torch.load(weights_only=True)`: tensors and plain containers only. The
few non-tensor globals the pickle names (OmegaConf's config classes, `typing.Any`, ...) are bound
to an inert stand-in class that accepts and discards whatever state it is given; a global outside
the known harmless modules (for example `os.system` in a crafted file) stops the conversion.

Then: take `ema` (default) or `model`; split it into the base UNet + fusers (mapped from the
original LDM names with diffusers' converter; fuser names carry through), `position_net.*` (same
names in our module) and `scaleu_{b,s}_{k}`; load everything strictly into our UNet; optionally
compare the base with SD1.5's UNet; write the folder (`unet.py` documents the format).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from .sampler import official_scheduler
from .unet import SD15_POSITION_NET_CONFIG, SD15_UNET_CONFIG, build_instdiff_unet, save_instdiff_unet

# Globals a config pickle may name that are safe to replace by an inert object.
HARMLESS_GLOBAL_PREFIXES = ("omegaconf.", "typing.", "collections.", "enum.", "pathlib.", "argparse.")
# Plain builtin types (OmegaConf's metadata names them as value types); allowed as themselves.
BUILTIN_TYPES = {f"builtins.{t.__name__}": t for t in (dict, list, tuple, set, frozenset, int, float, str, bool, bytes, object)}
LDM_PREFIX = "model.diffusion_model."
CONVERTER_VERSION = 1


class ConversionError(RuntimeError):
    """The checkpoint cannot be converted; the message says why and what to do."""


class InertStandIn:
    """Replaces a non-tensor class of the pickle: swallows construction and state."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> InertStandIn:
        return InertStandIn()

    def __getitem__(self, key: Any) -> InertStandIn:  # `typing.Dict[str, Any]`-style subscripts
        return InertStandIn()


def _stand_in(qualified_name: str) -> type:
    return type(qualified_name.rsplit(".", 1)[-1], (InertStandIn,), {"__module__": "realcompo_stand_in"})


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's top-level dict, loaded with weights_only=True; unknown globals → error."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"checkpoint {path} does not exist")
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as exc:  # not a zip-format torch file
        raise ConversionError(f"{path} is not a torch checkpoint in zip format ({type(exc).__name__}: {exc})") from exc
    refused = [n for n in names if n not in BUILTIN_TYPES and not n.startswith(HARMLESS_GLOBAL_PREFIXES)]
    if refused:
        raise ConversionError(
            f"{path.name} references Python objects that a weights-only load must not create: {', '.join(refused)}. "
            "The official checkpoint only holds tensors and an OmegaConf config; this file is different — "
            "do not load it unless you trust its source and know why it contains these."
        )
    stand_ins = [(BUILTIN_TYPES[n], n) if n in BUILTIN_TYPES else (_stand_in(n), n) for n in names]
    with torch.serialization.safe_globals(stand_ins):
        try:
            return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except Exception as exc:
            raise ConversionError(f"could not load {path.name} with weights_only=True: {exc}") from exc


def pick_state_dict(checkpoint: dict[str, Any], source: str = "ema") -> dict[str, torch.Tensor]:
    """The UNet weights: `ema` (what the official inference loads first) or `model`."""
    if not isinstance(checkpoint, dict):
        raise ConversionError(f"expected a dict checkpoint, got {type(checkpoint).__name__}")
    candidates = [source] + [k for k in ("ema", "model") if k != source]
    for key in candidates:
        value = checkpoint.get(key)
        if isinstance(value, dict) and any(k.startswith("input_blocks.") for k in value):
            if key != source:
                raise ConversionError(f"the checkpoint has no {source!r} weights; it has {key!r} — pass --source {key}")
            return {k: v for k, v in value.items() if isinstance(v, torch.Tensor)}
    raise ConversionError(
        f"no UNet weights found: expected an 'ema' or 'model' entry with 'input_blocks.*' keys; top-level keys are {sorted(checkpoint)}"
    )


def split_state_dict(official: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(base UNet + fusers, position net, ScaleU) with the official names."""
    base, position, scaleu = {}, {}, {}
    for key, value in official.items():
        if key.startswith("position_net."):
            position[key] = value
        elif key.startswith("scaleu_"):
            scaleu[key] = value
        else:
            base[key] = value
    return base, position, scaleu


def convert_official_state_dict(official: dict[str, torch.Tensor], unet_config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Official UNetModel state dict → the state dict of `build_instdiff_unet(unet_config)`."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    base, position, scaleu = split_state_dict(official)
    converted = convert_ldm_unet_checkpoint({LDM_PREFIX + k: v for k, v in base.items()}, dict(unet_config))
    if len(converted) != len(base):
        raise ConversionError(f"the base UNet has {len(base)} tensors but {len(converted)} were mapped; is this an SD1.x InstanceDiffusion checkpoint?")
    converted.update(position)
    converted.update({f"instdiff_scaleu.{k}": v for k, v in scaleu.items()})
    return converted


def check_against_model(state: dict[str, torch.Tensor], unet: torch.nn.Module) -> None:
    """Same keys and shapes as `unet`, or a ConversionError listing the differences."""
    expected = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    if missing or unexpected or mismatched:
        def head(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5})" if len(keys) > 5 else "")

        raise ConversionError(
            f"converted weights do not fit the InstanceDiffusion UNet: {len(missing)} missing [{head(missing)}], "
            f"{len(unexpected)} unexpected [{head(unexpected)}], {len(mismatched)} with another shape "
            f"[{', '.join(f'{k} {tuple(state[k].shape)} vs {expected[k]}' for k in mismatched[:5])}]"
        )


def compare_with_sd15(state: dict[str, torch.Tensor], sd15_unet_state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Does the base UNet inside the checkpoint equal SD1.5's (it was frozen during training)?"""
    differing = [k for k, v in sd15_unet_state.items() if k not in state or not torch.equal(state[k].float(), v.float())]
    return {
        "base_matches_sd15": not differing,
        "conv_in_matches_sd15": not any(k.startswith("conv_in.") for k in differing),
        "differing_tensors": differing[:20],
    }


def sha256(path: Path, chunk: int = 1 << 24, progress: bool = False) -> str:
    """Hex digest of a file (a progress bar for the 13.6 GB checkpoint when `progress`)."""
    from tqdm.auto import tqdm

    digest = hashlib.sha256()
    with path.open("rb") as f, tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc="sha256",
                                     disable=not progress) as bar:  # fmt: skip
        while block := f.read(chunk):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


OFFICIAL_KEYS_FILE = Path(__file__).with_name("official_sd15_keys.json")


def official_sd15_key_shapes() -> dict[str, tuple[int, ...]]:
    """Names and shapes of every tensor of the official SD1.5 InstanceDiffusion UNet state dict.

    A list of facts about the checkpoint format (no weights, no code), recorded by running the
    official model definition on the meta device: tests/official_harness.py regenerates it."""
    data = json.loads(OFFICIAL_KEYS_FILE.read_text())
    return {k: tuple(v) for k, v in data["shapes"].items()}


def shapes_only_report(official_shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, Any]:
    """Dry run at full size on the meta device: map the official names and shapes (a checkpoint's,
    or the recorded list) onto our UNet. Raises ConversionError on any missing, unexpected or
    mis-shaped tensor; returns tensor and parameter counts."""
    official_shapes = official_sd15_key_shapes() if official_shapes is None else official_shapes
    with torch.device("meta"):
        unet = build_instdiff_unet(SD15_UNET_CONFIG, SD15_POSITION_NET_CONFIG)
        official = {k: torch.empty(shape) for k, shape in official_shapes.items()}
        state = convert_official_state_dict(official, SD15_UNET_CONFIG)
    check_against_model(state, unet)
    return {
        "tensors": len(state),
        "parameters": {
            "fusers": sum(v.numel() for k, v in state.items() if ".fuser." in k),
            "position_net": sum(v.numel() for k, v in state.items() if k.startswith("position_net.")),
            "scaleu": sum(v.numel() for k, v in state.items() if k.startswith("instdiff_scaleu.")),
            "total": sum(v.numel() for v in state.values()),
        },
    }


def convert_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    *,
    source: str = "ema",
    sd15: str | None = None,
    dtype: torch.dtype = torch.float16,
    overwrite: bool = False,
    log: Any = print,
    unet_config: dict[str, Any] = SD15_UNET_CONFIG,
    position_net_config: dict[str, Any] = SD15_POSITION_NET_CONFIG,
    progress: bool = False,
) -> dict[str, Any]:
    """The whole conversion; returns the record written to `instancediffusion.json`. The configs
    default to the released SD1.5 model (tests convert tiny models)."""
    checkpoint, out = Path(checkpoint), Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConversionError(f"{out} exists and is not empty; choose a new folder or pass --overwrite")
    log(f"reading {checkpoint.name} (weights only) ...")
    raw = load_training_checkpoint(checkpoint)
    top_level = sorted(raw) if isinstance(raw, dict) else []
    official = pick_state_dict(raw, source)
    del raw
    log(f"top-level keys {top_level}; using {source!r}: {len(official)} tensors")
    state = convert_official_state_dict(official, unet_config)
    with torch.device("meta"):
        unet = build_instdiff_unet(unet_config, position_net_config)
    check_against_model(state, unet)
    unet.load_state_dict(state, strict=True, assign=True)
    unet.instdiff_scaleu.attach(unet)
    record: dict[str, Any] = {
        "format": "realcompo-instancediffusion",
        "converter_version": CONVERTER_VERSION,
        "position_net": position_net_config,
        "source": {"file": checkpoint.name, "sha256": sha256(checkpoint, progress=progress), "weights": source,
                   "top_level_keys": top_level},
        "dtype": str(dtype).removeprefix("torch."),
    }
    if sd15 is not None:
        from diffusers import UNet2DConditionModel

        log(f"comparing the base UNet with {sd15} ...")
        reference = UNet2DConditionModel.from_pretrained(sd15, subfolder="unet", torch_dtype=torch.float32).state_dict()
        record["sd15_check"] = {"reference": sd15, **compare_with_sd15(state, reference)}
        log(f"base equals SD1.5: {record['sd15_check']['base_matches_sd15']}")
    out.mkdir(parents=True, exist_ok=True)
    save_instdiff_unet(unet, out, record, dtype=dtype)
    if sd15 is not None:
        copy_sd15_components(sd15, out)
    log(f"wrote {out}")
    return record


def copy_sd15_components(sd15: str, out: Path) -> None:
    """VAE, text encoder, tokenizer and scheduler: frozen SD1.5 parts, saved beside the UNet."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    AutoencoderKL.from_pretrained(sd15, subfolder="vae").save_pretrained(out / "vae")
    CLIPTextModel.from_pretrained(sd15, subfolder="text_encoder").save_pretrained(out / "text_encoder")
    CLIPTokenizer.from_pretrained(sd15, subfolder="tokenizer").save_pretrained(out / "tokenizer")
    official_scheduler().save_pretrained(out / "scheduler")
