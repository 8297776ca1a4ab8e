"""The `instancediffusion` adapter on tiny folders: contract, every input kind, caching, schedule,
standalone sampling with MIS, and RealCompo with SD on box and mask layouts."""

from __future__ import annotations

import random
import tempfile

import numpy as np
import pytest
import torch
from realcompo_plugin_instancediffusion.adapter import InstanceDiffusionAdapter, InstanceTokens
from realcompo_plugin_instancediffusion.testing import save_tiny_instdiff_folder
from realcompo_plugin_sd.adapter import StableDiffusionAdapter

from realcompo_sdk import Box, Layout, LayoutObject, RealCompo
from realcompo_sdk.errors import LayoutError, RealCompoError
from realcompo_sdk.interfaces import GenerationRequest, StepInfo
from realcompo_sdk.layout import Keypoint, Mask, Point
from realcompo_sdk.testing.contracts import L2IAdapterContract
from realcompo_sdk.testing.folders import save_tiny_sd_folder

PROMPT = "a red cat to the left of a blue dog"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"sd": save_tiny_sd_folder(root / "sd", seed=0), "id": save_tiny_instdiff_folder(root / "id", seed=1)}


@pytest.fixture(scope="module")
def adapter(folders):
    return InstanceDiffusionAdapter(model=str(folders["id"]))


class TestInstanceDiffusionContract(L2IAdapterContract):
    def make_adapter(self):
        return InstanceDiffusionAdapter(model=str(save_tiny_instdiff_folder(tempfile.mkdtemp() + "/id", seed=1)))


def rect_mask(x0: int, y0: int, x1: int, y1: int, size: int = 32) -> Mask:
    rows = [[int(x0 <= x < x1 and y0 <= y < y1) for x in range(size)] for y in range(size)]
    return Mask(rows=rows)


LAYOUTS = {
    "box": [LayoutObject(phrase="red cat", box=Box(x0=0, y0=0.2, x1=0.5, y1=0.8)),
            LayoutObject(phrase="blue dog", box=Box(x0=0.5, y0=0.2, x1=1, y1=0.8))],
    "mask": [LayoutObject(phrase="red cat", mask=rect_mask(2, 6, 14, 26)),
             LayoutObject(phrase="blue dog", mask=rect_mask(18, 6, 30, 26))],
    "point": [LayoutObject(phrase="red cat", point=Point(x=0.25, y=0.5)),
              LayoutObject(phrase="blue dog", point=Point(x=0.75, y=0.5))],
    "scribble": [LayoutObject(phrase="red cat", scribble=[Point(x=0.1, y=0.3), Point(x=0.3, y=0.6), Point(x=0.2, y=0.8)]),
                 LayoutObject(phrase="blue dog", scribble=[Point(x=0.6, y=0.3), Point(x=0.9, y=0.7)])],
}  # fmt: skip


def request(adapter, layout: Layout, seed: int = 0, batch: int = 1) -> GenerationRequest:
    h, w = adapter.latent_spec.default_resolution
    return GenerationRequest(prompt=layout.prompt, negative_prompt="", layout=layout, batch_size=batch,
                             height=h, width=w, num_steps=4, seed=seed)  # fmt: skip


def cond_noise(adapter, layout: Layout, step: int = 0, seed: int = 0) -> torch.Tensor:
    state = adapter.prepare(request(adapter, layout, seed))
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    return adapter.predict_noise(x, StepInfo(step, 4, torch.tensor(500)), state, guidance_scale=1.0, branches=("cond",)).cond


@pytest.mark.parametrize("kind", list(LAYOUTS))
def test_every_input_kind_selects_its_profile_and_conditions_the_noise(adapter, kind) -> None:
    layout = Layout(prompt=PROMPT, objects=LAYOUTS[kind])
    state = adapter.prepare(request(adapter, layout))
    assert state.get(InstanceTokens).profile == kind
    other = "point" if kind != "point" else "box"
    moved = Layout(prompt=PROMPT, objects=LAYOUTS[other])
    assert (cond_noise(adapter, layout) - cond_noise(adapter, moved)).abs().max() > 1e-5


def test_mask_rle_and_rows_give_the_same_conditioning(adapter) -> None:
    from realcompo_plugin_instancediffusion.inputs import _encode_uncompressed_rle

    from realcompo_sdk.layout import RLE

    rows = rect_mask(4, 4, 20, 28)
    with_rle = LayoutObject(phrase="red cat", mask=Mask(rle=RLE(**_encode_uncompressed_rle(np.array(rows.to_rows())))))
    assert with_rle.mask.rle.counts[0] > 0 and with_rle.mask.to_rows() == rows.to_rows()
    a = cond_noise(adapter, Layout(prompt=PROMPT, objects=[LayoutObject(phrase="red cat", mask=rows)]))
    b = cond_noise(adapter, Layout(prompt=PROMPT, objects=[with_rle]))
    torch.testing.assert_close(a, b)


