"""The guidance itself: the energy, its descent, what `predict_noise` returns, the Shapes preset,
and `layout-guidance` balanced with `sd` inside RealCompo, on tiny SD folders."""

import pytest
import torch
from realcompo_sdk import Layout, RealCompo
from realcompo_sdk.errors import RealCompoError
from realcompo_sdk.interfaces import GenerationRequest, StepInfo
from realcompo_sdk.testing.folders import save_tiny_sd_folder
from realcompo_sdk.unet_adapter import UNetAdapter

from realcompo_plugin_layout_guidance.adapter import LayoutGuidanceAdapter

PROMPT = "a red cat to the left of a blue dog"
LAYOUT = Layout.from_boxes(PROMPT, [("red cat", (0.0, 0.25, 0.5, 0.75)), ("blue dog", (0.5, 0.25, 1.0, 0.75))])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_sd_folder(tmp_path_factory.mktemp("lg") / "tiny-sd", seed=0)


@pytest.fixture(scope="module")
def adapter(folder):
    return LayoutGuidanceAdapter(model=str(folder))


def request_for(adapter, layout=LAYOUT, batch=2, steps=10):
    h, w = adapter.latent_spec.default_resolution
    return GenerationRequest(prompt=layout.prompt, negative_prompt="", layout=layout, batch_size=batch,
                             height=h, width=w, num_steps=steps)


def latents_and_step(adapter, batch=2, steps=10, index=0):
    spec = adapter.latent_spec
    h, w = spec.default_resolution
    x = torch.randn(batch, spec.channels, h // spec.vae_scale_factor, w // spec.vae_scale_factor,
                    generator=torch.Generator().manual_seed(0))
    sched = adapter.make_scheduler()
    sched.set_timesteps(steps)
    return x, StepInfo(index=index, num_steps=steps, timestep=sched.timesteps[index])


def test_guidance_lowers_the_energy(adapter):
    state = adapter.prepare(request_for(adapter))
    x, step = latents_and_step(adapter)
    guided, energies = adapter.guide(x, step, state)
    before, after = adapter.energy(x, step, state), adapter.energy(guided, step, state)
    assert torch.equal(energies[0], before.detach())
    assert bool((after < before).all()), (before, after)
    assert len(energies) == adapter.options.iterations  # random boxes stay above the threshold


def test_energy_is_zero_when_each_box_covers_the_image(adapter):
    whole = Layout.from_boxes(PROMPT, [("red cat", (0, 0, 1, 1)), ("blue dog", (0, 0, 1, 1))])
    state = adapter.prepare(request_for(adapter, whole))
    x, step = latents_and_step(adapter)
    assert float(adapter.energy(x, step, state).abs().max()) < 1e-6
    guided, energies = adapter.guide(x, step, state)
    assert len(energies) == 1 and torch.equal(guided, x)  # below the threshold: nothing to do


def test_returned_noise_carries_the_clean_estimate_of_the_guided_latent(adapter):
    state = adapter.prepare(request_for(adapter))
    x, step = latents_and_step(adapter)
    pred = adapter.predict_noise(x, step, state, guidance_scale=5.0)
    guided, _ = adapter.guide(x, step, state)
    plain = UNetAdapter.predict_noise(adapter, guided, step, state, guidance_scale=5.0)
    a = adapter.alpha_bar(step.timestep)

    def clean(latent, eps):
        return (latent - (1 - a) ** 0.5 * eps) / a**0.5

    assert not torch.allclose(guided, x)
    assert torch.allclose(clean(x, pred.guided), clean(guided, plain.guided), atol=1e-4)
    assert torch.allclose(clean(x, pred.cond), clean(guided, plain.cond), atol=1e-4)
    assert len(pred.extras["layout_energy"]) >= 1


def test_v_prediction_models_get_the_v_shift(tmp_path):
    adapter = LayoutGuidanceAdapter(model=str(save_tiny_sd_folder(tmp_path / "v", prediction_type="v_prediction")))
    state = adapter.prepare(request_for(adapter, batch=1))
    x, step = latents_and_step(adapter, batch=1)
    pred = adapter.predict_noise(x, step, state, guidance_scale=1.0, branches=("cond",))
    guided, _ = adapter.guide(x, step, state)
    plain = UNetAdapter.predict_noise(adapter, guided, step, state, guidance_scale=1.0, branches=("cond",))
    a = adapter.alpha_bar(step.timestep)

    def clean(latent, v):
        return a**0.5 * latent - (1 - a) ** 0.5 * v

    assert torch.allclose(clean(x, pred.cond), clean(guided, plain.cond), atol=1e-4)


