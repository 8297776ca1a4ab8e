"""The `sd` adapter on a single-file `.safetensors` checkpoint in the original LDM key format
(as community SD 1.x models ship), loaded offline with configs from a local diffusers folder."""

from __future__ import annotations

import socket

import pytest
import torch
from realcompo_plugin_sd.adapter import StableDiffusionAdapter
from safetensors import safe_open

from realcompo_sdk.errors import RealCompoError
from realcompo_sdk.testing.contracts import T2IAdapterContract
from realcompo_sdk.testing.folders import save_tiny_sd_folder
from realcompo_sdk.testing.single_file import save_tiny_single_file


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("single-file")
    folder = save_tiny_sd_folder(root / "tiny-sd", seed=0)
    return folder, save_tiny_single_file(folder, root / "tiny-sd.safetensors")


@pytest.fixture
def offline(monkeypatch):
    """No hub: offline mode on, and any network connection fails the test."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access during single-file loading: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def assert_same_weights(loaded, reference, what):
    got, want = dict(loaded.named_parameters()), dict(reference.named_parameters())
    assert got.keys() == want.keys(), what
    for name, p in want.items():
        assert torch.equal(got[name], p), f"{what}.{name} differs"


def test_file_is_in_the_original_ldm_format(tiny):
    _, file = tiny
    with safe_open(str(file), "pt") as f:
        keys = set(f.keys())
    prefixes = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.text_model.")
    assert all(k.startswith(prefixes) for k in keys)
    for prefix in prefixes:
        assert any(k.startswith(prefix) for k in keys), prefix
    assert "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight" in keys
    assert "model.diffusion_model.input_blocks.0.0.weight" in keys and "model.diffusion_model.out.2.weight" in keys
    diffusers_only = (".down_blocks.", ".up_blocks.", ".resnets.", "time_emb_proj", "conv_shortcut", "conv_norm_out")
    assert not [k for k in keys if any(name in k for name in diffusers_only)]
    vae_attention = {k for k in keys if k.startswith("first_stage_model.") and ".attn_1." in k}
    assert "first_stage_model.decoder.mid.attn_1.proj_out.weight" in vae_attention
    assert not [k for k in vae_attention if "group_norm" in k or ".to_" in k]
    with safe_open(str(file), "pt") as f:  # LDM's VAE attention is made of 1x1 convolutions
        assert f.get_slice("first_stage_model.encoder.mid.attn_1.q.weight").get_shape()[2:] == [1, 1]


def test_single_file_loads_the_same_weights_and_noise_as_the_folder(tiny, offline):
    folder, file = tiny
    from_file = StableDiffusionAdapter(model=str(file), single_file_config=str(folder))
    from_folder = StableDiffusionAdapter(model=str(folder))

    assert_same_weights(from_file.unet, from_folder.unet, "unet")
    assert_same_weights(from_file.vae, from_folder.vae, "vae")
    assert_same_weights(from_file.text_encoder, from_folder.text_encoder, "text_encoder")
    assert from_file.latent_spec == from_folder.latent_spec

    contract = T2IAdapterContract()
    x, step = contract._latents(from_folder), contract._step(from_folder)
    a = from_file.predict_noise(x, step, from_file.prepare(contract._request(from_file)), guidance_scale=3.0).guided
    b = from_folder.predict_noise(x, step, from_folder.prepare(contract._request(from_folder)), guidance_scale=3.0).guided
    assert a.dtype == torch.float32 and (a - b).abs().max().item() <= 1e-6


def test_weights_come_from_the_file_not_the_config_folder(tiny, offline, tmp_path):
    """A config folder with other weights (seed 1) only supplies configs, tokenizer and scheduler."""
    folder, file = tiny
    other = save_tiny_sd_folder(tmp_path / "other", seed=1)
    from_file = StableDiffusionAdapter(model=str(file), single_file_config=str(other))
    from_folder = StableDiffusionAdapter(model=str(folder))
    assert_same_weights(from_file.unet, from_folder.unet, "unet")
    assert_same_weights(from_file.vae, from_folder.vae, "vae")
    assert_same_weights(from_file.text_encoder, from_folder.text_encoder, "text_encoder")


def test_missing_single_file_is_a_clear_error(tmp_path):
    with pytest.raises(RealCompoError, match=r"checkpoint file .*missing\.safetensors does not exist"):
        StableDiffusionAdapter(model=str(tmp_path / "missing.safetensors"))


def test_sdxl_single_file_loads_the_same_weights_and_noise_as_the_folder(offline, tmp_path):
    from realcompo_plugin_sd.sdxl import StableDiffusionXLAdapter

    from realcompo_sdk.testing.folders_xl import save_tiny_sdxl_folder
    from realcompo_sdk.testing.single_file import save_tiny_sdxl_single_file

    folder = save_tiny_sdxl_folder(tmp_path / "tiny-sdxl", seed=0)
    file = save_tiny_sdxl_single_file(folder, tmp_path / "tiny-sdxl.safetensors")
    with safe_open(str(file), "pt") as f:  # the original SDXL layout: OpenCLIP second encoder
        keys = set(f.keys())
    assert "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight" in keys
    assert "model.diffusion_model.label_emb.0.0.weight" in keys
    from_file = StableDiffusionXLAdapter(model=str(file), single_file_config=str(folder))
    from_folder = StableDiffusionXLAdapter(model=str(folder))
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        assert_same_weights(getattr(from_file, part), getattr(from_folder, part), part)
    contract = T2IAdapterContract()
    x, step = contract._latents(from_folder), contract._step(from_folder)
    a = from_file.predict_noise(x, step, from_file.prepare(contract._request(from_file)), guidance_scale=3.0).guided
    b = from_folder.predict_noise(x, step, from_folder.prepare(contract._request(from_folder)), guidance_scale=3.0).guided
    assert (a - b).abs().max().item() <= 1e-6