def test_position_net_runs_once_per_request_not_per_step(adapter, monkeypatch) -> None:
    calls = []
    original = type(adapter.position_net).forward

    def counting(self, *args, **kwargs):
        if kwargs.get("objs") is None:
            calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(adapter.position_net), "forward", counting)
    state = adapter.prepare(request(adapter, Layout(prompt=PROMPT, objects=LAYOUTS["mask"])))
    assert len(calls) == 2  # real inputs and the null inputs
    x = torch.randn(1, 4, 16, 16)
    for i in range(4):
        adapter.predict_noise(x, StepInfo(i, 4, torch.tensor(900 - 200 * i)), state, guidance_scale=5.0)
    assert len(calls) == 2


def test_grounding_is_on_for_the_first_fraction_of_steps(folders) -> None:
    adapter = InstanceDiffusionAdapter(model=str(folders["id"]), grounding_fraction=0.5)
    layout = Layout(prompt=PROMPT, objects=LAYOUTS["box"])
    elsewhere = Layout(prompt=PROMPT, objects=[LayoutObject(phrase=o.phrase, box=Box(x0=0, y0=0, x1=0.2, y1=0.2)) for o in LAYOUTS["box"]])
    assert (cond_noise(adapter, layout, step=1) - cond_noise(adapter, elsewhere, step=1)).abs().max() > 1e-5
    # from step 2 of 4 the fusers are off: the layout no longer changes the noise
    torch.testing.assert_close(cond_noise(adapter, layout, step=2), cond_noise(adapter, elsewhere, step=2))


def test_mixed_kinds_are_an_error_naming_the_object_unless_allowed(folders) -> None:
    layout = Layout(prompt=PROMPT, objects=[LAYOUTS["mask"][0], LAYOUTS["box"][1]])
    strict = InstanceDiffusionAdapter(model=str(folders["id"]))
    with pytest.raises(LayoutError, match=r"object 1 \('blue dog'\).*per_instance_modalities"):
        strict.prepare(request(strict, layout))
    with pytest.raises(LayoutError, match=r"object 1 \('blue dog'\).*per_instance_modalities"):
        strict.check_layout(layout)  # before any model runs
    lenient = InstanceDiffusionAdapter(model=str(folders["id"]), per_instance_modalities=True)
    assert lenient.prepare(request(lenient, layout)).get(InstanceTokens).profile == "mask"


def test_more_than_30_objects_is_an_error(adapter) -> None:
    objects = [LayoutObject(phrase="cat", box=Box(x0=0, y0=0, x1=0.1, y1=0.1))] * 31
    with pytest.raises(LayoutError, match="at most 30"):
        adapter.check_layout(Layout(prompt="cats", objects=objects))


def test_keypoints_are_refused(adapter) -> None:
    layout = Layout(prompt="a person", objects=[LayoutObject(phrase="person", keypoints=[Keypoint(name="nose", x=0.5, y=0.5)])])
    with pytest.raises(LayoutError, match="accepts box, mask, point, scribble"):
        adapter.check_layout(layout)


def test_randomness_comes_from_the_request_seed_only(adapter) -> None:
    # A mask with fewer pixels than polygon points makes the input builder draw random pixels.
    small = Layout(prompt=PROMPT, objects=[LayoutObject(phrase="red cat", mask=rect_mask(3, 3, 8, 8))])
    np_state, py_state, torch_state = np.random.get_state(), random.getstate(), torch.get_rng_state()
    a = adapter.prepare(request(adapter, small, seed=1)).get(InstanceTokens).cond
    b = adapter.prepare(request(adapter, small, seed=1)).get(InstanceTokens).cond
    c = adapter.prepare(request(adapter, small, seed=2)).get(InstanceTokens).cond
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert np.array_equal(np.random.get_state()[1], np_state[1]) and random.getstate() == py_state
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_a_plain_folder_is_refused_with_the_conversion_command(folders) -> None:
    with pytest.raises(RealCompoError, match="realcompo-instancediffusion convert"):
        InstanceDiffusionAdapter(model=str(folders["sd"]))


def test_other_adapters_refuse_an_instancediffusion_folder(folders) -> None:
    with pytest.raises(RealCompoError, match="instancediffusion model folder"):
        StableDiffusionAdapter(model=str(folders["id"]))


# --- standalone sampler with MIS -----------------------------------------------------------------


def test_standalone_generation_with_and_without_mis(adapter) -> None:
    layout = Layout(prompt=PROMPT, objects=LAYOUTS["box"])
    plain = adapter.generate(layout, seed=0, num_steps=4, mis_fraction=0.0)
    again = adapter.generate(layout, seed=0, num_steps=4, mis_fraction=0.0)
    mis = adapter.generate(layout, seed=0, num_steps=4, mis_fraction=0.5)
    assert plain.shape == (1, 3, 32, 32) and 0 <= float(plain.min()) and float(plain.max()) <= 1
    assert torch.equal(plain, again)
    assert (plain - mis).abs().max() > 1e-4


