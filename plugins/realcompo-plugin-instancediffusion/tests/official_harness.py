"""Official-code side of the InstanceDiffusion parity harness (helpers only, no tests).

The official InstanceDiffusion code (frank-xwang/InstanceDiffusion, Apache-2.0) is never copied into
this repository. It is imported at test time from a checkout whose path is in the environment
variable ``INSTDIFF_OFFICIAL_SRC`` (pinned commit: ``PINNED_COMMIT``). Everything needed to run it on
CPU, offline, is done here in-process with monkeypatches and ``sys.modules`` stubs (research notes
§4.2, P1-P12); the checkout is never edited.

Set up once::

    git clone https://github.com/frank-xwang/InstanceDiffusion ~/src/InstanceDiffusion
    git -C ~/src/InstanceDiffusion checkout 722900ef03e3579fb693e65a1550333a4a162581
    pip install einops omegaconf               # model, sampler, fake checkpoint
    pip install scikit-image pycocotools       # preprocessing (dataset/decode_item.py)
    export INSTDIFF_OFFICIAL_SRC=~/src/InstanceDiffusion

What is patched or stubbed (in this process only):

- P1 ``text_grounding_net.convnext_tiny`` is wrapped to ignore ``pretrained=True`` (no download);
  every weight is re-randomised anyway. Under ``torch.device("meta")`` it builds the ConvNeXt on
  CPU and moves it to meta (its ``__init__`` calls ``.item()``, which meta tensors refuse).
- P2 ``timm`` (only ``timm.models.layers.trunc_normal_/DropPath`` and
  ``timm.models.registry.register_model`` are used) is stubbed while ``convnext.py`` is imported,
  unless timm is installed.
- P3/P4/P5 the tiny UNet is built with ``efficient_attention=False``, ``use_checkpoint=False`` and
  ``first_conv_restorable=False``.
- P6/P9 no CLIP, no ``inference.py``: phrase embeddings are given as tensors.
- P7 ``utils/model.py`` (``alpha_generator``, ``set_alpha_scale``) is loaded under a private package
  name with its ``.checkpoint`` import (torchvision, tensorboard) stubbed.
- P8 ``dataset/decode_item.py`` and ``utils/input.py`` are loaded under private package names with
  ``torchvision``, ``pandas``, ``cv2`` (and ``tkinter.messagebox`` where tkinter is missing) stubbed
  while they are imported; scikit-image and pycocotools are the real ones.
- P10 everything runs in float32.
- P11 :func:`rerandomize` replaces the official zero inits.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import importlib.util
import os
import sys
import types
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ENV_VAR = "INSTDIFF_OFFICIAL_SRC"
PINNED_COMMIT = "722900ef03e3579fb693e65a1550333a4a162581"
PROFILES = ("box", "mask", "point", "scribble")
MAX_OBJS = 30
N_SCRIBBLE_POINTS = 20
N_POLYGON_POINTS = 256
SEG_SIZE = 512

# Python modules the official model / sampler / preprocessing need, with the pip name to install.
MODEL_DEPS = {"einops": "einops"}
CHECKPOINT_DEPS = {"omegaconf": "omegaconf"}
PREPROCESSING_DEPS = {"skimage": "scikit-image", "pycocotools": "pycocotools"}

# Tiny official UNetModel (research notes §4.3). Structure mirrors SD1.5 in miniature.
TINY_UNET_PARAMS: dict[str, Any] = {
    "image_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 32,
    "num_res_blocks": 2,
    "attention_resolutions": [1, 2],
    "channel_mult": [1, 2, 2],
    "num_heads": 2,
    "transformer_depth": 1,
    "context_dim": 32,
    "fuser_type": "gatedSA",
    "use_checkpoint": False,
    "sd_v1_5": True,
    "efficient_attention": False,
}
TINY_POSITION_NET = {"in_dim": 32, "out_dim": 32, "mid_dim": 64}
FULL_POSITION_NET = {"in_dim": 768, "out_dim": 768, "mid_dim": 3072}


class OfficialUnavailable(RuntimeError):
    """The official checkout or one of its dependencies is missing; the message says how to fix it."""


# ----------------------------------------------------------------------------------------------------
# availability


def official_src() -> Path | None:
    """The checkout named by INSTDIFF_OFFICIAL_SRC, or None when the variable is unset."""
    value = os.environ.get(ENV_VAR, "").strip()
    return Path(value).expanduser().resolve() if value else None


def unavailable_reason(*dep_groups: Mapping[str, str]) -> str | None:
    """None when the official code can be imported with these dependency groups, else why not."""
    src = official_src()
    if src is None:
        return (
            f"official InstanceDiffusion parity tests are off: set {ENV_VAR} to a checkout of "
            f"frank-xwang/InstanceDiffusion (commit {PINNED_COMMIT[:7]}), e.g. "
            f"`git clone https://github.com/frank-xwang/InstanceDiffusion ~/src/InstanceDiffusion && "
            f"export {ENV_VAR}=~/src/InstanceDiffusion`, and `pip install einops omegaconf scikit-image pycocotools`"
        )
    marker = src / "ldm" / "modules" / "diffusionmodules" / "text_grounding_net.py"
    if not marker.is_file():
        return f"{ENV_VAR}={src} is not an InstanceDiffusion checkout (no {marker.relative_to(src)})"
    missing = []
    for group in (MODEL_DEPS, *dep_groups):
        for module, pip_name in group.items():
            if importlib.util.find_spec(module) is None:
                missing.append(pip_name)
    if missing:
        return f"official InstanceDiffusion code needs: pip install {' '.join(sorted(set(missing)))}"
    return None


def _require(*dep_groups: Mapping[str, str]) -> Path:
    reason = unavailable_reason(*dep_groups)
    if reason is not None:
        raise OfficialUnavailable(reason)
    src = official_src()
    assert src is not None
    return src


def checkout_commit() -> str | None:
    """The checkout's commit if it can be read (a .git HEAD or a `.pinned_commit` file), else None."""
    src = official_src()
    if src is None:
        return None
    pinned = src / ".pinned_commit"
    if pinned.is_file():
        return pinned.read_text().strip()
    head = src / ".git" / "HEAD"
    if head.is_file():
        text = head.read_text().strip()
        if text.startswith("ref:"):
            ref = src / ".git" / text.split(" ", 1)[1]
            return ref.read_text().strip() if ref.is_file() else None
        return text
    return None


