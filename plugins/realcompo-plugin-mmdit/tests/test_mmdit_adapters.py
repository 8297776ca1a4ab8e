"""The `sd3` / `flux` adapters and their ControlNets on tiny folders saved and loaded through diffusers:
the adapter contract, equality with diffusers' own pipelines, the balanced sampler against the
reference loop, joint-attention capture against an independent computation, and clear refusals."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from realcompo_plugin_mmdit.controlnet import FluxControlNetPoseAdapter, SD3ControlNetSegAdapter
from realcompo_plugin_mmdit.flux import FluxAdapter
from realcompo_plugin_mmdit.sd3 import SD3Adapter

from realcompo_sdk.balancer import BalanceOptions
from realcompo_sdk.errors import RealCompoError
from realcompo_sdk.interfaces import GenerationRequest, StepInfo
from realcompo_sdk.layout import Keypoint, Layout, LayoutObject
from realcompo_sdk.sampler import BalancedProblem, balanced_sample
from realcompo_sdk.testing.contracts import L2IAdapterContract, T2IAdapterContract
from realcompo_sdk.testing.folders_mmdit import (
    save_tiny_flux_controlnet_folder,
    save_tiny_flux_folder,
    save_tiny_sd3_controlnet_folder,
    save_tiny_sd3_folder,
)
from realcompo_sdk.testing.reference import reference_sample

SEQ = 24  # T5 tokens read: enough for the test prompts, small for speed
LAYOUT = Layout.from_boxes("a red cat to the left of a blue dog", [("red cat", (0, 0.2, 0.5, 0.8)), ("blue dog", (0.5, 0.2, 1, 0.8))])


@functools.cache
def folders() -> dict[str, Path]:
    """Tiny SD3 / Flux pipelines and ControlNets, written once per test session."""
    root = Path(tempfile.mkdtemp(prefix="realcompo-mmdit-"))
    return {
        "sd3": save_tiny_sd3_folder(root / "sd3", seed=0),
        "flux": save_tiny_flux_folder(root / "flux", seed=0),
        "sd3-cn": save_tiny_sd3_controlnet_folder(root / "sd3-cn", seed=1),
        "flux-cn": save_tiny_flux_controlnet_folder(root / "flux-cn", seed=1),
        "flux-union": save_tiny_flux_controlnet_folder(root / "flux-union", seed=2, union=True),
    }


def sd3(**options) -> SD3Adapter:
    return SD3Adapter(model=str(folders()["sd3"]), max_sequence_length=SEQ, **options)


def flux(**options) -> FluxAdapter:
    return FluxAdapter(model=str(folders()["flux"]), max_sequence_length=SEQ, default_size=32, **options)


def pose_layout(prompt: str = "a man next to a woman") -> Layout:
    body = [("nose", 0.5, 0.15), ("neck", 0.5, 0.3), ("right_shoulder", 0.38, 0.3), ("left_shoulder", 0.62, 0.3),
            ("right_hip", 0.42, 0.7), ("left_hip", 0.58, 0.7), ("right_knee", 0.42, 0.85), ("left_knee", 0.58, 0.85)]
    person = lambda dx: [Keypoint(name=n, x=x * 0.5 + dx, y=y) for n, x, y in body]  # noqa: E731
    return Layout(prompt=prompt, objects=[LayoutObject(phrase="man", keypoints=person(0.0)),
                                          LayoutObject(phrase="woman", keypoints=person(0.5))])


# ---- the contract ------------------------------------------------------------------------------
class TestSD3Contract(T2IAdapterContract):
    def make_adapter(self):
        return sd3()


class TestFluxContract(T2IAdapterContract):
    def make_adapter(self):
        return flux()


class TestSD3ControlNetSegContract(L2IAdapterContract):
    def make_adapter(self):
        return SD3ControlNetSegAdapter(controlnet=str(folders()["sd3-cn"]), base=str(folders()["sd3"]), max_sequence_length=SEQ)


class TestFluxUnionPoseContract(L2IAdapterContract):
    prompt = "a man next to a woman"

    def layout(self):
        return pose_layout(self.prompt)

    def make_adapter(self):
        return FluxControlNetPoseAdapter(controlnet=str(folders()["flux-union"]), base=str(folders()["flux"]),
                                         control_mode=4, max_sequence_length=SEQ, default_size=32)


# ---- the same numbers as diffusers' pipelines ---------------------------------------------------
def _start_noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))[None]


def _as_array(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_sd3_alone_reproduces_diffusers_sd3_pipeline():
    """Text stack, CFG, flow-matching steps and VAE shift as StableDiffusion3Pipeline computes them."""
    from diffusers import StableDiffusion3Pipeline

    from realcompo_sdk import RealCompo

    adapter = sd3()
    rc = RealCompo(t2i=adapter, l2i=SD3ControlNetSegAdapter.sharing(adapter, controlnet=str(folders()["sd3-cn"])),
                   planner=None, num_steps=4, guidance_scale=5.0)
    ours = rc(layout=LAYOUT, seed=3, height=32, width=32, mode="t2i").images[0]
    pipe = StableDiffusion3Pipeline.from_pretrained(folders()["sd3"])
    theirs = pipe(LAYOUT.prompt, num_inference_steps=4, guidance_scale=5.0, height=32, width=32, max_sequence_length=SEQ,
                  latents=_start_noise(3, (16, 16, 16))).images[0]
    assert np.abs(_as_array(ours) - _as_array(theirs)).max() <= 1


def test_flux_alone_reproduces_diffusers_flux_pipeline():
    """Packing, T5/CLIP text, the distilled guidance input, shifted sigmas and VAE shift as FluxPipeline."""
    from diffusers import FluxPipeline

    from realcompo_sdk import RealCompo

    adapter = flux()
    rc = RealCompo(t2i=adapter, l2i=FluxControlNetPoseAdapter.sharing(adapter, controlnet=str(folders()["flux-union"])),
                   planner=None, num_steps=4, guidance_scale=3.5)
    result = rc(layout=pose_layout(), seed=5, height=32, width=32, mode="t2i")
    ours = result.images[0]
    recorded = result.record.adapters[0]
    assert recorded["attention_blocks"] == [0] and recorded["guidance"] == "distilled"  # what ran is on record
    pipe = FluxPipeline.from_pretrained(folders()["flux"])
    noise = _start_noise(5, (16, 16, 16))
    theirs = pipe(pose_layout().prompt, num_inference_steps=4, guidance_scale=3.5, height=32, width=32,
                  max_sequence_length=SEQ, latents=FluxPipeline._pack_latents(noise, 1, 16, 16, 16)).images[0]
    assert np.abs(_as_array(ours) - _as_array(theirs)).max() <= 1


# ---- the balanced sampler ---------------------------------------------------------------------
def _problem(adapters, layout, options, steps=5, batch=2, dtype=torch.float32):
    request = GenerationRequest(prompt=layout.prompt, negative_prompt="", layout=layout, batch_size=batch,
                                height=32, width=32, num_steps=steps, guidance_scale=4.0)
    positions = [a.phrase_token_positions(layout.prompt, [o.phrase for o in layout.objects])[1] for a in adapters]
    return BalancedProblem(adapters=adapters, states=[a.prepare(request) for a in adapters],
                           token_groups=[[p] * batch for p in positions], request=request,
                           scheduler=adapters[0].make_scheduler(), generators=[torch.Generator().manual_seed(s) for s in range(batch)],
                           guidance_scale=4.0, options=options, timestep_kwargs=adapters[0].timestep_kwargs(32, 32, steps))


@pytest.fixture(scope="module")
def sd3_pair():
    t2i = sd3()
    return [t2i, SD3ControlNetSegAdapter.sharing(t2i, controlnet=str(folders()["sd3-cn"]))]


@pytest.fixture(scope="module")
def flux_pair():
    t2i = flux()
    return [t2i, FluxControlNetPoseAdapter.sharing(t2i, controlnet=str(folders()["flux-union"]), control_mode=4)]


@pytest.mark.parametrize("switches", [{}, {"lookahead_noise": "cond", "detach_t2i_attention": True, "init": "random"}],
                         ids=["paper", "official"])
def test_sd3_balanced_sampler_matches_reference_loop(sd3_pair, switches):
    options = BalanceOptions(scale_factor=1e4, t0=1, attention_resolution=8, **switches)
    fast = balanced_sample(_problem(sd3_pair, LAYOUT, options)).latents
    ref = reference_sample(_problem(sd3_pair, LAYOUT, options))
    plain = balanced_sample(_problem(sd3_pair, LAYOUT, options.model_copy(update={"scale_factor": 0.0}))).latents
    assert (fast - ref).abs().max() <= 1e-4
    assert (fast - plain).abs().max() > 1e-3  # the influence update really acted


def test_flux_balanced_sampler_matches_reference_loop(flux_pair):
    options = BalanceOptions(scale_factor=1e4, t0=1, attention_resolution=4)
    problem = _problem(flux_pair, pose_layout(), options)
    fast = balanced_sample(problem)
    ref = reference_sample(_problem(flux_pair, pose_layout(), options))
    plain = balanced_sample(_problem(flux_pair, pose_layout(), options.model_copy(update={"scale_factor": 0.0}))).latents
    assert (fast.latents - ref).abs().max() <= 1e-4
    assert (fast.latents - plain).abs().max() > 1e-3
    assert fast.passes["cfg"] == 0 and fast.passes["cond"] > 0  # distilled: never an unconditional pass


def test_flux_timesteps_follow_the_pipeline(flux_pair):
    """Sigmas 1 → 1/n, shifted by the image's token count (FluxPipeline's schedule)."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    t2i = flux_pair[0]
    sched = t2i.make_scheduler()
    sched.set_timesteps(4, **t2i.timestep_kwargs(128, 128, 4))
    assert t2i.image_tokens(128, 128) == 32 * 32  # the tiny VAE halves, Flux packs 2×2 cells
    mu = calculate_shift(1024, 256, 4096, 0.5, 1.15)
    expected = np.exp(mu) / (np.exp(mu) + (1 / np.linspace(1.0, 0.25, 4) - 1))
    assert np.allclose(sched.sigmas[:-1].numpy(), expected, atol=1e-6)


