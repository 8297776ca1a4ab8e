"""Shared machinery for adapters built on a diffusers `UNet2DConditionModel` + CLIP text encoder.

Subclasses load their models (from a folder, a hub id, a single file, or memory) and call
`setup_models`; this class then provides everything the balancer asks of an adapter: batched CFG
noise, differentiable cross-attention maps with an early stop, token positions and schedulers.

Conditioning specific to a model enters through four public extension points, each with a
default that does nothing:

- `prepare_conditioning(request, state)`: once per request, build it (check the layout, render a
  control image, encode grounding tokens) and store it in `state` with `state.add(...)`;
- `unet_input(sample, state, branches, step)`: the UNet's input (extra input channels);
- `unet_kwargs(state, branches, step)`: extra UNet keyword arguments (GLIGEN, SDXL);
- `run_unet(latents, step, state, branches)`: the whole forward, when the model needs more than
  the UNet (ControlNet runs its control network first).

Their earlier private names (`_setup`, `_prepare_conditioning`, `_unet_input`, `_unet_kwargs`,
`_run_unet`) and `state.extra` still work with a DeprecationWarning; they are removed in
realcompo-sdk 0.3.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import torch

from .attention import CrossAttentionCapture, StopForward, upcast_half
from .errors import NonFiniteNoiseError, RealCompoError
from .interfaces import (
    AdapterOptions,
    Branch,
    DiffusionAdapter,
    GenerationRequest,
    LatentSpec,
    NoisePrediction,
    StepInfo,
)
from .tokens import align_phrases, warn_if_truncated

SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpm": "DPMSolverMultistepScheduler",
    "ddpm": "DDPMScheduler",
    "unipc": "UniPCMultistepScheduler",
}


class TorchModelOptions(AdapterOptions):
    """Options every torch-backed adapter shares."""

    device: str = "auto"  # "auto": cuda when available, else cpu
    # auto: fp16 on cuda, else float32; float64 is for checking numbers bit for bit, not for speed
    dtype: Literal["auto", "float32", "float16", "bfloat16", "float64"] = "auto"
    check_finite: bool = True  # raise on NaN/inf noise (costs one device sync per call)


def resolve_device_dtype(options: TorchModelOptions) -> tuple[torch.device, torch.dtype]:
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if options.device == "auto" else options.device)
    if options.dtype == "auto":
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, options.dtype)
    return device, dtype


C = TypeVar("C")


@dataclass
class UNetState:
    """What `prepare` encodes once per request and every model call of the request reads.

    `cond` / `uncond` are the text embeddings of the prompt and negative prompt (B, T, D);
    `pooled` holds pooled embeddings per branch where the model uses them (SDXL). Model-specific
    conditioning is stored by type: each adapter defines a small dataclass for what it needs,
    ``state.add(ControlImage(...))`` stores it, ``state.get(ControlImage)`` returns it typed.
    Keying by type lets several contributors share one state (a ControlNet on an SDXL base adds
    its control image next to SDXL's time ids) without clashing string keys.
    """

    cond: torch.Tensor  # (B, T, D)
    uncond: torch.Tensor  # (B, T, D)
    pooled: dict[str, torch.Tensor | None] = field(default_factory=dict)
    conditioning: dict[type, Any] = field(default_factory=dict)
    _legacy_extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def add(self, item: object) -> None:
        """Store `item` under its type, replacing an earlier one of the same type."""
        self.conditioning[type(item)] = item

    def get(self, kind: type[C]) -> C:
        """The stored item of type `kind`; a clear error when `prepare_conditioning` did not add one."""
        try:
            return self.conditioning[kind]
        except KeyError:
            held = ", ".join(t.__name__ for t in self.conditioning) or "nothing"
            raise RealCompoError(
                f"this request's state holds no {kind.__name__} (it holds {held}): the adapter's "
                "prepare_conditioning must add it with state.add(...) before the model runs"
            ) from None

    @property
    def extra(self) -> dict[str, Any]:
        """Deprecated untyped storage; use `add` / `get`."""
        warnings.warn("UNetState.extra is deprecated and removed in realcompo-sdk 0.3: store conditioning "
                      "with state.add(item) and read it with state.get(ItsType)", DeprecationWarning, stacklevel=2)
        return self._legacy_extra


# Extension points made public: old private name -> public name. The old names keep working, with
# a DeprecationWarning, until realcompo-sdk 0.3.
RENAMED = {
    "_setup": "setup_models",
    "_prepare_conditioning": "prepare_conditioning",
    "_unet_input": "unet_input",
    "_unet_kwargs": "unet_kwargs",
    "_run_unet": "run_unet",
}


def _warn_renamed(owner: str, old: str, new: str, stacklevel: int) -> None:
    warnings.warn(f"{owner}: UNetAdapter.{old} is deprecated, renamed {new}; the old name is removed in "
                  f"realcompo-sdk 0.3. Rename it to {new} (same arguments).", DeprecationWarning, stacklevel=stacklevel)


class UNetAdapter(DiffusionAdapter):
    """Base of adapters built on a diffusers UNet and CLIP text encoder(s); see the module docstring.

    A subclass loads its models in `__init__` and calls `setup_models`; it overrides only the
    extension points its conditioning needs.
    """

    Options = TorchModelOptions

    unet: Any
    text_encoder: Any
    tokenizer: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for old, new in RENAMED.items():
            method = cls.__dict__.get(old)
            if method is not None and new not in cls.__dict__:  # a subclass written for the old names
                _warn_renamed(f"{cls.__module__}.{cls.__qualname__} overrides {old}", old, new, stacklevel=3)
                setattr(cls, new, method)

    def setup_models(self, *, unet: Any, text_encoder: Any, tokenizer: Any, scheduler_config: dict[str, Any],
                     latent_spec: LatentSpec, device: torch.device, dtype: torch.dtype) -> None:
        """Attach the loaded models: moved to `device`, cast to `dtype` where needed, frozen, eval mode.

        `scheduler_config` is the model's scheduler config (a dict as diffusers saves it);
        `latent_spec` is usually `latent_spec_from(vae.config, unet.config, scheduler_config, family)`.
        """
        self.unet = place(unet, device, dtype)
        self.text_encoder = place(text_encoder, device, dtype)
        self.tokenizer = tokenizer
        self.scheduler_config = dict(scheduler_config)
        self._latent_spec = latent_spec
        self._device = device
        self.dtype = dtype

    # ---- facts ---------------------------------------------------------------------------
    @property
    def latent_spec(self) -> LatentSpec:
        return self._latent_spec

    @property
    def device(self) -> torch.device:
        return self._device

    def make_scheduler(self, name: str | None = None) -> Any:
        return scheduler_from_config(self.scheduler_config, name)

    def phrase_token_positions(self, prompt: str, phrases: list[str], *, append_missing: bool = False) -> tuple[str, list[list[int]]]:
        return align_phrases(self.tokenizer, prompt, phrases, append_missing=append_missing)

    # ---- text ----------------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T, D) token embeddings and the pooled embedding (or None) of `texts`; warns when a text is longer than the encoder reads."""
        warn_if_truncated(self.tokenizer, texts, f"adapter {self.name!r}")
        ids = self.tokenizer(texts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(self.device)
        out = self.text_encoder(ids)
        return out[0], getattr(out, "pooler_output", None)

    def prepare(self, request: GenerationRequest) -> UNetState:
        cond, pooled_c = self.encode_text(request.sample_prompts())
        uncond, pooled_u = self.encode_text([request.negative_prompt] * request.batch_size)
        state = UNetState(cond=cond, uncond=uncond, pooled={"cond": pooled_c, "uncond": pooled_u})
        self.prepare_conditioning(request, state)
        return state

    # ---- extension points (see the module docstring) -------------------------------------
    def prepare_conditioning(self, request: GenerationRequest, state: UNetState) -> None:
        """Once per request, after the text is encoded: check the layout and build this model's
        conditioning into `state` (``state.add(...)``). Runs outside autograd."""

    def unet_input(self, sample: torch.Tensor, state: UNetState, branches: tuple[Branch, ...], step: StepInfo) -> torch.Tensor:
        """The UNet's input for the batched branches: `sample` is (len(branches) * B, C, h, w) in
        the model dtype, branch-major in the order of `branches`. Return it with extra channels
        concatenated, for models that take them (inpainting-style UNets)."""
        return sample

    def unet_kwargs(self, state: UNetState, branches: tuple[Branch, ...], step: StepInfo) -> dict[str, Any]:
        """Extra UNet keyword arguments for the batched branches (GLIGEN's `cross_attention_kwargs`,
        SDXL's `added_cond_kwargs`); tensors batched branch-major like `sample`."""
        return {}

    def run_unet(self, latents: torch.Tensor, step: StepInfo, state: UNetState, branches: tuple[Branch, ...]) -> torch.Tensor:
        """One batched forward of `branches` on `latents` (B, C, h, w): the raw model output,
        (len(branches) * B, C, h, w). Both noise prediction and attention capture call it, so an
        override conditions both (ControlNet runs its control network here first)."""
        sample = torch.cat([latents] * len(branches)).to(self.dtype)
        sample = self.unet_input(sample, state, branches, step)
        embeds = torch.cat([state.cond if b == "cond" else state.uncond for b in branches])
        t = step.timestep
        return self.unet(sample, t, encoder_hidden_states=embeds, return_dict=False,
                         **self.unet_kwargs(state, branches, step))[0]

    # The old names, for callers and for overrides calling super(): warn, then forward.
    def _forward_renamed(self, old: str, *args: Any, **kwargs: Any) -> Any:
        new = RENAMED[old]
        _warn_renamed(f"{type(self).__qualname__} calls {old}", old, new, stacklevel=4)
        busy = self.__dict__.setdefault("_renamed_busy", set())
        if old in busy:  # an old-style override calling super().<old>(): the base behaviour
            return getattr(UNetAdapter, new)(self, *args, **kwargs)
        busy.add(old)
        try:
            return getattr(self, new)(*args, **kwargs)
        finally:
            busy.discard(old)

    def _setup(self, **models: Any) -> None:
        self._forward_renamed("_setup", **models)

    def _prepare_conditioning(self, request: GenerationRequest, state: UNetState) -> None:
        self._forward_renamed("_prepare_conditioning", request, state)

    def _unet_input(self, sample: torch.Tensor, state: UNetState, branches: tuple[Branch, ...], step: StepInfo) -> torch.Tensor:
        return self._forward_renamed("_unet_input", sample, state, branches, step)

    def _unet_kwargs(self, state: UNetState, branches: tuple[Branch, ...], step: StepInfo) -> dict[str, Any]:
        return self._forward_renamed("_unet_kwargs", state, branches, step)

    def _run_unet(self, latents: torch.Tensor, step: StepInfo, state: UNetState, branches: tuple[Branch, ...]) -> torch.Tensor:
        return self._forward_renamed("_run_unet", latents, step, state, branches)

    @torch.no_grad()
    def predict_noise(self, latents: torch.Tensor, step: StepInfo, state: UNetState, *, guidance_scale: float,
                      branches: tuple[Branch, ...] = ("uncond", "cond")) -> NoisePrediction:
        out = upcast_half(self.run_unet(latents, step, state, branches))
        return split_branches(self, out, latents, step, branches, guidance_scale)

    # ---- attention -----------------------------------------------------------------------
    def _block_levels(self) -> list[tuple[str, Any, int]]:
        """(name, block, downsampling level) in execution order."""
        n = len(self.unet.down_blocks)
        blocks = [(f"down_blocks.{i}", blk, i) for i, blk in enumerate(self.unet.down_blocks)]
        if self.unet.mid_block is not None:
            blocks.append(("mid_block", self.unet.mid_block, n - 1))
        blocks += [(f"up_blocks.{i}", blk, n - 1 - i) for i, blk in enumerate(self.unet.up_blocks)]
        return blocks

    def cross_attention_layers(self, level: int) -> dict[str, Any]:
        """Cross-attention modules at a downsampling level, in execution order."""
        layers: dict[str, Any] = {}
        for name, block, block_level in self._block_levels():
            if block_level != level:
                continue
            for j, transformer in enumerate(getattr(block, "attentions", None) or []):
                for k, tb in enumerate(getattr(transformer, "transformer_blocks", [])):
                    attn2 = getattr(tb, "attn2", None)
                    if attn2 is not None and attn2.is_cross_attention:
                        layers[f"{name}.attentions.{j}.transformer_blocks.{k}.attn2"] = attn2
        return layers

    def attention_resolutions(self, height: int, width: int) -> list[int]:
        latent_h = height // self.latent_spec.vae_scale_factor
        n = len(self.unet.down_blocks)
        return [latent_h // 2**level for level in range(n) if self.cross_attention_layers(level)]

    def _level_for(self, latent_h: int, resolution: int) -> int:
        level = math.log2(latent_h / resolution) if resolution > 0 else -1
        available = [latent_h // 2**lv for lv in range(len(self.unet.down_blocks)) if self.cross_attention_layers(lv)]
        if level != int(level) or int(level) < 0 or resolution not in available:
            raise RealCompoError(
                f"adapter {self.name!r} has no cross-attention at {resolution}px (latent height "
                f"{latent_h}); available map heights: {available}. Set attention_resolution to one of them."
            )
        return int(level)

    def attention_probs(self, latents: torch.Tensor, step: StepInfo, state: UNetState,
                        token_groups: list[list[list[int]]], resolution: int, *, stop_early: bool = True) -> torch.Tensor:
        latent_h, latent_w = latents.shape[-2:]
        layers = self.cross_attention_layers(self._level_for(latent_h, resolution))
        capture = CrossAttentionCapture(layers, token_groups, stop_after_last=stop_early)
        with capture:
            try:
                self.run_unet(latents, step, state, ("cond",))
            except StopForward:
                pass
        maps = capture.maps()  # (B, J, N)
        map_w = latent_w * resolution // latent_h
        return maps.reshape(maps.shape[0], maps.shape[1], resolution, map_w)

    # ---- decoding (T2I adapters own the VAE) --------------------------------------------
    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = getattr(self, "vae", None)
        if vae is None:
            raise RealCompoError(f"adapter {self.name!r} has no VAE to decode with")
        images = vae.decode((latents / self.latent_spec.scaling_factor).to(vae.dtype), return_dict=False)[0]
        return (images.float() / 2 + 0.5).clamp(0, 1).cpu()


def scheduler_from_config(scheduler_config: dict[str, Any], name: str | None = None) -> Any:
    """A fresh diffusers scheduler from a model's scheduler config, optionally another class by
    short name (`SCHEDULERS`) or class name."""
    import diffusers

    config = {k: v for k, v in scheduler_config.items() if not k.startswith("_")}
    class_name = scheduler_config.get("_class_name", "DDIMScheduler") if name is None else SCHEDULERS.get(name, name)
    cls = getattr(diffusers, class_name, None)
    if cls is None or not hasattr(cls, "from_config"):
        raise RealCompoError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)} or a diffusers scheduler class name")
    return cls.from_config(config)


def split_branches(adapter: Any, out: torch.Tensor, latents: torch.Tensor, step: StepInfo,
                   branches: tuple[Branch, ...], guidance_scale: float) -> NoisePrediction:
    """A batched model output (len(branches) * B, ...) as a `NoisePrediction`: CFG when both
    branches ran; NaN/inf is an error naming its likely cause when `options.check_finite`."""
    # a meta-device dry run has shapes but no values to check
    if adapter.options.check_finite and out.device.type != "meta" and not bool(torch.isfinite(out).all()):
        raise NonFiniteNoiseError(non_finite_reason(adapter, latents, step))
    parts = dict(zip(branches, out.chunk(len(branches))))
    if set(branches) == {"uncond", "cond"}:
        guided = parts["uncond"] + guidance_scale * (parts["cond"] - parts["uncond"])
        return NoisePrediction(cond=parts["cond"], guided=guided, uncond=parts["uncond"])
    return NoisePrediction(cond=parts[branches[0]])


def non_finite_reason(adapter: Any, latents: torch.Tensor, step: StepInfo) -> str:
    """Say who is at fault for NaN/inf noise: the input, half precision, or the weights."""
    where = f"at step {step.index} (timestep {float(step.timestep):g})"
    if not bool(torch.isfinite(latents).all()):
        return (f"the latents given to adapter {adapter.name!r} {where} were already NaN/inf: an earlier step "
                "produced them (check the other adapters' dtype, or the balancer options), not this model")
    if adapter.dtype == torch.float16:
        return (f"adapter {adapter.name!r} predicted NaN/inf noise {where} in float16. Half precision overflows "
                "in some models (SDXL's VAE and UNet are known cases): run with dtype='float32' or "
                "'bfloat16', or use an fp16-fixed VAE.")
    return (f"adapter {adapter.name!r} predicted NaN/inf noise {where} in {str(adapter.dtype).removeprefix('torch.')}, "
            "which does not overflow here: its weights or conditioning hold NaN/inf (a corrupt or "
            "mismatched checkpoint); check the model files.")


def place(module: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """Move a frozen, eval-mode module; cast only when needed (diffusers warns on any cast)."""
    if next(module.parameters()).dtype != dtype:
        module = module.to(dtype=dtype)
    return module.to(device=device).eval().requires_grad_(False)


def latent_spec_from(vae_config: Any, unet_config: Any, scheduler_config: dict[str, Any], family: str) -> LatentSpec:
    """Read the latent facts from diffusers configs."""
    vae_factor = 2 ** (len(vae_config.block_out_channels) - 1)
    unet_factor = 2 ** (len(unet_config.down_block_types) - 1)
    size = unet_config.sample_size
    size = size if isinstance(size, int) else size[0]
    return LatentSpec(
        channels=unet_config.out_channels,
        vae_scale_factor=vae_factor,
        scaling_factor=float(vae_config.scaling_factor),
        prediction_type="flow" if str(scheduler_config.get("_class_name", "")).startswith("FlowMatch")
        else scheduler_config.get("prediction_type", "epsilon"),
        default_resolution=(size * vae_factor, size * vae_factor),
        family=family,
        resolution_multiple=vae_factor * unet_factor,
        shift_factor=float(getattr(vae_config, "shift_factor", None) or 0.0),
    )
