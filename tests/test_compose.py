"""The Python API: compatibility checks before any model runs, records, errors that teach."""

from __future__ import annotations

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
    with pytest.raises(NonFiniteNoiseError, match=r"'tiny-l2i' predicted NaN/inf noise at step 0.*float32"):
        rc(layout=LAYOUT)


def test_record_holds_layout_positions_seeds_and_versions(pair):
    rc = RealCompo(t2i=pair[0], l2i=pair[1], planner=None, num_steps=3, balance={"t0": 1, "scale_factor": 1e3})
    result = rc(layout=LAYOUT, seed=5, batch_size=2, record_influence=True)
    rec = result.record
    assert rec.seeds == [5, 6] and rec.layout == LAYOUT and rec.num_steps == 3
    assert rec.token_positions["tiny-t2i"] == [[2, 3], [6, 7]]
    assert rec.versions["realcompo-sdk"] and rec.balance["t0"] == 1
    assert len(result.influence) == 3 and len(result.images) == 2


def test_baseline_modes_share_noise_and_decoder(pair):
    rc = RealCompo(t2i=pair[0], l2i=pair[1], planner=None, num_steps=3, balance={"t0": 3})
    # with the whole run in warm-up, balanced sampling is the L2I model alone
    balanced = rc(layout=LAYOUT, seed=1).latents
    alone = rc(layout=LAYOUT, seed=1, mode="l2i").latents
    assert (balanced - alone).abs().max() <= 1e-5
    assert rc(layout=LAYOUT, seed=1, mode="t2i").record.passes == {}


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
