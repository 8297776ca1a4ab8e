"""The balanced sampler: parity with the reference loop, scheduler safety, seeds, gradients."""

from __future__ import annotations

import copy

import pytest
import torch

from realcompo_sdk.balancer import BalanceOptions, compose, initial_logits, region_loss, region_masks
from realcompo_sdk.interfaces import GenerationRequest, StepInfo
from realcompo_sdk.layout import Layout
from realcompo_sdk.lookahead import scheduler_lookahead
from realcompo_sdk.sampler import BalancedProblem, balanced_sample
from realcompo_sdk.testing.fakes import TinyL2IAdapter, TinyT2IAdapter
from realcompo_sdk.testing.reference import reference_sample

LAYOUT = Layout.from_boxes("a red cat to the left of a blue dog", [("red cat", (0, 0.2, 0.5, 0.8)), ("blue dog", (0.5, 0.2, 1, 0.8))])
SWITCHES = {
    "paper": {},
    "updates_during_warmup": {"updates_during_warmup": True},
    "random_init": {"init": "random"},
    "cond_lookahead": {"lookahead_noise": "cond"},
    "detach_t2i": {"detach_t2i_attention": True},
    "ddim_lookahead": {"lookahead": "ddim"},
    "window": {"t1": 5},
    "all_official": {"updates_during_warmup": True, "init": "random", "lookahead_noise": "cond",
                     "detach_t2i_attention": True, "lookahead": "ddim"},
}


@pytest.fixture(scope="module")
def adapters():
    return [TinyT2IAdapter(seed=0), TinyL2IAdapter(seed=1)]


def make_problem(adapters, options, scheduler="ddim", batch=2, steps=6, seeds=(0, 1), layout=LAYOUT):
    request = GenerationRequest(prompt=layout.prompt, negative_prompt="", layout=layout, batch_size=batch,
                                height=32, width=32, num_steps=steps)
    positions = [a.phrase_token_positions(layout.prompt, [o.phrase for o in layout.objects])[1] for a in adapters]
    return BalancedProblem(adapters=adapters, states=[a.prepare(request) for a in adapters],
                           token_groups=[[p] * batch for p in positions], request=request,
                           scheduler=adapters[0].make_scheduler(scheduler),
                           generators=[torch.Generator().manual_seed(s) for s in seeds[:batch]],
                           guidance_scale=5.0, options=options)


@pytest.mark.parametrize("switch", sorted(SWITCHES))
def test_fast_sampler_matches_reference_loop(adapters, switch):
    options = BalanceOptions(scale_factor=1e4, t0=2, attention_resolution=8, **SWITCHES[switch])
    fast = balanced_sample(make_problem(adapters, options)).latents
    ref = reference_sample(make_problem(adapters, options))
    plain = balanced_sample(make_problem(adapters, options.model_copy(update={"scale_factor": 0.0}))).latents
    assert (fast - ref).abs().max() <= 1e-4
    assert (fast - plain).abs().max() > 1e-3  # the influence update really changed the output


@pytest.mark.parametrize("scheduler", ["ddim", "pndm", "euler", "dpm"])
def test_parity_holds_for_stateful_schedulers(adapters, scheduler):
    options = BalanceOptions(scale_factor=1e4, t0=2, attention_resolution=4)
    fast = balanced_sample(make_problem(adapters, options, scheduler)).latents
    ref = reference_sample(make_problem(adapters, options, scheduler))
    assert (fast - ref).abs().max() <= 1e-4


@pytest.mark.parametrize("scheduler", ["ddim", "pndm", "euler", "dpm", "euler_a"])
def test_lookahead_leaves_scheduler_state_untouched(adapters, scheduler):
    sched = adapters[0].make_scheduler(scheduler)
    sched.set_timesteps(6)
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(5)
    for t in sched.timesteps[:3]:  # advance so multistep history exists
        x = sched.step(torch.randn_like(x), t, x, return_dict=False)[0]
    t = sched.timesteps[3]
    snapshot = copy.deepcopy(sched.__dict__)
    gen_state = gen.get_state()
    scheduler_lookahead(sched, torch.randn_like(x), t, x, [gen])
    for key, value in snapshot.items():
        assert _same(value, sched.__dict__[key]), f"{scheduler}: look-ahead changed {key}"
    assert torch.equal(gen.get_state(), gen_state)


def _same(a, b) -> bool:
    import numpy as np

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def test_global_rng_is_never_touched(adapters):
    options = BalanceOptions(scale_factor=1e4, t0=1, init="random", attention_resolution=8)
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    balanced_sample(make_problem(adapters, options, "euler_a"))
    assert torch.equal(torch.get_rng_state(), before)


