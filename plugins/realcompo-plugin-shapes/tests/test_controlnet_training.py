"""The Shapes ControlNet's training data is the `controlnet-seg` adapter's own control image, and a
few CPU steps give a folder that the unchanged adapter loads and balances."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
segmentation = pytest.importorskip("realcompo_plugin_controlnet.segmentation")

from realcompo_plugin_shapes import WEIGHTS_DIR  # noqa: E402
from realcompo_plugin_shapes.training.data import PHRASES, build_pool, control_maps  # noqa: E402
from realcompo_plugin_shapes.world import COLOURS, SHAPES, control_palette  # noqa: E402

from realcompo_sdk.layout import Box, Layout, LayoutObject, Mask  # noqa: E402


def _layout(pool, i: int, use_mask: bool) -> Layout:
    objects = []
    for k in range(int(pool.n_objects[i])):
        phrase = PHRASES[pool.phrase_idx[i, k]]
        if use_mask:
            objects.append(LayoutObject(phrase=phrase, mask=Mask.from_array(pool.masks[i, k])))
        else:
            objects.append(LayoutObject(phrase=phrase, box=Box(**dict(zip(("x0", "y0", "x1", "y1"), pool.boxes[i, k].tolist())))))
    return Layout(prompt=pool.captions[i], objects=objects)


def test_training_maps_equal_what_the_adapter_paints() -> None:
    pool = build_pool(24, seed=5, workers=1, style="flat", masks=True)
    palette = control_palette()
    labels = torch.tensor([segmentation.palette_color(p, palette) for p in PHRASES], dtype=torch.uint8)
    idx = torch.as_tensor(pool.phrase_idx)
    for use_mask in (False, True):
        maps = control_maps(torch.as_tensor(pool.boxes), torch.as_tensor(pool.masks), labels[idx.clamp(min=0)],
                            idx >= 0, torch.full((24,), use_mask))  # fmt: skip
        for i in range(24):
            painted = np.asarray(segmentation.render_segmentation(_layout(pool, i, use_mask), 64, 64, palette=palette))
            ours = (maps[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            assert np.array_equal(ours, painted), (pool.captions[i], use_mask)
    assert any(PHRASES[j].endswith("s") for j in pool.phrase_idx.ravel() if j >= 0)  # plural phrases are covered


def test_every_grounding_phrase_has_its_own_label() -> None:
    palette = control_palette()
    labels = {p: segmentation.palette_color(p, palette) for p in PHRASES}
    assert None not in labels.values()
    assert labels["big red circle"] == labels["small red circle"] == labels["red circles"] == palette["red circle"]
    assert len({labels[f"{c} {s}"] for c in COLOURS for s in SHAPES}) == len(COLOURS) * len(SHAPES)


def test_rules_planner_names_objects_as_training_does() -> None:
    from realcompo_plugin_shapes.captions import format_caption, sample_spec
    from realcompo_plugin_shapes.training.data import grounding_phrases

    from realcompo_sdk.planners.rules import RulesPlanner

    planner, rng = RulesPlanner(), np.random.default_rng(0)
    for _ in range(300):
        spec = sample_spec(rng)[0]
        assert [o.phrase for o in planner.plan(format_caption(spec)).objects] == grounding_phrases(spec)


def test_both_styles_of_a_pool_are_the_same_scenes() -> None:
    flat = build_pool(8, seed=3, workers=1, style="flat")
    real = build_pool(8, seed=3, workers=1, style="real")
    assert flat.captions == real.captions and np.array_equal(flat.boxes, real.boxes)
    assert not np.array_equal(flat.images, real.images)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from realcompo_plugin_shapes.training.controlnet import main

    out = tmp_path_factory.mktemp("shapes-controlnet")
    args = ["--t2i-from", str(WEIGHTS_DIR / "shapes-sd"), "--out", str(out), "--device", "cpu", "--pool-size", "16",
            "--batch-size", "2", "--max-steps", "2", "--budget-seconds", "60", "--workers", "1", "--no-progress"]  # fmt: skip
    return out, args, main(args)


def test_controlnet_folder_loads_and_balances_with_the_unchanged_adapter(trained) -> None:
    from diffusers import ControlNetModel
    from realcompo_plugin_controlnet.adapter import ControlNetSegAdapter

    from realcompo_sdk import RealCompo

    out, _, summary = trained
    assert summary["stage"]["steps"] == 2 and summary["stage"]["done"]
    folder = out / "shapes-controlnet"
    model = ControlNetModel.from_pretrained(folder)
    assert model.config.conditioning_embedding_out_channels == [16, 32]
    assert list(folder.glob("*.safetensors")) and not list(folder.glob("*.bin"))
    assert summary["bytes"] < 6_000_000
    rc = RealCompo(t2i="shapes-sd", l2i=ControlNetSegAdapter(controlnet=str(folder), base=str(WEIGHTS_DIR / "shapes-sd")),
                   planner="rules", num_steps=2)  # fmt: skip
    result = rc("a red circle to the left of a blue square", seed=0)
    assert result.images[0].size == (64, 64)
    assert json.loads((out / "controlnet_log.json").read_text())["parameters"] == summary["parameters"]


def test_rerun_resumes_the_finished_controlnet(trained, capsys) -> None:
    from realcompo_plugin_shapes.training.controlnet import main

    out, args, first = trained
    capsys.readouterr()
    again = main(args)
    assert "[controlnet] already trained (2 steps)" in capsys.readouterr().out
    assert again["stage"]["steps"] == first["stage"]["steps"]


def test_a_run_can_continue_from_a_controlnet_folder(trained, tmp_path) -> None:
    from diffusers import ControlNetModel
    from realcompo_plugin_shapes.training.controlnet import main

    out, args, _ = trained
    again = list(args)
    again[again.index("--out") + 1] = str(tmp_path / "more")
    again[again.index("--max-steps") + 1] = "1"
    summary = main([*again, "--init", str(out / "shapes-controlnet"), "--lr", "0"])  # lr 0: the weights stay
    assert summary["stage"]["steps"] == 1
    first = ControlNetModel.from_pretrained(out / "shapes-controlnet").state_dict()
    second = ControlNetModel.from_pretrained(tmp_path / "more" / "shapes-controlnet").state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_bad_arguments_are_refused_before_any_work(tmp_path, capsys) -> None:
    from realcompo_plugin_shapes.training.controlnet import main

    with pytest.raises(SystemExit):
        main(["--t2i-from", str(tmp_path), "--out", str(tmp_path / "o")])
    assert "not a Stable Diffusion folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--t2i-from", str(WEIGHTS_DIR / "shapes-sd"), "--out", str(tmp_path / "o"), "--flat-fraction", "2"])
    assert "--flat-fraction must be between 0 and 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--t2i-from", str(WEIGHTS_DIR / "shapes-sd"), "--out", str(tmp_path / "o"), "--init", str(tmp_path)])
    assert "not a ControlNet folder" in capsys.readouterr().err
