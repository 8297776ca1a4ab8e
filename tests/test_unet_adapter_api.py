"""The public extension API of `UNetAdapter`: typed per-request state, the `uncond` branch, and
the old private names (`_setup`, `_prepare_conditioning`, `_unet_input`, `state.extra`) still
working with a DeprecationWarning and the same numbers."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch

from realcompo_sdk.balancer import region_masks
from realcompo_sdk.errors import RealCompoError
from realcompo_sdk.interfaces import GenerationRequest, L2IAdapter, StepInfo
from realcompo_sdk.layout import Layout
from realcompo_sdk.testing.fakes import Occupancy, TinyL2IAdapter, _TinyBase
from realcompo_sdk.unet_adapter import UNetAdapter, UNetState

LAYOUT = Layout.from_boxes("a red cat and a blue dog", [("red cat", (0, 0.2, 0.5, 0.8)), ("blue dog", (0.5, 0.2, 1, 0.8))])
REQUEST = GenerationRequest(prompt=LAYOUT.prompt, negative_prompt="", layout=LAYOUT, batch_size=2,
                            height=32, width=32, num_steps=10)


def _step(adapter: UNetAdapter) -> StepInfo:
    scheduler = adapter.make_scheduler("ddim")
    scheduler.set_timesteps(10)
    return StepInfo(index=2, num_steps=10, timestep=scheduler.timesteps[2])


def test_state_stores_conditioning_by_type_and_names_what_is_missing():
    state = UNetState(cond=torch.zeros(1, 2, 3), uncond=torch.zeros(1, 2, 3))
    occupancy = Occupancy(torch.ones(1, 1, 4, 4))
    state.add(occupancy)
    assert state.get(Occupancy) is occupancy
    with pytest.raises(RealCompoError, match=r"holds no GenerationRequest \(it holds Occupancy\).*state.add"):
        state.get(GenerationRequest)


def test_both_branches_return_uncond_and_guided_is_cfg_of_them():
    adapter = TinyL2IAdapter(seed=1)
    state = adapter.prepare(REQUEST)
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    step = _step(adapter)
    both = adapter.predict_noise(latents, step, state, guidance_scale=4.0)
    alone = adapter.predict_noise(latents, step, state, guidance_scale=4.0, branches=("uncond",))
    assert both.uncond is not None and both.guided is not None
    torch.testing.assert_close(both.uncond, alone.cond, atol=1e-5, rtol=0)
    torch.testing.assert_close(both.guided, both.uncond + 4.0 * (both.cond - both.uncond))
    assert adapter.predict_noise(latents, step, state, guidance_scale=4.0, branches=("cond",)).uncond is None


def _old_style_class():
    """A subclass written against the old names: underscore hooks, `state.extra`, `_setup` via __init__."""

    class OldStyleL2I(_TinyBase, L2IAdapter):  # TinyL2IAdapter's conditioning, in the old spelling
        id = "old-style-l2i"
        accepted_kinds = TinyL2IAdapter.accepted_kinds
        in_channels = 5

        def _prepare_conditioning(self, request, state):
            super()._prepare_conditioning(request, state)  # the old default (does nothing)
            regions = region_masks(request.layout, request.height // 2, request.width // 2, self.device)
            state.extra["occupancy"] = regions.amax(dim=0)[None, None].to(self.dtype)

        def _unet_input(self, sample, state, branches, step):
            per_branch = sample.shape[0] // len(branches)
            occupancy = state.extra["occupancy"]
            maps = [occupancy if b == "cond" else torch.zeros_like(occupancy) for b in branches]
            return torch.cat([sample, torch.cat([m.expand(per_branch, -1, -1, -1) for m in maps])], dim=1)

        def _unet_kwargs(self, state, branches, step):
            return super()._unet_kwargs(state, branches, step)  # the old default: {}

    return OldStyleL2I


def test_a_subclass_written_for_the_old_names_warns_at_definition_naming_the_new_names():
    with pytest.warns(DeprecationWarning) as caught:
        _old_style_class()
    messages = " | ".join(str(w.message) for w in caught)
    for old, new in [("_prepare_conditioning", "prepare_conditioning"), ("_unet_input", "unet_input"),
                     ("_unet_kwargs", "unet_kwargs")]:
        assert f"overrides {old}" in messages and f"Rename it to {new}" in messages


def test_a_subclass_written_for_the_old_names_gives_the_same_noise_and_attention_as_the_new_api():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old_cls = _old_style_class()
    new = TinyL2IAdapter(seed=1)
    with pytest.warns(DeprecationWarning, match="calls _setup"):  # _TinyBase calls setup_models; force the old call
        old = old_cls(seed=1)
        UNetAdapter._setup(old, unet=old.unet, text_encoder=old.text_encoder, tokenizer=old.tokenizer,
                           scheduler_config=old.scheduler_config, latent_spec=old.latent_spec,
                           device=old.device, dtype=old.dtype)
    with pytest.warns(DeprecationWarning, match=r"UNetState.extra is deprecated.*state.add"):
        old_state = old.prepare(REQUEST)
    new_state = new.prepare(REQUEST)
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    step = _step(new)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        a = old.predict_noise(latents, step, old_state, guidance_scale=5.0)
        maps_old = old.attention_probs(latents, step, old_state, [[[2, 3], [6, 7]]] * 2, 8)
        # a caller of the old name reaches the override, not the base default
        assert old._unet_input(torch.zeros(2, 4, 16, 16), old_state, ("cond",), step).shape[1] == 5
    b = new.predict_noise(latents, step, new_state, guidance_scale=5.0)
    maps_new = new.attention_probs(latents, step, new_state, [[[2, 3], [6, 7]]] * 2, 8)
    torch.testing.assert_close(a.guided, b.guided, atol=0, rtol=0)
    torch.testing.assert_close(maps_old, maps_new, atol=0, rtol=0)
    # the layout really enters through the old hook: without it the noise differs
    empty = TinyL2IAdapter(seed=1)
    empty_state = empty.prepare(REQUEST)
    empty_state.add(Occupancy(torch.zeros(1, 1, 16, 16)))
    c = empty.predict_noise(latents, step, empty_state, guidance_scale=5.0)
    assert (a.guided - c.guided).abs().max() > 1e-4


OLD_NAMES = re.compile(r"\._setup\(|def _setup\(|_prepare_conditioning|_unet_input|_unet_kwargs|_run_unet|state\.extra|\.extra\[")


def test_first_party_code_templates_and_docs_use_no_deprecated_name():
    root = Path(__file__).resolve().parents[1]
    files = [f for folder in ("realcompo_sdk", "plugins", "contrib", "docs", "benchmarks")
             for f in (root / folder).rglob("*") if f.suffix in {".py", ".tmpl", ".md"} and ".egg-info" not in str(f)]
    offenders = [f"{f.relative_to(root)}:{n}" for f in files if f.name != "unet_adapter.py"
                 for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1) if OLD_NAMES.search(line)]
    assert len(files) > 50
    assert offenders == []