def test_each_sample_depends_on_its_own_seed_only(adapters):
    options = BalanceOptions(scale_factor=1e4, t0=2, attention_resolution=8)
    batch = balanced_sample(make_problem(adapters, options, batch=2, seeds=(7, 8))).latents
    alone = balanced_sample(make_problem(adapters, options, batch=1, seeds=(8,))).latents
    assert (batch[1] - alone[0]).abs().max() <= 1e-4


def test_influence_maps_are_per_sample(adapters):
    options = BalanceOptions(scale_factor=1e5, t0=1, attention_resolution=8)
    out = balanced_sample(make_problem(adapters, options, batch=2, seeds=(0, 1)), record_influence=True)
    last = out.influence[-1]  # (K, B, 1, h, w)
    assert last.shape[:2] == (2, 2)
    assert (last[:, 0] - last[:, 1]).abs().max() > 1e-6
    assert torch.allclose(last.sum(dim=0), torch.ones_like(last[0]))


def _term_gradients(adapters, detach_t2i):
    problem = make_problem(adapters, BalanceOptions(), batch=1, seeds=(0,))
    sched = problem.scheduler
    sched.set_timesteps(6)
    t = sched.timesteps[2]
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    step = StepInfo(index=2, num_steps=6, timestep=t)
    noises = [a.predict_noise(x, step, s, guidance_scale=5.0).guided for a, s in zip(adapters, problem.states)]
    logits = initial_logits(2, (1, 16, 16), "random", [torch.Generator().manual_seed(0)], x.device).requires_grad_(True)
    x_prime = scheduler_lookahead(sched, compose(noises, logits), t, x, problem.generators)
    regions = region_masks(LAYOUT, 8, 8, x.device)
    grads = []
    for k, (adapter, state) in enumerate(zip(adapters, problem.states)):
        maps = adapter.attention_probs(x_prime, step, state, problem.token_groups[k], 8)
        if k == 0 and detach_t2i:
            maps = maps.detach()
        loss = region_loss(maps, regions)
        if not loss.requires_grad:  # a detached term: no path from the loss to the logits at all
            grads.append(torch.zeros_like(logits))
            continue
        (g,) = torch.autograd.grad(loss, logits, retain_graph=True, allow_unused=True)
        grads.append(torch.zeros_like(logits) if g is None else g)
    return grads


def test_gradient_reaches_every_adapters_influence_through_every_attention_term(adapters):
    grads = _term_gradients(adapters, detach_t2i=False)
    for term in grads:  # each adapter's attention term moves both adapters' logits
        assert term[0].abs().sum() > 0 and term[1].abs().sum() > 0


def test_detached_t2i_term_has_exactly_zero_gradient(adapters):
    grads = _term_gradients(adapters, detach_t2i=True)
    assert torch.count_nonzero(grads[0]) == 0
    assert grads[1].abs().sum() > 0


def test_no_pass_runs_whose_result_cannot_change_the_output(adapters):
    steps, t0 = 6, 2
    out = balanced_sample(make_problem(adapters, BalanceOptions(scale_factor=1e4, t0=t0, attention_resolution=8), steps=steps))
    # warm-up: L2I CFG only; then both CFG + one grad pass each + one backward
    assert out.passes == {"cfg": t0 + 2 * (steps - t0), "cond": 0, "grad": 2 * (steps - t0), "backward": steps - t0}
    detached = balanced_sample(make_problem(adapters, BalanceOptions(scale_factor=1e4, t0=t0, detach_t2i_attention=True,
                                                                    attention_resolution=8), steps=steps))
    assert detached.passes["grad"] == steps - t0  # the detached T2I attention pass is skipped
    frozen = balanced_sample(make_problem(adapters, BalanceOptions(scale_factor=0.0, t0=t0), steps=steps))
    assert frozen.passes["grad"] == 0 and frozen.passes["backward"] == 0


def test_a_run_that_is_all_warmup_is_the_l2i_model_alone(adapters):
    """The warm-up follows the L2I model exactly (same noise, same scheduler): checked with t0 equal to
    the step count, which the API refuses for users (the balancer would never run)."""
    from realcompo_sdk.sampler import plain_sample

    problem = make_problem(adapters, BalanceOptions(t0=4), steps=4)
    balanced = balanced_sample(problem).latents
    fresh = make_problem(adapters, BalanceOptions(t0=4), steps=4)
    alone = plain_sample(fresh.adapters[1], fresh.states[1], fresh)
    assert (balanced - alone).abs().max() <= 1e-5


