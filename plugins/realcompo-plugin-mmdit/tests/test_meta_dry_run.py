"""Full-size dry run on the meta device: the SD3 / SD3.5 / FLUX.1 adapters and their ControlNets
build and run the real architectures' shapes, without weights.

Every model is constructed from `real_configs/*.json` (the public diffusers / transformers configs,
architecture fields only; see each file's `_source` and `_note`) under
`accelerate.init_empty_weights(include_buffers=True)`: parameters and buffers live on the meta
device, so a 12B-parameter transformer costs no memory and a forward costs no arithmetic, only
shape propagation. The tokenizers are the repository's tiny ones (same special-token layout as
CLIP / T5; their ids are all below the real vocabularies' sizes).

What this proves: parameter counts match the published sizes; the module names the adapters
rely on exist in the real architectures; and at 1024×1024 (latents (1, 16, 128, 128)) `prepare`
(text encoding, control image VAE encoding), `predict_noise`, `attention_probs` and a backward
pass through the attention maps all run with the right shapes. What it cannot prove: anything
about values (meta tensors hold none).

Run with `-s` to see the exact parameter counts.

The NaN/inf check of the noise (`check_finite`, on by default) is skipped on the meta device,
which holds no values to check; the adapters run here with their default options.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

accelerate = pytest.importorskip("accelerate")  # a dependency of the project: this should always run

from realcompo_sdk.errors import RealCompoError  # noqa: E402
from realcompo_sdk.interfaces import GenerationRequest, StepInfo  # noqa: E402
from realcompo_sdk.layout import Keypoint, Layout, LayoutObject  # noqa: E402
from realcompo_sdk.testing.components import tiny_t5_tokenizer, tiny_tokenizer  # noqa: E402

CONFIGS = Path(__file__).parent / "real_configs"
SIZE = 1024  # pixels: (1, 16, 128, 128) latents, a 64 × 64 token grid (4096 image tokens)
PROMPT = "a photo of a man next to a woman"
PHRASES = ["a man", "a woman"]
OPTIONS: dict[str, Any] = {"device": "meta", "dtype": "bfloat16"}

# file -> published size range in parameters. The ControlNets have no published size we trust
# (their depth is from memory, see their `_note`): None, count printed only.
MODELS: dict[str, tuple[float, float] | None] = {
    "sd3-medium-transformer.json": (1.95e9, 2.10e9),  # "2B"
    "sd35-large-transformer.json": (7.95e9, 8.15e9),  # "8.1B"
    "sd35-medium-transformer.json": (2.20e9, 2.50e9),  # "2.5B" announced, ~2.2B transformer
    "flux1-dev-transformer.json": (11.85e9, 11.95e9),  # "12B", 11.9B
    "t5-xxl-encoder.json": (4.70e9, 4.80e9),  # 4.76B encoder
    "clip-g-text-encoder.json": (0.685e9, 0.70e9),  # 0.69B text tower with projection
    "clip-l-text-encoder.json": (0.120e9, 0.125e9),  # 0.12B
    "sd3-vae.json": (83e6, 85e6),  # 84M
    "flux1-vae.json": (83e6, 85e6),
    "sd3-controlnet-pose.json": None,
    "flux-controlnet-union.json": None,
    "flux-controlnet-union-pro.json": None,
}


def read_config(name: str) -> tuple[str, dict[str, Any]]:
    """(class name, constructor arguments) of a config file; `_`-fields are documentation."""
    raw = json.loads((CONFIGS / name).read_text())
    return raw["_class_name"], {k: v for k, v in raw.items() if not k.startswith("_")}


def build(name: str, cls_name: str | None = None) -> Any:
    """The model of a config file on the meta device (`cls_name` overrides the file's class)."""
    import diffusers
    import transformers

    found, config = read_config(name)
    cls_name = cls_name or found
    with accelerate.init_empty_weights(include_buffers=True):
        if cls_name.startswith("CLIP"):
            model = getattr(transformers, cls_name)(transformers.CLIPTextConfig(**config))
        elif cls_name.startswith("T5"):
            model = getattr(transformers, cls_name)(transformers.T5Config(**config))
        else:
            model = getattr(diffusers, cls_name)(**config)
    assert {t.device.type for t in [*model.parameters(), *model.buffers()]} == {"meta"}, f"{name}: not all on meta"
    return model


def count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def person(dx: float) -> list[Keypoint]:
    points = [("nose", 0.30, 0.20), ("neck", 0.30, 0.30), ("right_shoulder", 0.25, 0.30), ("right_elbow", 0.22, 0.42),
              ("left_shoulder", 0.35, 0.30), ("left_elbow", 0.38, 0.42), ("right_hip", 0.27, 0.60),
              ("right_knee", 0.27, 0.75), ("left_hip", 0.33, 0.60), ("left_knee", 0.33, 0.75)]
    return [Keypoint(name=n, x=x + dx, y=y) for n, x, y in points]


def request(guidance_scale: float | None = None) -> GenerationRequest:
    layout = Layout(prompt=PROMPT, objects=[LayoutObject(phrase=PHRASES[0], keypoints=person(0.0)),
                                            LayoutObject(phrase=PHRASES[1], keypoints=person(0.4))])
    return GenerationRequest(prompt=PROMPT, negative_prompt="", layout=layout, batch_size=1, height=SIZE, width=SIZE,
                             num_steps=28, guidance_scale=guidance_scale)


def first_step(adapter: Any) -> StepInfo:
    """Step 0 as the sampler makes it: the adapter's scheduler, timesteps on the latents' device."""
    scheduler = adapter.make_scheduler()
    scheduler.set_timesteps(28, device="meta", **adapter.timestep_kwargs(SIZE, SIZE, 28))
    return StepInfo(index=0, num_steps=28, timestep=scheduler.timesteps[0])


def latents(requires_grad: bool = False) -> torch.Tensor:
    return torch.empty(1, 16, SIZE // 8, SIZE // 8, device="meta", requires_grad=requires_grad)


def run_adapter(adapter: Any, req: GenerationRequest, branches: tuple[str, ...], text_tokens: int, pooled: int,
                resolutions: tuple[int, ...] = (64, 32)) -> Any:
    """prepare → predict_noise → attention_probs (+ backward) on meta; returns the state."""
    state = adapter.prepare(req)
    assert state.cond.shape == (1, text_tokens, 4096) and state.cond.device.type == "meta"
    assert state.cond.dtype == torch.bfloat16
    assert state.pooled["cond"].shape == (1, pooled)
    assert adapter.attention_resolutions(SIZE, SIZE) == [64, 32, 16, 8, 4, 2]
    step = first_step(adapter)
    assert step.timestep.device.type == "meta"

    pred = adapter.predict_noise(latents(), step, state, guidance_scale=req.guidance_scale or 4.5, branches=branches)
    assert pred.guided is not None
    assert pred.guided.shape == (1, 16, 128, 128) and pred.guided.dtype == torch.float32
    assert pred.guided.device.type == "meta"

    _, groups = adapter.phrase_token_positions(PROMPT, PHRASES)
    assert all(groups) and max(max(g) for g in groups) < text_tokens
    for resolution in resolutions:
        z = latents(requires_grad=True)
        maps = adapter.attention_probs(z, step, state, [groups], resolution)
        assert maps.shape == (1, len(PHRASES), resolution, resolution) and maps.requires_grad
        maps.sum().backward()
        assert z.grad is not None and z.grad.shape == z.shape and z.grad.device.type == "meta"
    return state


# ---- fixtures: the shared text encoders (built once; the adapters cast them to bf16 in place) -----
@pytest.fixture(scope="module")
def encoders() -> dict[str, Any]:
    return {
        "clip_l": build("clip-l-text-encoder.json"),
        "clip_l_plain": build("clip-l-text-encoder.json", "CLIPTextModel"),  # Flux: pooled output, no projection
        "clip_g": build("clip-g-text-encoder.json"),
        "t5": build("t5-xxl-encoder.json"),
    }


def sd3_pipeline(transformer: str, encoders: dict[str, Any]) -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    tokenizer_2 = tiny_tokenizer()
    tokenizer_2.pad_token = "!"  # as SD3's second CLIP tokenizer
    return StableDiffusion3Pipeline(
        transformer=build(transformer), vae=build("sd3-vae.json"),
        text_encoder=encoders["clip_l"], text_encoder_2=encoders["clip_g"], text_encoder_3=encoders["t5"],
        tokenizer=tiny_tokenizer(), tokenizer_2=tokenizer_2, tokenizer_3=tiny_t5_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))


@pytest.fixture(scope="module")
def flux_adapter(encoders: dict[str, Any]) -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
    from realcompo_plugin_mmdit.flux import FluxAdapter

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)  # FLUX.1-dev's
    pipe = FluxPipeline(transformer=build("flux1-dev-transformer.json"), vae=build("flux1-vae.json"),
                        text_encoder=encoders["clip_l_plain"], text_encoder_2=encoders["t5"],
                        tokenizer=tiny_tokenizer(), tokenizer_2=tiny_t5_tokenizer(), scheduler=scheduler)
    return FluxAdapter(pipeline=pipe, model="black-forest-labs/FLUX.1-dev (meta)", **OPTIONS)


