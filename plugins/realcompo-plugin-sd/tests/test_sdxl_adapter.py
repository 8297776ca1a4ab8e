"""The `sdxl` adapter on tiny SDXL folders saved and loaded through diffusers."""

from __future__ import annotations

import json
import shutil
import tempfile

import pytest
import torch
from realcompo_plugin_sd.adapter import StableDiffusionAdapter
from realcompo_plugin_sd.sdxl import SDXLTimeIds, StableDiffusionXLAdapter

from realcompo_sdk import registry
from realcompo_sdk.compose import check_compatible
from realcompo_sdk.errors import IncompatibleAdaptersError, NonFiniteNoiseError, RealCompoError
from realcompo_sdk.interfaces import GenerationRequest, StepInfo
from realcompo_sdk.layout import Layout
from realcompo_sdk.testing.contracts import T2IAdapterContract
from realcompo_sdk.testing.folders import save_tiny_sd_folder
from realcompo_sdk.testing.folders_xl import PROJECTION_DIM, TEXT_HIDDEN, save_tiny_sdxl_folder


@pytest.fixture(scope="module")
def sdxl_folder(tmp_path_factory):
    return save_tiny_sdxl_folder(tmp_path_factory.mktemp("sdxl") / "tiny-sdxl", seed=0)


@pytest.fixture(scope="module")
def sdxl(sdxl_folder):
    return StableDiffusionXLAdapter(model=str(sdxl_folder))


class TestSDXLContract(T2IAdapterContract):
    def make_adapter(self):
        return StableDiffusionXLAdapter(model=str(save_tiny_sdxl_folder(tempfile.mkdtemp() + "/tiny-sdxl", seed=0)))


def _request(prompt="a red cat to the left of a blue dog", negative="", batch=2, size=32):
    layout = Layout.from_boxes(prompt, [("red cat", (0, 0.25, 0.5, 0.75))])
    return GenerationRequest(prompt=prompt, negative_prompt=negative, layout=layout, batch_size=batch,
                             height=size, width=size, num_steps=4)


def _step(adapter):
    sched = adapter.make_scheduler()
    sched.set_timesteps(4)
    return StepInfo(index=0, num_steps=4, timestep=sched.timesteps[0])


def test_is_registered_as_sdxl():
    reg = registry.lookup("t2i", "sdxl")
    assert reg.distribution == "realcompo-plugin-sd"
    assert reg.load_class() is StableDiffusionXLAdapter


def test_latent_spec_is_sdxl(sdxl):
    spec = sdxl.latent_spec
    assert spec.family == "sdxl" and spec.scaling_factor == pytest.approx(0.13025)
    assert spec.default_resolution == (32, 32) and spec.resolution_multiple == 8
    assert type(sdxl.make_scheduler()).__name__ == "EulerDiscreteScheduler"


def test_text_encoding_matches_the_diffusers_pipeline(sdxl, sdxl_folder):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(sdxl_folder)
    prompt = "a red cat to the left of a blue dog"
    embeds, neg, pooled, neg_pooled = pipe.encode_prompt(prompt, device="cpu", num_images_per_prompt=1,
                                                         do_classifier_free_guidance=True, negative_prompt="a tree")
    ours, ours_pooled = sdxl.encode_text([prompt])
    assert ours.shape == (1, 77, sum(TEXT_HIDDEN)) and ours_pooled.shape == (1, PROJECTION_DIM)
    torch.testing.assert_close(ours, embeds)
    torch.testing.assert_close(ours_pooled, pooled)
    ours_neg, ours_neg_pooled = sdxl.encode_text(["a tree"])
    torch.testing.assert_close(ours_neg, neg)
    torch.testing.assert_close(ours_neg_pooled, neg_pooled)