# ----------------------------------------------------------------------------------------------------
# importing the official code


@contextlib.contextmanager
def _temporary_modules(stubs: Mapping[str, types.ModuleType]) -> Iterator[None]:
    """Put stub modules into sys.modules for the duration of an import, then restore the previous state.

    Stubs must not outlive the import: e.g. a stub `torchvision` without a __spec__ would break
    `importlib.util.find_spec("torchvision")` in diffusers/transformers later."""
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)
    try:
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


def _stub(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


class _StubDropPath(nn.Module):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("harness timm stub: DropPath is only used with drop_path_rate > 0")


def _timm_stubs() -> dict[str, types.ModuleType]:
    if importlib.util.find_spec("timm") is not None:
        return {}
    return {
        "timm": _stub("timm"),
        "timm.models": _stub("timm.models"),
        "timm.models.layers": _stub("timm.models.layers", trunc_normal_=nn.init.trunc_normal_, DropPath=_StubDropPath),
        "timm.models.registry": _stub("timm.models.registry", register_model=lambda fn: fn),
    }


def _missing_module_stubs(names: Sequence[str]) -> dict[str, types.ModuleType]:
    """Empty stubs for the given top-level modules that are not installed (used only at import time)."""
    stubs: dict[str, types.ModuleType] = {}
    for name in names:
        top = name.split(".")[0]
        try:
            present = importlib.util.find_spec(top) is not None
        except (ImportError, ValueError):
            present = False
        if not present:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                stubs.setdefault(".".join(parts[:i]), _stub(".".join(parts[:i])))
    return stubs


def _tkinter_stubs() -> dict[str, types.ModuleType]:
    try:
        importlib.import_module("tkinter.messagebox")
        return {}
    except ImportError:  # tkinter missing (or no _tkinter): decode_item only needs the name NO
        return {"tkinter": _stub("tkinter"), "tkinter.messagebox": _stub("tkinter.messagebox", NO="no")}


def _ensure_src_on_path(src: Path) -> None:
    if str(src) not in sys.path:
        sys.path.append(str(src))  # appended: the checkout must not shadow installed modules


def _check_from_checkout(module: types.ModuleType, src: Path) -> None:
    where = Path(getattr(module, "__file__", "") or "").resolve()
    if src not in where.parents:
        raise OfficialUnavailable(f"{module.__name__} was imported from {where}, not from {ENV_VAR}={src}")


@functools.lru_cache(maxsize=1)
def official() -> types.SimpleNamespace:
    """The official model and sampler modules, imported from the checkout with P1/P2 applied."""
    src = _require()
    _ensure_src_on_path(src)
    with _temporary_modules(_timm_stubs()):
        convnext = importlib.import_module("ldm.modules.diffusionmodules.convnext")
        tgn = importlib.import_module("ldm.modules.diffusionmodules.text_grounding_net")
    ns = types.SimpleNamespace(
        src=src,
        convnext=convnext,
        text_grounding_net=tgn,
        util=importlib.import_module("ldm.modules.diffusionmodules.util"),
        attention=importlib.import_module("ldm.modules.attention"),
        openaimodel=importlib.import_module("ldm.modules.diffusionmodules.openaimodel"),
        ldm_util=importlib.import_module("ldm.util"),
        ldm_diffusion=importlib.import_module("ldm.models.diffusion.ldm"),
        plms=importlib.import_module("ldm.models.diffusion.plms"),
        plms_instance=importlib.import_module("ldm.models.diffusion.plms_instance"),
        grounding_input=importlib.import_module("grounding_input.text_grounding_tokinzer_input"),
    )
    _check_from_checkout(ns.text_grounding_net, src)
    _check_from_checkout(ns.openaimodel, src)

    # P1: UniFusion.__init__ calls convnext_tiny(pretrained=True), which downloads ImageNet weights.
    original = convnext.convnext_tiny
    if not getattr(tgn.convnext_tiny, "_harness_no_download", False):

        def convnext_tiny_offline(pretrained: bool = False, in_22k: bool = False, **kwargs: Any) -> nn.Module:
            if torch.empty(0).device.type == "meta":
                # ConvNeXt.__init__ calls .item() on a linspace, which a meta tensor cannot do.
                with torch.device("cpu"):
                    return original(pretrained=False, in_22k=in_22k, **kwargs).to("meta")
            return original(pretrained=False, in_22k=in_22k, **kwargs)

        convnext_tiny_offline._harness_no_download = True  # type: ignore[attr-defined]
        tgn.convnext_tiny = convnext_tiny_offline
    return ns


def _load_private_package(alias: str, directory: Path) -> types.ModuleType:
    """An empty package named `alias` whose submodules are read from `directory` (relative imports work)."""
    if alias in sys.modules:
        return sys.modules[alias]
    spec = importlib.util.spec_from_loader(alias, loader=None, is_package=True)
    assert spec is not None
    package = importlib.util.module_from_spec(spec)
    package.__path__ = [str(directory)]
    sys.modules[alias] = package
    return package


def _load_private_module(fullname: str, path: Path) -> types.ModuleType:
    if fullname in sys.modules:
        return sys.modules[fullname]
    spec = importlib.util.spec_from_file_location(fullname, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[fullname] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(fullname, None)
        raise
    return module


_UTILS = "_instdiff_official_utils"
_DATASET = "_instdiff_official_dataset"


@functools.lru_cache(maxsize=1)
def official_utils_model() -> types.ModuleType:
    """`utils/model.py` (alpha_generator, set_alpha_scale) with its `.checkpoint` import stubbed (P7).

    Its `transformers` import (CLIPModel, CLIPProcessor) is the real one; nothing here calls CLIP."""
    ns = official()
    _load_private_package(_UTILS, ns.src / "utils")

    def _no_checkpoint(*args: Any, **kwargs: Any) -> None:
        raise OfficialUnavailable("harness stub: utils/checkpoint.py is not loaded")

    sys.modules.setdefault(f"{_UTILS}.checkpoint", _stub(f"{_UTILS}.checkpoint", read_official_ckpt=_no_checkpoint))
    return _load_private_module(f"{_UTILS}.model", ns.src / "utils" / "model.py")


@functools.lru_cache(maxsize=1)
def official_decode_item() -> types.ModuleType:
    """`dataset/decode_item.py` with torchvision / pandas / cv2 (and tkinter if absent) stubbed (P8)."""
    src = _require(PREPROCESSING_DEPS)
    _ensure_src_on_path(src)
    _load_private_package(_DATASET, src / "dataset")
    stubs = {
        **_missing_module_stubs(["torchvision", "torchvision.transforms", "pandas", "cv2"]),
        **_tkinter_stubs(),
    }
    with _temporary_modules(stubs):
        _load_private_module(f"{_DATASET}.base_dataset", src / "dataset" / "base_dataset.py")
        return _load_private_module(f"{_DATASET}.decode_item", src / "dataset" / "decode_item.py")


@functools.lru_cache(maxsize=1)
def official_input_utils() -> types.ModuleType:
    """`utils/input.py` (convert_points, prepare_batch, ...). Its absolute `dataset.*` imports are
    pointed at the private copy of decode_item while it is imported."""
    decode_item = official_decode_item()
    model_mod = official_utils_model()
    src = official().src
    dataset_pkg = sys.modules[_DATASET]
    stubs = {
        **_missing_module_stubs(["torchvision", "torchvision.transforms", "pandas", "cv2"]),
        "dataset": dataset_pkg,
        "dataset.decode_item": decode_item,
    }
    with _temporary_modules(stubs):
        with _temporary_modules({"dataset.jsondataset": _jsondataset(src)}):
            sys.modules.setdefault(f"{_UTILS}.model", model_mod)
            return _load_private_module(f"{_UTILS}.input", src / "utils" / "input.py")


def _jsondataset(src: Path) -> types.ModuleType:
    return _load_private_module(f"{_DATASET}.jsondataset", src / "dataset" / "jsondataset.py")


# ----------------------------------------------------------------------------------------------------
# profiles, models


@functools.cache
def profile_flags(profile: str) -> dict[str, bool]:
    """The `test_drop_*` flags of the official `configs/test_{profile}.yaml` (read from the checkout)."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    import yaml

    src = _require()
    config = yaml.safe_load((src / "configs" / f"test_{profile}.yaml").read_text())
    params = config["model"]["params"]["grounding_tokenizer"]["params"]
    return {k: bool(v) for k, v in params.items() if k.startswith("test_drop_")}


def position_net_config(profile: str, in_dim: int, out_dim: int, mid_dim: int) -> dict[str, Any]:
    """`grounding_tokenizer` config block as in configs/test_{profile}.yaml, with the given sizes."""
    return {
        "target": "ldm.modules.diffusionmodules.text_grounding_net.UniFusion",
        "params": {
            "in_dim": in_dim,
            "out_dim": out_dim,
            "mid_dim": mid_dim,
            "train_add_boxes": True,
            "train_add_points": True,
            "train_add_scribbles": True,
            "train_add_masks": True,
            **profile_flags(profile),
            "use_seperate_tokenizer": True,
        },
    }


def _find_unifusion(module: nn.Module) -> nn.Module:
    cls = official().text_grounding_net.UniFusion
    if isinstance(module, cls):
        return module
    position_net = getattr(module, "position_net", None)
    if isinstance(position_net, cls):
        return position_net
    raise TypeError(f"expected an official UniFusion or UNetModel, got {type(module).__name__}")


def set_profile(module: nn.Module, profile: str) -> nn.Module:
    """Switch the test-time drop flags of an official UniFusion (or the one inside a UNetModel)."""
    net = _find_unifusion(module)
    flags = profile_flags(profile)
    net.test_drop_boxes = flags["test_drop_boxes"]
    net.test_drop_points = flags["test_drop_points"]
    net.test_drop_scribbles = flags["test_drop_scribbles"]
    net.test_drop_masks = flags["test_drop_masks"]
    net.test_drop_segs = flags["test_drop_masks"]  # as in UniFusion.__init__
    return module


def official_position_net(in_dim: int, out_dim: int, mid_dim: int, profile: str = "mask") -> nn.Module:
    """Official UniFusion alone (eval mode, default init: call rerandomize before comparing)."""
    ns = official()
    net = ns.ldm_util.instantiate_from_config(position_net_config(profile, in_dim, out_dim, mid_dim))
    return net.eval()


def official_tiny_unet_config(profile: str = "mask", params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`model:` config block for the tiny official UNetModel + UniFusion (research notes §4.3)."""
    params = dict(TINY_UNET_PARAMS if params is None else params)
    context_dim = params["context_dim"]  # UniFusion's out_dim must equal the UNet's context_dim
    params["grounding_tokenizer"] = position_net_config(profile, context_dim, context_dim, TINY_POSITION_NET["mid_dim"])
    return {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel", "params": params}


def official_tiny_unet(profile: str = "mask", seed: int | None = None) -> nn.Module:
    """Tiny official UNetModel with UniFusion (eval, no checkpointing, no flash attention, no conv_in
    restore). With `seed`, the weights are re-randomised (else a fresh model outputs eps ≡ 0)."""
    ns = official()
    model = ns.ldm_util.instantiate_from_config(official_tiny_unet_config(profile))
    model.grounding_tokenizer_input = ns.grounding_input.GroundingNetInput()
    model.first_conv_restorable = False  # P5
    model.eval()
    if seed is not None:
        rerandomize(model, seed)
    return model


def official_sd15_config(profile: str = "mask") -> dict[str, Any]:
    """The official SD1.5-size `model:` block of configs/test_{profile}.yaml (read from the checkout),
    with use_checkpoint/efficient_attention off (they do not change the state dict)."""
    import yaml

    src = _require()
    config = yaml.safe_load((src / "configs" / f"test_{profile}.yaml").read_text())["model"]
    config["params"].update({"use_checkpoint": False, "efficient_attention": False})
    return config


def official_sd15_key_shapes(profile: str = "mask") -> dict[str, tuple[int, ...]]:
    """Names and shapes of the full-size official UNetModel state dict, built on the meta device
    (no memory, no weights). Regenerates realcompo_plugin_instancediffusion/official_sd15_keys.json."""
    ns = official()
    with torch.device("meta"):
        model = ns.ldm_util.instantiate_from_config(official_sd15_config(profile))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def write_official_sd15_keys(path: str | os.PathLike[str], profile: str = "mask") -> Path:
    """Write the key/shape list in the format of the plugin's official_sd15_keys.json."""
    import json

    shapes = official_sd15_key_shapes(profile)
    commit = (checkout_commit() or PINNED_COMMIT)[:7]
    source = (
        f"frank-xwang/InstanceDiffusion@{commit} configs/test_{profile}.yaml, UNetModel.state_dict() on the meta device"
    )
    rows = ",\n".join(f"  {json.dumps(k)}: {json.dumps(list(v))}" for k, v in shapes.items())
    path = Path(path)
    path.write_text(f'{{"source": {json.dumps(source)},\n"shapes": {{\n{rows}\n}}}}\n')
    return path


@torch.no_grad()
def rerandomize(module: nn.Module, seed: int) -> nn.Module:
    """Research notes §4.3 / P11: reset_parameters everywhere, then give every zero- or one-init
    parameter a non-trivial value so that no comparison passes vacuously.

    norms (LayerNorm, GroupNorm, ConvNeXt's LayerNorm): weight 1+N(0,0.1), bias N(0,0.1);
    alpha_attn/alpha_dense U(0.5,1.5); scaleu_b/s N(0,0.5); null_* N(0,1); pos_embedding N(0,0.02);
    ConvNeXt gamma U(0.1,1)."""
    torch.manual_seed(seed)
    for m in module.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()
    convnext_ln = official().convnext.LayerNorm
    for m in module.modules():
        if isinstance(m, (nn.LayerNorm, nn.GroupNorm, convnext_ln)):
            if getattr(m, "weight", None) is not None:
                m.weight.copy_(1 + 0.1 * torch.randn_like(m.weight))
            if getattr(m, "bias", None) is not None:
                m.bias.copy_(0.1 * torch.randn_like(m.bias))
    for name, p in module.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("alpha_attn", "alpha_dense"):
            p.uniform_(0.5, 1.5)
        elif leaf.startswith("scaleu_"):
            p.normal_(0.0, 0.5)
        elif leaf.startswith("null_"):
            p.normal_(0.0, 1.0)
        elif leaf == "pos_embedding":
            p.normal_(0.0, 0.02)
        elif leaf == "gamma":
            p.uniform_(0.1, 1.0)
    return module


# ----------------------------------------------------------------------------------------------------
# inputs


def make_grounding_inputs(
    n_per_sample: Sequence[int],
    in_dim: int,
    *,
    seed: int = 0,
    scribbles: str = "some",
    polygons: str = "some",
    segs: bool | Sequence[bool] = True,
    seg_size: int = SEG_SIZE,
    max_objs: int = MAX_OBJS,
) -> dict[str, torch.Tensor]:
    """Synthetic padded grounding inputs in the layout of `utils/input.py::prepare_batch`.

    Sample b has n_per_sample[b] real instances in slots 0..n-1; padded slots are all zero (as the
    official batch). `scribbles`/`polygons`: "all", "none" or "some" (even slots only, so real
    instances with and without coordinates are both present). `segs`: per sample (or for all) whether
    the instances get box-shaped binary masks in `segs` (B, 30, seg_size, seg_size).
    Keys: boxes, masks, text_embeddings, points, scribbles, polygons, segs (float32)."""
    g = torch.Generator().manual_seed(seed)
    b = len(n_per_sample)
    seg_flags = [segs] * b if isinstance(segs, bool) else list(segs)
    out = {
        "boxes": torch.zeros(b, max_objs, 4),
        "masks": torch.zeros(b, max_objs),
        "text_embeddings": torch.zeros(b, max_objs, in_dim),
        "points": torch.zeros(b, max_objs, 2),
        "scribbles": torch.zeros(b, max_objs, 2 * N_SCRIBBLE_POINTS),
        "polygons": torch.zeros(b, max_objs, 2 * N_POLYGON_POINTS),
        "segs": torch.zeros(b, max_objs, seg_size, seg_size),
    }

    def wanted(mode: str, i: int) -> bool:
        return mode == "all" or (mode == "some" and i % 2 == 0)

    def sorted_points(n: int, box: torch.Tensor) -> torch.Tensor:
        u = torch.rand(n, 2, generator=g)
        pts = box[:2] + u * (box[2:] - box[:2])
        order = torch.argsort(pts.norm(dim=-1), stable=True)
        return pts[order].reshape(-1)

    for s, n in enumerate(n_per_sample):
        if n > max_objs:
            raise ValueError(f"at most {max_objs} instances per sample")
        for i in range(n):
            xy = torch.rand(2, generator=g) * 0.6
            wh = 0.1 + torch.rand(2, generator=g) * 0.35
            box = torch.cat([xy, (xy + wh).clamp(max=1.0)])
            out["boxes"][s, i] = box
            out["masks"][s, i] = 1.0
            out["text_embeddings"][s, i] = torch.randn(in_dim, generator=g)
            out["points"][s, i] = box[:2] + torch.rand(2, generator=g) * (box[2:] - box[:2])
            if wanted(scribbles, i):
                out["scribbles"][s, i] = sorted_points(N_SCRIBBLE_POINTS, box)
            if wanted(polygons, i):
                out["polygons"][s, i] = sorted_points(N_POLYGON_POINTS, box)
            if seg_flags[s]:
                x0, y0, x1, y1 = (box * seg_size).round().long().tolist()
                out["segs"][s, i, y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)] = 1.0
    return out


def _as_official_batch(inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    batch = dict(inputs)
    if "text_embeddings" not in batch:
        batch["text_embeddings"] = batch["positive_embeddings"]
    return batch


def null_grounding_inputs(
    batch: int, in_dim: int, seg_size: int = SEG_SIZE, max_objs: int = MAX_OBJS
) -> dict[str, torch.Tensor]:
    """All-zero inputs with the shapes of `GroundingNetInput.get_null_input` (the official uncond)."""
    return {
        "boxes": torch.zeros(batch, max_objs, 4),
        "masks": torch.zeros(batch, max_objs),
        "text_embeddings": torch.zeros(batch, max_objs, in_dim),
        "points": torch.zeros(batch, max_objs, 2),
        "scribbles": torch.zeros(batch, max_objs, 2 * N_SCRIBBLE_POINTS),
        "polygons": torch.zeros(batch, max_objs, 2 * N_POLYGON_POINTS),
        "segs": torch.zeros(batch, max_objs, seg_size, seg_size),
    }


# ----------------------------------------------------------------------------------------------------
# running the official model


@torch.no_grad()
def official_objs(position_net: nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """UniFusion forward -> objs (B, 4·30+64, out_dim), token order box, point, scribble, polygon, seg.

    `inputs`: boxes (B,30,4) xyxy in [0,1]; masks (B,30); text_embeddings or positive_embeddings
    (B,30,in_dim); points (B,30,2); scribbles (B,30,40); polygons (B,30,512); segs (B,30,H,W), any H=W
    (the official forward resizes to 512 with mode="nearest"). The official signature is
    forward(boxes, masks, positive_embeddings, scribbles, polygons, segs, points) and it returns
    (objs, drop_box_mask); scribbles and polygons are required (it asserts on scribbles' shape).
    Runs under the module's current mode: eval -> the profile's test_drop flags apply."""
    net = _find_unifusion(position_net)
    batch = _as_official_batch(inputs)
    objs, _drop_box_mask = net(
        batch["boxes"],
        batch["masks"],
        batch["text_embeddings"],
        batch["scribbles"],
        batch["polygons"],
        batch["segs"],
        batch.get("points"),
    )
    return objs


def set_fuser_scale(model: nn.Module, scale: float) -> None:
    """Official `utils/model.py::set_alpha_scale` (scale of every GatedSelfAttentionDense)."""
    official_utils_model().set_alpha_scale(model, scale)


def _timesteps(t: int | torch.Tensor, batch: int) -> torch.Tensor:
    if isinstance(t, torch.Tensor):
        t = t.to(torch.long)
        return t.expand(batch).clone() if t.ndim == 0 or t.numel() == 1 else t
    return torch.full((batch,), int(t), dtype=torch.long)


def _prepare_null_source(model: nn.Module, batch: int, in_dim: int) -> None:
    """get_null_input() takes its shapes from the last prepare(); make sure they fit this batch."""
    gti = model.grounding_tokenizer_input
    if not gti.set or gti.batch != batch:
        gti.prepare(null_grounding_inputs(batch, in_dim))


@torch.no_grad()
def official_eps(
    model: nn.Module,
    x: torch.Tensor,
    t: int | torch.Tensor,
    context: torch.Tensor,
    grounding_input: Mapping[str, torch.Tensor] | None = None,
    fuser_scale: float = 1.0,
) -> torch.Tensor:
    """One official UNetModel forward. With `grounding_input` (keys as in official_objs) it goes
    through `GroundingNetInput.prepare` like inference.py; with None it is the official uncond path:
    the model calls `get_null_input()` itself (all-zero boxes/masks/embeddings/scribbles/polygons/segs).
    `fuser_scale` is applied with the official `set_alpha_scale` (0 = fusers off; ScaleU stays on)."""
    set_fuser_scale(model, fuser_scale)
    batch = x.shape[0]
    inp: dict[str, Any] = {"x": x, "timesteps": _timesteps(t, batch), "context": context}
    if grounding_input is not None:
        inp["grounding_input"] = model.grounding_tokenizer_input.prepare(_as_official_batch(grounding_input))
    else:
        _prepare_null_source(model, batch, model.position_net.in_dim)
    return model(inp)


@torch.no_grad()
def official_cfg_eps(
    model: nn.Module,
    x: torch.Tensor,
    t: int | torch.Tensor,
    context: torch.Tensor,
    uncond_context: torch.Tensor,
    grounding_input: Mapping[str, torch.Tensor],
    guidance_scale: float = 7.5,
    fuser_scale: float = 1.0,
) -> torch.Tensor:
    """Classifier-free guidance as in plms.py: two separate calls, eps_u + g·(eps_c − eps_u)."""
    eps_c = official_eps(model, x, t, context, grounding_input, fuser_scale)
    eps_u = official_eps(model, x, t, uncond_context, None, fuser_scale)
    return eps_u + guidance_scale * (eps_c - eps_u)


def official_diffusion(linear_start: float = 0.00085, linear_end: float = 0.012, timesteps: int = 1000) -> nn.Module:
    """The official diffusion schedule object (configs/test_*.yaml `diffusion:`)."""
    return official().ldm_diffusion.LatentDiffusion(
        linear_start=linear_start, linear_end=linear_end, timesteps=timesteps
    )


@torch.no_grad()
def official_sample(
    model: nn.Module,
    x_T: torch.Tensor,
    context: torch.Tensor,
    uncond_context: torch.Tensor,
    grounding_input: Mapping[str, torch.Tensor],
    *,
    steps: int = 10,
    guidance_scale: float = 7.5,
    alpha: float = 1.0,
    mis: float = 0.0,
    instance_inputs: Sequence[tuple[torch.Tensor, Mapping[str, torch.Tensor]]] = (),
    diffusion: nn.Module | None = None,
    record: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Official PLMS sampling as inference.py::run does it (fp32, CPU), returning the final latent.

    alpha -> `alpha_generator(type=[alpha, 0, 1-alpha])` + `set_alpha_scale`; mis > 0 ->
    `PLMSSamplerInst` over [full input] + `instance_inputs` (each (context_i, grounding_i), e.g.
    instance i's phrase as prompt and instance i alone in slot 0), else `PLMSSampler`. Every
    trajectory starts from `x_T`. With `record`, the latent after each outer step of the trajectory
    that continues (input 0) is appended (record[0] = after the first, two-call, step)."""
    ns = official()
    utils_model = official_utils_model()
    diffusion = official_diffusion() if diffusion is None else diffusion
    alpha_fn = functools.partial(utils_model.alpha_generator, type=[alpha, 0.0, 1 - alpha])
    gti = model.grounding_tokenizer_input

    def make_input(ctx: torch.Tensor, grounding: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        return {
            "x": x_T.clone(),
            "timesteps": None,
            "context": ctx,
            "grounding_input": gti.prepare(_as_official_batch(grounding)),
        }

    full = make_input(context, grounding_input)
    if mis > 0:
        inputs: Any = [full] + [make_input(c, gi) for c, gi in instance_inputs]
        sampler = ns.plms_instance.PLMSSamplerInst(
            diffusion, model, alpha_generator_func=alpha_fn, set_alpha_scale=utils_model.set_alpha_scale, mis=mis
        )
    else:
        inputs = full
        sampler = ns.plms.PLMSSampler(
            diffusion, model, alpha_generator_func=alpha_fn, set_alpha_scale=utils_model.set_alpha_scale
        )
    if record is not None:
        inner = sampler.p_sample_plms

        def recording(input: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            out = inner(input, *args, **kwargs)
            if input is full:
                record.append(out[0].clone())
            return out

        sampler.p_sample_plms = recording
    try:
        return sampler.sample(
            S=steps, shape=tuple(x_T.shape), input=inputs, uc=uncond_context, guidance_scale=guidance_scale
        )
    finally:
        set_fuser_scale(model, 1.0)


# ----------------------------------------------------------------------------------------------------
# state dicts, fake checkpoint


def official_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with the official key names (no prefix), detached copies."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def official_config(profile: str = "mask", model_config: Mapping[str, Any] | None = None) -> Any:
    """An OmegaConf config like configs/test_{profile}.yaml, with `model:` replaced (default: tiny)."""
    from omegaconf import OmegaConf

    src = _require(CHECKPOINT_DEPS)
    cfg = OmegaConf.load(src / "configs" / f"test_{profile}.yaml")
    cfg.model = OmegaConf.create(copy.deepcopy(dict(model_config or official_tiny_unet_config(profile))))
    return cfg


def write_fake_official_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    profile: str = "mask",
    model_config: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """torch.save({"model": sd, "ema": sd, "config_dict": vars(<OmegaConf DictConfig>)}) like the
    official trainer (utils/misc.py::save_config stores `vars(config)`, whose `_content` holds
    omegaconf node objects; utils/checkpoint.py::load_model_ckpt reads config_dict["_content"]).
    So the pickle contains omegaconf classes and `torch.load(weights_only=True)` refuses it unless
    they are allow-listed or stubbed (research notes §2.4, T9)."""
    sd = official_state_dict(model)
    cfg = official_config(profile, model_config)
    payload: dict[str, Any] = {"model": sd, "ema": sd, "config_dict": vars(cfg)}
    payload.update(extra or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


# ----------------------------------------------------------------------------------------------------
# preprocessing (dataset/decode_item.py, utils/input.py)


def _as_hw1(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    return mask[:, :, None] if mask.ndim == 2 else mask


def official_sample_sparse_points_from_mask(mask: np.ndarray, k: int = N_POLYGON_POINTS) -> np.ndarray | None:
    """decode_item.sample_sparse_points_from_mask(mask[:, :, None], k) as (k, 2) (x, y) pixel
    coordinates (boundary points carry the +1 offset of the padding), or None without a contour.
    The random path (fewer than k/2 foreground pixels) uses Python's `random`: seed it first."""
    out = official_decode_item().sample_sparse_points_from_mask(_as_hw1(mask).astype(np.int64), k)
    return None if out is None else np.asarray(out, dtype=np.float64).reshape(-1, 2)


def official_reorder_scribbles(points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """decode_item.reorder_scribbles(points) as (20, 2); the official function hard-codes 20 points."""
    pts = [list(map(float, p)) for p in np.asarray(points, dtype=np.float64).reshape(-1, 2)]
    return np.asarray(official_decode_item().reorder_scribbles(pts), dtype=np.float64).reshape(-1, 2)


def official_sample_random_points_from_mask(
    mask: np.ndarray, k: int = N_SCRIBBLE_POINTS, seed: int | None = None
) -> np.ndarray:
    """decode_item.sample_random_points_from_mask(mask[:, :, None], k) as (k, 2); it draws from the
    global `np.random` (seeded here with `seed` if given)."""
    if seed is not None:
        np.random.seed(seed)
    out = official_decode_item().sample_random_points_from_mask(_as_hw1(mask), k)
    return np.asarray(out, dtype=np.float64).reshape(-1, 2)


def official_decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """decode_item.decodeToBinaryMask(rle): (H, W, 1) bool from a COCO RLE {"size": [h, w], "counts"}."""
    return official_decode_item().decodeToBinaryMask(dict(rle))


def official_convert_points(points: Sequence[float], width: int, height: int) -> list[float]:
    """utils/input.py::convert_points: flat [x0, y0, x1, y1, ...] pixels -> /width, /height, min 1."""
    return official_input_utils().convert_points(list(points), {"width": width, "height": height})


def official_alpha_schedule(num_steps: int, alpha: float) -> list[float]:
    """utils/model.py::alpha_generator(num_steps, [alpha, 0, 1 - alpha]) (fuser scale per step)."""
    return list(official_utils_model().alpha_generator(num_steps, type=[alpha, 0.0, 1 - alpha]))


__all__ = [
    "CHECKPOINT_DEPS",
    "ENV_VAR",
    "FULL_POSITION_NET",
    "MAX_OBJS",
    "MODEL_DEPS",
    "PINNED_COMMIT",
    "PREPROCESSING_DEPS",
    "PROFILES",
    "TINY_POSITION_NET",
    "TINY_UNET_PARAMS",
    "OfficialUnavailable",
    "checkout_commit",
    "make_grounding_inputs",
    "null_grounding_inputs",
    "official",
    "official_alpha_schedule",
    "official_cfg_eps",
    "official_config",
    "official_convert_points",
    "official_decode_item",
    "official_decode_rle",
    "official_diffusion",
    "official_eps",
    "official_input_utils",
    "official_objs",
    "official_position_net",
    "official_reorder_scribbles",
    "official_sample",
    "official_sample_random_points_from_mask",
    "official_sample_sparse_points_from_mask",
    "official_sd15_config",
    "official_sd15_key_shapes",
    "official_src",
    "official_state_dict",
    "official_tiny_unet",
    "official_tiny_unet_config",
    "official_utils_model",
    "position_net_config",
    "profile_flags",
    "rerandomize",
    "set_fuser_scale",
    "set_profile",
    "unavailable_reason",
    "write_fake_official_checkpoint",
    "write_official_sd15_keys",
]