def test_three_way_balance_runs_and_matches_reference():
    adapters = [TinyT2IAdapter(seed=0), TinyL2IAdapter(seed=1), TinyL2IAdapter(seed=2)]
    options = BalanceOptions(scale_factor=1e4, t0=2, attention_resolution=8)
    fast = balanced_sample(make_problem(adapters, options), record_influence=True)
    ref = reference_sample(make_problem(adapters, options))
    assert (fast.latents - ref).abs().max() <= 1e-4
    assert fast.influence[-1].shape[0] == 3


def test_an_attention_map_that_underflowed_to_zero_adds_no_nan():
    maps = torch.rand(1, 2, 4, 4)
    maps[0, 1] = 0.0  # e.g. fp16 attention of a rare token
    maps.requires_grad_(True)
    regions = torch.zeros(2, 4, 4)
    regions[:, :2] = 1.0
    loss = region_loss(maps, regions)
    loss.backward()
    expected = 1.0 - (maps[0, 0] * regions[0]).sum() / maps[0, 0].sum() + 1.0  # the empty map's term is 1
    assert torch.isclose(loss, expected) and torch.isfinite(maps.grad).all()
    assert (maps.grad[0, 1] == 0).all()  # and it pushes nothing


@pytest.mark.parametrize("switch", ["paper", "all_official"])
def test_float64_run_matches_the_reference_loop_to_float64_precision(switch):
    adapters64 = [TinyT2IAdapter(seed=0, dtype="float64"), TinyL2IAdapter(seed=1, dtype="float64")]
    options = BalanceOptions(scale_factor=1e4, t0=2, attention_resolution=8, **SWITCHES[switch])
    fast = balanced_sample(make_problem(adapters64, options)).latents
    ref = reference_sample(make_problem(adapters64, options))
    assert fast.dtype == ref.dtype == torch.float64
    difference = float((fast - ref).abs().max())
    assert difference <= 1e-12, difference  # float32 runs agree only to ~2e-5 (measured)
    adapters32 = [TinyT2IAdapter(seed=0), TinyL2IAdapter(seed=1)]
    fast32 = balanced_sample(make_problem(adapters32, options)).latents
    assert fast32.dtype == torch.float32
    # same seeds, same starting noise: the float32 run is the float64 one up to float32 rounding
    assert 0 < float((fast32.double() - fast).abs().max()) < 1e-2


@pytest.mark.parametrize("switch", ["paper", "random_init", "cond_lookahead", "detach_t2i", "window"])
def test_flow_matching_sampling_matches_the_reference_loop(switch):
    """SD3 and Flux sample with FlowMatchEulerDiscreteScheduler (no input scaling, no init sigma,
    float timesteps): the balancer and its scheduler look-ahead must be as exact there."""
    flow = [TinyT2IAdapter(seed=0, prediction_type="flow"), TinyL2IAdapter(seed=1, prediction_type="flow")]
    assert flow[0].latent_spec.prediction_type == "flow"
    assert type(flow[0].make_scheduler()).__name__ == "FlowMatchEulerDiscreteScheduler"
    options = BalanceOptions(scale_factor=1e4, t0=2, attention_resolution=8, **SWITCHES[switch])
    fast = balanced_sample(make_problem(flow, options, scheduler=None)).latents
    ref = reference_sample(make_problem(flow, options, scheduler=None))
    plain = balanced_sample(make_problem(flow, options.model_copy(update={"scale_factor": 0.0}), scheduler=None)).latents
    assert (fast - ref).abs().max() <= 1e-4
    assert (fast - plain).abs().max() > 1e-3


def test_the_ddim_lookahead_refuses_a_flow_matching_scheduler():
    from realcompo_sdk.errors import RealCompoError

    flow = [TinyT2IAdapter(seed=0, prediction_type="flow"), TinyL2IAdapter(seed=1, prediction_type="flow")]
    options = BalanceOptions(scale_factor=1e4, t0=0, attention_resolution=8, lookahead="ddim")
    with pytest.raises(RealCompoError, match="lookahead='scheduler'"):
        balanced_sample(make_problem(flow, options, scheduler=None))


def test_flow_and_epsilon_models_are_not_balanced_together():
    from realcompo_sdk import RealCompo
    from realcompo_sdk.errors import IncompatibleAdaptersError

    with pytest.raises(IncompatibleAdaptersError, match="prediction_type is 'flow'.*'epsilon'"):
        RealCompo(t2i=TinyT2IAdapter(seed=0, prediction_type="flow"), l2i=TinyL2IAdapter(seed=1), planner=None)
