"""The ControlNet adapters on tiny SD / SDXL ControlNet folders saved and loaded through diffusers."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch
from realcompo_plugin_controlnet.adapter import ControlImage, ControlNetOpenPoseAdapter, ControlNetSegAdapter
from realcompo_plugin_controlnet.poses import standing_person
from realcompo_plugin_sd.adapter import StableDiffusionAdapter
from realcompo_plugin_sd.sdxl import StableDiffusionXLAdapter

from realcompo_sdk import registry
from realcompo_sdk.errors import LayoutError, RealCompoError
from realcompo_sdk.interfaces import GenerationRequest, StepInfo
from realcompo_sdk.layout import Layout, LayoutObject, Mask
from realcompo_sdk.testing.contracts import L2IAdapterContract
from realcompo_sdk.testing.folders import save_tiny_sd_folder
from realcompo_sdk.testing.folders_xl import save_tiny_controlnet_folder, save_tiny_sdxl_folder


def keypoint_layout(prompt: str = "a man and a woman standing") -> Layout:
    return Layout(prompt=prompt, objects=[
        LayoutObject(phrase="man", keypoints=standing_person(0.0, 0.1, 0.5, 0.9)),
        LayoutObject(phrase="woman", keypoints=standing_person(0.5, 0.1, 1.0, 0.9)),
    ])


def box_mask(x0: int, y0: int, x1: int, y1: int, size: int = 16) -> Mask:
    return Mask(rows=[[int(x0 <= x < x1 and y0 <= y < y1) for x in range(size)] for y in range(size)])


def mask_layout(prompt: str = "a red car next to a tree") -> Layout:
    return Layout(prompt=prompt, objects=[
        LayoutObject(phrase="red car", mask=box_mask(0, 6, 8, 14)),
        LayoutObject(phrase="tree", mask=box_mask(9, 1, 15, 15)),
    ])


def _new_folders(xl: bool = False) -> tuple[Path, Path]:
    root = Path(tempfile.mkdtemp())
    base = save_tiny_sdxl_folder(root / "sdxl") if xl else save_tiny_sd_folder(root / "sd")
    return base, save_tiny_controlnet_folder(root / "cn", base=base, seed=2)


# ---- the contract, for each adapter and base family -------------------------------------
class TestOpenPoseOnSDContract(L2IAdapterContract):
    prompt = "a man and a woman standing"

    def make_adapter(self):
        base, cn = _new_folders()
        return ControlNetOpenPoseAdapter(controlnet=str(cn), base=str(base))

    def layout(self):
        return keypoint_layout(self.prompt)


class TestOpenPoseOnSDXLContract(TestOpenPoseOnSDContract):
    def make_adapter(self):
        base, cn = _new_folders(xl=True)
        return ControlNetOpenPoseAdapter(controlnet=str(cn), base=str(base))


class TestSegOnSDContract(L2IAdapterContract):
    prompt = "a red car next to a tree"

    def make_adapter(self):
        base, cn = _new_folders()
        return ControlNetSegAdapter(controlnet=str(cn), base=str(base))

    def layout(self):
        return mask_layout(self.prompt)


# ---- behaviour -----------------------------------------------------------------------------
def _request(layout, batch=1, size=32, negative=""):
    return GenerationRequest(prompt=layout.prompt, negative_prompt=negative, layout=layout, batch_size=batch,
                             height=size, width=size, num_steps=1)


def test_registered_ids_load_lazily():
    for id_, cls in (("controlnet-openpose", ControlNetOpenPoseAdapter), ("controlnet-seg", ControlNetSegAdapter)):
        reg = registry.lookup("l2i", id_)
        assert isinstance(reg.target, (str, type)) and reg.distribution == "realcompo-plugin-controlnet"
        assert reg.load_class() is cls


def test_one_step_equals_diffusers_controlnet_pipeline_sd(folders):
    """Same control image preprocessing, residuals and CFG as StableDiffusionControlNetPipeline."""
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    adapter = ControlNetSegAdapter(controlnet=str(folders["cn-sd"]), base=str(folders["sd"]), conditioning_scale=0.7)
    layout = mask_layout()
    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        folders["sd"], controlnet=ControlNetModel.from_pretrained(folders["cn-sd"]), safety_checker=None,
        requires_safety_checker=False)
    _compare_one_step(adapter, pipe, layout)


def test_one_step_equals_diffusers_controlnet_pipeline_sdxl(folders):
    from diffusers import ControlNetModel, StableDiffusionXLControlNetPipeline

    adapter = ControlNetOpenPoseAdapter(controlnet=str(folders["cn-sdxl"]), base=str(folders["sdxl"]))
    pipe = StableDiffusionXLControlNetPipeline.from_pretrained(
        folders["sdxl"], controlnet=ControlNetModel.from_pretrained(folders["cn-sdxl"]), add_watermarker=False)
    _compare_one_step(adapter, pipe, keypoint_layout())


def _compare_one_step(adapter, pipe, layout):
    guidance = 5.0
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    state = adapter.prepare(_request(layout))
    sched = adapter.make_scheduler()
    sched.set_timesteps(2)
    x = latents * sched.init_noise_sigma
    t = sched.timesteps[0]
    eps = adapter.predict_noise(sched.scale_model_input(x, t), StepInfo(0, 2, t), state, guidance_scale=guidance).guided
    ours = sched.step(eps, t, x).prev_sample

    pipe.set_progress_bar_config(disable=True)
    ref = {}

    def stop(p, i, t, kwargs):  # the latents after the first step
        ref.setdefault("latents", kwargs["latents"].clone())
        return kwargs

    pipe(layout.prompt, image=state.get(ControlImage).picture, num_inference_steps=2, guidance_scale=guidance,
         latents=latents.clone(), output_type="latent", controlnet_conditioning_scale=adapter.options.conditioning_scale,
         callback_on_step_end=stop)
    torch.testing.assert_close(ours, ref["latents"], atol=1e-4, rtol=1e-4)


def test_conditioning_scale_zero_is_the_base_model(folders):
    adapter = ControlNetOpenPoseAdapter(controlnet=str(folders["cn-sd"]), base=str(folders["sd"]), conditioning_scale=0.0)
    sd = StableDiffusionAdapter(model=str(folders["sd"]))
    request = _request(keypoint_layout(), batch=2)
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    sched = sd.make_scheduler()
    sched.set_timesteps(4)
    step = StepInfo(0, 4, sched.timesteps[0])
    a = adapter.predict_noise(x, step, adapter.prepare(request), guidance_scale=3.0).guided
    b = sd.predict_noise(x, step, sd.prepare(request), guidance_scale=3.0).guided
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_control_image_is_rendered_at_the_request_size(folders):
    adapter = ControlNetOpenPoseAdapter(controlnet=str(folders["cn-sd"]), base=str(folders["sd"]))
    state = adapter.prepare(_request(keypoint_layout(), batch=2, size=48))
    control = state.get(ControlImage).tensor
    assert control.shape == (2, 3, 48, 48) and float(control.min()) >= 0 and float(control.max()) <= 1
    assert np.asarray(state.get(ControlImage).picture).any()


def test_unshared_base_drops_its_vae_and_reports_the_base(folders):
    adapter = ControlNetSegAdapter(controlnet=str(folders["cn-sd"]), base=str(folders["sd"]))
    assert adapter.base.vae is None and not adapter.shared
    info = adapter.describe()
    assert info["id"] == "controlnet-seg" and info["base_model"] == str(folders["sd"]) and info["family"] == "sd1"
    assert "shares_models_with" not in info


def test_default_base_follows_the_controlnet_family(folders, monkeypatch):
    """base=None: SD1.5 for an SD ControlNet, SDXL base for an SDXL one (hub ids, not fetched here)."""
    from realcompo_plugin_controlnet import adapter as module

    seen = []

    def fake_load_base(self, family):
        seen.append(module.DEFAULT_BASES[family])
        raise RealCompoError("stop")

    monkeypatch.setattr(module.ControlNetAdapter, "_load_base", fake_load_base)
    for cn in ("cn-sd", "cn-sdxl"):
        with pytest.raises(RealCompoError, match="stop"):
            ControlNetOpenPoseAdapter(controlnet=str(folders[cn]))
    assert seen == ["stable-diffusion-v1-5/stable-diffusion-v1-5", "stabilityai/stable-diffusion-xl-base-1.0"]


def test_more_objects_than_the_adapter_takes(folders):
    adapter = ControlNetOpenPoseAdapter(controlnet=str(folders["cn-sd"]), base=str(folders["sd"]))
    people = [LayoutObject(phrase="man", keypoints=standing_person(0, 0, 1, 1))] * 17
    with pytest.raises(LayoutError, match="at most 16 objects; the layout has 17"):
        adapter.prepare(_request(Layout(prompt="men", objects=people)))


def test_wrong_region_kind_names_the_object_and_the_accepted_kind(folders):
    adapter = ControlNetSegAdapter(controlnet=str(folders["cn-sd"]), base=str(folders["sd"]))
    with pytest.raises(LayoutError, match=r"object 0 \('man'\).*keypoints.*accepts box, mask"):
        adapter.check_layout(keypoint_layout())


# ---- loading errors ----------------------------------------------------------------------
def test_missing_controlnet_folder(tmp_path, folders):
    with pytest.raises(RealCompoError, match="'controlnet-openpose'.*neither an existing folder nor a hub id"):
        ControlNetOpenPoseAdapter(controlnet=str(tmp_path / "nope" / "deeper"), base=str(folders["sd"]))


def test_pipeline_folder_given_as_controlnet_names_what_was_found(folders):
    with pytest.raises(RealCompoError, match=r"StableDiffusionPipeline folder.*not a ControlNet folder.*base="):
        ControlNetOpenPoseAdapter(controlnet=str(folders["sd"]), base=str(folders["sd"]))


def test_unrelated_folder_given_as_controlnet_lists_its_files(tmp_path, folders):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(RealCompoError, match=r"notes\.txt.*not a ControlNet folder"):
        ControlNetOpenPoseAdapter(controlnet=str(tmp_path), base=str(folders["sd"]))


def test_controlnet_folder_given_as_base_names_what_was_found(folders):
    with pytest.raises(RealCompoError, match=r"base=.*no unet/config.json.*config\.json.*diffusion_pytorch_model"):
        ControlNetOpenPoseAdapter(controlnet=str(folders["cn-sd"]), base=str(folders["cn-sd"]))


def test_gligen_folder_is_not_a_base(folders):
    with pytest.raises(RealCompoError, match="GLIGEN folder"):
        ControlNetOpenPoseAdapter(controlnet=str(folders["cn-sd"]), base=str(folders["gligen"]))


def test_sdxl_controlnet_on_an_sd_base_is_refused_before_loading_the_base(folders):
    with pytest.raises(RealCompoError, match=r"is an sdxl ControlNet but base .* is an sd model folder"):
        ControlNetOpenPoseAdapter(controlnet=str(folders["cn-sdxl"]), base=str(folders["sd"]))


def test_family_mismatch_is_found_from_configs_before_loading_weights(folders, monkeypatch):
    """For a hub id (no folder to inspect) the base's UNet config is read before any weights."""
    from realcompo_plugin_controlnet import adapter as module

    def no_loading(*args, **kwargs):
        raise AssertionError("the base model was loaded")

    monkeypatch.setattr(module, "folder_kind", lambda model: None)
    monkeypatch.setattr(StableDiffusionXLAdapter, "__init__", no_loading)
    monkeypatch.setattr(StableDiffusionAdapter, "__init__", no_loading)
    with pytest.raises(RealCompoError, match=r"is an sdxl \(cross_attention_dim 80.*base .* is an sd \(cross_attention_dim 32"):
        ControlNetOpenPoseAdapter(controlnet=str(folders["cn-sdxl"]), base=str(folders["sd"]))