# ---- sizes and names -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(MODELS))
def test_parameter_count(name: str) -> None:
    expected = MODELS[name]
    model = build(name)
    n = count(model)
    print(f"\n[meta] {name}: {type(model).__name__} {n:,d} parameters ({n / 1e9:.3f}B)")
    if name == "clip-l-text-encoder.json":
        plain = count(build(name, "CLIPTextModel"))
        print(f"[meta] {name} as CLIPTextModel (FLUX.1's text_encoder): {plain:,d} parameters")
        assert n - plain == 768 * 768  # the projection, bias-free
    if expected is not None:
        low, high = expected
        assert low <= n <= high, f"{name}: {n:,d} parameters, published size {low:,.0f}..{high:,.0f}"


@pytest.mark.parametrize("name", ["sd3-medium-transformer.json", "sd35-large-transformer.json",
                                  "sd35-medium-transformer.json", "sd3-controlnet-pose.json"])
def test_sd3_key_names(name: str) -> None:
    _, config = read_config(name)
    model = build(name)
    names = {k for k, _ in model.named_parameters()}
    blocks = model.transformer_blocks
    assert len(blocks) == config["num_layers"]
    qk = config.get("qk_norm") is not None
    for i, block in enumerate(blocks):
        for key in ("attn.to_q", "attn.to_k", "attn.add_k_proj"):  # what sd3_queries_keys reads
            assert f"transformer_blocks.{i}.{key}.weight" in names, key
        attn = block.attn
        assert attn.heads == config["num_attention_heads"]
        assert (attn.norm_q is not None, attn.norm_k is not None, attn.norm_added_k is not None) == (qk, qk, qk)
        if qk:
            assert f"transformer_blocks.{i}.attn.norm_q.weight" in names
            assert f"transformer_blocks.{i}.attn.norm_added_k.weight" in names
        assert (getattr(block, "attn2", None) is not None) == (i in config.get("dual_attention_layers", ()))
    if "controlnet" not in name:
        assert blocks[-1].context_pre_only  # the last block still reads text keys (add_k_proj) but emits none


