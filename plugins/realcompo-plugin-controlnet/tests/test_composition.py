"""ControlNet adapters balanced with SD / SDXL / GLIGEN: the compositions that must work and the
ones that must fail before any model runs."""

from __future__ import annotations

import pytest
import torch
from realcompo_plugin_controlnet.adapter import ControlNetOpenPoseAdapter, ControlNetSegAdapter
from realcompo_plugin_controlnet.poses import standing_person
from realcompo_plugin_gligen.adapter import GligenAdapter, GligenGrounding
from realcompo_plugin_sd.adapter import StableDiffusionAdapter
from realcompo_plugin_sd.sdxl import StableDiffusionXLAdapter

from realcompo_sdk import RealCompo
from realcompo_sdk.balancer import region_masks
from realcompo_sdk.errors import IncompatibleAdaptersError, LayoutError, NonFiniteNoiseError
from realcompo_sdk.layout import Layout, LayoutObject, Mask

BALANCE = {"t0": 1, "scale_factor": 100.0}


def keypoint_layout() -> Layout:
    return Layout(prompt="a man and a woman standing", objects=[
        LayoutObject(phrase="man", keypoints=standing_person(0.0, 0.1, 0.5, 0.9)),
        LayoutObject(phrase="woman", keypoints=standing_person(0.5, 0.1, 1.0, 0.9)),
    ])


def mask_layout() -> Layout:
    def mask(x0, y0, x1, y1):
        return Mask(rows=[[int(x0 <= x < x1 and y0 <= y < y1) for x in range(16)] for y in range(16)])

    return Layout(prompt="a red car next to a tree", objects=[
        LayoutObject(phrase="red car", mask=mask(0, 6, 8, 14)),
        LayoutObject(phrase="tree", mask=mask(9, 1, 15, 15)),
    ])


@pytest.fixture(scope="module")
def sdxl(folders):
    return StableDiffusionXLAdapter(model=str(folders["sdxl"]))


@pytest.fixture(scope="module")
def sd(folders):
    return StableDiffusionAdapter(model=str(folders["sd"]))


def _storage(*modules) -> dict[int, int]:
    """data pointer → bytes of every parameter and buffer, each storage once."""
    seen: dict[int, int] = {}
    for m in modules:
        for t in [*m.parameters(), *m.buffers()]:
            seen[t.data_ptr()] = t.numel() * t.element_size()
    return seen


def _processors(unet) -> dict[str, type]:
    return {k: type(v) for k, v in unet.attn_processors.items()}


# ---- compositions that must work -----------------------------------------------------------
def test_sdxl_and_controlnet_keypoint_share_one_unet(sdxl, folders):
    pose = ControlNetOpenPoseAdapter.sharing(sdxl, controlnet=str(folders["cn-sdxl"]))
    assert pose.unet is sdxl.unet and pose.text_encoder is sdxl.text_encoder and pose.base is sdxl
    t2i_bytes = _storage(sdxl.unet, sdxl.text_encoder, sdxl.text_encoder_2)
    together = _storage(sdxl.unet, sdxl.text_encoder, sdxl.text_encoder_2, pose.unet, pose.text_encoder,
                        pose.base.text_encoder_2, pose.controlnet)
    assert sum(together.values()) == sum(t2i_bytes.values()) + sum(_storage(pose.controlnet).values())
    assert pose.describe()["shares_models_with"] == "sdxl" and pose.latent_spec == sdxl.latent_spec

    before = _processors(sdxl.unet)
    rc = RealCompo(t2i=sdxl, l2i=pose, planner=None, num_steps=4, balance=BALANCE)
    result = rc(layout=keypoint_layout(), seed=3, batch_size=2, record_influence=True)
    assert len(result.images) == 2 and result.images[0].size == (32, 32)
    assert result.record.passes["backward"] == 3
    assert set(result.record.token_positions) == {"sdxl", "controlnet-openpose"}
    weights = result.influence[-1]  # (K, B, 1, h, w)
    assert weights.shape[:2] == (2, 2) and float(weights.std()) > 0  # the balancer moved the influence away from equal weights
    assert _processors(sdxl.unet) == before  # the shared UNet's attention is left as it was