def test_sd_controlnet_cannot_share_an_sdxl_unet(folders):
    sdxl = StableDiffusionXLAdapter(model=str(folders["sdxl"]))
    with pytest.raises(RealCompoError, match=r"sd \(cross_attention_dim 32.*shared adapter 'sdxl'.*sdxl \(cross_attention_dim 80"):
        ControlNetOpenPoseAdapter.sharing(sdxl, controlnet=str(folders["cn-sd"]))


def test_sharing_refuses_conflicting_base_device_or_dtype(folders):
    sd = StableDiffusionAdapter(model=str(folders["sd"]))
    with pytest.raises(RealCompoError, match="leave base unset when sharing"):
        ControlNetOpenPoseAdapter.sharing(sd, controlnet=str(folders["cn-sd"]), base="other/model")
    with pytest.raises(RealCompoError, match="dtype='float16'"):
        ControlNetOpenPoseAdapter.sharing(sd, controlnet=str(folders["cn-sd"]), dtype="float16")
    with pytest.raises(RealCompoError, match="can share the models of an 'sd' or 'sdxl' adapter"):
        ControlNetOpenPoseAdapter(share_with=object(), controlnet=str(folders["cn-sd"]))


def test_ckpt_pickles_are_refused(tmp_path, folders):
    ckpt = tmp_path / "control.ckpt"
    ckpt.write_bytes(b"not really")
    with pytest.raises(RealCompoError, match="pickles"):
        ControlNetOpenPoseAdapter(controlnet=str(ckpt), base=str(folders["sd"]))


