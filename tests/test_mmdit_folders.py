"""The tiny T5 tokenizer and the tiny SD3 / Flux folders run through diffusers' own pipelines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from realcompo_sdk.testing import folders_mmdit as fm
from realcompo_sdk.testing.build_tiny_tokenizer import WORDS
from realcompo_sdk.testing.components import T5_TOKENIZER_DIR, tiny_t5_encoder, tiny_t5_tokenizer
from realcompo_sdk.testing.tokenizer_files import write_t5_tokenizer

SIZE = 32  # pixels: a 16×16 latent, 64 image tokens


@pytest.fixture(scope="module")
def t5():
    return tiny_t5_tokenizer()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mmdit")
    return {
        "sd3": fm.save_tiny_sd3_folder(root / "sd3"),
        "flux": fm.save_tiny_flux_folder(root / "flux"),
        "sd3_cn": fm.save_tiny_sd3_controlnet_folder(root / "sd3_cn"),
        "flux_cn": fm.save_tiny_flux_controlnet_folder(root / "flux_cn"),
        "flux_union": fm.save_tiny_flux_controlnet_folder(root / "flux_union", union=True),
    }


def _piece(tok, word: str) -> int:
    return tok.convert_tokens_to_ids("\u2581" + word)


# -- tokenizer --------------------------------------------------------------------------------------------


def test_t5_special_ids_and_sentence(t5) -> None:
    assert (t5.pad_token_id, t5.eos_token_id, t5.unk_token_id) == (0, 1, 2)
    ids = t5("a red cat").input_ids
    assert ids == [_piece(t5, "a"), _piece(t5, "red"), _piece(t5, "cat"), 1]
    assert t5.unk_token_id not in ids


def test_t5_word_alone_is_the_same_id_as_in_a_sentence(t5) -> None:
    sentence = t5("a photo of two corgis next to a tree", add_special_tokens=False).input_ids
    for word in ["photo", "corgis", "tree", "cat", "next"]:
        alone = t5(word, add_special_tokens=False).input_ids
        assert alone == [_piece(t5, word)]
        if word in "a photo of two corgis next to a tree".split():
            assert alone[0] in sentence


def test_t5_every_listed_word_is_one_token(t5) -> None:
    split = [w for w in sorted(set(WORDS)) if t5(w, add_special_tokens=False).input_ids != [_piece(t5, w)]]
    assert not split


def test_t5_unlisted_word_splits_into_known_pieces(t5) -> None:
    for word in ["porcupine", "hedgehog", "Zebra42"]:
        ids = t5(word, add_special_tokens=False).input_ids
        assert len(ids) > 1 and t5.unk_token_id not in ids
        assert t5.decode(ids) == word


def test_t5_auto_tokenizer_loads_the_same() -> None:
    from transformers import AutoTokenizer, T5Tokenizer

    auto = AutoTokenizer.from_pretrained(T5_TOKENIZER_DIR)
    assert isinstance(auto, T5Tokenizer)
    assert auto("a red cat").input_ids == tiny_t5_tokenizer()("a red cat").input_ids


def test_t5_files_regenerate_identically(tmp_path: Path) -> None:
    write_t5_tokenizer(tmp_path, WORDS)
    for name in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]:
        assert (tmp_path / name).read_bytes() == (T5_TOKENIZER_DIR / name).read_bytes(), name


def test_t5_encoder_is_seeded_and_prompt_dependent(t5) -> None:
    a, b = tiny_t5_encoder(0), tiny_t5_encoder(0)
    ids = t5(["a red cat", "a blue dog"], return_tensors="pt", padding=True).input_ids
    with torch.no_grad():
        out = a(ids).last_hidden_state
        assert torch.equal(out, b(ids).last_hidden_state)
    assert out.shape == (2, 4, 32) and not torch.allclose(out[0], out[1])


# -- folders through diffusers' pipelines -------------------------------------------------------------


def _two_prompts(pipe, **kwargs) -> list[np.ndarray]:
    images = []
    for prompt in ["a red cat", "a blue dog"]:
        out = pipe(prompt, num_inference_steps=2, height=SIZE, width=SIZE, output_type="np",
                   generator=torch.Generator().manual_seed(0), **kwargs).images
        assert out.shape == (1, SIZE, SIZE, 3) and np.isfinite(out).all()
        images.append(out)
    assert not np.allclose(images[0], images[1]), "the prompt should change the image"
    return images


def _control_images() -> list:
    from PIL import Image

    noise = (np.random.RandomState(0).rand(SIZE, SIZE, 3) * 255).astype("uint8")
    return [Image.fromarray(noise), Image.fromarray(np.zeros((SIZE, SIZE, 3), "uint8"))]


def test_sd3_folder_runs(models: dict[str, Path]) -> None:
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(models["sd3"])
    assert pipe.tokenizer_2.pad_token == "!"
    assert pipe.vae.config.shift_factor == fm.SD3_SHIFT_FACTOR
    _two_prompts(pipe, max_sequence_length=32)


@pytest.mark.parametrize("guidance_embeds", [True, False])
def test_flux_folder_runs(tmp_path: Path, models: dict[str, Path], guidance_embeds: bool) -> None:
    from diffusers import FluxPipeline

    path = models["flux"] if guidance_embeds else fm.save_tiny_flux_folder(tmp_path / "schnell", guidance_embeds=False)
    pipe = FluxPipeline.from_pretrained(path)
    assert pipe.transformer.config.guidance_embeds is guidance_embeds
    _two_prompts(pipe, max_sequence_length=32, guidance_scale=3.5 if guidance_embeds else 0.0)


def test_sd3_controlnet_folder_runs(models: dict[str, Path]) -> None:
    from diffusers import SD3ControlNetModel, StableDiffusion3ControlNetPipeline

    controlnet = SD3ControlNetModel.from_pretrained(models["sd3_cn"])
    pipe = StableDiffusion3ControlNetPipeline.from_pretrained(models["sd3"], controlnet=controlnet)
    noise, black = _control_images()
    first, _ = _two_prompts(pipe, control_image=noise, max_sequence_length=32)
    other = pipe("a red cat", num_inference_steps=2, height=SIZE, width=SIZE, output_type="np", control_image=black,
                 generator=torch.Generator().manual_seed(0), max_sequence_length=32).images
    assert not np.allclose(first, other), "the control image should change the image"
    with pytest.raises(NotImplementedError):
        fm.tiny_sd3_controlnet(union=True)


@pytest.mark.parametrize("union", [False, True])
def test_flux_controlnet_folder_runs(models: dict[str, Path], union: bool) -> None:
    from diffusers import FluxControlNetModel, FluxControlNetPipeline, FluxPipeline

    controlnet = FluxControlNetModel.from_pretrained(models["flux_union" if union else "flux_cn"])
    assert controlnet.config.num_mode == (fm.FLUX_UNION_MODES if union else None)
    pipe = FluxControlNetPipeline(**FluxPipeline.from_pretrained(models["flux"]).components, controlnet=controlnet)
    noise, black = _control_images()
    mode = {"control_mode": 0} if union else {}
    first, _ = _two_prompts(pipe, control_image=noise, max_sequence_length=32, **mode)
    changed = {"control_image": noise, "control_mode": 3} if union else {"control_image": black}
    other = pipe("a red cat", num_inference_steps=2, height=SIZE, width=SIZE, output_type="np",
                 generator=torch.Generator().manual_seed(0), max_sequence_length=32, **changed).images
    assert not np.allclose(first, other), "the control image (or mode) should change the image"


# -- round trips ------------------------------------------------------------------------------------------


def _assert_same_model(built: torch.nn.Module, loaded: torch.nn.Module, **inputs: torch.Tensor) -> None:
    """Weights, buffers and config bitwise equal; outputs equal to float rounding.

    Outputs are not compared bitwise: safetensors maps the loaded weights at addresses that are not
    64-byte aligned, and the CPU matmul kernels then round differently (about 5e-7 here).
    """
    def public(config: dict) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items() if not k.startswith("_")}

    assert public(built.config) == public(loaded.config)
    a_state, b_state = built.state_dict(), loaded.state_dict()
    assert a_state.keys() == b_state.keys()
    assert all(torch.equal(a_state[k], b_state[k]) for k in a_state)
    with torch.no_grad():
        a, b = built.eval()(**inputs).sample, loaded(**inputs).sample
    assert a.abs().sum() > 0
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_sd3_round_trip_gives_identical_transformer_outputs(models: dict[str, Path]) -> None:
    from diffusers import SD3Transformer2DModel

    built = fm.tiny_sd3_components(0)["transformer"]
    loaded = SD3Transformer2DModel.from_pretrained(models["sd3"], subfolder="transformer")
    g = torch.Generator().manual_seed(1)
    _assert_same_model(built, loaded, hidden_states=torch.randn(1, 16, 16, 16, generator=g),
                       encoder_hidden_states=torch.randn(1, 10, 32, generator=g),
                       pooled_projections=torch.randn(1, 32, generator=g), timestep=torch.tensor([500.0]))


def test_flux_round_trip_gives_identical_transformer_outputs(models: dict[str, Path]) -> None:
    from diffusers import FluxTransformer2DModel

    built = fm.tiny_flux_components(0)["transformer"]
    loaded = FluxTransformer2DModel.from_pretrained(models["flux"], subfolder="transformer")
    g = torch.Generator().manual_seed(1)
    _assert_same_model(built, loaded, hidden_states=torch.randn(1, 64, 64, generator=g),
                       encoder_hidden_states=torch.randn(1, 10, 32, generator=g),
                       pooled_projections=torch.randn(1, 16, generator=g), timestep=torch.tensor([0.5]),
                       guidance=torch.tensor([3.5]), txt_ids=torch.zeros(10, 3), img_ids=torch.zeros(64, 3))


def test_controlnets_have_no_zero_projections() -> None:
    for model in (fm.tiny_sd3_controlnet(), fm.tiny_flux_controlnet(union=True)):
        zero = [n for n, p in model.named_parameters() if p.dim() > 1 and not p.any()]
        assert not zero