def test_shared_and_unshared_controlnet_predict_the_same_noise(sdxl, folders):
    shared = ControlNetOpenPoseAdapter.sharing(sdxl, controlnet=str(folders["cn-sdxl"]))
    alone = ControlNetOpenPoseAdapter(controlnet=str(folders["cn-sdxl"]), base=str(folders["sdxl"]))
    assert alone.unet is not sdxl.unet
    rc = RealCompo(t2i=sdxl, l2i=shared, planner=None, num_steps=2, balance=BALANCE)
    a = rc(layout=keypoint_layout(), seed=1).latents
    rc = RealCompo(t2i=sdxl, l2i=alone, planner=None, num_steps=2, balance=BALANCE)
    b = rc(layout=keypoint_layout(), seed=1).latents
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_sd_and_controlnet_mask(sd, folders):
    seg = ControlNetSegAdapter(controlnet=str(folders["cn-sd"]), base=str(folders["sd"]))
    rc = RealCompo(t2i=sd, l2i=seg, planner=None, num_steps=4, balance=BALANCE)
    result = rc(layout=mask_layout(), seed=0, batch_size=2)
    assert len(result.images) == 2 and result.record.passes["backward"] == 3
    assert [a["id"] for a in result.record.adapters] == ["sd", "controlnet-seg"]


def test_sd_gligen_and_controlnet_keypoint_balance_three_ways(sd, folders):
    gligen = GligenAdapter(model=str(folders["gligen"]), ground_by_bounding_box=True)
    pose = ControlNetOpenPoseAdapter.sharing(sd, controlnet=str(folders["cn-sd"]))
    rc = RealCompo(t2i=sd, l2i=[gligen, pose], planner=None, num_steps=4, balance=BALANCE)
    result = rc(layout=keypoint_layout(), seed=2, batch_size=1, record_influence=True)
    assert set(result.record.token_positions) == {"sd", "gligen", "controlnet-openpose"}
    assert result.record.passes["backward"] == 3
    weights = result.influence[-1]
    assert weights.shape[0] == 3 and torch.allclose(weights.sum(0), torch.ones_like(weights[0]))


def test_keypoint_region_is_the_padded_box_of_visible_keypoints_and_mask_region_the_mask():
    layout = Layout(prompt="a man and a tree", objects=[
        LayoutObject(phrase="man", keypoints=standing_person(0.25, 0.25, 0.75, 0.75, hidden={"left_ankle", "right_ankle"})),
        LayoutObject(phrase="tree", mask=Mask(rows=[[0, 1], [0, 1]])),
    ])
    regions = region_masks(layout, 20, 20, torch.device("cpu"))
    box = layout.objects[0].bounding_box()
    assert box.y1 == pytest.approx(0.25 + 0.5 * 0.75 + 0.05)  # knees (ankles hidden) + padding
    ys, xs = torch.nonzero(regions[0], as_tuple=True)
    assert int(ys.min()) == int(box.y0 * 20) and int(ys.max()) == int(box.y1 * 20) - 1
    assert regions[1][:, :10].sum() == 0 and bool(regions[1][:, 10:].all())


# ---- compositions that must fail before any model runs ------------------------------------
def _no_model_may_run(monkeypatch, *adapters):
    def boom(*args, **kwargs):
        raise AssertionError("a model ran")

    for adapter in adapters:
        monkeypatch.setattr(adapter, "predict_noise", boom)
        monkeypatch.setattr(adapter, "prepare", boom)


