"""Different prompts, layouts and seeds in one batched forward (`RealCompo.generate_batch`): each
image is the one a single call makes, up to float rounding; the fast sampler still equals the
reference loop on a mixed batch; adapters that cannot mix are run in groups."""

from __future__ import annotations

import pytest
import torch

from realcompo_sdk import Layout, RealCompo
from realcompo_sdk.balancer import BalanceOptions
from realcompo_sdk.compose import BatchItem
from realcompo_sdk.interfaces import GenerationRequest
from realcompo_sdk.sampler import BalancedProblem, balanced_sample
from realcompo_sdk.testing.fakes import TinyL2IAdapter, TinyT2IAdapter
from realcompo_sdk.testing.reference import reference_sample

LAYOUTS = [
    Layout.from_boxes("a red cat to the left of a blue dog", [("red cat", (0, 0.2, 0.5, 0.8)), ("blue dog", (0.5, 0.2, 1, 0.8))]),
    Layout.from_boxes("a cat", [("cat", (0.3, 0.3, 0.9, 0.9))]),
    Layout.from_boxes("a dog and a cat and a bird", [("dog", (0, 0, 0.3, 0.5)), ("cat", (0.35, 0, 0.65, 0.5)),
                                                      ("bird", (0.7, 0.5, 1, 1))]),
]
BALANCE = {"t0": 1, "scale_factor": 1e4, "attention_resolution": 8}


def rc(adapters=None) -> RealCompo:
    t2i, l2i = adapters or (TinyT2IAdapter(seed=0), TinyL2IAdapter(seed=1))
    return RealCompo(t2i=t2i, l2i=l2i, planner=None, num_steps=4, guidance_scale=5.0, balance=BALANCE)


def test_each_image_of_a_mixed_batch_is_the_single_call_image():
    model = rc()
    items = [BatchItem(layout=lay, seed=s) for lay, s in zip(LAYOUTS, (7, 3, 11))]
    batch = model.generate_batch(items)
    assert [r.record.prompt for r in batch] == [lay.prompt for lay in LAYOUTS]
    assert [r.record.seeds for r in batch] == [[7], [3], [11]]
    assert batch[0].record.batch == {"index": 0, "seeds": [7, 3, 11]}
    assert batch[2].record.passes == batch[0].record.passes  # one run served the three
    for item, result in zip(items, batch):
        alone = model(layout=item.layout, seed=item.seed)
        assert float((alone.latents - result.latents).abs().max()) < 1e-4
        assert len(result.record.token_positions["tiny-t2i"]) == len(item.layout.objects)  # no padding objects
    # the layouts really differ in the batch: the same seed with another layout gives another image
    assert float((batch[0].latents - model(layout=LAYOUTS[1], seed=7).latents).abs().max()) > 1e-3


def _mixed_problem(adapters, options):
    prompts = tuple(lay.prompt for lay in LAYOUTS)
    request = GenerationRequest(prompt=prompts[0], negative_prompt="", layout=LAYOUTS[0], batch_size=3, height=32,
                                width=32, num_steps=5, prompts=prompts, layouts=tuple(LAYOUTS), seeds=(7, 3, 11))
    most = max(len(lay.objects) for lay in LAYOUTS)
    groups = []
    for a in adapters:
        per_sample = [a.phrase_token_positions(lay.prompt, [o.phrase for o in lay.objects])[1] for lay in LAYOUTS]
        groups.append([g + [[0]] * (most - len(g)) for g in per_sample])
    return BalancedProblem(adapters=adapters, states=[a.prepare(request) for a in adapters], token_groups=groups,
                           request=request, scheduler=adapters[0].make_scheduler("ddim"),
                           generators=[torch.Generator().manual_seed(s) for s in (7, 3, 11)],
                           guidance_scale=5.0, options=options)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fast_sampler_equals_the_reference_loop_on_a_mixed_batch(dtype):
    adapters = [TinyT2IAdapter(seed=0, dtype=dtype), TinyL2IAdapter(seed=1, dtype=dtype)]
    options = BalanceOptions(scale_factor=1e4, t0=2, attention_resolution=8)
    fast = balanced_sample(_mixed_problem(adapters, options)).latents
    ref = reference_sample(_mixed_problem(adapters, options))
    assert float((fast - ref).abs().max()) <= (1e-4 if dtype == "float32" else 1e-12)
    plain = balanced_sample(_mixed_problem(adapters, options.model_copy(update={"scale_factor": 0.0}))).latents
    assert float((fast - plain).abs().max()) > 1e-3  # the influence update acted on the mixed batch


def test_adapters_that_cannot_mix_are_run_in_groups_of_one_prompt_and_layout(monkeypatch):
    model = rc()
    monkeypatch.setattr(TinyL2IAdapter, "mixed_batches", False)
    items = [BatchItem(layout=LAYOUTS[0], seed=1), BatchItem(layout=LAYOUTS[1], seed=2), BatchItem(layout=LAYOUTS[0], seed=3)]
    prepared = []
    prepare = TinyL2IAdapter.prepare

    def spy(self, request):
        prepared.append(request)
        return prepare(self, request)

    monkeypatch.setattr(TinyL2IAdapter, "prepare", spy)
    batch = model.generate_batch(items)
    assert all(not r.is_mixed for r in prepared) and [r.batch_size for r in prepared] == [2, 1]
    assert prepared[0].sample_seeds() == [1, 3]  # non-consecutive seeds of one group
    assert [r.record.batch["seeds"] for r in batch] == [[1, 3], [2], [1, 3]]
    for item, result in zip(items, batch):
        assert float((model(layout=item.layout, seed=item.seed).latents - result.latents).abs().max()) < 1e-4


def test_a_mixed_request_has_one_entry_per_sample():
    with pytest.raises(ValueError, match="prompts has 2 entries for batch_size 3"):
        GenerationRequest(prompt="a", negative_prompt="", layout=LAYOUTS[1], batch_size=3, height=32, width=32,
                          num_steps=2, prompts=("a", "b"))


def test_bundled_shapes_models_mix_prompts_and_layouts_in_one_batch():
    import numpy as np

    model = RealCompo(num_steps=6)  # shapes-sd + shapes-controlnet, the README's models
    prompts = ["a red circle to the left of a blue square", "a green triangle above a yellow circle"]
    items = [BatchItem(prompt=prompts[0], seed=0), BatchItem(prompt=prompts[1], seed=5)]
    batch = model.generate_batch(items)
    for item, result in zip(items, batch):
        alone = model(item.prompt, seed=item.seed)
        assert result.record.layout == alone.record.layout
        assert float((alone.latents - result.latents).abs().max()) < 1e-3
        pixels = np.abs(np.asarray(alone.images[0], dtype=int) - np.asarray(result.images[0], dtype=int))
        assert pixels.max() <= 2
    assert float((batch[0].latents - batch[1].latents).abs().max()) > 0.1