# ---- joint-attention capture -----------------------------------------------------------------
def _oracle_text_attention(attn, hidden, text, queries_keys):
    """softmax(q·kᵀ/√d) by SDPA with identity values: an independent computation of the same block."""
    query, key, text_cols = queries_keys(attn, hidden, text, {})
    eye = torch.eye(key.shape[2]).expand(*key.shape[:2], -1, -1)
    probs = torch.nn.functional.scaled_dot_product_attention(query, key, eye)  # (B, H, N, N + T)
    return probs[..., text_cols].mean(dim=1), probs.sum(dim=-1)


def test_captured_probabilities_equal_sdpa_and_leave_the_output_unchanged(sd3_pair):
    from realcompo_sdk.joint_attention import JointAttentionCapture, sd3_queries_keys, text_attention

    t2i = sd3_pair[0]
    g = torch.Generator().manual_seed(0)
    hidden, text = torch.randn(2, 64, 32, generator=g), torch.randn(2, 20, 32, generator=g)
    attn = t2i.transformer.transformer_blocks[1].attn
    query, key, cols = sd3_queries_keys(attn, hidden, text, {})
    oracle, row_sums = _oracle_text_attention(attn, hidden, text, sd3_queries_keys)
    assert torch.allclose(row_sums, torch.ones_like(row_sums), atol=1e-5)
    assert (text_attention(query, key, cols, max_bytes=1) - oracle).abs().max() <= 1e-6  # head by head = all at once
    before = attn(hidden, text)
    with JointAttentionCapture({"a": attn}, [[[0, 1]], [[2]]], sd3_queries_keys):
        during = attn(hidden, text)
    assert all(torch.equal(a, b) for a, b in zip(before, during))  # the model's own processor computed the output