@pytest.mark.parametrize("name", ["flux1-dev-transformer.json", "flux-controlnet-union.json",
                                  "flux-controlnet-union-pro.json"])
def test_flux_key_names(name: str) -> None:
    _, config = read_config(name)
    model = build(name)
    names = {k for k, _ in model.named_parameters()}
    assert len(model.transformer_blocks) == config["num_layers"]
    assert len(model.single_transformer_blocks) == config["num_single_layers"]
    for i, block in enumerate(model.transformer_blocks):  # what flux_queries_keys reads
        for key in ("to_q", "to_k", "add_q_proj", "add_k_proj", "norm_q", "norm_k", "norm_added_q", "norm_added_k"):
            assert f"transformer_blocks.{i}.attn.{key}.weight" in names, key
        assert block.attn.head_dim == config["attention_head_dim"] == sum(config["axes_dims_rope"])
    for block in model.single_transformer_blocks:  # single-stream: no separate text projections to capture
        assert getattr(block.attn, "add_k_proj", None) is None
    if "controlnet" in name:
        assert model.union == (config.get("num_mode") is not None)


# ---- the adapters on meta ----------------------------------------------------------------------------
@pytest.mark.parametrize("transformer, label", [
    ("sd35-large-transformer.json", "stabilityai/stable-diffusion-3.5-large (meta)"),
    ("sd35-medium-transformer.json", "stabilityai/stable-diffusion-3.5-medium (meta)"),
    ("sd3-medium-transformer.json", "stabilityai/stable-diffusion-3-medium-diffusers (meta)"),
])
def test_sd3_adapter_dry_run(encoders: dict[str, Any], transformer: str, label: str) -> None:
    from realcompo_plugin_mmdit.sd3 import SD3Adapter

    adapter = SD3Adapter(pipeline=sd3_pipeline(transformer, encoders), model=label, **OPTIONS)
    assert adapter.device == torch.device("meta") and adapter.dtype == torch.bfloat16
    assert adapter.latent_spec.default_resolution == (SIZE, SIZE)
    assert (adapter.latent_spec.scaling_factor, adapter.latent_spec.shift_factor) == (1.5305, 0.0609)
    n = len(adapter.transformer.transformer_blocks)
    assert adapter.attention_blocks == tuple(range(n // 3, 2 * n // 3))
    run_adapter(adapter, request(), ("uncond", "cond"), text_tokens=77 + 256, pooled=768 + 1280)


def test_flux_adapter_dry_run(flux_adapter: Any) -> None:
    adapter = flux_adapter
    assert adapter.guidance == "distilled"
    assert (adapter.latent_spec.scaling_factor, adapter.latent_spec.shift_factor) == (0.3611, 0.1159)
    assert adapter.attention_blocks == tuple(range(6, 12))  # middle third of 19 double blocks
    state = run_adapter(adapter, request(guidance_scale=3.5), ("cond",), text_tokens=512, pooled=768)
    assert state.uncond is None
    with pytest.raises(RealCompoError, match="guidance-distilled"):
        adapter.predict_noise(latents(), first_step(adapter), state, guidance_scale=3.5)


def _record_outputs(module: Any) -> list[Any]:
    seen: list[Any] = []
    module.register_forward_hook(lambda _m, _i, out: seen.append(out))
    return seen


def test_sd3_controlnet_pose_dry_run(encoders: dict[str, Any]) -> None:
    from realcompo_plugin_mmdit.controlnet import ControlLatents, SD3ControlNetPoseAdapter
    from realcompo_plugin_mmdit.sd3 import SD3Adapter

    # InstantX's pose net is an SD3-medium ControlNet: it is shared with an SD3-medium adapter
    t2i = SD3Adapter(pipeline=sd3_pipeline("sd3-medium-transformer.json", encoders),
                     model="stabilityai/stable-diffusion-3-medium-diffusers (meta)", **OPTIONS)
    net = build("sd3-controlnet-pose.json")
    adapter = SD3ControlNetPoseAdapter(share_with=t2i, controlnet_model=net,
                                       controlnet="InstantX/SD3-Controlnet-Pose (meta)")
    assert adapter.transformer is t2i.transformer and adapter.device.type == "meta"
    assert adapter.controlnet.dtype == torch.bfloat16
    outputs = _record_outputs(adapter.controlnet)
    state = run_adapter(adapter, request(), ("uncond", "cond"), text_tokens=333, pooled=2048)
    assert state.get(ControlLatents).tensor.shape == (1, 16, 128, 128)  # VAE-encoded on meta in prepare
    # one ControlNet forward per model call (predict_noise, then one per attention resolution)
    assert len(outputs) == 3
    residuals = outputs[0][0]
    assert len(residuals) == net.config.num_layers
    assert all(r.shape == (2, 4096, 1536) for r in residuals)  # both CFG branches, one per image token


def test_sd3_controlnet_refuses_another_sd3_width(encoders: dict[str, Any]) -> None:
    """The SD3-medium pose net shared with an SD3.5-large adapter: refused before any forward."""
    from realcompo_plugin_mmdit.controlnet import SD3ControlNetPoseAdapter
    from realcompo_plugin_mmdit.sd3 import SD3Adapter

    t2i = SD3Adapter(pipeline=sd3_pipeline("sd35-large-transformer.json", encoders),
                     model="stabilityai/stable-diffusion-3.5-large (meta)", **OPTIONS)
    with pytest.raises(RealCompoError, match="width 1536 vs 2432"):
        SD3ControlNetPoseAdapter(share_with=t2i, controlnet_model=build("sd3-controlnet-pose.json"),
                                 controlnet="InstantX/SD3-Controlnet-Pose (meta)")


@pytest.mark.parametrize("config, label", [
    ("flux-controlnet-union-pro.json", "Shakker-Labs/FLUX.1-dev-ControlNet-Union-Pro (meta)"),
    ("flux-controlnet-union.json", "InstantX/FLUX.1-dev-Controlnet-Union (meta)"),
])
def test_flux_controlnet_pose_dry_run(flux_adapter: Any, config: str, label: str) -> None:
    from realcompo_plugin_mmdit.controlnet import ControlLatents, FluxControlNetPoseAdapter

    net = build(config)
    adapter = FluxControlNetPoseAdapter(share_with=flux_adapter, controlnet_model=net, controlnet=label,
                                        control_mode=4)
    assert adapter.transformer is flux_adapter.transformer and adapter.options.max_sequence_length == 512
    outputs = _record_outputs(adapter.controlnet)
    state = run_adapter(adapter, request(guidance_scale=3.5), ("cond",), text_tokens=512, pooled=768)
    assert state.get(ControlLatents).tensor.shape == (1, 4096, 64)  # VAE latents packed 2×2, as the image's
    assert len(outputs) == 3
    blocks, single = outputs[0]
    assert len(blocks) == net.config.num_layers and all(b.shape == (1, 4096, 3072) for b in blocks)
    assert len(single or ()) == net.config.num_single_layers
    assert all(s.shape == (1, 4096, 3072) for s in single or ())
