"""Shared machinery for adapters built on a diffusers `UNet2DConditionModel` + CLIP text encoder.

Subclasses load their models (from a folder, a hub id, a single file, or memory) and call
`_setup`; this class then provides everything the balancer asks of an adapter: batched CFG
noise, differentiable cross-attention maps with an early stop, token positions and schedulers.
Conditioning specific to a model (GLIGEN's grounding tokens, ControlNet residuals, SDXL's added
time ids) enters through `_unet_kwargs` and `_unet_input`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from .attention import CrossAttentionCapture, StopForward
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
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"  # auto: fp16 on cuda
    check_finite: bool = True  # raise on NaN/inf noise (costs one device sync per call)


def resolve_device_dtype(options: TorchModelOptions) -> tuple[torch.device, torch.dtype]:
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if options.device == "auto" else options.device)
    if options.dtype == "auto":
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, options.dtype)
    return device, dtype


@dataclass
class UNetState:
    """Per-request encodings: text embeddings per branch and model-specific conditioning."""

    cond: torch.Tensor  # (B, T, D)
    uncond: torch.Tensor  # (B, T, D)
    pooled: dict[str, torch.Tensor | None] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class UNetAdapter(DiffusionAdapter):
    """Base class; see the module docstring."""

    Options = TorchModelOptions

    unet: Any
    text_encoder: Any
    tokenizer: Any

    def _setup(self, *, unet: Any, text_encoder: Any, tokenizer: Any, scheduler_config: dict[str, Any],
               latent_spec: LatentSpec, device: torch.device, dtype: torch.dtype) -> None:
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
        import diffusers

        config = {k: v for k, v in self.scheduler_config.items() if not k.startswith("_")}
        class_name = self.scheduler_config.get("_class_name", "DDIMScheduler") if name is None else SCHEDULERS.get(name, name)
        cls = getattr(diffusers, class_name, None)
        if cls is None or not hasattr(cls, "from_config"):
            raise RealCompoError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)} or a diffusers scheduler class name")
        return cls.from_config(config)

    def phrase_token_positions(self, prompt: str, phrases: list[str], *, append_missing: bool = False) -> tuple[str, list[list[int]]]:
        return align_phrases(self.tokenizer, prompt, phrases, append_missing=append_missing)

    # ---- text ----------------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        warn_if_truncated(self.tokenizer, texts, f"adapter {self.name!r}")
        ids = self.tokenizer(texts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(self.device)
        out = self.text_encoder(ids)
        return out[0], getattr(out, "pooler_output", None)

    def prepare(self, request: GenerationRequest) -> UNetState:
        b = request.batch_size
        cond, pooled_c = self.encode_text([request.prompt] * b)
        uncond, pooled_u = self.encode_text([request.negative_prompt] * b)
        state = UNetState(cond=cond, uncond=uncond, pooled={"cond": pooled_c, "uncond": pooled_u})
        self._prepare_conditioning(request, state)
        return state

    def _prepare_conditioning(self, request: GenerationRequest, state: UNetState) -> None:
        """L2I subclasses build their layout conditioning into `state.extra` here."""

    # ---- model calls ---------------------------------------------------------------------
    def _unet_input(self, sample: torch.Tensor, state: UNetState, branches: tuple[Branch, ...], step: StepInfo) -> torch.Tensor:
        """The UNet's input for the batched branches (e.g. concatenated control channels)."""
        return sample

    def _unet_kwargs(self, state: UNetState, branches: tuple[Branch, ...], step: StepInfo) -> dict[str, Any]:
        """Extra UNet keyword arguments for the batched branches (GLIGEN, ControlNet, SDXL)."""
        return {}

    def _run_unet(self, latents: torch.Tensor, step: StepInfo, state: UNetState, branches: tuple[Branch, ...]) -> torch.Tensor:
        sample = torch.cat([latents] * len(branches)).to(self.dtype)
        sample = self._unet_input(sample, state, branches, step)
        embeds = torch.cat([state.cond if b == "cond" else state.uncond for b in branches])
        t = step.timestep
        return self.unet(sample, t, encoder_hidden_states=embeds, return_dict=False,
                         **self._unet_kwargs(state, branches, step))[0]

    @torch.no_grad()
    def predict_noise(self, latents: torch.Tensor, step: StepInfo, state: UNetState, *, guidance_scale: float,
                      branches: tuple[Branch, ...] = ("uncond", "cond")) -> NoisePrediction:
        out = self._run_unet(latents, step, state, branches).float()
        if self.options.check_finite and not bool(torch.isfinite(out).all()):
            raise NonFiniteNoiseError(self._non_finite_reason(latents, step))
        parts = dict(zip(branches, out.chunk(len(branches))))
        if set(branches) == {"uncond", "cond"}:
            guided = parts["uncond"] + guidance_scale * (parts["cond"] - parts["uncond"])
            return NoisePrediction(cond=parts["cond"], guided=guided)
        return NoisePrediction(cond=parts[branches[0]])

    def _non_finite_reason(self, latents: torch.Tensor, step: StepInfo) -> str:
        """Say who is at fault: the input, half precision, or the weights."""
        where = f"at step {step.index} (timestep {int(step.timestep)})"
        if not bool(torch.isfinite(latents).all()):
            return (f"the latents given to adapter {self.name!r} {where} were already NaN/inf: an earlier step "
                    "produced them (check the other adapters' dtype, or the balancer options), not this model")
        if self.dtype == torch.float16:
            return (f"adapter {self.name!r} predicted NaN/inf noise {where} in float16. Half precision overflows "
                    "in some models (SDXL's VAE and UNet are known cases): run with dtype='float32' or "
                    "'bfloat16', or use an fp16-fixed VAE.")
        return (f"adapter {self.name!r} predicted NaN/inf noise {where} in {str(self.dtype).removeprefix('torch.')}, "
                "which does not overflow here: its weights or conditioning hold NaN/inf (a corrupt or "
                "mismatched checkpoint); check the model files.")

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
                self._run_unet(latents, step, state, ("cond",))
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
        prediction_type=scheduler_config.get("prediction_type", "epsilon"),
        default_resolution=(size * vae_factor, size * vae_factor),
        family=family,
        resolution_multiple=vae_factor * unet_factor,
    )