def test_flux_capture_applies_the_rotary_embedding(flux_pair):
    """Without the rotary embedding the recomputed keys would differ from the processor's: the
    captured block must equal SDPA's probabilities with rotated queries and keys."""
    from diffusers.models.embeddings import apply_rotary_emb

    from realcompo_sdk.joint_attention import flux_queries_keys, text_attention

    t2i = flux_pair[0]
    attn = t2i.transformer.transformer_blocks[0].attn
    g = torch.Generator().manual_seed(1)
    hidden, text = torch.randn(1, 16, 32, generator=g), torch.randn(1, 6, 32, generator=g)
    ids = torch.cat([torch.zeros(6, 3), t2i.pipe._prepare_latent_image_ids(1, 4, 4, "cpu", torch.float32)])
    rotary = t2i.transformer.pos_embed(ids)
    query, key, cols = flux_queries_keys(attn, hidden, text, {"image_rotary_emb": rotary})
    plain_q = attn.norm_q(attn.to_q(hidden).unflatten(-1, (-1, attn.head_dim)))
    assert not torch.allclose(query.transpose(1, 2), plain_q)  # the rotation was applied
    rotated = apply_rotary_emb(torch.cat([attn.norm_added_q(attn.add_q_proj(text).unflatten(-1, (-1, attn.head_dim))), plain_q], 1),
                               rotary, sequence_dim=1)
    assert torch.allclose(query.transpose(1, 2), rotated[:, 6:], atol=1e-6)
    eye = torch.eye(key.shape[2]).expand(*key.shape[:2], -1, -1)
    oracle = torch.nn.functional.scaled_dot_product_attention(query, key, eye)[..., cols].mean(dim=1)
    assert (text_attention(query, key, cols) - oracle).abs().max() <= 1e-6