def test_noise_matches_the_diffusers_unet_call(sdxl, sdxl_folder):
    """One CFG step equals the SDXL pipeline's UNet call (added text embeds and time ids)."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(sdxl_folder)
    prompt = "a red cat to the left of a blue dog"
    embeds, neg, pooled, neg_pooled = pipe.encode_prompt(prompt, device="cpu", do_classifier_free_guidance=True)
    time_ids = pipe._get_add_time_ids((32, 32), (0, 0), (32, 32), dtype=embeds.dtype,
                                      text_encoder_projection_dim=PROJECTION_DIM)
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    step = _step(sdxl)
    with torch.no_grad():
        ref = pipe.unet(torch.cat([x, x]), step.timestep, encoder_hidden_states=torch.cat([neg, embeds]),
                        added_cond_kwargs={"text_embeds": torch.cat([neg_pooled, pooled]),
                                           "time_ids": torch.cat([time_ids, time_ids])}).sample
    ref_guided = ref[:1] + 4.0 * (ref[1:] - ref[:1])
    ours = sdxl.predict_noise(x, step, sdxl.prepare(_request(prompt, batch=1)), guidance_scale=4.0)
    torch.testing.assert_close(ours.guided, ref_guided, atol=1e-5, rtol=1e-4)


def test_empty_negative_prompt_is_zeros_when_the_model_says_so(sdxl, sdxl_folder):
    state = sdxl.prepare(_request())
    assert torch.count_nonzero(state.uncond) == 0 and torch.count_nonzero(state.pooled["uncond"]) == 0
    state = sdxl.prepare(_request(negative="blurry"))
    assert torch.count_nonzero(state.uncond) > 0
    encoded = StableDiffusionXLAdapter(model=str(sdxl_folder), force_zeros_for_empty_prompt=False).prepare(_request())
    assert torch.count_nonzero(encoded.uncond) > 0


def test_time_ids_follow_the_requested_size(sdxl):
    state = sdxl.prepare(_request(size=48))
    assert state.get(SDXLTimeIds).time_ids.tolist() == [[48, 48, 0, 0, 48, 48]] * 2
    kwargs = sdxl.unet_kwargs(state, ("uncond", "cond"), _step(sdxl))["added_cond_kwargs"]
    assert kwargs["time_ids"].shape == (4, 6) and kwargs["text_embeds"].shape == (4, PROJECTION_DIM)


def test_token_positions_come_from_both_tokenizers_consistently(sdxl):
    prompt, positions = sdxl.phrase_token_positions("a red cat to the left of a blue dog", ["red cat", "blue dog"])
    ids = sdxl.tokenizer(prompt).input_ids
    assert [sdxl.tokenizer.decode([ids[i] for i in p]) for p in positions] == ["red cat", "blue dog"]
    assert sdxl.tokenizer_2.pad_token != sdxl.tokenizer.pad_token  # SDXL's tokenizers differ in padding only


def test_tokenizers_that_disagree_are_refused(sdxl_folder, tmp_path):
    adapter = StableDiffusionXLAdapter(model=str(sdxl_folder))
    adapter.tokenizer_2 = type(adapter.tokenizer_2).from_pretrained(sdxl_folder / "tokenizer_2")
    adapter.tokenizer_2.add_tokens(["red cat"])  # one token for the phrase in tokenizer 2 only
    with pytest.raises(RealCompoError, match="different tokens"):
        adapter.phrase_token_positions("a red cat to the left of a blue dog", ["blue dog"])


def test_default_attention_resolution_is_available(sdxl):
    """The balancer's default (latent height / 4; 32 at 1024² for real SDXL) is a captured level."""
    resolutions = sdxl.attention_resolutions(32, 32)
    assert resolutions == [8, 4] and 16 // 4 in resolutions
    assert len(sdxl.cross_attention_layers(2)) == 2 + 3 * 2  # transformer_layers_per_block (.., .., 2)


def test_sd_and_sdxl_do_not_mix_before_any_model_runs(sdxl, tmp_path):
    sd = StableDiffusionAdapter(model=str(save_tiny_sd_folder(tmp_path / "sd")))
    with pytest.raises(IncompatibleAdaptersError, match=r"'sd'.*'sdxl'.*scaling_factor|scaling_factor.*'sd'.*'sdxl'"):
        check_compatible(sd, [sdxl], 32, 32)


def test_nan_noise_names_the_adapter_the_step_and_the_fix(sdxl_folder):
    adapter = StableDiffusionXLAdapter(model=str(sdxl_folder))
    with torch.no_grad():
        adapter.unet.conv_out.bias.fill_(float("nan"))
    state = adapter.prepare(_request())
    x = torch.randn(2, 4, 16, 16)
    with pytest.raises(NonFiniteNoiseError, match=r"'sdxl'.*step 0.*(float32|fp16)"):
        adapter.predict_noise(x, _step(adapter), state, guidance_scale=5.0)


def test_nan_pixels_name_the_fp16_fix_vae(sdxl_folder):
    adapter = StableDiffusionXLAdapter(model=str(sdxl_folder))
    with torch.no_grad():
        adapter.vae.post_quant_conv.bias.fill_(float("inf"))
    with pytest.raises(RealCompoError, match="sdxl-vae-fp16-fix"):
        adapter.decode(torch.randn(1, 4, 16, 16))


def test_vae_upcasts_in_half_precision(sdxl_folder):
    adapter = StableDiffusionXLAdapter(model=str(sdxl_folder), dtype="float16", device="cpu")
    assert adapter.unet.dtype == torch.float16 and adapter.vae.dtype == torch.float32


def test_another_vae_can_be_given(sdxl_folder, tmp_path):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(sdxl_folder, subfolder="vae")
    vae.register_to_config(force_upcast=False)
    vae.save_pretrained(tmp_path / "vae-fix")
    adapter = StableDiffusionXLAdapter(model=str(sdxl_folder), vae=str(tmp_path / "vae-fix"), dtype="float16", device="cpu")
    assert adapter.vae.dtype == torch.float16


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(RealCompoError, match="neither an existing folder nor a hub id"):
        StableDiffusionXLAdapter(model=str(tmp_path / "nope" / "deeper"))


def test_sd_folder_is_refused_naming_what_was_found(tmp_path):
    folder = save_tiny_sd_folder(tmp_path / "sd")
    with pytest.raises(RealCompoError, match=r"'sdxl' cannot load .*sd model folder.*StableDiffusionPipeline.*Use 'sd'"):
        StableDiffusionXLAdapter(model=str(folder))


def test_refiner_folder_is_refused(sdxl_folder, tmp_path):
    refiner = tmp_path / "refiner"
    shutil.copytree(sdxl_folder, refiner)
    index = json.loads((refiner / "model_index.json").read_text())
    index["text_encoder"] = index["tokenizer"] = [None, None]
    (refiner / "model_index.json").write_text(json.dumps(index))
    shutil.rmtree(refiner / "text_encoder")
    with pytest.raises(RealCompoError, match="refiner"):
        StableDiffusionXLAdapter(model=str(refiner))


def test_sdxl_folder_is_refused_by_sd_with_a_hint(sdxl_folder):
    with pytest.raises(RealCompoError, match="sdxl"):
        StableDiffusionAdapter(model=str(sdxl_folder))


def test_ckpt_pickles_are_refused(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not really")
    with pytest.raises(RealCompoError, match="pickles"):
        StableDiffusionXLAdapter(model=str(ckpt))
