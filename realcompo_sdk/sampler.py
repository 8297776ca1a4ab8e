"""The balanced denoising loop (RealCompo), written out like a diffusers pipeline.

Per step, each pass runs only if its result can change the output:
- CFG noise (uncond + cond batched) of every adapter whose noise is mixed at this step — during
  warm-up only the L2I adapters; the T2I's conditional branch alone when only the look-ahead
  needs it;
- when the influence is updated: the mix, a look-ahead step on a copy of the scheduler, one
  conditional forward with autograd per adapter whose attention carries gradient (stopped after
  its last captured layer), one backward;
- the real scheduler step with the updated weights, reusing the noise computed above.
`realcompo_sdk.testing.reference` holds the same algorithm in the official pass structure; the
two agree to float32 precision, and to float64 precision in a float64 run (tests/test_sampler.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .balancer import BalanceOptions, batch_regions, compose, initial_logits, region_loss
from .interfaces import DiffusionAdapter, GenerationRequest, NoisePrediction, StepInfo
from .lookahead import initial_sigma, lookahead, model_input, scheduler_step


@dataclass
class BalancedProblem:
    """Everything the loop needs, prepared once per request by `compose.RealCompo`."""

    adapters: list[DiffusionAdapter]  # index 0 is the T2I adapter
    states: list[Any]
    # [adapter][sample][object] -> positions; in a mixed batch every sample lists as many groups as
    # the largest layout has objects (padding groups are ignored by the loss)
    token_groups: list[list[list[list[int]]]]
    request: GenerationRequest
    scheduler: Any
    generators: list[torch.Generator]
    guidance_scale: float
    options: BalanceOptions
    # extra `set_timesteps` arguments from the T2I adapter (`DiffusionAdapter.timestep_kwargs`)
    timestep_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def l2i_indices(self) -> list[int]:
        return list(range(1, len(self.adapters)))


@dataclass
class SampleOutput:
    latents: torch.Tensor
    influence: list[torch.Tensor] = field(default_factory=list)  # per step (K, B, 1, h, w) weights, CPU
    passes: dict[str, int] = field(default_factory=dict)  # what ran, for the record and tests


def working_dtype(adapters: list[DiffusionAdapter]) -> torch.dtype:
    """The sampler's precision: float64 when every adapter runs in float64 (exact parity checks),
    else float32 (the adapters' noise is float32 whatever their own dtype)."""
    return torch.float64 if all(getattr(a, "dtype", None) == torch.float64 for a in adapters) else torch.float32


def initial_latents(problem: BalancedProblem) -> torch.Tensor:
    """Per-sample noise from per-sample generators, so sample b depends on its own seed only.
    Always drawn in float32, so a float64 run starts from the same numbers as a float32 one."""
    adapter = problem.adapters[0]
    spec = adapter.latent_spec
    req = problem.request
    shape = (spec.channels, req.height // spec.vae_scale_factor, req.width // spec.vae_scale_factor)
    noise = [torch.randn(shape, generator=g, device=g.device, dtype=torch.float32) for g in problem.generators]
    latents = torch.stack(noise).to(adapter.device, working_dtype(problem.adapters))
    return latents * initial_sigma(problem.scheduler)


def set_timesteps(problem: BalancedProblem, device: torch.device) -> int:
    """Set the scheduler's timesteps for the request; returns their number (PNDM's PRK warm-up adds some)."""
    problem.scheduler.set_timesteps(problem.request.num_steps, device=device, **problem.timestep_kwargs)
    return len(problem.scheduler.timesteps)


def guided_noise(adapter: DiffusionAdapter, latents: torch.Tensor, step: StepInfo, state: Any, scale: float) -> NoisePrediction:
    """The guided noise of one adapter: a batched CFG pass, or a guidance-distilled model's single
    conditional forward (its output is already guided; there is no unconditional branch to run)."""
    if adapter.guidance == "distilled":
        pred = adapter.predict_noise(latents, step, state, guidance_scale=scale, branches=("cond",))
        return NoisePrediction(cond=pred.cond, guided=pred.cond, extras=pred.extras)
    return adapter.predict_noise(latents, step, state, guidance_scale=scale)


def attention_resolution(problem: BalancedProblem, latent_h: int) -> int:
    return problem.options.attention_resolution or max(latent_h // 4, 1)


def balanced_sample(problem: BalancedProblem, *, record_influence: bool = False,
                    callback: Callable[[int], None] | None = None) -> SampleOutput:
    opts, sched, adapters = problem.options, problem.scheduler, problem.adapters
    t2i, l2i = 0, problem.l2i_indices
    latents = initial_latents(problem)
    n = set_timesteps(problem, latents.device)
    batch, _, lh, lw = latents.shape
    logits = initial_logits(len(adapters), (batch, lh, lw), opts.init, problem.generators, latents.device).to(latents.dtype)
    resolution = attention_resolution(problem, lh)
    regions, valid = batch_regions(problem.request.sample_layouts(), resolution, lw * resolution // lh, latents.device)
    eta = opts.step_sizes(n)
    warmup = opts.warmup_steps(n)
    grad_adapters = [k for k in range(len(adapters)) if not (k == t2i and opts.detach_t2i_attention)]
    out = SampleOutput(latents=latents, passes={"cfg": 0, "cond": 0, "grad": 0, "backward": 0})

    for i, t in enumerate(sched.timesteps):
        step = StepInfo(index=i, num_steps=n, timestep=t)
        mixing = i >= warmup
        updating = opts.updates_at(i, n)
        model_in = model_input(sched, latents, t)

        # noise: CFG for what is mixed (or feeds a guided look-ahead), cond-only for a cond look-ahead
        cfg_needed = set(range(len(adapters))) if mixing or (updating and opts.lookahead_noise == "guided") else set(l2i)
        preds = {}
        for k, (adapter, state) in enumerate(zip(adapters, problem.states)):
            if k in cfg_needed:
                preds[k] = guided_noise(adapter, model_in, step, state, problem.guidance_scale)
                out.passes["cfg" if adapter.guidance == "cfg" else "cond"] += 1
            elif updating:
                preds[k] = adapter.predict_noise(model_in, step, state, guidance_scale=problem.guidance_scale, branches=("cond",))
                out.passes["cond"] += 1

        if updating:
            logits = logits.detach().requires_grad_(True)
            look_noise = [preds[k].cond if opts.lookahead_noise == "cond" else preds[k].guided for k in range(len(adapters))]
            x_prime = lookahead(opts.lookahead, sched, compose(look_noise, logits), t, latents, problem.generators)
            x_prime_in = model_input(sched, x_prime, t)
            loss = 0.0
            for k in grad_adapters:
                maps = adapters[k].attention_probs(x_prime_in, step, problem.states[k], problem.token_groups[k], resolution)
                loss = loss + region_loss(maps, regions, valid)
                out.passes["grad"] += 1
            (grad,) = torch.autograd.grad(loss, logits)
            out.passes["backward"] += 1
            logits = (logits - float(eta[i]) * grad).detach()

        if mixing:
            noise = compose([preds[k].guided for k in range(len(adapters))], logits)
        else:
            noise = sum(preds[k].guided for k in l2i) / len(l2i)
        latents = scheduler_step(sched, noise, t, latents, problem.generators)
        if record_influence:
            out.influence.append(torch.softmax(logits, dim=0).cpu())
        if callback is not None:
            callback(i)
    out.latents = latents
    return out


def plain_sample(adapter: DiffusionAdapter, state: Any, problem: BalancedProblem,
                 callback: Callable[[int], None] | None = None) -> torch.Tensor:
    """One model alone with CFG (the single-model baselines), same noise and scheduler as balanced."""
    sched = problem.scheduler
    latents = initial_latents(problem)
    n = set_timesteps(problem, latents.device)
    for i, t in enumerate(sched.timesteps):
        step = StepInfo(index=i, num_steps=n, timestep=t)
        pred = guided_noise(adapter, model_input(sched, latents, t), step, state, problem.guidance_scale)
        latents = scheduler_step(sched, pred.guided, t, latents, problem.generators)
        if callback is not None:
            callback(i)
    return latents