def test_attention_blocks_option_is_checked_and_used():
    with pytest.raises(RealCompoError, match="attention_blocks"):
        sd3(attention_blocks=(7,))
    adapter = sd3(attention_blocks=(0, 2))
    assert list(adapter.attention_layers()) == ["transformer_blocks.0.attn", "transformer_blocks.2.attn"]
    assert sd3().attention_blocks == (1,)  # the middle third of 4 blocks


def test_coarser_maps_are_the_grid_maps_average_pooled(sd3_pair):
    t2i = sd3_pair[0]
    request = GenerationRequest(prompt=LAYOUT.prompt, negative_prompt="", layout=LAYOUT, batch_size=1, height=32,
                                width=32, num_steps=4)
    state = t2i.prepare(request)
    _, positions = t2i.phrase_token_positions(LAYOUT.prompt, ["red cat", "blue dog"])
    x = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    step = StepInfo(index=0, num_steps=4, timestep=torch.tensor(900.0))
    assert t2i.attention_resolutions(32, 32) == [8, 4, 2]
    fine = t2i.attention_probs(x, step, state, [positions], 8)
    coarse = t2i.attention_probs(x, step, state, [positions], 4)
    assert torch.allclose(coarse, torch.nn.functional.avg_pool2d(fine, 2), atol=1e-7)
    with pytest.raises(RealCompoError, match="map heights"):
        t2i.attention_probs(x, step, state, [positions], 3)


# ---- token alignment per encoder --------------------------------------------------------------
def test_sd3_positions_are_clip_then_t5_each_from_its_tokenizer():
    adapter = sd3()
    pipe = adapter.pipe
    prompt, positions = adapter.phrase_token_positions(LAYOUT.prompt, ["red cat", "blue dog"])
    clip_ids = pipe.tokenizer(prompt, padding="max_length", max_length=77).input_ids
    t5_ids = pipe.tokenizer_3(prompt).input_ids
    for phrase, found in zip(["red cat", "blue dog"], positions):
        clip_part = [p for p in found if p < 77]
        t5_part = [p - 77 for p in found if p >= 77]
        assert pipe.tokenizer.decode([clip_ids[p] for p in clip_part]).strip() == phrase
        assert pipe.tokenizer_3.decode([t5_ids[p] for p in t5_part]).strip() == phrase


