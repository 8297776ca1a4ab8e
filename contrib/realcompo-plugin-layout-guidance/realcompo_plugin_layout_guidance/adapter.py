"""`layout-guidance`: training-free box control by cross-attention energy guidance on the latent
(backward guidance of Chen, Laina & Vedaldi, "Training-Free Layout Control with Cross-Attention
Guidance", WACV 2024), on any Stable Diffusion 1.x/2.x model: no extra weights.

**Guidance.** During the first `guidance_steps` fraction of the denoising steps, before it
predicts noise, the adapter moves the latent it was given, x, down the gradient of an energy of
its own cross-attention::

    E_b(x) = 1/J · Σ_j (1 − Σ_{p in box j} A_bj(p) / Σ_p A_bj(p))²

A_bj is the conditional branch's cross-attention to object j's phrase tokens in sample b, averaged
over heads, over the layers at `attention_resolution` and over the tokens
(`UNetAdapter.attention_probs`). The mean over the J objects, where the paper sums, keeps
`loss_threshold` independent of how many objects there are. Each of the `iterations` steps is
x ← x − η_t · ∇_x E with η_t = loss_scale · (1 − ᾱ_t); a sample stops once its energy is at most
`loss_threshold`. The original runs a σ-space sampler (LMS) and steps its latent by
loss_scale · σ_t² · ∇E with loss_scale 30; in the UNet's input space, which is where every
realcompo adapter receives latents, that same step is loss_scale · (1 − ᾱ_t) · ∇E. So the
defaults (30, up to 5 iterations, threshold 0.2, the first 20% of the steps) follow the paper,
including its schedule that decays with the noise level.

**What `predict_noise` returns.** RealCompo's sampler steps from the latent *it* holds, x, with
the noise it mixes; an adapter cannot move that latent. A noise ε read at x stands for the
clean-latent estimate x̂₀(x, ε) = (x − √(1−ᾱ_t)·ε)/√ᾱ_t. The adapter returns, for each branch
and for the CFG result,

    ε̃ = ε(x') + (x − x') / √(1−ᾱ_t)

where x' is the guided latent and ε(x') the plain prediction there: the unique noise whose
estimate *at x* is the guided model's estimate at x', x̂₀(x, ε̃) = x̂₀(x', ε(x')). (For
v-prediction the shift is √ᾱ_t·(x − x')/√(1−ᾱ_t); a "sample" prediction is returned as is.)
With one iteration this is ε(x') + loss_scale·√(1−ᾱ_t)·∇E: classifier guidance (Dhariwal &
Nichol, 2021) with log p(layout | x) = −loss_scale·E, with the prediction taken at the guided
latent. It suits the balancer: x̂₀ is affine in ε with weights summing to one, so the pixel-wise
softmax mix Σ_k w_k ⊙ ε_k is the noise of the pixel-wise mix Σ_k w_k ⊙ x̂₀_k. The
layout-guided estimate enters the composition exactly where this adapter has influence. Returning
ε(x') alone would be wrong: read at x, it moves x̂₀ by +(x − x')/√ᾱ_t, against the guidance.

Deterministic: no random numbers are drawn. `attention_probs` (what the balancer's influence
update reads) is the plain model's attention at the latent it is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import torch
from pydantic import Field
from realcompo_sdk.balancer import batch_regions
from realcompo_sdk.diffusers_loading import expect_kind, load_sd_components, read_latent_spec
from realcompo_sdk.errors import RealCompoError
from realcompo_sdk.interfaces import Branch, GenerationRequest, L2IAdapter, LatentSpec, NoisePrediction, StepInfo
from realcompo_sdk.layout import RegionKind
from realcompo_sdk.unet_adapter import TorchModelOptions, UNetAdapter, UNetState, latent_spec_from, resolve_device_dtype


@dataclass
class GuidanceTargets:
    """Per request: each object's tokens and box at the resolution of the energy's maps."""

    token_groups: list[list[list[int]]]  # [sample][object] -> token positions (padded to J objects)
    regions: torch.Tensor  # (B, J, r, r') box masks per sample
    valid: torch.Tensor  # (B, J): which objects are real (a mixed batch pads to the largest layout)
    resolution: int  # r, the height of the attention maps


class LayoutGuidanceAdapter(UNetAdapter, L2IAdapter):
    """Layout-to-image by cross-attention energy guidance on an unchanged SD model (boxes)."""

    id = "layout-guidance"
    accepted_kinds: ClassVar[frozenset[RegionKind]] = frozenset({"box"})
    max_objects: ClassVar[int | None] = None  # the energy has one term per object, no limit
    mixed_batches = True  # targets per sample

    class Options(TorchModelOptions):
        """Options of `layout-guidance`; unknown keys are errors. `device`, `dtype` and
        `check_finite` are inherited from `TorchModelOptions`."""

        model: str = Field("stable-diffusion-v1-5/stable-diffusion-v1-5",
                           description="a diffusers folder or hub id 'owner/name' of an SD 1.x/2.x model")
        variant: str | None = Field(None, description="weights variant, e.g. 'fp16' for hub folders that ship fp16 files")
        guidance_steps: float = Field(0.2, ge=0.0, le=1.0,
                                      description="fraction of the steps, from the first, whose latent is guided (paper: 10 of 50)")
        iterations: int = Field(5, ge=0, description="gradient steps on the latent per guided step (paper: at most 5)")
        loss_scale: float = Field(30.0, ge=0.0, description="step size: x ← x − loss_scale·(1−ᾱ_t)·∇E (paper: 30, on σ_t²)")
        loss_threshold: float = Field(0.2, ge=0.0, description="a sample's iterations stop once its energy is at most this (paper: 0.2)")
        attention_resolution: int | None = Field(
            None, gt=0, description="height of the cross-attention maps in the energy; None: latent height / 4 (16 for SD at 512 px)")

    @classmethod
    def peek_latent_spec(cls, options: Options) -> LatentSpec | None:
        return read_latent_spec(options.model)

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        opts = self.options
        expect_kind(opts.model, {"sd", "single-file"}, self.id,
                    "layout-guidance wraps a plain Stable Diffusion 1.x/2.x model (no GLIGEN, no SDXL).")
        device, dtype = resolve_device_dtype(opts)
        parts = load_sd_components(opts.model, dtype, variant=opts.variant)
        family = "sd2" if parts.text_encoder.config.hidden_size == 1024 else "sd1"
        spec = latent_spec_from(parts.vae.config, parts.unet.config, parts.scheduler_config, family=family)
        # no VAE kept: the T2I adapter decodes the balanced latents
        self.setup_models(unet=parts.unet, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer,
                    scheduler_config=parts.scheduler_config, latent_spec=spec, device=device, dtype=dtype)

    # ---- per request -------------------------------------------------------------------------
    def guidance_resolution(self, height: int, width: int) -> int:
        """Height of the attention maps the energy reads, for an image of that size."""
        available = self.attention_resolutions(height, width)
        wanted = self.options.attention_resolution
        if wanted is None:
            default = max(height // self.latent_spec.vae_scale_factor // 4, 1)
            return min(available, key=lambda r: (abs(r - default), -r))
        if wanted not in available:
            raise RealCompoError(
                f"adapter {self.name!r}: attention_resolution={wanted} is not a map height of this model at "
                f"{width}x{height}; available: {available}. Set the option to one of them or leave it unset."
            )
        return wanted

    def prepare_conditioning(self, request: GenerationRequest, state: UNetState) -> None:
        resolution = self.guidance_resolution(request.height, request.width)
        map_width = request.width * resolution // request.height
        layouts = request.sample_layouts()
        groups = []
        for prompt, layout in zip(request.sample_prompts(), layouts, strict=True):
            self.check_layout(layout)
            groups.append(self.phrase_token_positions(prompt, [o.phrase for o in layout.objects])[1])
        regions, valid = batch_regions(layouts, resolution, map_width, self.device)
        most = regions.shape[1]
        state.add(GuidanceTargets(token_groups=[g + [[0]] * (most - len(g)) for g in groups], regions=regions,
                                  valid=valid, resolution=resolution))

    # ---- the guidance ------------------------------------------------------------------------
    def guides_at(self, step: StepInfo) -> bool:
        """Whether the latent is guided at this step (the first `guidance_steps` fraction)."""
        guided = math.ceil(self.options.guidance_steps * step.num_steps - 1e-9)
        return self.options.iterations > 0 and step.index < guided

    def energy(self, latents: torch.Tensor, step: StepInfo, state: UNetState) -> torch.Tensor:
        """(B,) layout energy of each sample; differentiable w.r.t. `latents`."""
        targets = state.get(GuidanceTargets)
        maps = self.attention_probs(latents, step, state, targets.token_groups, targets.resolution)  # (B, J, r, r')
        inside = (maps * targets.regions).sum(dim=(-2, -1))
        total = maps.sum(dim=(-2, -1))
        terms = torch.where(targets.valid, (1.0 - inside / total) ** 2, torch.zeros_like(total))
        return terms.sum(dim=1) / targets.valid.sum(dim=1)  # mean over each sample's real objects

    def guide(self, latents: torch.Tensor, step: StepInfo, state: UNetState) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The guided latent x' (float32) and the energy before each iteration that ran."""
        opts = self.options
        eta = opts.loss_scale * (1.0 - self.alpha_bar(step.timestep))
        x = latents.detach().float()
        energies: list[torch.Tensor] = []
        for _ in range(opts.iterations):
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)
                energy = self.energy(x, step, state)
                energies.append(energy.detach())
                active = energy.detach() > opts.loss_threshold
                if not bool(active.any()):
                    break
                (grad,) = torch.autograd.grad(energy.sum(), x)  # samples are independent: per-sample gradients
            x = x.detach() - eta * active.to(x.dtype).view(-1, 1, 1, 1) * grad.float()
        return x.detach(), energies

    @cached_property
    def _alphas_cumprod(self) -> torch.Tensor:
        return self.make_scheduler().alphas_cumprod.double().cpu()

    def alpha_bar(self, timestep: Any) -> float:
        """ᾱ at a (possibly fractional) training timestep, from the model's own noise schedule."""
        table = self._alphas_cumprod
        t = min(max(float(timestep), 0.0), len(table) - 1.0)
        lo = int(math.floor(t))
        hi = min(lo + 1, len(table) - 1)
        w = t - lo
        return float((1 - w) * table[lo] + w * table[hi])

    def estimate_shift(self, timestep: Any) -> float:
        """c such that prediction(x') + c·(x − x') has, read at x, the clean estimate of x'."""
        a = self.alpha_bar(timestep)
        kind = self.latent_spec.prediction_type
        if kind == "epsilon":
            return 1.0 / math.sqrt(1.0 - a)
        if kind == "v_prediction":
            return math.sqrt(a) / math.sqrt(1.0 - a)
        return 0.0  # "sample": the prediction is the clean estimate itself

    @torch.no_grad()
    def predict_noise(self, latents: torch.Tensor, step: StepInfo, state: UNetState, *, guidance_scale: float,
                      branches: tuple[Branch, ...] = ("uncond", "cond")) -> NoisePrediction:
        """CFG noise at the guided latent, re-expressed at `latents` (see the module docstring);
        outside the guided steps, the plain model's noise."""
        if not self.guides_at(step):
            return super().predict_noise(latents, step, state, guidance_scale=guidance_scale, branches=branches)
        guided_latents, energies = self.guide(latents, step, state)
        pred = super().predict_noise(guided_latents, step, state, guidance_scale=guidance_scale, branches=branches)
        shift = self.estimate_shift(step.timestep) * (latents.float() - guided_latents)
        pred.cond = pred.cond + shift
        if pred.guided is not None:  # CFG weights sum to one: the guided noise gets the same shift
            pred.guided = pred.guided + shift
        if pred.uncond is not None:  # so `guided` stays CFG of the branches returned
            pred.uncond = pred.uncond + shift
        pred.extras["layout_energy"] = [e.cpu() for e in energies]
        return pred
