"""The look-ahead step x' = step(ε, t, x) that must not disturb the sampling scheduler.

Stateful schedulers (PNDM's history, DPM-Solver multistep's model outputs, Euler's step index)
would be corrupted by a second `step()` per timestep, so the look-ahead steps a deep copy, with a
copy of the generators for stochastic schedulers. The official layout variant's DDIM formula is
available as an option.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import torch

from .errors import RealCompoError


def _copy_generators(generators: list[torch.Generator]) -> list[torch.Generator]:
    copies = []
    for g in generators:
        c = torch.Generator(device=g.device)
        c.set_state(g.get_state())
        copies.append(c)
    return copies


def scheduler_step(scheduler: Any, noise: torch.Tensor, timestep: Any, latents: torch.Tensor,
                   generators: list[torch.Generator]) -> torch.Tensor:
    """`scheduler.step`, passing the per-sample generators when the scheduler draws noise."""
    kwargs = {"generator": generators} if "generator" in inspect.signature(scheduler.step).parameters else {}
    return scheduler.step(noise, timestep, latents, return_dict=False, **kwargs)[0]


def scheduler_lookahead(scheduler: Any, noise: torch.Tensor, timestep: Any, latents: torch.Tensor,
                        generators: list[torch.Generator]) -> torch.Tensor:
    """One differentiable step of a copy of `scheduler`; `scheduler` itself is left untouched."""
    return scheduler_step(copy.deepcopy(scheduler), noise, timestep, latents, _copy_generators(generators))


def model_input(scheduler: Any, latents: torch.Tensor, timestep: Any) -> torch.Tensor:
    """`scheduler.scale_model_input`, for schedulers that scale (Euler); flow-matching ones do not."""
    scale = getattr(scheduler, "scale_model_input", None)
    return latents if scale is None else scale(latents, timestep)


def initial_sigma(scheduler: Any) -> float:
    """How much to scale unit noise to start: `init_noise_sigma`, 1 for flow matching."""
    return float(getattr(scheduler, "init_noise_sigma", 1.0))


def ddim_lookahead(scheduler: Any, noise: torch.Tensor, timestep: Any, latents: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) step to the next timestep, as the official layout variant does."""
    alphas = getattr(scheduler, "alphas_cumprod", None)
    if alphas is None or float(getattr(scheduler, "init_noise_sigma", 1.0)) != 1.0:
        raise RealCompoError(
            f"lookahead='ddim' needs a scheduler on the DDPM alpha parametrisation (DDIM, PNDM, "
            f"DPM-Solver...); {type(scheduler).__name__} is sigma-scaled. Use lookahead='scheduler'."
        )
    t = int(timestep)
    prev = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    a_t = alphas[t].to(latents.device, latents.dtype)
    a_prev = alphas[prev].to(latents.device, latents.dtype) if prev >= 0 else torch.tensor(1.0, device=latents.device, dtype=latents.dtype)
    prediction = scheduler.config.prediction_type
    if prediction == "epsilon":
        eps = noise
        x0 = (latents - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    elif prediction == "v_prediction":
        x0 = a_t.sqrt() * latents - (1 - a_t).sqrt() * noise
        eps = a_t.sqrt() * noise + (1 - a_t).sqrt() * latents
    else:
        x0 = noise
        eps = (latents - a_t.sqrt() * x0) / (1 - a_t).sqrt()
    return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps


def lookahead(kind: str, scheduler: Any, noise: torch.Tensor, timestep: Any, latents: torch.Tensor,
              generators: list[torch.Generator]) -> torch.Tensor:
    if kind == "ddim":
        return ddim_lookahead(scheduler, noise, timestep, latents)
    return scheduler_lookahead(scheduler, noise, timestep, latents, generators)
