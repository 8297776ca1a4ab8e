"""Shared machinery for adapters built on a diffusers MMDiT transformer (SD3 / SD3.5, Flux).

What differs from `UNetAdapter`: text and image tokens share joint attention, so the balancer's
attention maps are read inside it (`realcompo_sdk.joint_attention`); every block runs at one
token grid (latent size / patch size), so a map at a coarser resolution is the grid's maps
average-pooled; the VAE shifts as well as scales its latents; sampling is flow matching; and a
model may be guidance-distilled (Flux-dev: `guidance = "distilled"`).

A subclass loads its models, calls `setup_models`, and implements `encode_prompts` (text → the
transformer's token sequence and pooled vector) and `run_model` (one batched forward, with any
ControlNet first). Which blocks are read is the `attention_blocks` option; by default the middle
third of the joint blocks (see `default_attention_blocks`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from .attention import StopForward
from .errors import RealCompoError
from .interfaces import Branch, DiffusionAdapter, GenerationRequest, LatentSpec, NoisePrediction, StepInfo
from .joint_attention import JointAttentionCapture, QueryKeyFn
from .unet_adapter import TorchModelOptions, UNetState, place, scheduler_from_config, split_branches


@dataclass(frozen=True)
class GuidanceInput:
    """The request's guidance scale: a distilled model reads it in every forward, also in the
    attention pass (whose signature carries no scale), so both see the scale sampling uses."""

    scale: float


class MMDiTOptions(TorchModelOptions):
    """Options every MMDiT adapter shares."""

    attention_blocks: tuple[int, ...] | None = Field(
        None, description="indices of the joint-attention blocks whose text attention the balancer reads; "
                          "None: the middle third of the joint blocks")


def default_attention_blocks(num_joint_blocks: int) -> tuple[int, ...]:
    """The middle third of the joint blocks. Why: the first blocks have barely mixed text into the
    image tokens and the last ones refine texture, while object placement is decided in between;
    stopping the forward after the middle also keeps the attention pass at about two thirds of a
    full one. A starting point, not a tuned choice (override with `attention_blocks`)."""
    start = num_joint_blocks // 3
    stop = max(start + 1, (2 * num_joint_blocks) // 3)
    return tuple(range(start, min(stop, num_joint_blocks)))


class MMDiTAdapter(DiffusionAdapter):
    """Base of adapters built on a diffusers MMDiT transformer; see the module docstring."""

    Options = MMDiTOptions
    options: MMDiTOptions
    # recomputes a joint layer's image queries and keys (joint_attention.sd3_queries_keys / flux_queries_keys)
    queries_keys: ClassVar[QueryKeyFn]

    transformer: Any
    vae: Any = None
    # the guidance scale a distilled model reads when the request does not say (Flux-dev's default)
    default_guidance: ClassVar[float] = 3.5

    def setup_models(self, *, transformer: Any, scheduler_config: dict[str, Any], latent_spec: LatentSpec,
                     device: torch.device, dtype: torch.dtype, patch_size: int) -> None:
        """Attach the transformer (placed, frozen, eval mode) and the facts every call reads."""
        self.transformer = place(transformer, device, dtype)
        self.scheduler_config = dict(scheduler_config)
        self._latent_spec = latent_spec
        self._device = device
        self.dtype = dtype
        self.patch_size = patch_size  # latent cells per token side
        blocks = self.options.attention_blocks
        n = len(self.joint_blocks())
        if blocks is not None and (not blocks or any(not 0 <= b < n for b in blocks)):
            raise RealCompoError(f"adapter {self.name!r}: attention_blocks={list(blocks)} must be indices of its "
                                 f"{n} joint-attention blocks (0..{n - 1})")
        self.attention_blocks = tuple(sorted(set(blocks))) if blocks is not None else default_attention_blocks(n)

    # ---- facts ---------------------------------------------------------------------------
    @property
    def latent_spec(self) -> LatentSpec:
        return self._latent_spec

    @property
    def device(self) -> torch.device:
        return self._device

    def make_scheduler(self, name: str | None = None) -> Any:
        return scheduler_from_config(self.scheduler_config, name)

    def timestep_kwargs(self, height: int, width: int, num_steps: int) -> dict[str, Any]:
        """`mu` for schedulers with resolution-dependent shifting, as the diffusers pipelines compute it."""
        config = self.scheduler_config
        if not config.get("use_dynamic_shifting"):
            return {}
        return {"mu": resolution_shift(self.image_tokens(height, width), config)}

    def image_tokens(self, height: int, width: int) -> int:
        """How many image tokens the transformer sees for an image of that pixel size."""
        cell = self.latent_spec.vae_scale_factor * self.patch_size
        return (height // cell) * (width // cell)

    def describe(self) -> dict[str, Any]:
        """The record also names the joint blocks read (the default depends on the model's depth)
        and how the model is guided."""
        info = super().describe()
        info["attention_blocks"] = list(self.attention_blocks)
        info["guidance"] = self.guidance
        return info

    # ---- text and model, per subclass ------------------------------------------------------
    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, D) text tokens as the transformer reads them and (B, P) pooled vectors."""
        raise NotImplementedError

    def run_model(self, latents: torch.Tensor, step: StepInfo, state: UNetState, branches: tuple[Branch, ...],
                  guidance_scale: float) -> torch.Tensor:
        """One batched forward of `branches` on `latents` (B, C, h, w): (len(branches) * B, C, h, w)."""
        raise NotImplementedError

    def joint_blocks(self) -> list[Any]:
        """The transformer blocks with joint (text + image) attention, in execution order."""
        return list(self.transformer.transformer_blocks)

    def prepare(self, request: GenerationRequest) -> UNetState:
        with torch.no_grad():
            cond, pooled_c = self.encode_prompts(request.sample_prompts())
            if self.guidance == "cfg":
                uncond, pooled_u = self.encode_prompts([request.negative_prompt] * request.batch_size)
            else:  # a distilled model has no unconditional branch: nothing to encode
                uncond, pooled_u = None, None
        state = UNetState(cond=cond, uncond=uncond, pooled={"cond": pooled_c, "uncond": pooled_u})
        scale = request.guidance_scale if request.guidance_scale is not None else self.default_guidance
        state.add(GuidanceInput(scale))
        self.prepare_conditioning(request, state)
        return state

    def prepare_conditioning(self, request: GenerationRequest, state: UNetState) -> None:
        """Once per request, after the text: build model-specific conditioning (`state.add`)."""

    def branch_text(self, state: UNetState, branches: tuple[Branch, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Text tokens and pooled vectors of the batched branches, branch-major."""
        embeds = torch.cat([state.cond if b == "cond" else state.uncond for b in branches])
        pooled = torch.cat([state.pooled[b] for b in branches])
        return embeds, pooled

    # ---- noise ---------------------------------------------------------------------------
    @torch.no_grad()
    def predict_noise(self, latents: torch.Tensor, step: StepInfo, state: UNetState, *, guidance_scale: float,
                      branches: tuple[Branch, ...] = ("uncond", "cond")) -> NoisePrediction:
        if self.guidance == "distilled" and tuple(branches) != ("cond",):
            raise RealCompoError(
                f"adapter {self.name!r} is guidance-distilled: it reads the guidance scale as an input and has no "
                "unconditional branch; ask it for branches=('cond',) only (the sampler does).")
        out = self.run_model(latents, step, state, branches, guidance_scale)
        pred = split_branches(self, out.float() if out.dtype != torch.float64 else out, latents, step, branches, guidance_scale)
        if self.guidance == "distilled":
            pred.guided = pred.cond
        return pred

    # ---- attention -----------------------------------------------------------------------
    def attention_layers(self) -> dict[str, Any]:
        """The joint-attention modules the balancer reads, in execution order."""
        blocks = self.joint_blocks()
        return {f"transformer_blocks.{i}.attn": blocks[i].attn for i in self.attention_blocks}

    def attention_resolutions(self, height: int, width: int) -> list[int]:
        """The token grid's height and its halvings down to 2 (the grid's maps average-pooled)."""
        return _map_heights(height // (self.latent_spec.vae_scale_factor * self.patch_size))

    def attention_probs(self, latents: torch.Tensor, step: StepInfo, state: UNetState,
                        token_groups: list[list[list[int]]], resolution: int, *, stop_early: bool = True) -> torch.Tensor:
        latent_h, latent_w = latents.shape[-2:]
        grid_h, grid_w = latent_h // self.patch_size, latent_w // self.patch_size
        if resolution not in _map_heights(grid_h):
            raise RealCompoError(
                f"adapter {self.name!r} reads attention on a {grid_h}-token-high grid at this size; map heights "
                f"available: {_map_heights(grid_h)}. Set attention_resolution to one of them.")
        capture = JointAttentionCapture(self.attention_layers(), token_groups, type(self).queries_keys,
                                        stop_after_last=stop_early)
        with capture:
            try:
                self.run_model(latents, step, state, ("cond",), state.get(GuidanceInput).scale)
            except StopForward:
                pass
        maps = capture.maps()  # (B, J, grid_h * grid_w)
        maps = maps.reshape(maps.shape[0], maps.shape[1], grid_h, grid_w)
        factor = grid_h // resolution
        return F.avg_pool2d(maps, factor) if factor > 1 else maps

    # ---- decoding ------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            raise RealCompoError(f"adapter {self.name!r} has no VAE to decode with")
        spec = self.latent_spec
        z = latents / spec.scaling_factor + spec.shift_factor
        images = self.vae.decode(z.to(self.vae.dtype), return_dict=False)[0]
        return (images.float() / 2 + 0.5).clamp(0, 1).cpu()


def _map_heights(grid: int) -> list[int]:
    sizes = []
    while grid >= 2:
        sizes.append(grid)
        if grid % 2:
            break
        grid //= 2
    return sizes


def resolution_shift(image_tokens: int, config: dict[str, Any]) -> float:
    """The flow-matching shift `mu` for that many image tokens: linear between the config's
    (base_image_seq_len, base_shift) and (max_image_seq_len, max_shift), as SD3.5 and Flux shift."""
    base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    slope = (max_shift - base_shift) / (max_len - base_len)
    return image_tokens * slope + (base_shift - slope * base_len)


def latent_spec_for_transformer(vae_config: Any, transformer_config: Any, scheduler_config: dict[str, Any], *,
                                family: str, patch_size: int, channels: int) -> LatentSpec:
    """Latent facts of an MMDiT model from its configs (mappings or attribute objects)."""
    def get(config: Any, key: str, default: Any = None) -> Any:
        return config.get(key, default) if isinstance(config, dict) else getattr(config, key, default)

    vae_factor = 2 ** (len(get(vae_config, "block_out_channels")) - 1)
    size = get(transformer_config, "sample_size", 128)
    size = size if isinstance(size, int) else size[0]
    return LatentSpec(
        channels=channels,
        vae_scale_factor=vae_factor,
        scaling_factor=float(get(vae_config, "scaling_factor", 1.0)),
        shift_factor=float(get(vae_config, "shift_factor", None) or 0.0),
        prediction_type="flow",
        default_resolution=(size * vae_factor, size * vae_factor),
        family=family,
        resolution_multiple=vae_factor * patch_size,
    )
