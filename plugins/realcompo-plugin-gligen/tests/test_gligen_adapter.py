"""The `gligen` adapter on tiny GLIGEN folders, alone and balanced with `sd`."""

from __future__ import annotations

import tempfile

import pytest
import torch
from realcompo_plugin_gligen.adapter import GligenAdapter
from realcompo_plugin_sd.adapter import StableDiffusionAdapter

from realcompo_sdk import Box, Keypoint, Layout, LayoutObject, RealCompo
from realcompo_sdk.errors import IncompatibleAdaptersError, LayoutError, RealCompoError
from realcompo_sdk.testing.contracts import L2IAdapterContract
from realcompo_sdk.testing.folders import save_tiny_sd_folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "sd": save_tiny_sd_folder(root / "sd", seed=0),
        "gligen": save_tiny_sd_folder(root / "gligen", seed=1, gligen=True),
        "sd-v": save_tiny_sd_folder(root / "sd-v", seed=0, prediction_type="v_prediction"),
        "gligen-v": save_tiny_sd_folder(root / "gligen-v", seed=1, gligen=True, prediction_type="v_prediction"),
    }


class TestGligenContract(L2IAdapterContract):
    def make_adapter(self):
        return GligenAdapter(model=str(save_tiny_sd_folder(tempfile.mkdtemp() + "/g", seed=1, gligen=True)))


def test_plain_sd_folder_is_refused(folders):
    with pytest.raises(RealCompoError, match="attention_type='gated'"):
        GligenAdapter(model=str(folders["sd"]))


def test_keypoints_are_refused_listing_accepted_kinds(folders):
    adapter = GligenAdapter(model=str(folders["gligen"]))
    layout = Layout(prompt="a person", objects=[LayoutObject(phrase="person", keypoints=[Keypoint(name="nose", x=0.5, y=0.5)])])
    with pytest.raises(LayoutError, match="accepts box"):
        adapter.check_layout(layout)


def test_more_than_30_objects_is_an_error(folders):
    adapter = GligenAdapter(model=str(folders["gligen"]))
    objects = [LayoutObject(phrase="cat", box=Box(x0=0, y0=0, x1=0.1, y1=0.1))] * 31
    with pytest.raises(LayoutError, match="at most 30"):
        adapter.check_layout(Layout(prompt="cats", objects=objects))


def test_grounding_switches_off_after_the_scheduled_fraction(folders):
    adapter = GligenAdapter(model=str(folders["gligen"]), scheduled_sampling_beta=0.5)
    contract = TestGligenContract()
    state = adapter.prepare(contract._request(adapter))
    x = contract._latents(adapter)
    sched = adapter.make_scheduler()
    sched.set_timesteps(4)
    from realcompo_sdk.interfaces import StepInfo

    t = sched.timesteps[0]
    early = adapter.predict_noise(x, StepInfo(0, 4, t), state, guidance_scale=1.0, branches=("cond",)).cond
    late = adapter.predict_noise(x, StepInfo(3, 4, t), state, guidance_scale=1.0, branches=("cond",)).cond
    uncond = adapter.predict_noise(x, StepInfo(3, 4, t), state, guidance_scale=1.0, branches=("uncond",)).cond
    assert float((early - late).abs().max()) > 1e-6  # grounding on at step 0, off at step 3
    assert not all(f.enabled for f in adapter._fusers)
    assert uncond.shape == late.shape


@pytest.mark.parametrize("pair", [("sd", "gligen"), ("sd-v", "gligen-v")])
def test_sd_and_gligen_compose(folders, pair):
    t2i = StableDiffusionAdapter(model=str(folders[pair[0]]))
    l2i = GligenAdapter(model=str(folders[pair[1]]))
    layout = Layout.from_boxes("a red cat to the left of a blue dog", [("red cat", (0, 0.2, 0.5, 0.8)), ("blue dog", (0.5, 0.2, 1, 0.8))])
    rc = RealCompo(t2i=t2i, l2i=l2i, planner=None, num_steps=4, balance={"t0": 1, "scale_factor": 100.0})
    result = rc(layout=layout, seed=3, batch_size=2)
    assert len(result.images) == 2 and result.images[0].size == (32, 32)
    assert result.record.passes["backward"] == 3
    assert set(result.record.token_positions) == {"sd", "gligen"}


def test_epsilon_and_v_prediction_models_do_not_mix(folders):
    t2i = StableDiffusionAdapter(model=str(folders["sd"]))
    l2i = GligenAdapter(model=str(folders["gligen-v"]))
    with pytest.raises(IncompatibleAdaptersError, match=r"prediction_type.*'sd'.*'gligen'"):
        RealCompo(t2i=t2i, l2i=l2i, planner=None)


def test_gligen_noise_is_float32(folders):
    adapter = GligenAdapter(model=str(folders["gligen"]))
    contract = TestGligenContract()
    state = adapter.prepare(contract._request(adapter))
    out = adapter.predict_noise(contract._latents(adapter), contract._step(adapter), state, guidance_scale=2.0)
    assert out.guided.dtype == torch.float32


def test_a_mixed_batch_grounds_each_sample_on_its_own_layout(folders):
    from realcompo_plugin_gligen.adapter import GligenGrounding

    from realcompo_sdk.interfaces import GenerationRequest

    adapter = GligenAdapter(model=str(folders["gligen"]))
    layouts = [Layout.from_boxes("a cat and a dog", [("cat", (0, 0, 0.5, 1)), ("dog", (0.5, 0, 1, 1))]),
               Layout.from_boxes("a bird", [("bird", (0.2, 0.2, 0.4, 0.4))])]

    def request(batch_layouts):
        return GenerationRequest(prompt=batch_layouts[0].prompt, negative_prompt="", layout=batch_layouts[0],
                                 batch_size=len(batch_layouts), height=32, width=32, num_steps=2,
                                 prompts=tuple(lay.prompt for lay in batch_layouts) if len(batch_layouts) > 1 else (),
                                 layouts=tuple(batch_layouts) if len(batch_layouts) > 1 else ())

    mixed = adapter.prepare(request(layouts)).get(GligenGrounding)
    for b, layout in enumerate(layouts):
        alone = adapter.prepare(request([layout])).get(GligenGrounding)
        assert torch.equal(mixed.boxes[b], alone.boxes[0]) and torch.equal(mixed.masks[b], alone.masks[0])
        assert torch.allclose(mixed.positive_embeddings[b], alone.positive_embeddings[0], atol=1e-6)
    assert mixed.masks.sum(dim=1).tolist() == [2.0, 1.0]