def test_sdxl_with_an_sd_based_l2i_names_both_and_the_field(sdxl, folders, monkeypatch):
    gligen = GligenAdapter(model=str(folders["gligen"]))
    _no_model_may_run(monkeypatch, sdxl, gligen)
    with pytest.raises(IncompatibleAdaptersError, match=r"'sdxl'.*'gligen'.*scaling_factor is 0\.13025.*0\.18215"):
        RealCompo(t2i=sdxl, l2i=gligen, planner=None)


def test_sd_with_an_sdxl_controlnet_names_both_and_the_field(sd, folders, monkeypatch):
    pose = ControlNetOpenPoseAdapter(controlnet=str(folders["cn-sdxl"]), base=str(folders["sdxl"]))
    _no_model_may_run(monkeypatch, sd, pose)
    with pytest.raises(IncompatibleAdaptersError, match=r"T2I adapter 'sd' and L2I adapter 'controlnet-openpose'.*scaling_factor.*\(sd1\).*\(sdxl\)"):
        RealCompo(t2i=sd, l2i=pose, planner=None)


def test_resolution_not_a_multiple_is_refused_before_running(sd, folders, monkeypatch):
    seg = ControlNetSegAdapter.sharing(sd, controlnet=str(folders["cn-sd"]))
    rc = RealCompo(t2i=sd, l2i=seg, planner=None, num_steps=2, balance=BALANCE)
    _no_model_may_run(monkeypatch, sd, seg)
    with pytest.raises(IncompatibleAdaptersError, match=r"36x36 is not a multiple of 8.*try 32x32"):
        rc(layout=mask_layout(), height=36, width=36)


def test_too_many_objects_is_refused_before_running(sd, folders, monkeypatch):
    pose = ControlNetOpenPoseAdapter.sharing(sd, controlnet=str(folders["cn-sd"]))
    rc = RealCompo(t2i=sd, l2i=pose, planner=None, num_steps=2, balance=BALANCE)
    _no_model_may_run(monkeypatch, sd, pose)
    crowd = Layout(prompt="a crowd of people", objects=[
        LayoutObject(phrase="people", keypoints=standing_person(i / 17, 0, (i + 1) / 17, 1)) for i in range(17)])
    with pytest.raises(LayoutError, match="'controlnet-openpose' takes at most 16 objects"):
        rc(layout=crowd)


# ---- NaN noise -----------------------------------------------------------------------------
def test_nan_from_a_poisoned_controlnet_names_the_adapter_and_the_step(sd, folders):
    pose = ControlNetOpenPoseAdapter.sharing(sd, controlnet=str(folders["cn-sd"]))
    with torch.no_grad():
        pose.controlnet.controlnet_mid_block.bias.fill_(float("nan"))
    rc = RealCompo(t2i=sd, l2i=pose, planner=None, num_steps=3, balance=BALANCE)
    with pytest.raises(NonFiniteNoiseError, match=r"adapter 'controlnet-openpose' predicted NaN/inf noise at step 0.*in float32, which does not overflow here"):
        rc(layout=keypoint_layout())


def test_nan_from_the_sdxl_side_names_sdxl(folders):
    sdxl = StableDiffusionXLAdapter(model=str(folders["sdxl"]))
    pose = ControlNetOpenPoseAdapter(controlnet=str(folders["cn-sdxl"]), base=str(folders["sdxl"]))
    with torch.no_grad():
        sdxl.unet.conv_out.bias.fill_(float("inf"))
    rc = RealCompo(t2i=sdxl, l2i=pose, planner=None, num_steps=3, balance={"t0": 1, "scale_factor": 100.0})
    with pytest.raises(NonFiniteNoiseError, match=r"adapter 'sdxl' predicted NaN/inf noise at step 1"):
        rc(layout=keypoint_layout())


