"""Parity with the official InstanceDiffusion code (research notes §4.4: T1, T2, T4, T5, T7, T8, T10).

Skipped unless INSTDIFF_OFFICIAL_SRC points at a checkout of frank-xwang/InstanceDiffusion
(commit 722900e) and its import dependencies are installed; see `official_harness.py` for the
set-up and for everything that is patched to run it on CPU. The official code is only imported
at test time, never copied into this repository.

    OMP_NUM_THREADS=1 INSTDIFF_OFFICIAL_SRC=~/src/InstanceDiffusion \\
        pytest plugins/realcompo-plugin-instancediffusion/tests/test_official_parity.py

Every comparison prints max abs / max rel difference and the worst index (`pytest -s` shows
them); with INSTDIFF_PARITY_REPORT=path.json they are also written to that file.
Tolerances (fp32, CPU): objs ≤ 1e-5, eps and latents ≤ 1e-4 max abs. The T10 mutation tests
apply a known bug to our code and assert that the same comparison then fails.
"""

from __future__ import annotations

import copy
import glob
import importlib
import importlib.util
import json
import os
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

_TESTS = Path(__file__).resolve().parent
_PLUGIN_ROOT = _TESTS.parent


def _load_harness() -> Any:
    name = "_instdiff_official_harness"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _TESTS / "official_harness.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


H = _load_harness()
_REASON = H.unavailable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")

OBJS_TOL = 1e-5
EPS_TOL = 1e-4
LATENT_TOL = 1e-4
D_TINY = H.TINY_UNET_PARAMS["context_dim"]
SCHEDULER_KWARGS = {
    "skip_prk_steps": True,
    "steps_offset": 1,
    "set_alpha_to_one": False,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
}
_RESULTS: dict[str, dict[str, Any]] = {}


def ours(module: str) -> Any:
    """realcompo_plugin_instancediffusion.<module> (from the work tree if the plugin is not installed)."""
    name = f"realcompo_plugin_instancediffusion.{module}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != "realcompo_plugin_instancediffusion":
            raise
        sys.path.insert(0, str(_PLUGIN_ROOT))
        return importlib.import_module(name)


def diff(name: str, ours_t: Any, ref_t: Any) -> float:
    """Max abs difference (inf on a shape mismatch); prints and records max rel and worst index."""
    a = torch.as_tensor(np.asarray(ours_t) if not isinstance(ours_t, torch.Tensor) else ours_t).detach().double()
    b = torch.as_tensor(np.asarray(ref_t) if not isinstance(ref_t, torch.Tensor) else ref_t).detach().double()
    if a.shape != b.shape:
        entry = {"max_abs": float("inf"), "shapes": [list(a.shape), list(b.shape)]}
        value = float("inf")
    else:
        d = (a - b).abs()
        value = float(d.max()) if d.numel() else 0.0
        worst = np.unravel_index(int(d.argmax()), tuple(d.shape)) if d.numel() else ()
        rel = float((d / b.abs().clamp_min(1e-12)).max()) if d.numel() else 0.0
        entry = {
            "max_abs": value,
            "max_rel": rel,
            "worst_index": [int(i) for i in worst],
            "ref_max_abs": float(b.abs().max()) if b.numel() else 0.0,
        }
    _RESULTS[name] = entry
    print(f"[parity] {name}: {json.dumps(entry)}")
    path = os.environ.get("INSTDIFF_PARITY_REPORT")
    if path:
        Path(path).write_text(json.dumps(_RESULTS, indent=1, sort_keys=True))
    return value