def test_options_are_checked_before_anything_loads():
    with pytest.raises(pydantic.ValidationError, match="extra"):
        ControlNetOpenPoseAdapter(controlnet="a/b", conditioning_scal=1.0)
    with pytest.raises(pydantic.ValidationError):
        ControlNetOpenPoseAdapter(controlnet="a/b", conditioning_scale=-1.0)
    with pytest.raises(LayoutError, match="not an ADE20K class"):
        ControlNetSegAdapter(controlnet="does/not-exist", classes={"corgi": "doggo"})


def test_single_file_controlnet_equals_its_folder(folders, tmp_path):
    from realcompo_sdk.testing.single_file import save_tiny_controlnet_single_file

    single = save_tiny_controlnet_single_file(folders["cn-sd"], tmp_path / "cn.safetensors")
    from_folder = ControlNetSegAdapter(controlnet=str(folders["cn-sd"]), base=str(folders["sd"]))
    from_file = ControlNetSegAdapter(controlnet=str(single), base=str(folders["sd"]), single_file_config=str(folders["cn-sd"]))
    a, b = from_folder.controlnet.state_dict(), from_file.controlnet.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_single_file_controlnet_without_config_offline_says_what_to_pass(folders, tmp_path, monkeypatch):
    from realcompo_sdk.testing.single_file import save_tiny_controlnet_single_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    single = save_tiny_controlnet_single_file(folders["cn-sd"], tmp_path / "cn.safetensors")
    with pytest.raises(RealCompoError, match="single_file_config="):
        ControlNetSegAdapter(controlnet=str(single), base=str(folders["sd"]))
