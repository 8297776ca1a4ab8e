"""A few CPU training steps end to end: the folders load back with the standard diffusers classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

SMOKE_ARGS = ["--device", "cpu", "--budget-seconds", "30", "--pool-size", "48", "--batch-size", "2",
              "--vae-batch-size", "2", "--max-steps", "2", "--eval-prompts", "0", "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    from realcompo_plugin_shapes.training.train_all import main

    out = tmp_path_factory.mktemp("shapes-train")
    summary = main(["--out", str(out), *SMOKE_ARGS])
    return out, summary


def test_training_writes_both_folders_and_a_log(trained) -> None:
    out, summary = trained
    log = json.loads((out / "training_log.json").read_text())
    assert set(log["stages"]) == {"vae", "unet", "gligen"}
    assert all(stage["steps"] == 2 and stage["done"] for stage in log["stages"].values())
    assert log["device"].startswith("cpu")
    assert (out / "train_log.jsonl").read_text().count('"stage"') >= 3
    for name in ("shapes-sd", "shapes-gligen"):
        folder = out / name
        assert (folder / "model_index.json").exists()
        for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
            assert (folder / sub).is_dir(), (name, sub)
        assert list(folder.rglob("*.safetensors")) and not list(folder.rglob("*.bin"))


def test_shipped_weights_fit_in_25_mb(trained) -> None:
    out, summary = trained
    total = summary["folders"]["total_bytes"]
    assert total <= 25_000_000, f"{total / 1e6:.1f} MB"


def test_sd_folder_loads_with_standard_classes(trained) -> None:
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = trained[0] / "shapes-sd"
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")
    te = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
    tok = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    assert unet.config.sample_size == 32 and unet.config.cross_attention_dim == te.config.hidden_size
    assert vae.config.latent_channels == 4 and 2 ** (len(vae.config.block_out_channels) - 1) == 2
    assert vae.config.scaling_factor != 0.18215  # measured, not SD's constant
    assert tok.model_max_length == 32 and len(tok("a big red circle").input_ids) == 6
    pipe = StableDiffusionPipeline.from_pretrained(folder)
    assert pipe.text_encoder.dtype == pipe.unet.dtype == torch.float32  # plain load: one dtype
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle", num_inference_steps=2, output_type="np").images[0]
    assert image.shape == (64, 64, 3) and np.isfinite(image).all()


def test_gligen_folder_loads_with_standard_classes(trained) -> None:
    from diffusers import StableDiffusionGLIGENPipeline, UNet2DConditionModel

    folder = trained[0] / "shapes-gligen"
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    assert unet.config.attention_type == "gated" and hasattr(unet, "position_net")
    assert any(".fuser." in name for name, _ in unet.named_parameters())
    pipe = StableDiffusionGLIGENPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    image = pipe(
        "a red circle to the left of a blue square",
        gligen_phrases=["red circle", "blue square"],
        gligen_boxes=[[0.1, 0.4, 0.35, 0.65], [0.6, 0.4, 0.85, 0.65]],
        gligen_scheduled_sampling_beta=1.0,
        num_inference_steps=2,
        output_type="np",
    ).images[0]
    assert image.shape == (64, 64, 3)


def test_gligen_keeps_the_t2i_weights_frozen_by_default(trained) -> None:
    from safetensors.torch import load_file

    out, summary = trained
    sd = load_file(str(out / "shapes-sd" / "unet" / "diffusion_pytorch_model.safetensors"))
    gl = load_file(str(out / "shapes-gligen" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert set(sd) < set(gl)
    assert all(".fuser." in k or k.startswith("position_net.") for k in set(gl) - set(sd))
    assert all(torch.equal(sd[k], gl[k]) for k in sd)
    p = summary["parameters"]
    assert p["gligen_trainable"] == p["gligen_unet"] - p["unet"]


def test_gligen_trainable_base_moves_the_unet_too(trained, tmp_path) -> None:
    from realcompo_plugin_shapes.training.train_all import main
    from safetensors.torch import load_file

    first, _ = trained
    out = tmp_path / "trainable"
    log = main(["--out", str(out), "--t2i-from", str(first / "shapes-sd"), "--gligen-base", "trainable", *SMOKE_ARGS])
    sd = load_file(str(out / "shapes-sd" / "unet" / "diffusion_pytorch_model.safetensors"))
    gl = load_file(str(out / "shapes-gligen" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert any(not torch.equal(sd[k], gl[k]) for k in sd)
    assert log["parameters"]["gligen_trainable"] == log["parameters"]["gligen_unet"]


def test_gligen_from_scratch_shares_nothing_with_the_t2i(trained, tmp_path) -> None:
    from realcompo_plugin_shapes.training.train_all import main
    from safetensors.torch import load_file

    first, _ = trained
    out = tmp_path / "scratch"
    main(["--out", str(out), "--t2i-from", str(first / "shapes-sd"), "--gligen-base", "scratch",
          "--gligen-flat-fraction", "0", *SMOKE_ARGS])  # fmt: skip
    sd = load_file(str(out / "shapes-sd" / "unet" / "diffusion_pytorch_model.safetensors"))
    gl = load_file(str(out / "shapes-gligen" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert not any(torch.equal(sd[k], gl[k]) for k in sd if sd[k].ndim >= 2)  # convs and linears: fresh draws


def test_bad_gligen_recipe_arguments_are_refused(tmp_path, capsys) -> None:
    from realcompo_plugin_shapes.training.train_all import main

    for flag, value, message in (("--gligen-flat-fraction", "1.5", "between 0 and 1"),
                                 ("--gligen-base", "half", "invalid choice")):  # fmt: skip
        with pytest.raises(SystemExit):
            main(["--out", str(tmp_path), flag, value, *SMOKE_ARGS])
        assert message in capsys.readouterr().err


def test_rerun_resumes_from_finished_checkpoints(trained, capsys) -> None:
    from realcompo_plugin_shapes.training.train_all import main

    out, first = trained
    capsys.readouterr()
    again = main(["--out", str(out), *SMOKE_ARGS])
    printed = capsys.readouterr().out
    assert all(f"[{stage}] already trained" in printed for stage in ("vae", "unet", "gligen"))
    assert {k: v["steps"] for k, v in again["stages"].items()} == {k: v["steps"] for k, v in first["stages"].items()}


def test_gligen_can_train_on_top_of_a_given_t2i_folder(trained, tmp_path) -> None:
    from diffusers import UNet2DConditionModel
    from realcompo_plugin_shapes.training.train_all import main

    first, _ = trained
    out = tmp_path / "gligen-only"
    log = main(["--out", str(out), "--t2i-from", str(first / "shapes-sd"), *SMOKE_ARGS])
    assert log["stages"]["vae"]["steps"] == 0 and log["stages"]["unet"]["steps"] == 0
    assert log["stages"]["gligen"]["steps"] == 2
    given = UNet2DConditionModel.from_pretrained(first / "shapes-sd", subfolder="unet")
    saved = UNet2DConditionModel.from_pretrained(out / "shapes-sd", subfolder="unet")
    for (name, a), b in zip(given.state_dict().items(), saved.state_dict().values()):
        assert torch.equal(a, b), name  # the T2I model is carried over untouched


def test_gligen_training_continues_from_a_gligen_folder_with_x0_weighting(trained, tmp_path) -> None:
    from realcompo_plugin_shapes.training.train_all import main
    from safetensors.torch import load_file

    first, _ = trained
    out = tmp_path / "continued"
    start = load_file(first / "shapes-gligen" / "unet" / "diffusion_pytorch_model.safetensors")
    gates = [k for k in start if k.endswith("alpha_attn")]
    with torch.no_grad():  # mark the given folder's gates, to see them loaded
        marked = {k: (torch.full_like(v, 0.123) if k in gates else v) for k, v in start.items()}
    folder = tmp_path / "given-gligen"
    import shutil

    shutil.copytree(first / "shapes-gligen", folder)
    from safetensors.torch import save_file

    save_file(marked, folder / "unet" / "diffusion_pytorch_model.safetensors")
    args = ["--out", str(out), "--t2i-from", str(first / "shapes-sd"), "--gligen-init", str(folder),
            "--gligen-loss-weight", "x0", "--gligen-noise-bias", "2", *SMOKE_ARGS]  # fmt: skip
    args[args.index("--max-steps") + 1] = "1"
    log = main(args)
    assert log["stages"]["gligen"]["steps"] == 1
    saved = load_file(out / "shapes-gligen" / "unet" / "diffusion_pytorch_model.safetensors")
    # one small step from 0.123 (not from the fresh open-gate value 0.5)
    assert all(abs(float(saved[k].float()) - 0.123) < 0.05 for k in gates)


def test_gligen_init_refuses_a_folder_without_grounding_layers(trained, tmp_path) -> None:
    from realcompo_plugin_shapes.training.train_all import main

    first, _ = trained
    with pytest.raises(ValueError, match="does not match the Shapes GLIGEN UNet"):
        main(["--out", str(tmp_path / "x"), "--t2i-from", str(first / "shapes-sd"), "--gligen-init", str(first / "shapes-sd"), *SMOKE_ARGS])


def test_grounding_check_sees_no_box_effect_when_the_gates_are_closed(trained, tmp_path) -> None:
    import shutil

    from realcompo_plugin_shapes.training.grounding_check import grounding_losses
    from safetensors.torch import load_file, save_file

    first, _ = trained
    folder = tmp_path / "closed"
    shutil.copytree(first / "shapes-gligen", folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    save_file({k: (torch.zeros_like(v) if k.endswith(("alpha_attn", "alpha_dense")) else v) for k, v in state.items()}, weights)
    closed = grounding_losses(folder, scenes=4)
    assert all(v["true"] == v["mirrored"] == v["none"] for v in closed.values())
    assert all(v["box_share_true"] == v["box_share_mirrored"] for v in closed.values())
    # Open gates, and random position net and fuser outputs (training starts the fusers' output
    # layers at zero): mirroring the boxes must now change the losses.
    generator = torch.Generator().manual_seed(0)
    randomised = ("position_net.linears", ".fuser.attn.to_out", ".fuser.ff.net.2")
    save_file({k: (torch.full_like(v, 1.0) if k.endswith(("alpha_attn", "alpha_dense"))
                   else torch.randn(v.shape, generator=generator).to(v.dtype) * 0.3 if any(r in k for r in randomised)
                   else v) for k, v in state.items()}, weights)  # fmt: skip
    opened = grounding_losses(folder, scenes=4)
    assert any(abs(v["true"] - v["mirrored"]) > 1e-6 for v in opened.values())


def test_gligen_max_objects_selects_small_scenes_and_trains(trained, tmp_path) -> None:
    from realcompo_plugin_shapes.training.train_all import main, scenes_with_at_most

    assert scenes_with_at_most(np.array([1, 3, 1, 2, 4]), 1).tolist() == [0, 2]
    assert scenes_with_at_most(np.array([1, 3, 1, 2, 4]), 2).tolist() == [0, 2, 3]
    with pytest.raises(ValueError, match="no scene in the pool has at most 0 objects"):
        scenes_with_at_most(np.array([1, 2]), 0)
    first, _ = trained
    log = main(["--out", str(tmp_path / "one"), "--t2i-from", str(first / "shapes-sd"), "--gligen-max-objects", "1", *SMOKE_ARGS])
    assert log["stages"]["gligen"]["steps"] == 2


def test_box_share_says_which_box_holds_the_colour() -> None:
    from realcompo_plugin_shapes.training.grounding_check import box_share

    grey = torch.full((3, 3, 16, 16), 0.5)
    boxes = torch.tensor([[0.0, 0.0, 0.25, 0.25]] * 3)
    mirrored = torch.tensor([[0.75, 0.0, 1.0, 0.25]] * 3)
    in_true, in_mirror = grey.clone(), grey.clone()
    in_true[:, 0, 0:4, 0:4] = 1.0  # a red square in the true box
    in_mirror[:, 0, 0:4, 12:16] = 1.0
    assert box_share(in_true, boxes, mirrored) > 0.99 and box_share(in_mirror, boxes, mirrored) < 0.01
    assert abs(box_share(grey, boxes, mirrored) - 0.5) < 1e-3
    centred = torch.tensor([[0.4, 0.0, 0.6, 0.25]] * 3)  # its mirror overlaps it: not counted
    assert np.isnan(box_share(in_true, centred, centred))


def test_gligen_recipe_with_auxiliary_losses_trains_and_continues_whole(trained, tmp_path) -> None:
    from realcompo_plugin_shapes.training.train_all import main
    from safetensors.torch import load_file

    first, _ = trained
    recipe = ["--t2i-from", str(first / "shapes-sd"), "--gligen-base", "trainable", "--gligen-attention-loss", "0.5",
              "--gligen-position-loss", "3", "--gligen-loss-weight", "x0"]  # fmt: skip
    log = main(["--out", str(tmp_path / "aux"), *recipe, *SMOKE_ARGS])
    assert log["stages"]["gligen"]["steps"] == 2 and np.isfinite(log["stages"]["gligen"]["final_loss"])
    folder = tmp_path / "aux" / "shapes-gligen"
    # continuing with a trainable base starts from the folder's whole UNet (lr 0: nothing moves)
    args = ["--out", str(tmp_path / "more"), *recipe, "--gligen-init", str(folder), "--lr-gligen", "0", *SMOKE_ARGS]
    main(args)
    given = load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")
    saved = load_file(tmp_path / "more" / "shapes-gligen" / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(given[k], saved[k]) for k in given)