def for_ours(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Harness input dict → our position net's keyword arguments."""
    out = {k: v for k, v in inputs.items() if k != "text_embeddings"}
    out["positive_embeddings"] = (
        inputs["text_embeddings"] if "text_embeddings" in inputs else inputs["positive_embeddings"]
    )
    return out


# ----------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def full_nets():
    """Official UniFusion at SD1.5 size (768/768/3072), re-randomised, and ours with its weights."""
    torch.manual_seed(0)
    official = H.rerandomize(H.official_position_net(**H.FULL_POSITION_NET, profile="mask"), seed=0)
    net = ours("position_net").InstDiffPositionNet(**H.FULL_POSITION_NET)
    net.load_state_dict(official.state_dict(), strict=True)
    return official, net.eval()


@pytest.fixture(scope="module")
def tiny():
    """Tiny official UNetModel + UniFusion (re-randomised) and our converted diffusers UNet."""
    unet_mod, convert = ours("unet"), ours("convert")
    official = H.official_tiny_unet("mask", seed=0)
    config = unet_mod.diffusers_config_from_official(dict(H.TINY_UNET_PARAMS))
    model = unet_mod.build_instdiff_unet(config, {"mid_dim": H.TINY_POSITION_NET["mid_dim"]})
    state = convert.convert_official_state_dict(H.official_state_dict(official), config)
    model.load_state_dict(state, strict=True)
    return official, model.eval(), config


def _t2_inputs(in_dim: int) -> dict[str, torch.Tensor]:
    # N = 0 (all-null sample), 1, 3, 30 with masks; N = 2 without any mask (per-sample seg null).
    # Scribbles/polygons on even slots only: real instances with and without coordinates.
    return H.make_grounding_inputs([0, 1, 3, 30, 2], in_dim, seed=1, segs=[True, True, True, True, False])


@pytest.fixture(scope="module")
def t2_full_inputs():
    return _t2_inputs(H.FULL_POSITION_NET["in_dim"])


@pytest.fixture(scope="module")
def t2_tiny_inputs():
    return _t2_inputs(D_TINY)


def _our_objs(model_or_net: Any, inputs: dict[str, torch.Tensor], profile: str) -> torch.Tensor:
    net = getattr(model_or_net, "position_net", model_or_net)
    with torch.no_grad():
        return net(**for_ours(inputs), profile=profile)


def _tiny_case(profile: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Batch of 3 for the UNet tests: (N, t) pairs form a Latin square over the 4 profiles."""
    k = H.PROFILES.index(profile)
    ns, ts = [0, 2, 30], [1, 501, 981]
    ts = ts[k % 3 :] + ts[: k % 3]
    g = torch.Generator().manual_seed(10 + k)
    x = torch.randn(3, 4, 16, 16, generator=g)
    ctx = torch.randn(3, 77, D_TINY, generator=g)
    inputs = H.make_grounding_inputs(ns, D_TINY, seed=20 + k)
    return x, torch.tensor(ts), ctx, inputs


def _our_eps(
    model: Any, x: torch.Tensor, t: Any, ctx: torch.Tensor, objs: torch.Tensor, grounding: bool = True
) -> torch.Tensor:
    unet_mod = ours("unet")
    unet_mod.set_grounding(model, grounding)
    try:
        with torch.no_grad():
            return model(x, t, encoder_hidden_states=ctx, cross_attention_kwargs={"gligen": {"objs": objs}}).sample
    finally:
        unet_mod.set_grounding(model, True)


# ----------------------------------------------------------------------------------------------------
# T1 Fourier features


@pytest.mark.parametrize("n_coords", [4, 2, 40, 512])
def test_t1_fourier_features_exact(n_coords):
    fourier = ours("fourier")
    g = torch.Generator().manual_seed(n_coords)
    x = torch.rand(2, 30, n_coords, generator=g)
    x[1, 5:] = 0.0  # padding rows
    x[0, 0] = 1.0
    reference = H.official().util.FourierEmbedder(num_freqs=16)(x)
    got = fourier.fourier_features(x, num_freqs=16, temperature=100)
    assert got.shape == reference.shape == (2, 30, 32 * n_coords)
    assert diff(f"T1 fourier n={n_coords}", got, reference) == 0.0
    assert torch.equal(got, reference)


# ----------------------------------------------------------------------------------------------------
# T2 position net


@pytest.mark.parametrize("profile", H.PROFILES)
def test_t2_position_net_full_size(full_nets, t2_full_inputs, profile):
    official, net = full_nets
    H.set_profile(official, profile)
    reference = H.official_objs(official, t2_full_inputs)
    got = _our_objs(net, t2_full_inputs, profile)
    assert reference.shape == (5, 184, 768)
    assert diff(f"T2 objs full {profile}", got, reference) <= OBJS_TOL


@pytest.mark.parametrize("profile", H.PROFILES)
def test_t2_position_net_tiny(tiny, t2_tiny_inputs, profile):
    official, model, _ = tiny
    H.set_profile(official, profile)
    reference = H.official_objs(official, t2_tiny_inputs)
    got = _our_objs(model, t2_tiny_inputs, profile)
    assert diff(f"T2 objs tiny {profile}", got, reference) <= OBJS_TOL


def test_t2_segs_not_512_are_resized_nearest(tiny):
    """The official forward resizes segs to 512² (nearest) whatever their size."""
    official, model, _ = tiny
    H.set_profile(official, "mask")
    inputs = H.make_grounding_inputs([3, 1], D_TINY, seed=3, seg_size=128)
    reference = H.official_objs(official, inputs)
    got = _our_objs(model, inputs, "mask")
    assert diff("T2 objs tiny mask segs128", got, reference) <= OBJS_TOL


def test_t2_null_input_tokens(tiny):
    """The uncond tokens: all-zero inputs (official get_null_input) → learned nulls everywhere."""
    official, model, _ = tiny
    for profile in H.PROFILES:
        H.set_profile(official, profile)
        null = H.null_grounding_inputs(2, D_TINY)
        assert (
            diff(f"T2 objs tiny null {profile}", _our_objs(model, null, profile), H.official_objs(official, null))
            <= OBJS_TOL
        )


# ----------------------------------------------------------------------------------------------------
# T3 (key list): the shipped official key/shape list is the official model's


def test_t3_shipped_key_list_is_the_official_models():
    """convert.official_sd15_key_shapes() (shipped JSON) == the official SD1.5-size UNetModel's
    state dict built on the meta device; it maps onto our UNet with the §1.1 parameter counts."""
    convert = ours("convert")
    official_shapes = H.official_sd15_key_shapes("mask")
    assert list(convert.official_sd15_key_shapes().items()) == list(official_shapes.items())
    report = convert.shapes_only_report(official_shapes)
    assert report["parameters"] == {
        "fusers": 208_018_272,
        "position_net": 160_782_669,
        "scaleu": 11_532,
        "total": 1_228_333_437,
    }


# ----------------------------------------------------------------------------------------------------
# T4 UNet noise prediction, tiny


def test_t4_config_derivation():
    """Our builder derives the §4.3 tiny diffusers config from the official UNetModel params."""
    config = ours("unet").diffusers_config_from_official(dict(H.TINY_UNET_PARAMS))
    expected = {
        "sample_size": 16,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": [32, 64, 64],
        "layers_per_block": 2,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "cross_attention_dim": 32,
        "attention_head_dim": 2,
        "norm_num_groups": 32,
        "attention_type": "gated",
    }
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in config.items() if k in expected} == expected


def test_t4_fresh_official_model_is_degenerate_and_rerandomized_is_not():
    """Guards against vacuous passes (P11): eps ≡ 0 before re-randomisation, not after."""
    model = H.official_tiny_unet("box")
    x, t, ctx, inputs = _tiny_case("box")
    assert float(H.official_eps(model, x, t, ctx, inputs).abs().max()) == 0.0
    H.rerandomize(model, 0)
    eps = H.official_eps(model, x, t, ctx, inputs)
    eps_off = H.official_eps(model, x, t, ctx, inputs, fuser_scale=0.0)
    eps_null = H.official_eps(model, x, t, ctx, None)
    assert float(eps.abs().mean()) > 1e-2
    assert float((eps - eps_off).abs().max()) > 100 * EPS_TOL  # the fusers matter
    assert float((eps - eps_null).abs().max()) > 10 * EPS_TOL  # the grounding tokens matter


@pytest.mark.parametrize("fuser_scale", [1.0, 0.0])
@pytest.mark.parametrize("profile", H.PROFILES)
def test_t4_unet_eps_cond(tiny, profile, fuser_scale):
    official, model, _ = tiny
    H.set_profile(official, profile)
    x, t, ctx, inputs = _tiny_case(profile)
    reference = H.official_eps(official, x, t, ctx, inputs, fuser_scale=fuser_scale)
    objs = _our_objs(model, inputs, profile)
    got = _our_eps(model, x, t, ctx, objs, grounding=fuser_scale == 1.0)
    assert diff(f"T4 eps cond {profile} scale={fuser_scale}", got, reference) <= EPS_TOL


@pytest.mark.parametrize("fuser_scale", [1.0, 0.0])
def test_t4_unet_eps_uncond(tiny, fuser_scale):
    official, model, _ = tiny
    H.set_profile(official, "mask")
    x, t, ctx, _ = _tiny_case("mask")
    reference = H.official_eps(official, x, t, ctx, None, fuser_scale=fuser_scale)
    null_objs = _our_objs(model, H.null_grounding_inputs(3, D_TINY), "mask")
    got = _our_eps(model, x, t, ctx, null_objs, grounding=fuser_scale == 1.0)
    assert diff(f"T4 eps uncond scale={fuser_scale}", got, reference) <= EPS_TOL


# ----------------------------------------------------------------------------------------------------
# T5 CFG batching


@pytest.mark.parametrize("t", [981, 1])
def test_t5_cfg_one_batched_call_equals_two_official_calls(tiny, t):
    official, model, _ = tiny
    sampler = ours("sampler")
    H.set_profile(official, "mask")
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 4, 16, 16, generator=g)
    ctx, uc = torch.randn(2, 77, D_TINY, generator=g), torch.randn(2, 77, D_TINY, generator=g)
    inputs = H.make_grounding_inputs([3, 1], D_TINY, seed=6)
    reference = H.official_cfg_eps(official, x, t, ctx, uc, inputs, guidance_scale=7.5)
    cond = sampler.Conditioning(context=ctx, objs=_our_objs(model, inputs, "mask"))
    uncond = sampler.Conditioning(context=uc, objs=_our_objs(model, H.null_grounding_inputs(2, D_TINY), "mask"))
    with torch.no_grad():
        got = sampler.guided_noise(model, x, torch.tensor(t), cond, uncond, 7.5)
    assert diff(f"T5 cfg t={t}", got, reference) <= EPS_TOL


# ----------------------------------------------------------------------------------------------------
# T7 sampler end to end


def _sampler_case() -> dict[str, Any]:
    g = torch.Generator().manual_seed(7)
    inputs = H.make_grounding_inputs([2], D_TINY, seed=8, scribbles="all", polygons="all")
    instances = []
    for i in range(2):  # instance i alone in slot 0, its phrase as the global prompt (prepare_batch)
        single = {k: torch.zeros_like(v) for k, v in inputs.items()}
        for k in single:
            single[k][:, 0] = inputs[k][:, i]
        instances.append((torch.randn(1, 77, D_TINY, generator=g), single))
    return {
        "x_T": torch.randn(1, 4, 16, 16, generator=g),
        "context": torch.randn(1, 77, D_TINY, generator=g),
        "uncond": torch.randn(1, 77, D_TINY, generator=g),
        "inputs": inputs,
        "instances": instances,
    }


@pytest.fixture(scope="module")
def sampler_case():
    return _sampler_case()


@pytest.fixture(scope="module")
def official_runs(tiny, sampler_case):
    """Official PLMS runs, cached per (mis, alpha): (final latent, latent after every step)."""
    official, _, _ = tiny
    cache: dict[tuple[float, float], tuple[torch.Tensor, list[torch.Tensor]]] = {}

    def run(mis: float, alpha: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if (mis, alpha) not in cache:
            H.set_profile(official, "mask")
            record: list[torch.Tensor] = []
            final = H.official_sample(
                official,
                sampler_case["x_T"],
                sampler_case["context"],
                sampler_case["uncond"],
                sampler_case["inputs"],
                steps=10,
                guidance_scale=7.5,
                alpha=alpha,
                mis=mis,
                instance_inputs=sampler_case["instances"],
                record=record,
            )
            cache[(mis, alpha)] = (final, record)
        return cache[(mis, alpha)]

    return run


def _our_sample(model: Any, case: dict[str, Any], mis: float, alpha: float, **scheduler_overrides: Any):
    from diffusers import PNDMScheduler

    sampler = ours("sampler")
    scheduler = PNDMScheduler(num_train_timesteps=1000, **{**SCHEDULER_KWARGS, **scheduler_overrides})
    cond = sampler.Conditioning(context=case["context"], objs=_our_objs(model, case["inputs"], "mask"))
    uncond = sampler.Conditioning(
        context=case["uncond"], objs=_our_objs(model, H.null_grounding_inputs(1, D_TINY), "mask")
    )
    instance_conds = [sampler.Conditioning(context=c, objs=_our_objs(model, gi, "mask")) for c, gi in case["instances"]]
    steps: list[torch.Tensor] = []
    final = sampler.sample_instancediffusion(
        model,
        scheduler,
        case["x_T"].clone() * scheduler.init_noise_sigma,
        cond,
        uncond,
        num_steps=10,
        guidance_scale=7.5,
        grounding_fraction=alpha,
        mis_fraction=mis,
        instance_conds=instance_conds,
        callback=lambda call, latent: steps.append(latent.clone()),
    )
    return final, steps


@pytest.mark.parametrize("alpha", [1.0, 0.6])
@pytest.mark.parametrize("mis", [0.0, 0.3])
def test_t7_sampler_end_to_end(tiny, sampler_case, official_runs, mis, alpha):
    _, model, _ = tiny
    ref_final, ref_steps = official_runs(mis, alpha)
    got_final, got_calls = _our_sample(model, sampler_case, mis, alpha)
    # PNDM's first step takes two calls; call c >= 1 ends official step c - 1.
    got_steps = got_calls[1:]
    assert len(got_steps) == len(ref_steps) == 10
    first = diff(f"T7 first step mis={mis} alpha={alpha}", got_steps[0], ref_steps[0])
    worst = max(
        diff(f"T7 step {i} mis={mis} alpha={alpha}", a, b) for i, (a, b) in enumerate(zip(got_steps, ref_steps))
    )
    final = diff(f"T7 final mis={mis} alpha={alpha}", got_final, ref_final)
    assert first <= LATENT_TOL
    assert worst <= LATENT_TOL
    assert final <= LATENT_TOL


def test_t7_official_schedule_matches_scaled_linear():
    """ldm "linear" betas = diffusers "scaled_linear" (and the helper we ship uses it)."""
    from diffusers import PNDMScheduler

    diffusion = H.official_diffusion()
    scheduler = PNDMScheduler(num_train_timesteps=1000, **SCHEDULER_KWARGS)
    assert diff("T7 alphas_cumprod", scheduler.alphas_cumprod, diffusion.alphas_cumprod) <= 1e-6
    shipped = ours("sampler").official_scheduler()
    for key, value in SCHEDULER_KWARGS.items():
        assert shipped.config[key] == value, key
    assert H.official_alpha_schedule(10, 0.6) == [1] * 6 + [0] * 4


def test_t10_linear_betas_fail_the_sampler_comparison(tiny, sampler_case, official_runs):
    """Negative control (the diffusers port's bug): beta_schedule="linear" must not match."""
    _, model, _ = tiny
    ref_final, _ = official_runs(0.0, 1.0)
    got_final, _ = _our_sample(model, sampler_case, 0.0, 1.0, beta_schedule="linear")
    assert diff("T10 linear betas final", got_final, ref_final) > LATENT_TOL


# ----------------------------------------------------------------------------------------------------
# T8 preprocessing


def _masks() -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[:96, :128]
    rect = np.zeros((96, 128), np.uint8)
    rect[20:61, 30:91] = 1
    disc = (((yy - 47.5) ** 2 + (xx - 60.2) ** 2) <= 30**2).astype(np.uint8)
    two = np.zeros((96, 128), np.uint8)
    two[5:30, 5:40] = 1
    two[50:90, 70:120] = 1
    border = np.zeros((96, 128), np.uint8)
    border[0:40, 90:128] = 1
    border[60:96, 0:20] = 1
    ring = disc.copy()
    ring[((yy - 47.5) ** 2 + (xx - 60.2) ** 2) <= 12**2] = 0
    return {"rectangle": rect, "disc": disc, "two_components": two, "touching_border": border, "ring_with_hole": ring}


@pytest.mark.parametrize("name", list(_masks()))
def test_t8_sparse_polygon_points_deterministic(name):
    pytest.importorskip("skimage", reason="pip install scikit-image pycocotools for the preprocessing parity")
    mask = _masks()[name]
    reference = H.official_sample_sparse_points_from_mask(mask, 256)
    got = ours("inputs").sample_sparse_points_from_mask(mask, 256)
    assert reference is not None and reference.shape == (256, 2)
    assert diff(f"T8 polygon {name}", got, reference) == 0.0


@pytest.mark.parametrize("n_pixels", [1, 5, 60, 127])
def test_t8_sparse_polygon_points_small_masks_seeded(n_pixels):
    """Fewer than 128 foreground pixels: the official code draws with Python's global `random`;
    ours with a `random.Random` in the same state must draw the same points."""
    pytest.importorskip("skimage", reason="pip install scikit-image pycocotools for the preprocessing parity")
    mask = np.zeros((40, 40), np.uint8)
    flat = np.random.RandomState(n_pixels).permutation(400)[:n_pixels]
    mask[10 + flat // 20, 10 + flat % 20] = 1
    for seed in (0, 1):
        random.seed(seed)
        reference = H.official_sample_sparse_points_from_mask(mask, 256)
        got = ours("inputs").sample_sparse_points_from_mask(mask, 256, rng=random.Random(seed))
        assert diff(f"T8 polygon small n={n_pixels} seed={seed}", got, reference) == 0.0


def test_t8_sparse_polygon_points_empty_mask():
    pytest.importorskip("skimage", reason="pip install scikit-image pycocotools for the preprocessing parity")
    empty = np.zeros((32, 32), np.uint8)
    assert H.official_sample_sparse_points_from_mask(empty, 256) is None  # callers then use zeros
    got = ours("inputs").sample_sparse_points_from_mask(empty, 256)
    assert got.shape == (256, 2) and not np.any(got)


@pytest.mark.parametrize("n", [1, 7, 19, 20, 21, 37, 100])
def test_t8_reorder_scribbles(n):
    pytest.importorskip("pycocotools", reason="pip install scikit-image pycocotools for the preprocessing parity")
    rs = np.random.RandomState(n)
    pts = rs.randint(0, 50, size=(n, 2)).astype(np.float64)  # integer pixels: ties in the sort keys
    if n > 3:
        pts[1] = pts[0][::-1]  # mirror point: equal distance to (0, 0)
    reference = H.official_reorder_scribbles(pts)
    got = ours("inputs").reorder_scribbles(pts, k=20, rng=np.random.default_rng(0))
    assert diff(f"T8 reorder_scribbles n={n}", got, reference) == 0.0


@pytest.mark.parametrize("name", ["rectangle", "disc", "tiny"])
def test_t8_random_scribble_points_seeded(name):
    """sample_random_points_from_mask: official global np.random vs ours with a RandomState."""
    pytest.importorskip("pycocotools", reason="pip install scikit-image pycocotools for the preprocessing parity")
    if name == "tiny":
        mask = np.zeros((30, 30), np.uint8)
        mask[3:5, 4:7] = 1  # 6 pixels < 20: drawn with replacement
    else:
        mask = _masks()[name]
    for seed in (0, 3):
        reference = H.official_sample_random_points_from_mask(mask, 20, seed=seed)
        got = ours("inputs").sample_random_points_from_mask(mask, 20, rng=np.random.RandomState(seed))
        assert diff(f"T8 random scribble {name} seed={seed}", got, reference) == 0.0


def test_t8_decode_rle_and_convert_points():
    pytest.importorskip("pycocotools", reason="pip install scikit-image pycocotools for the preprocessing parity")
    from pycocotools import mask as mask_utils

    inputs = ours("inputs")
    for name, mask in _masks().items():
        rle = mask_utils.encode(np.asfortranarray(mask))
        for counts in (rle["counts"], rle["counts"].decode("ascii")):
            compressed = {"size": list(rle["size"]), "counts": counts}
            reference = H.official_decode_rle(compressed)[:, :, 0]
            assert np.array_equal(inputs.decode_coco_rle(compressed).astype(bool), reference), name
    pts = np.array([[0.0, 0.0], [100.5, 20.0], [700.0, 30.0], [10.0, 900.0]])
    reference = np.asarray(H.official_convert_points(pts.reshape(-1).tolist(), 640, 480)).reshape(-1, 2)
    assert diff("T8 convert_points", inputs.convert_points(pts, 640, 480), reference) == 0.0


def test_t8_eval_path_nearest_resize_and_points():
    """utils/input.py::prepare_scribble_and_instmask (COCO eval path): PIL-nearest 512² mask, 20
    random scribble pixels and 256 polygon points on the 512² grid, divided by the image size."""
    pytest.importorskip("skimage", reason="pip install scikit-image pycocotools for the preprocessing parity")
    inputs = ours("inputs")
    img_info = {"width": 200, "height": 150}
    polygon = [[20.0, 30.0, 150.0, 25.0, 170.0, 120.0, 60.0, 140.0, 15.0, 90.0]]
    official_input = H.official_input_utils()
    np.random.seed(11)
    ref_scribbles, ref_polygons, ref_mask = official_input.prepare_scribble_and_instmask(None, polygon, img_info)
    source_mask = official_input.annToMask(polygon, img_info)
    seg = inputs.resize_seg(source_mask, "nearest")
    assert diff("T8 seg nearest 512", seg, np.asarray(ref_mask)[:, :, 0].astype(np.float32)) == 0.0
    scribbles = inputs.sample_random_points_from_mask(seg, 20, rng=np.random.RandomState(11))
    polygons = inputs.sample_sparse_points_from_mask(seg, 256)
    # The official code divides these 512²-grid pixels by the *image* size (see inputs.py).
    as_official = H.official_convert_points
    w, h = img_info["width"], img_info["height"]
    assert diff("T8 eval scribbles", as_official(scribbles.reshape(-1).tolist(), w, h), ref_scribbles) == 0.0
    assert diff("T8 eval polygons", as_official(polygons.reshape(-1).tolist(), w, h), ref_polygons) == 0.0


def _demo_files() -> list[str]:
    src = H.official_src()
    return sorted(glob.glob(str(src / "demos" / "*.json"))) if src is not None else []


@pytest.mark.parametrize("path", _demo_files() or ["<no checkout>"], ids=lambda p: Path(p).stem)
def test_t8_official_demo_json(path):
    """Every demos/*.json parses through our importer; its masks decode and sample like the official."""
    pytest.importorskip("skimage", reason="pip install scikit-image pycocotools for the preprocessing parity")
    inputs = ours("inputs")
    data = json.loads(Path(path).read_text())
    layout, extras = inputs.official_json_to_layout(Path(path))
    assert len(layout.objects) + len(extras["skipped"]) == len(data["annos"])
    checked = 0
    for j, anno in enumerate(data["annos"]):
        if anno.get("mask"):
            reference = H.official_decode_rle(anno["mask"])[:, :, 0]
            mask = inputs.decode_coco_rle(anno["mask"])
            assert np.array_equal(mask.astype(bool), reference), f"annotation {j}"
            if checked < 3 and reference.sum() >= 128:
                ref_points = H.official_sample_sparse_points_from_mask(reference.astype(np.uint8), 256)
                got = inputs.sample_sparse_points_from_mask(mask, 256)
                assert diff(f"T8 demo {Path(path).stem} anno {j} polygon", got, ref_points) == 0.0
                checked += 1
        if anno.get("bbox") and j in extras["anno_index"] and extras["kinds"][extras["anno_index"].index(j)] == "box":
            obj = layout.objects[extras["anno_index"].index(j)]
            x, y, w, h = anno["bbox"]
            expected = [x / data["width"], y / data["height"], (x + w) / data["width"], (y + h) / data["height"]]
            got_box = [obj.box.x0, obj.box.y0, obj.box.x1, obj.box.y1]
            assert np.allclose(got_box, np.clip(expected, 0, 1), atol=1e-12), f"annotation {j}"


# ----------------------------------------------------------------------------------------------------
# T10 sensitivity: each known bug must make a comparison fail


def test_t10_swapped_token_order_fails_t2(tiny, t2_tiny_inputs, monkeypatch):
    official, model, _ = tiny
    H.set_profile(official, "scribble")
    reference = H.official_objs(official, t2_tiny_inputs)
    cls = type(model.position_net)
    forward = cls.forward

    def swapped(self, *args, **kwargs):
        objs = forward(self, *args, **kwargs)
        return torch.cat([objs[:, 30:60], objs[:, 0:30], objs[:, 60:]], dim=1)

    monkeypatch.setattr(cls, "forward", swapped)
    assert diff("T10 swapped box/point tokens", _our_objs(model, t2_tiny_inputs, "scribble"), reference) > OBJS_TOL


def test_t10_spatial_flatten_instead_of_raw_reshape_fails_t2(tiny, t2_tiny_inputs):
    """Segmentation tokens as 2×2 spatial patches (a "sensible" flatten) instead of the raw reshape."""
    official, model, _ = tiny
    H.set_profile(official, "mask")
    reference = H.official_objs(official, t2_tiny_inputs)

    def spatial_tokens(module, args, out):
        b, c, h, w = out.shape  # (B, 768, 16, 16) → tokens = 2×2 patches on an 8×8 grid
        tokens = (
            out.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), 4 * c)
        )
        return tokens.permute(0, 2, 1).reshape(b, c, h, w)  # so that the raw reshape yields `tokens`

    handle = model.position_net.convnext_tiny_backbone.register_forward_hook(spatial_tokens)
    try:
        got = _our_objs(model, t2_tiny_inputs, "mask")
    finally:
        handle.remove()
    assert diff("T10 spatial flatten seg tokens", got, reference) > OBJS_TOL


def test_t10_null_rule_for_scribbles_fails_t2(tiny, t2_tiny_inputs, monkeypatch):
    """A real instance without a scribble gets the null instead of the features of zero coordinates."""
    official, model, _ = tiny
    H.set_profile(official, "scribble")
    reference = H.official_objs(official, t2_tiny_inputs)
    pn_module = ours("position_net")
    original = pn_module.fourier_features
    null = model.position_net.null_scribble_feature.detach()

    def null_for_missing_scribbles(x, *args, **kwargs):
        out = original(x, *args, **kwargs)
        if x.shape[-1] == 2 * H.N_SCRIBBLE_POINTS:
            missing = (x == 0).all(dim=-1, keepdim=True)
            out = torch.where(missing, null.view(1, 1, -1).to(out.dtype), out)
        return out

    monkeypatch.setattr(pn_module, "fourier_features", null_for_missing_scribbles)
    assert diff("T10 null rule for scribbles", _our_objs(model, t2_tiny_inputs, "scribble"), reference) > OBJS_TOL


def _t4_reference(official: Any, profile: str = "mask") -> tuple[torch.Tensor, Any]:
    H.set_profile(official, profile)
    x, t, ctx, inputs = _tiny_case(profile)
    return H.official_eps(official, x, t, ctx, inputs), (x, t, ctx, inputs)


def test_t10_swapped_scaleu_b_and_s_fails_t4(tiny):
    official, model, _ = tiny
    reference, (x, t, ctx, inputs) = _t4_reference(official)
    objs = _our_objs(model, inputs, "mask")
    scaleu = model.instdiff_scaleu
    saved = copy.deepcopy(scaleu.state_dict())
    try:
        with torch.no_grad():
            for k in range(len(scaleu.channels)):
                b, s = getattr(scaleu, f"scaleu_b_{k}"), getattr(scaleu, f"scaleu_s_{k}")
                b_mean = b.mean().clone()
                b.fill_(float(s))
                s.fill_(float(b_mean))
        got = _our_eps(model, x, t, ctx, objs)
    finally:
        scaleu.load_state_dict(saved)
    assert diff("T10 scaleu b<->s", got, reference) > EPS_TOL


def test_t10_fourier_filter_on_backbone_instead_of_skip_fails_t4(tiny, monkeypatch):
    official, model, _ = tiny
    reference, (x, t, ctx, inputs) = _t4_reference(official)
    objs = _our_objs(model, inputs, "mask")
    scaleu_module = ours("scaleu")
    filter_fn = scaleu_module.low_frequency_scale
    scaleu = model.instdiff_scaleu
    monkeypatch.setattr(scaleu_module, "low_frequency_scale", lambda x, scale: x)  # skip left alone

    def filter_h(k):
        def hook(module, args):
            z = args[0]
            c = scaleu.channels[k]
            s = torch.tanh(getattr(scaleu, f"scaleu_s_{k}")) + 1
            return (torch.cat([filter_fn(z[:, :c], s), z[:, c:]], dim=1), *args[1:])

        return hook

    resnets = [r for block in model.up_blocks for r in block.resnets]
    handles = [r.register_forward_pre_hook(filter_h(k)) for k, r in enumerate(resnets)]
    try:
        got = _our_eps(model, x, t, ctx, objs)
    finally:
        for handle in handles:
            handle.remove()
    assert diff("T10 fourier filter on h", got, reference) > EPS_TOL


def test_t10_fewer_than_30_slots_fails_t4(tiny):
    """Padding to 10 slots: 80 fewer null tokens in the fusers' softmax."""
    official, model, _ = tiny
    reference, (x, t, ctx, inputs) = _t4_reference(official)
    objs = _our_objs(model, inputs, "mask")
    keep = [g * 30 + i for g in range(4) for i in range(10)] + list(range(120, 184))
    got = _our_eps(model, x, t, ctx, objs[:, keep])
    assert diff("T10 padding to 10 slots", got, reference) > EPS_TOL


def test_t10_sampler_comparison_sees_schedule_and_mis_conditioning(tiny, sampler_case, official_runs):
    """T7 is not blind to the grounding schedule (one step too many with fusers on) nor to the
    MIS conditioning (instance trajectories run on the full prompt instead of each instance)."""
    _, model, _ = tiny
    ref_alpha, _ = official_runs(0.0, 0.6)
    got, _ = _our_sample(model, sampler_case, 0.0, 0.7)
    assert diff("T10 grounding 7 steps instead of 6", got, ref_alpha) > LATENT_TOL
    ref_mis, _ = official_runs(0.3, 1.0)
    full_only = dict(sampler_case, instances=[(sampler_case["context"], sampler_case["inputs"])] * 2)
    got, _ = _our_sample(model, full_only, 0.3, 1.0)
    assert diff("T10 MIS without instance conditioning", got, ref_mis) > LATENT_TOL


def test_fake_official_checkpoint_converts_and_matches(tiny, tmp_path):
    """The official-format pickle ({"model", "ema", "config_dict": vars(OmegaConf)}) goes through our
    weights-only loader and converter and gives the same eps as the official model (T9 + T4)."""
    pytest.importorskip("omegaconf", reason="pip install omegaconf to write the fake official checkpoint")
    official, _, config = tiny
    unet_mod, convert = ours("unet"), ours("convert")
    path = H.write_fake_official_checkpoint(tmp_path / "instancediffusion_tiny.pth", official)
    raw = convert.load_training_checkpoint(path)
    state = convert.convert_official_state_dict(convert.pick_state_dict(raw, "ema"), config)
    model = unet_mod.build_instdiff_unet(config, {"mid_dim": H.TINY_POSITION_NET["mid_dim"]})
    model.load_state_dict(state, strict=True)
    reference, (x, t, ctx, inputs) = _t4_reference(official, "box")
    got = _our_eps(model.eval(), x, t, ctx, _our_objs(model, inputs, "box"))
    assert diff("T9 fake checkpoint eps", got, reference) <= EPS_TOL