def test_sd3_phrase_past_clip_context_is_found_through_t5():
    adapter = SD3Adapter(model=str(folders()["sd3"]), max_sequence_length=120)
    prompt = "a photo of " + "a big red tree and " * 18 + "a blue dog"
    _, positions = adapter.phrase_token_positions(prompt, ["blue dog"])
    assert positions[0] and min(positions[0]) >= 77  # CLIP truncates it away; T5 still reads it


def test_flux_positions_are_t5_positions():
    adapter = flux()
    _, positions = adapter.phrase_token_positions(LAYOUT.prompt, ["red cat"])
    ids = adapter.pipe.tokenizer_2(LAYOUT.prompt).input_ids
    assert adapter.pipe.tokenizer_2.decode([ids[p] for p in positions[0]]).strip() == "red cat"


# ---- refusals, before loading where possible ----------------------------------------------------
def test_sd3_with_an_sd15_l2i_is_refused_before_weights_load(monkeypatch, tmp_path):
    """16 latent channels vs 4: refused from the config files, with both adapters named."""
    import diffusers

    from realcompo_sdk import RealCompo
    from realcompo_sdk.errors import IncompatibleAdaptersError
    from realcompo_sdk.testing.folders import save_tiny_sd_folder

    gligen = save_tiny_sd_folder(tmp_path / "gligen", seed=0, gligen=True)

    def no_loading(*args, **kwargs):
        raise AssertionError("weights were loaded before the compatibility check")

    for cls in (diffusers.StableDiffusion3Pipeline, diffusers.UNet2DConditionModel, diffusers.AutoencoderKL):
        monkeypatch.setattr(cls, "from_pretrained", no_loading)
    with pytest.raises(IncompatibleAdaptersError, match=r"channels is 16 .*'sd3'.* but 4"):
        RealCompo(t2i="sd3", l2i="gligen", planner=None, t2i_options={"model": str(folders()["sd3"])},
                  l2i_options={"model": str(gligen)})


def test_flux_with_an_sd3_controlnet_base_is_refused_before_loading(monkeypatch):
    import diffusers

    from realcompo_sdk import RealCompo
    from realcompo_sdk.errors import IncompatibleAdaptersError

    monkeypatch.setattr(diffusers.FluxPipeline, "from_pretrained", lambda *a, **k: pytest.fail("loaded"))
    with pytest.raises(IncompatibleAdaptersError, match="scaling_factor"):
        RealCompo(t2i="flux", l2i="sd3-controlnet-seg", planner=None, t2i_options={"model": str(folders()["flux"])},
                  l2i_options={"base": str(folders()["sd3"]), "controlnet": str(folders()["sd3-cn"])})


def test_wrong_folder_kinds_are_named():
    with pytest.raises(RealCompoError, match="not a StableDiffusion3Pipeline.*Use 'flux'"):
        SD3Adapter(model=str(folders()["flux"]))
    with pytest.raises(RealCompoError, match="not a FluxPipeline.*Use 'sd3'"):
        FluxAdapter(model=str(folders()["sd3"]))
    with pytest.raises(RealCompoError, match="not a SD3ControlNetModel folder"):
        SD3ControlNetSegAdapter(controlnet=str(folders()["flux-cn"]), base=str(folders()["sd3"]))


def test_controlnet_of_another_family_or_size_is_refused(sd3_pair):
    with pytest.raises(RealCompoError, match="can share the models of a 'flux' adapter"):
        FluxControlNetPoseAdapter.sharing(sd3_pair[0], controlnet=str(folders()["flux-union"]), control_mode=4)


