"""The `sd` adapter on tiny Stable Diffusion folders saved and loaded through diffusers."""

from __future__ import annotations

import pytest
import torch
from realcompo_plugin_sd.adapter import StableDiffusionAdapter

from realcompo_sdk.errors import RealCompoError
from realcompo_sdk.testing.contracts import T2IAdapterContract
from realcompo_sdk.testing.folders import save_tiny_sd_folder


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return save_tiny_sd_folder(tmp_path_factory.mktemp("sd") / "tiny-sd", seed=0)


class TestSDContract(T2IAdapterContract):
    def make_adapter(self):
        import tempfile

        folder = save_tiny_sd_folder(tempfile.mkdtemp() + "/tiny-sd", seed=0)
        return StableDiffusionAdapter(model=str(folder))


def test_loads_a_folder_and_reads_its_latent_spec(sd_folder):
    adapter = StableDiffusionAdapter(model=str(sd_folder))
    spec = adapter.latent_spec
    assert spec.channels == 4 and spec.vae_scale_factor == 2 and spec.prediction_type == "epsilon"
    assert spec.default_resolution == (32, 32) and spec.family == "sd1"


def test_v_prediction_folder_is_read_as_such(tmp_path):
    folder = save_tiny_sd_folder(tmp_path / "v", seed=0, prediction_type="v_prediction")
    assert StableDiffusionAdapter(model=str(folder)).latent_spec.prediction_type == "v_prediction"


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(RealCompoError, match="neither an existing folder nor a hub id"):
        StableDiffusionAdapter(model=str(tmp_path / "nope" / "deeper"))


def test_folder_of_the_wrong_kind_names_what_was_found(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(RealCompoError, match=r"no unet/config.json.*notes.txt"):
        StableDiffusionAdapter(model=str(tmp_path))


def test_gligen_folder_is_refused_with_a_hint(tmp_path):
    folder = save_tiny_sd_folder(tmp_path / "g", seed=0, gligen=True)
    with pytest.raises(RealCompoError, match="use 'gligen'|Use 'gligen'"):
        StableDiffusionAdapter(model=str(folder))


def test_ckpt_pickles_are_refused(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not really")
    with pytest.raises(RealCompoError, match="pickles"):
        StableDiffusionAdapter(model=str(ckpt))


def test_unknown_option_is_an_error():
    with pytest.raises(Exception, match="extra"):
        StableDiffusionAdapter(model="x/y", dtyp="float16")


def test_noise_is_deterministic_and_float32(sd_folder):
    adapter = StableDiffusionAdapter(model=str(sd_folder))
    contract = TestSDContract()
    state = adapter.prepare(contract._request(adapter))
    x, step = contract._latents(adapter), contract._step(adapter)
    a = adapter.predict_noise(x, step, state, guidance_scale=3.0).guided
    b = adapter.predict_noise(x, step, state, guidance_scale=3.0).guided
    assert a.dtype == torch.float32 and torch.equal(a, b)