# --- RealCompo: SD + InstanceDiffusion -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["box", "mask"])
def test_realcompo_balances_sd_with_instancediffusion(folders, kind) -> None:
    t2i = StableDiffusionAdapter(model=str(folders["sd"]))
    l2i = InstanceDiffusionAdapter(model=str(folders["id"]))
    rc = RealCompo(t2i=t2i, l2i=l2i, planner=None, num_steps=4, balance={"t0": 1, "scale_factor": 100.0})
    result = rc(layout=Layout(prompt=PROMPT, objects=LAYOUTS[kind]), seed=3, batch_size=2)
    assert len(result.images) == 2 and result.images[0].size == (32, 32)
    assert set(result.record.token_positions) == {"sd", "instancediffusion"}
    assert result.record.passes["backward"] >= 1


def test_realcompo_with_instancediffusion_by_id(folders) -> None:
    rc = RealCompo(t2i="sd", l2i="instancediffusion", t2i_options={"model": str(folders["sd"])},
                   l2i_options={"model": str(folders["id"])}, planner=None, num_steps=2)  # fmt: skip
    result = rc(layout=Layout(prompt=PROMPT, objects=LAYOUTS["point"]), seed=0)
    assert result.images[0].size == (32, 32)


def test_cli_generates_alone_from_a_layout_and_from_an_official_json(folders, tmp_path) -> None:
    import json

    from PIL import Image
    from realcompo_plugin_instancediffusion.cli import main

    layout = Layout(prompt=PROMPT, objects=LAYOUTS["scribble"])
    (tmp_path / "layout.json").write_text(layout.model_dump_json())
    official = {"caption": "a cat and a dog", "width": 512, "height": 512, "annos": [
        {"caption": "cat", "bbox": [10, 100, 200, 300], "mask": [], "category_name": ""},
        {"caption": "dog", "bbox": [260, 100, 200, 300], "mask": [], "category_name": ""}]}  # fmt: skip
    (tmp_path / "official.json").write_text(json.dumps(official))
    for name in ("layout", "official"):
        out = tmp_path / f"{name}.png"
        args = ["generate", str(tmp_path / f"{name}.json"), "--model", str(folders["id"]), "--steps", "2", "--mis", "0.5", "-o", str(out)]
        assert main(args) == 0
        assert Image.open(out).size == (32, 32)


def test_missing_model_option_says_how_to_get_one() -> None:
    with pytest.raises(RealCompoError, match="realcompo-instancediffusion convert .*--l2i-option model=OUT_DIR"):
        InstanceDiffusionAdapter()


def test_half_precision_adapter_keeps_the_position_net_in_float32(folders) -> None:
    adapter = InstanceDiffusionAdapter(model=str(folders["id"]), dtype="float16")
    assert adapter.unet.conv_in.weight.dtype == torch.float16
    assert {p.dtype for p in adapter.position_net.parameters()} == {torch.float32}


def test_cli_generate_reports_bad_input_without_a_traceback(folders, tmp_path, capsys) -> None:
    from realcompo_plugin_instancediffusion.cli import main

    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    bad_layout = tmp_path / "layout.json"
    bad_layout.write_text('{"prompt": "a cat", "objects": [{"phrase": "cat", "box": {"x0": 0.5, "y0": 0, "x1": 0.2, "y1": 1}}]}')
    missing = tmp_path / "missing.json"
    for path, message in ((bad_json, "is not JSON"), (bad_layout, "objects[0] ('cat').box"), (missing, "No such file")):
        out = tmp_path / "never.png"
        assert main(["generate", str(path), "--model", str(folders["id"]), "-o", str(out)]) == 1
        assert message in capsys.readouterr().err
        assert not out.exists()


def test_a_mixed_batch_gives_each_sample_its_own_grounding_tokens(adapter) -> None:
    layouts = [Layout(prompt=PROMPT, objects=LAYOUTS["box"]), Layout(prompt=PROMPT, objects=LAYOUTS["scribble"])]
    h, w = adapter.latent_spec.default_resolution
    mixed = GenerationRequest(prompt=layouts[0].prompt, negative_prompt="", layout=layouts[0], batch_size=2,
                              height=h, width=w, num_steps=4, seed=5, prompts=tuple(lay.prompt for lay in layouts),
                              layouts=tuple(layouts), seeds=(5, 9))
    tokens = adapter.prepare(mixed).get(InstanceTokens)
    for b, (layout, seed) in enumerate(zip(layouts, (5, 9))):
        alone = adapter.prepare(request(adapter, layout, seed)).get(InstanceTokens)
        assert torch.allclose(tokens.cond[b], alone.cond[0]) and torch.allclose(tokens.uncond[b], alone.uncond[0])
    assert not torch.allclose(tokens.cond[0], tokens.cond[1])