def test_union_controlnet_needs_a_known_mode(flux_pair):
    with pytest.raises(RealCompoError, match="union ControlNet with 10 control modes; set control_mode"):
        FluxControlNetPoseAdapter.sharing(flux_pair[0], controlnet=str(folders()["flux-union"]), control_mode=None)
    with pytest.raises(RealCompoError, match="not a union ControlNet"):
        FluxControlNetPoseAdapter.sharing(flux_pair[0], controlnet=str(folders()["flux-cn"]), control_mode=4)


def test_distilled_adapter_refuses_an_unconditional_branch(flux_pair):
    t2i = flux_pair[0]
    request = GenerationRequest(prompt="a red cat", negative_prompt="", layout=LAYOUT, batch_size=1, height=32, width=32, num_steps=2)
    state = t2i.prepare(request)
    assert state.uncond is None  # nothing encoded for a branch that never runs
    step = StepInfo(index=0, num_steps=2, timestep=torch.tensor(1000.0))
    with pytest.raises(RealCompoError, match="guidance-distilled"):
        t2i.predict_noise(torch.zeros(1, 16, 16, 16), step, state, guidance_scale=3.5)


def test_guidance_scale_reaches_the_distilled_model(flux_pair):
    t2i = flux_pair[0]
    request = GenerationRequest(prompt="a red cat", negative_prompt="", layout=LAYOUT, batch_size=1, height=32, width=32, num_steps=2)
    state = t2i.prepare(request)
    x = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    step = StepInfo(index=0, num_steps=2, timestep=torch.tensor(800.0))
    low = t2i.predict_noise(x, step, state, guidance_scale=1.0, branches=("cond",)).cond
    high = t2i.predict_noise(x, step, state, guidance_scale=6.0, branches=("cond",)).cond
    assert (low - high).abs().max() > 1e-5


def test_sd3_medium_controlnet_on_an_sd35_like_transformer_is_refused():
    """Same widths, different q/k norms (SD3-medium vs SD3.5): the residuals would add but mean nothing."""
    from diffusers import StableDiffusion3Pipeline

    from realcompo_sdk.testing.folders_mmdit import tiny_sd3_components, tiny_sd3_transformer

    parts = tiny_sd3_components(0)
    parts["transformer"] = tiny_sd3_transformer(0, qk_norm="rms_norm")
    t2i = SD3Adapter(pipeline=StableDiffusion3Pipeline(**parts), model="tiny SD3.5-like", max_sequence_length=SEQ)
    with pytest.raises(RealCompoError, match="qk_norm None vs rms_norm"):
        SD3ControlNetSegAdapter.sharing(t2i, controlnet=str(folders()["sd3-cn"]))


# ---- precision and batching ---------------------------------------------------------------------
def test_float64_balanced_sampler_matches_reference_loop_to_float64_precision():
    t2i = sd3(dtype="float64")
    adapters = [t2i, SD3ControlNetSegAdapter.sharing(t2i, controlnet=str(folders()["sd3-cn"]))]
    options = BalanceOptions(scale_factor=1e4, t0=1, attention_resolution=8)
    fast = balanced_sample(_problem(adapters, LAYOUT, options)).latents
    ref = reference_sample(_problem(adapters, LAYOUT, options))
    assert fast.dtype == torch.float64 and (fast - ref).abs().max() <= 1e-12


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_mixed_batch_equals_single_calls(family, request):
    """Different prompts and layouts in one batch give each sample's single-call image."""
    from realcompo_sdk import RealCompo
    from realcompo_sdk.compose import BatchItem

    pair = request.getfixturevalue(f"{family}_pair")
    if family == "sd3":
        layouts = [LAYOUT, Layout.from_boxes("a green tree above a yellow car", [("green tree", (0.2, 0.0, 0.8, 0.5)),
                                                                                ("yellow car", (0.1, 0.5, 0.9, 1.0))])]
    else:
        layouts = [pose_layout(), pose_layout("a woman dancing with a man")]
    rc = RealCompo(t2i=pair[0], l2i=pair[1], planner=None, num_steps=3, guidance_scale=4.0, balance={"t0": 1})
    batch = rc.generate_batch([BatchItem(layout=layout, seed=seed) for layout, seed in zip(layouts, (1, 2))], height=32, width=32)
    for item, layout, seed in zip(batch, layouts, (1, 2)):
        single = rc(layout=layout, seed=seed, height=32, width=32).images[0]
        assert np.abs(_as_array(item.images[0]) - _as_array(single)).max() <= 1


