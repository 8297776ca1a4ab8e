"""The Python API: compatibility checks before any model runs, records, errors that teach."""

from __future__ import annotations

import re

import pytest
import torch

from realcompo_sdk import Layout, RealCompo
from realcompo_sdk.errors import IncompatibleAdaptersError, NonFiniteNoiseError, RealCompoError, TokenAlignmentError
from realcompo_sdk.testing.fakes import FixedPlanner, TinyL2IAdapter, TinyT2IAdapter

LAYOUT = Layout.from_boxes("a red cat and a blue dog", [("red cat", (0, 0.2, 0.5, 0.8)), ("blue dog", (0.5, 0.2, 1, 0.8))])


@pytest.fixture(scope="module")
def pair():
    return TinyT2IAdapter(seed=0), TinyL2IAdapter(seed=1)


def test_prediction_type_mismatch_names_both_adapters_before_any_model_runs(pair):
    v_model = TinyT2IAdapter(seed=0, prediction_type="v_prediction")
    with pytest.raises(IncompatibleAdaptersError, match=r"prediction_type is 'v_prediction' for 'tiny-t2i'.*'epsilon' for 'tiny-l2i'"):
        RealCompo(t2i=v_model, l2i=pair[1], planner=None)


def test_resolution_not_a_multiple_is_refused_with_a_suggestion(pair):
    rc = RealCompo(t2i=pair[0], l2i=pair[1], planner=None, num_steps=2)
    with pytest.raises(IncompatibleAdaptersError, match=r"not a multiple of 8.*try 32x32"):
        rc(layout=LAYOUT, height=36, width=36)


def test_nan_noise_names_the_adapter_and_the_step(pair):
    broken = TinyL2IAdapter(seed=1)
    with torch.no_grad():
        broken.unet.conv_out.bias.fill_(float("nan"))
    rc = RealCompo(t2i=pair[0], l2i=broken, planner=None, num_steps=3)
    with pytest.raises(NonFiniteNoiseError, match=r"'tiny-l2i' predicted NaN/inf noise at step 0.*in float32, which "
                                                  r"does not overflow here: its weights or conditioning hold NaN"):
        rc(layout=LAYOUT)


def test_nan_latents_are_not_blamed_on_the_adapter_that_receives_them(pair):
    from realcompo_sdk.interfaces import GenerationRequest, StepInfo

    request = GenerationRequest(prompt=LAYOUT.prompt, negative_prompt="", layout=LAYOUT, batch_size=1, height=32,
                                width=32, num_steps=2)  # fmt: skip
    state = pair[0].prepare(request)
    latents = torch.full((1, 4, 16, 16), float("nan"))
    with pytest.raises(NonFiniteNoiseError, match=r"were already NaN/inf: an earlier step produced them"):
        pair[0].predict_noise(latents, StepInfo(index=1, num_steps=2, timestep=torch.tensor(500)), state, guidance_scale=5.0)


def test_record_holds_layout_positions_seeds_and_versions(pair):
    rc = RealCompo(t2i=pair[0], l2i=pair[1], planner=None, num_steps=3, balance={"t0": 1, "scale_factor": 1e3})
    result = rc(layout=LAYOUT, seed=5, batch_size=2, record_influence=True)
    rec = result.record
    assert rec.seeds == [5, 6] and rec.layout == LAYOUT and rec.num_steps == 3
    assert rec.token_positions["tiny-t2i"] == [[2, 3], [6, 7]]
    assert rec.versions["realcompo-sdk"] and rec.balance["t0"] == 1
    assert len(result.influence) == 3 and len(result.images) == 2


def test_baseline_modes_share_noise_and_decoder(pair):
    rc = RealCompo(t2i=pair[0], l2i=pair[1], planner=None, num_steps=3, balance={"t0": 1})
    alone = rc(layout=LAYOUT, seed=1, mode="l2i")
    again = rc(layout=LAYOUT, seed=1, mode="l2i")
    assert (alone.latents - again.latents).abs().max() == 0 and alone.record.passes == {}
    assert rc(layout=LAYOUT, seed=1, mode="t2i").record.passes == {}
    # (that the warm-up of the balanced sampler is exactly the L2I model alone: test_sampler.py)


def test_a_warmup_as_long_as_the_run_is_refused_before_any_work(pair):
    with pytest.raises(RealCompoError, match=r"t0=3 is not below num_steps=3: every step would follow the L2I"):
        RealCompo(t2i=pair[0], l2i=pair[1], planner=None, num_steps=3, balance={"t0": 3})
    rc = RealCompo(t2i=pair[0], l2i=pair[1], planner=None, num_steps=4, balance={"t0": 3})
    with pytest.raises(RealCompoError, match="t0=3 is not below num_steps=2"):
        rc(layout=LAYOUT, num_steps=2)
    assert rc(layout=LAYOUT, num_steps=2, mode="l2i").record.num_steps == 2  # no balancer, no warm-up rule