def test_steps_after_the_guidance_window_are_the_plain_model(adapter):
    state = adapter.prepare(request_for(adapter))
    x, late = latents_and_step(adapter, index=2)  # 10 steps, guidance_steps 0.2: steps 0 and 1 are guided
    assert adapter.guides_at(StepInfo(index=1, num_steps=10, timestep=late.timestep))
    assert not adapter.guides_at(late)
    pred = adapter.predict_noise(x, late, state, guidance_scale=5.0)
    plain = UNetAdapter.predict_noise(adapter, x, late, state, guidance_scale=5.0)
    assert torch.equal(pred.guided, plain.guided)


def test_guidance_is_deterministic(adapter):
    state = adapter.prepare(request_for(adapter))
    x, step = latents_and_step(adapter)
    a = adapter.predict_noise(x, step, state, guidance_scale=5.0).guided
    b = adapter.predict_noise(x, step, state, guidance_scale=5.0).guided
    assert torch.equal(a, b)


def test_unavailable_attention_resolution_names_the_available_ones(folder):
    adapter = LayoutGuidanceAdapter(model=str(folder), attention_resolution=3)
    with pytest.raises(RealCompoError, match=r"available: \[8, 4\]"):
        adapter.prepare(request_for(adapter))


def test_gligen_folders_are_refused(tmp_path):
    with pytest.raises(RealCompoError, match="plain Stable Diffusion"):
        LayoutGuidanceAdapter(model=str(save_tiny_sd_folder(tmp_path / "g", gligen=True)))


def test_balanced_with_sd_inside_realcompo(folder, tmp_path):
    sd = pytest.importorskip("realcompo_plugin_sd.adapter")
    t2i = sd.StableDiffusionAdapter(model=str(save_tiny_sd_folder(tmp_path / "sd", seed=1)))
    rc = RealCompo(t2i=t2i, l2i=LayoutGuidanceAdapter(model=str(folder)), planner=None, num_steps=5,
                   balance={"t0": 1})
    result = rc(layout=LAYOUT, seed=0, batch_size=2, record_influence=True)
    assert len(result.images) == 2 and result.images[0].size == (32, 32)
    assert [a["id"] for a in result.record.adapters] == ["sd", "layout-guidance"]
    assert result.record.passes["backward"] > 0  # the influence maps were updated from both models' attention
    assert torch.isfinite(result.latents).all()


def test_shapes_preset_is_registered_when_shapes_is_installed():
    shapes = pytest.importorskip("realcompo_plugin_shapes")
    from realcompo_sdk.plugins import PluginLoader

    from realcompo_plugin_layout_guidance import plugin

    report = PluginLoader(entry_points=[], builtins=[plugin]).load()
    preset = report.registrations[("l2i", "shapes-layout-guidance")]
    assert preset.options == {"model": str(shapes.WEIGHTS_DIR / "shapes-sd")}
    assert (shapes.WEIGHTS_DIR / "shapes-sd" / "model_index.json").exists()


def test_a_mixed_batch_guides_each_sample_by_its_own_layout(adapter):
    one = Layout.from_boxes("a bird", [("bird", (0.6, 0.0, 1.0, 0.4))])
    h, w = adapter.latent_spec.default_resolution
    mixed = GenerationRequest(prompt=LAYOUT.prompt, negative_prompt="", layout=LAYOUT, batch_size=2, height=h, width=w,
                              num_steps=10, prompts=(LAYOUT.prompt, one.prompt), layouts=(LAYOUT, one))
    x, step = latents_and_step(adapter)
    energy = adapter.energy(x, step, adapter.prepare(mixed))
    for b, layout in enumerate((LAYOUT, one)):
        alone = adapter.energy(x[b : b + 1], step, adapter.prepare(request_for(adapter, layout, batch=1)))
        assert torch.allclose(energy[b], alone[0], atol=1e-5), (b, energy, alone)
    from realcompo_plugin_layout_guidance.adapter import GuidanceTargets

    assert adapter.prepare(mixed).get(GuidanceTargets).valid.tolist() == [[True, True], [True, False]]