def test_controlnet_checks_come_from_config_files_before_the_base_loads(monkeypatch):
    """A wrong control mode or a ControlNet that does not fit the base fails before gigabytes load."""
    import diffusers

    monkeypatch.setattr(diffusers.FluxPipeline, "from_pretrained", lambda *a, **k: pytest.fail("the base was loaded"))
    monkeypatch.setattr(diffusers.FluxControlNetModel, "from_pretrained", lambda *a, **k: pytest.fail("the net was loaded"))
    with pytest.raises(RealCompoError, match=r"set control_mode to one of 0..9 .*not 12"):
        FluxControlNetPoseAdapter(controlnet=str(folders()["flux-union"]), base=str(folders()["flux"]), control_mode=12)
    monkeypatch.setattr(diffusers.StableDiffusion3Pipeline, "from_pretrained", lambda *a, **k: pytest.fail("the base was loaded"))
    with pytest.raises(RealCompoError, match="does not fit"):
        SD3ControlNetSegAdapter(controlnet=str(folders()["sd3-cn"]), base=str(_sd3_folder_with(qk_norm="rms_norm")))


@functools.cache
def _sd3_folder_with(**transformer_overrides) -> Path:
    from diffusers import StableDiffusion3Pipeline

    from realcompo_sdk.testing.folders_mmdit import tiny_sd3_components, tiny_sd3_transformer

    parts = tiny_sd3_components(0)
    parts["transformer"] = tiny_sd3_transformer(0, **transformer_overrides)
    path = Path(tempfile.mkdtemp(prefix="realcompo-sd3-variant-")) / "sd3"
    StableDiffusion3Pipeline(**parts).save_pretrained(path, safe_serialization=True)
    return path


def test_hub_ids_are_compared_before_loading_from_the_cache_or_the_family(monkeypatch, tmp_path):
    """An uncached SD3 hub id has the SD3 family's latent facts (one VAE for all SD3 / SD3.5); an
    SD1.5 GLIGEN hub id already in the local Hugging Face cache is read from its cached configs —
    no network, no weights — so the pair is refused before anything loads."""
    import shutil

    import diffusers
    import huggingface_hub.constants

    from realcompo_sdk import RealCompo
    from realcompo_sdk.errors import IncompatibleAdaptersError
    from realcompo_sdk.testing.folders import save_tiny_sd_folder

    snapshot = tmp_path / "hub" / "models--someone--tiny-gligen" / "snapshots" / "abc123"
    source = save_tiny_sd_folder(tmp_path / "gligen", seed=0, gligen=True)
    for config in source.rglob("*.json"):  # configs only, as a cache holds them after a config download
        target = snapshot / config.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(config, target)
    (tmp_path / "hub" / "models--someone--tiny-gligen" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--tiny-gligen" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    for cls in (diffusers.StableDiffusion3Pipeline, diffusers.UNet2DConditionModel, diffusers.AutoencoderKL):
        monkeypatch.setattr(cls, "from_pretrained", lambda *a, **k: pytest.fail("weights were loaded"))
    with pytest.raises(IncompatibleAdaptersError, match=r"channels is 16 .*'sd3'.* but 4 for 'gligen'"):
        RealCompo(t2i="sd3", l2i="gligen", planner=None, l2i_options={"model": "someone/tiny-gligen"})