def test_gligen_grounds_keypoints_by_their_bounding_box_only_when_asked(folders):
    from realcompo_sdk.interfaces import GenerationRequest

    layout = keypoint_layout()
    with pytest.raises(LayoutError, match="accepts box"):
        GligenAdapter(model=str(folders["gligen"])).check_layout(layout)
    gligen = GligenAdapter(model=str(folders["gligen"]), ground_by_bounding_box=True)
    request = GenerationRequest(prompt=layout.prompt, negative_prompt="", layout=layout, batch_size=1,
                                height=32, width=32, num_steps=2)
    boxes = gligen.prepare(request).get(GligenGrounding).boxes[0, :2]
    expected = torch.tensor([o.bounding_box().as_tuple() for o in layout.objects])
    torch.testing.assert_close(boxes, expected)


def test_controlnet_created_by_id_shares_the_t2i_models(folders):
    rc = RealCompo(t2i="sd", l2i="controlnet-seg", planner=None, num_steps=2, balance=BALANCE,
                   t2i_options={"model": str(folders["sd"])}, l2i_options={"controlnet": str(folders["cn-sd"])})
    assert rc.l2i[0].unet is rc.t2i.unet and rc.l2i[0].text_encoder is rc.t2i.text_encoder
    assert len(rc(layout=mask_layout(), seed=0).images) == 1


def test_controlnet_by_id_with_another_base_loads_its_own(folders, tmp_path):
    from realcompo_sdk.testing.folders import save_tiny_sd_folder

    other = save_tiny_sd_folder(tmp_path / "other-sd", seed=5)
    rc = RealCompo(t2i="sd", l2i="controlnet-seg", planner=None, num_steps=2,
                   t2i_options={"model": str(folders["sd"])},
                   l2i_options={"controlnet": str(folders["cn-sd"]), "base": str(other)})
    assert rc.l2i[0].unet is not rc.t2i.unet and not rc.l2i[0].shared


# ---- compositions refused from config files, before any weights load ------------------------
def _no_weights_may_load(monkeypatch):
    from diffusers.models.modeling_utils import ModelMixin
    from transformers import PreTrainedModel

    def boom(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(ModelMixin, "from_pretrained", classmethod(boom))
    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(boom))


@pytest.mark.parametrize(("l2i", "options"), [
    ("gligen", lambda f: {"model": str(f["gligen"])}),
    ("controlnet-openpose", lambda f: {"controlnet": str(f["cn-sd"]), "base": str(f["sd"])}),
])
def test_sdxl_with_sd_based_l2i_by_id_fails_before_any_weights_load(folders, monkeypatch, l2i, options):
    _no_weights_may_load(monkeypatch)
    with pytest.raises(IncompatibleAdaptersError, match=rf"T2I adapter 'sdxl' and L2I adapter '{l2i}'.*"
                       r"scaling_factor is 0\.13025.*\(sdxl\).*0\.18215.*\(sd1\).*before loading any weights"):
        RealCompo(t2i="sdxl", t2i_options={"model": str(folders["sdxl"])}, l2i=l2i, l2i_options=options(folders),
                  planner=None)


def test_a_loaded_t2i_is_checked_against_l2i_configs_before_they_load(sd, folders, monkeypatch):
    _no_weights_may_load(monkeypatch)
    with pytest.raises(IncompatibleAdaptersError, match=r"T2I adapter 'sd' and L2I adapter 'controlnet-openpose'.*before loading"):
        RealCompo(t2i=sd, l2i="controlnet-openpose", planner=None,
                  l2i_options={"controlnet": str(folders["cn-sdxl"]), "base": str(folders["sdxl"])})


def test_config_peek_agrees_with_the_loaded_adapters(sd, sdxl, folders):
    gligen = GligenAdapter(model=str(folders["gligen"]))
    pose = ControlNetOpenPoseAdapter(controlnet=str(folders["cn-sdxl"]), base=str(folders["sdxl"]))
    for adapter in (sd, sdxl, gligen, pose):
        assert type(adapter).peek_latent_spec(adapter.options) == adapter.latent_spec, adapter.name
    shared = ControlNetSegAdapter.sharing(sd, controlnet=str(folders["cn-sd"]))
    assert type(shared).peek_latent_spec(shared.options) is None  # the T2I's latents: known only once it loads
