"""The RealCompo loop in the official code's pass structure — the yardstick for the fast sampler.

Same algorithm as `realcompo_sdk.sampler.balanced_sample`, computed the slow, obvious way:
cond and uncond passes run separately, noise is recomputed after the influence update, attention
forwards run the whole UNet, the T2I attention pass runs even when detached, and each adapter's
logits get their own `autograd.grad` call. The fast sampler must produce the same latents
(float32, max abs difference ≤ 1e-4); any speed-up that changes a number is a bug.
"""

from __future__ import annotations

import torch

from ..balancer import batch_regions, compose, initial_logits, region_loss
from ..interfaces import StepInfo
from ..lookahead import lookahead, model_input, scheduler_step
from ..sampler import BalancedProblem, attention_resolution, initial_latents, set_timesteps


def _guided(adapter, latents, step, state, scale):  # noqa: ANN001, ANN202
    if adapter.guidance == "distilled":  # one forward, already guided
        out = adapter.predict_noise(latents, step, state, guidance_scale=scale, branches=("cond",)).cond
        return out, out
    cond = adapter.predict_noise(latents, step, state, guidance_scale=scale, branches=("cond",)).cond
    uncond = adapter.predict_noise(latents, step, state, guidance_scale=scale, branches=("uncond",)).cond
    return uncond + scale * (cond - uncond), cond


def reference_sample(problem: BalancedProblem) -> torch.Tensor:
    opts, sched, adapters, s = problem.options, problem.scheduler, problem.adapters, problem.guidance_scale
    latents = initial_latents(problem)
    n = set_timesteps(problem, latents.device)
    batch, _, lh, lw = latents.shape
    logits = list(initial_logits(len(adapters), (batch, lh, lw), opts.init, problem.generators, latents.device)
                  .to(latents.dtype).unbind(0))
    resolution = attention_resolution(problem, lh)
    regions, valid = batch_regions(problem.request.sample_layouts(), resolution, lw * resolution // lh, latents.device)
    eta = opts.step_sizes(n)
    l2i = problem.l2i_indices
    for i, t in enumerate(sched.timesteps):
        step = StepInfo(index=i, num_steps=n, timestep=t)
        mixing = i >= opts.warmup_steps(n)
        model_in = model_input(sched, latents, t)
        if opts.updates_at(i, n):
            noises = []
            for adapter, state in zip(adapters, problem.states):
                guided, cond = _guided(adapter, model_in, step, state, s)
                noises.append(cond if opts.lookahead_noise == "cond" else guided)
            leaves = [c.detach().requires_grad_(True) for c in logits]
            x_prime = lookahead(opts.lookahead, sched, compose(noises, torch.stack(leaves)), t, latents, problem.generators)
            x_prime_in = model_input(sched, x_prime, t)
            loss = 0.0
            for k, (adapter, state) in enumerate(zip(adapters, problem.states)):
                maps = adapter.attention_probs(x_prime_in, step, state, problem.token_groups[k], resolution, stop_early=False)
                if k == 0 and opts.detach_t2i_attention:
                    maps = maps.detach()
                loss = loss + region_loss(maps, regions, valid)
            grads = [torch.autograd.grad(loss, leaf, retain_graph=True)[0] for leaf in leaves]
            logits = [(leaf - float(eta[i]) * g).detach() for leaf, g in zip(leaves, grads)]
        wanted = range(len(adapters)) if mixing else l2i
        guided = {k: _guided(adapters[k], model_in, step, problem.states[k], s)[0] for k in wanted}
        if mixing:
            noise = compose([guided[k] for k in range(len(adapters))], torch.stack(logits))
        else:
            noise = sum(guided[k] for k in l2i) / len(l2i)
        latents = scheduler_step(sched, noise, t, latents, problem.generators)
    return latents
