"""InstanceDiffusion's own sampler, for single-model baselines: PLMS, grounding schedule, MIS.

The official sampler is ldm's PLMS, which is diffusers' `PNDMScheduler(skip_prk_steps=True)`:
its first step evaluates the model twice (at t and at the next t), hence one more model call
than steps. Fusers are on for the first `int(grounding_fraction · steps)` steps, ScaleU always.

Multi-instance sampling (MIS): for the first `int(mis_fraction · steps)` steps, the full prompt
and every instance alone (its phrase as prompt, itself in slot 0) each follow their own PLMS
trajectory from the same noise; the latents are then averaged and sampling continues with the
full prompt's trajectory and history. MIS needs 1 + N private latents, so it cannot run inside
RealCompo's balanced loop, which owns one latent: there the balancer plays MIS's role of keeping
instances apart, and the adapter samples without MIS.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .unet import set_grounding


@dataclass
class Conditioning:
    """One prompt's conditioning: text hidden states (B, 77, D) and position-net tokens (B, 184, D)."""

    context: torch.Tensor
    objs: torch.Tensor


def official_scheduler() -> Any:
    """The official schedule and sampler: ldm "linear" betas (= diffusers "scaled_linear") and
    PLMS (= PNDM without its Runge-Kutta warm-up)."""
    from diffusers import PNDMScheduler

    return PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False,
    )  # fmt: skip


def guided_noise(
    unet: Any, x: torch.Tensor, t: Any, cond: Conditioning, uncond: Conditioning, guidance_scale: float
) -> torch.Tensor:
    """CFG noise from one batched [uncond; cond] call (the official code makes two calls)."""
    if guidance_scale == 1.0:  # the reference skips the unconditional pass then
        return unet(x, t, encoder_hidden_states=cond.context, cross_attention_kwargs={"gligen": {"objs": cond.objs}}).sample
    out = unet(
        torch.cat([x, x]), t,
        encoder_hidden_states=torch.cat([uncond.context, cond.context]),
        cross_attention_kwargs={"gligen": {"objs": torch.cat([uncond.objs, cond.objs])}},
    ).sample  # fmt: skip
    eps_uncond, eps_cond = out.chunk(2)
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


@torch.no_grad()
def sample_instancediffusion(
    unet: Any,
    scheduler: Any,
    latents: torch.Tensor,
    cond: Conditioning,
    uncond: Conditioning,
    *,
    num_steps: int,
    guidance_scale: float = 7.5,
    grounding_fraction: float = 0.8,
    mis_fraction: float = 0.0,
    instance_conds: Sequence[Conditioning] = (),
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Denoise `latents` (already scaled by the scheduler's init sigma) and return the final latents."""
    if not 0.0 <= grounding_fraction <= 1.0 or not 0.0 <= mis_fraction <= 1.0:
        raise ValueError(f"grounding_fraction and mis_fraction must lie in [0, 1], got {grounding_fraction}, {mis_fraction}")
    mis_steps = int(mis_fraction * num_steps)
    if mis_steps and not instance_conds:
        raise ValueError("mis_fraction > 0 needs the per-instance conditionings (instance_conds)")
    scheduler.set_timesteps(num_steps, device=latents.device)
    timesteps = list(scheduler.timesteps)
    extra_calls = len(timesteps) - num_steps  # PLMS: its first step takes two model calls
    grounded_steps = int(grounding_fraction * num_steps)

    def step_of(call: int) -> int:
        return max(call - extra_calls, 0)

    # (conditioning, scheduler with its own history, latent) per trajectory
    trajectories = [(cond, scheduler, latents)]
    if mis_steps:
        trajectories += [(c, copy.deepcopy(scheduler), latents) for c in instance_conds]
    merged = not mis_steps
    try:
        for call, t in enumerate(timesteps):
            step = step_of(call)
            if not merged and step >= mis_steps:
                # End of MIS: average the trajectories, continue on the full prompt's history.
                mean = torch.stack([x for _, _, x in trajectories]).mean(dim=0)
                trajectories = [(cond, trajectories[0][1], mean)]
                merged = True
            set_grounding(unet, step < grounded_steps)
            updated = []
            for c, sched, x in trajectories:
                eps = guided_noise(unet, sched.scale_model_input(x, t), t, c, uncond, guidance_scale)
                updated.append((c, sched, sched.step(eps, t, x).prev_sample))
            trajectories = updated
            if callback is not None:
                callback(call, trajectories[0][2])
    finally:
        set_grounding(unet, True)
    if not merged:  # MIS over every step
        return torch.stack([x for _, _, x in trajectories]).mean(dim=0)
    return trajectories[0][2]