def test_phrase_missing_from_prompt_is_an_error_unless_appended(pair):
    layout = Layout.from_boxes("a red cat", [("red cat", (0, 0, 0.5, 0.5)), ("green hat", (0.5, 0, 1, 0.5))])
    rc = RealCompo(t2i=pair[0], l2i=pair[1], planner=None, num_steps=2)
    with pytest.raises(TokenAlignmentError, match="green hat"):
        rc(layout=layout)
    appended = RealCompo(t2i=pair[0], l2i=pair[1], planner=None, num_steps=2, append_missing_phrases=True)
    assert appended(layout=layout).record.prompt == "a red cat, green hat"


def test_prompt_without_layout_needs_a_planner(pair):
    rc = RealCompo(t2i=pair[0], l2i=pair[1], planner=None)
    with pytest.raises(RealCompoError, match="no planner"):
        rc("a cat")


def test_planner_instance_plans_the_prompt(pair):
    rc = RealCompo(t2i=pair[0], l2i=pair[1], planner=FixedPlanner(), num_steps=2)
    assert [o.phrase for o in rc(prompt="cat dog").record.layout.objects] == ["cat", "dog"]


def test_options_for_an_instance_are_refused(pair):
    with pytest.raises(RealCompoError, match="must be set when creating it"):
        RealCompo(t2i=pair[0], l2i=pair[1], t2i_options={"seed": 3}, planner=None)


def test_adapters_are_created_by_id_with_options(tiny_registry):
    rc = RealCompo(t2i="tiny-t2i", l2i="tiny-l2i", planner="fixed", t2i_options={"seed": 4})
    assert rc.t2i.options.seed == 4 and rc.l2i[0].name == "tiny-l2i"


def _registry_with(register_hook, hook: str = "register_t2i_adapters") -> None:
    """The built-ins, the testing ids and one extra plugin module whose `hook` is `register_hook`."""
    import types

    from realcompo_sdk import builtin, hookimpl, registry
    from realcompo_sdk.plugins import PluginLoader
    from realcompo_sdk.testing import plugin as testing_plugin

    module = types.ModuleType("preset_plugin")
    setattr(module, hook, hookimpl(register_hook))
    registry.set_report(PluginLoader(entry_points=[], builtins=[builtin, testing_plugin, module]).load())


def test_a_t2i_preset_recommends_how_to_sample_and_explicit_settings_win():
    from realcompo_sdk import registry

    preset = {"num_steps": 3, "guidance_scale": 2.0, "scheduler": "euler", "balance": {"t0": 1, "scale_factor": 10.0}}
    _registry_with(lambda register: register("realcompo_sdk.testing.fakes:TinyT2IAdapter", id="tiny-preset", generation=preset))
    try:
        rc = RealCompo(t2i="tiny-preset", l2i="tiny-l2i", planner="fixed")
        assert (rc.num_steps, rc.guidance_scale, rc.scheduler_name) == (3, 2.0, "euler")
        assert rc.balance.t0 == 1 and rc.balance.scale_factor == 10.0
        record = rc("a red car next to a tree", seed=0).record
        assert record.num_steps == 3 and record.guidance_scale == 2.0 and record.balance["t0"] == 1
        assert record.scheduler.startswith("Euler")
        mine = RealCompo(t2i="tiny-preset", l2i="tiny-l2i", planner="fixed", num_steps=4, guidance_scale=1.5,
                         scheduler="ddim", balance={"scale_factor": 5.0})
        assert (mine.num_steps, mine.guidance_scale, mine.scheduler_name) == (4, 1.5, "ddim")
        assert mine.balance.scale_factor == 5.0 and mine.balance.t0 == 1  # key by key
        plain = RealCompo(t2i="tiny-t2i", l2i="tiny-l2i", planner="fixed")  # no preset: the library defaults
        assert (plain.num_steps, plain.guidance_scale, plain.scheduler_name, plain.balance.t0) == (50, 7.5, None, None)
    finally:
        registry.set_report(None)


@pytest.mark.parametrize("kind,message", [
    ("t2i", r"unknown setting\(s\) \['steps'\]"),
    ("l2i", r"generation= is for T2I presets"),
])
def test_a_bad_generation_preset_fails_its_plugin_not_the_host(kind, message):
    from realcompo_sdk import registry

    target = f"realcompo_sdk.testing.fakes:Tiny{kind.upper()}Adapter"
    generation = {"steps": 3} if kind == "t2i" else {"num_steps": 3}
    _registry_with(lambda register: register(target, id="tiny-bad", generation=generation), f"register_{kind}_adapters")
    try:
        report = registry.report()
        assert any(re.search(message, p) for p in report.problems), report.problems
        assert (kind, "tiny-bad") not in report.registrations and ("t2i", "tiny-t2i") in report.registrations
    finally:
        registry.set_report(None)


def test_a_negative_prompt_past_the_token_limit_is_a_warning_not_silence(pair):
    rc = RealCompo(t2i=pair[0], l2i=pair[1], planner=None, num_steps=2, balance={"t0": 1})
    long_negative = " ".join(["blurry"] * 200)
    with pytest.warns(UserWarning, match=r"has \d+ tokens; the text encoder reads the first \d+, the rest is ignored"):
        rc(layout=LAYOUT, negative_prompt=long_negative)
