"""The converter: weights-only loading, key mapping at full size (meta device), tiny end to end."""

from __future__ import annotations

import json
import os
import sys
import types

import pytest
import torch
from realcompo_plugin_instancediffusion.cli import main
from realcompo_plugin_instancediffusion.convert import (
    ConversionError,
    convert_checkpoint,
    convert_official_state_dict,
    load_training_checkpoint,
    official_sd15_key_shapes,
    pick_state_dict,
    shapes_only_report,
)
from realcompo_plugin_instancediffusion.testing import (
    TINY_POSITION_NET_CONFIG,
    TINY_UNET_CONFIG,
    official_names,
    tiny_instdiff_unet,
)
from realcompo_plugin_instancediffusion.unet import (
    SD15_POSITION_NET_CONFIG,
    SD15_UNET_CONFIG,
    build_instdiff_unet,
    load_instdiff_unet,
)


def test_full_size_official_keys_map_onto_our_unet_exactly() -> None:
    report = shapes_only_report()
    assert report["tensors"] == 1199
    assert report["parameters"] == {"fusers": 208_018_272, "position_net": 160_782_669, "scaleu": 11_532, "total": 1_228_333_437}


def test_our_official_names_match_the_recorded_official_key_list() -> None:
    # The inverse map the tests use to fabricate checkpoints is checked against the real list.
    with torch.device("meta"):
        unet = build_instdiff_unet(SD15_UNET_CONFIG, SD15_POSITION_NET_CONFIG)
    names = {k: tuple(v.shape) for k, v in official_names(unet.state_dict(), SD15_UNET_CONFIG).items()}
    assert names == official_sd15_key_shapes()


@pytest.mark.parametrize("damage", ["drop", "extra", "reshape"])
def test_a_damaged_key_list_is_reported(damage: str) -> None:
    shapes = dict(official_sd15_key_shapes())
    fuser = "input_blocks.1.1.transformer_blocks.0.fuser.attn.to_q.weight"
    if damage == "drop":
        del shapes["position_net.null_seg_feature"]
        match = "1 missing .*position_net.null_seg_feature"
    elif damage == "extra":
        shapes["position_net.unknown"] = (3,)
        match = "1 unexpected .*position_net.unknown"
    else:
        shapes[fuser] = (320, 321)
        match = "1 with another shape .*fuser.attn.to_q.weight"
    with pytest.raises(ConversionError, match=match):
        shapes_only_report(shapes)


def test_tiny_state_dict_round_trips_through_the_official_names() -> None:
    state = tiny_instdiff_unet(seed=0).state_dict()
    converted = convert_official_state_dict(official_names(state, TINY_UNET_CONFIG), TINY_UNET_CONFIG)
    assert converted.keys() == state.keys()
    assert all(torch.equal(converted[k], state[k]) for k in state)


# --- loading the training pickle safely ---------------------------------------------------------


@pytest.fixture
def fake_omegaconf(monkeypatch):
    """A stand-in `omegaconf.dictconfig.DictConfig` class, so the test pickles a config object
    from a module the converter treats as harmless (without needing omegaconf installed)."""
    package = types.ModuleType("omegaconf")
    module = types.ModuleType("omegaconf.dictconfig")

    class DictConfig:
        def __init__(self, content: dict) -> None:
            self._content = content

    DictConfig.__module__ = "omegaconf.dictconfig"
    DictConfig.__qualname__ = "DictConfig"
    module.DictConfig = DictConfig
    package.dictconfig = module
    monkeypatch.setitem(sys.modules, "omegaconf", package)
    monkeypatch.setitem(sys.modules, "omegaconf.dictconfig", module)
    return DictConfig


def write_fake_official(path, fake_omegaconf, *, seed: int = 0, keys: tuple[str, ...] = ("model", "ema")) -> dict[str, torch.Tensor]:
    unet = tiny_instdiff_unet(seed)
    official = official_names(unet.state_dict(), TINY_UNET_CONFIG)
    checkpoint = {k: official for k in keys}
    checkpoint.update({"config_dict": {"_content": fake_omegaconf({"lr": 1e-4})}, "iters": 5})
    torch.save(checkpoint, path)
    return unet.state_dict()


def test_training_checkpoint_loads_with_stand_ins_for_config_objects(tmp_path, fake_omegaconf, monkeypatch) -> None:
    path = tmp_path / "instancediffusion_sd15.pth"
    write_fake_official(path, fake_omegaconf)
    monkeypatch.delitem(sys.modules, "omegaconf.dictconfig")  # loading must not need the real class
    checkpoint = load_training_checkpoint(path)
    assert sorted(checkpoint) == ["config_dict", "ema", "iters", "model"]
    assert type(checkpoint["config_dict"]["_content"]).__module__ == "realcompo_stand_in"
    assert "input_blocks.0.0.weight" in pick_state_dict(checkpoint, "ema")


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"ema": {"input_blocks.0.0.weight": torch.zeros(1)}, "x": _Payload(str(marker))}, path)
    with pytest.raises(ConversionError, match="system"):
        load_training_checkpoint(path)
    assert not marker.exists()


def test_a_file_that_is_not_a_torch_checkpoint_is_refused(tmp_path) -> None:
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(ConversionError, match="not a torch checkpoint"):
        load_training_checkpoint(path)


def test_missing_ema_names_the_alternative(tmp_path, fake_omegaconf) -> None:
    path = tmp_path / "model_only.pth"
    write_fake_official(path, fake_omegaconf, keys=("model",))
    with pytest.raises(ConversionError, match="--source model"):
        pick_state_dict(load_training_checkpoint(path), "ema")


def test_tiny_conversion_writes_a_folder_that_loads_to_the_same_model(tmp_path, fake_omegaconf) -> None:
    path = tmp_path / "tiny.pth"
    expected = write_fake_official(path, fake_omegaconf, seed=4)
    out = tmp_path / "converted"
    record = convert_checkpoint(path, out, dtype=torch.float32, log=lambda *a: None,
                                unet_config=TINY_UNET_CONFIG, position_net_config=TINY_POSITION_NET_CONFIG)  # fmt: skip
    assert record["source"]["weights"] == "ema" and len(record["source"]["sha256"]) == 64
    assert sorted(p.name for p in out.iterdir()) == ["instancediffusion.json", "unet"]
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt*"))  # safetensors only
    unet = load_instdiff_unet(out)
    loaded = unet.state_dict()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    x, ctx, objs = torch.randn(1, 4, 16, 16), torch.randn(1, 77, 32), torch.randn(1, 124, 32)
    kwargs = {"encoder_hidden_states": ctx, "cross_attention_kwargs": {"gligen": {"objs": objs}}}
    reference = tiny_instdiff_unet(seed=4)
    torch.testing.assert_close(unet(x, 7, **kwargs).sample, reference(x, 7, **kwargs).sample)


def test_conversion_refuses_a_non_empty_output_folder(tmp_path, fake_omegaconf) -> None:
    path = tmp_path / "tiny.pth"
    write_fake_official(path, fake_omegaconf)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(ConversionError, match="not empty"):
        convert_checkpoint(path, tmp_path / "out", unet_config=TINY_UNET_CONFIG, position_net_config=TINY_POSITION_NET_CONFIG)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_cli_shapes_only_dry_run(capsys) -> None:
    assert main(["convert", "--shapes-only"]) == 0
    assert json.loads(capsys.readouterr().out)["tensors"] == 1199


def test_cli_reports_conversion_errors_without_a_traceback(tmp_path, capsys) -> None:
    assert main(["convert", str(tmp_path / "missing.pth"), str(tmp_path / "out")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_a_real_omegaconf_config_loads_without_importing_omegaconf(tmp_path) -> None:
    omegaconf = pytest.importorskip("omegaconf")
    config = omegaconf.OmegaConf.create({"model": {"target": "ldm.x", "params": {"channel_mult": [1, 2, 4, 4]}}, "lr": 1e-4})
    path = tmp_path / "with_config.pth"
    official = official_names(tiny_instdiff_unet(0).state_dict(), TINY_UNET_CONFIG)
    torch.save({"ema": official, "config_dict": vars(config)}, path)  # as the official save_config
    checkpoint = load_training_checkpoint(path)
    assert set(pick_state_dict(checkpoint)) == set(official)


def test_half_precision_folder_keeps_the_position_net_in_float32(tmp_path, fake_omegaconf) -> None:
    from safetensors.torch import load_file

    path = tmp_path / "tiny.pth"
    write_fake_official(path, fake_omegaconf)
    convert_checkpoint(path, tmp_path / "out", log=lambda *a: None,
                       unet_config=TINY_UNET_CONFIG, position_net_config=TINY_POSITION_NET_CONFIG)  # fmt: skip
    stored = load_file(tmp_path / "out" / "unet" / "diffusion_pytorch_model.safetensors")
    assert {v.dtype for k, v in stored.items() if k.startswith("position_net.")} == {torch.float32}
    assert {v.dtype for k, v in stored.items() if not k.startswith("position_net.")} == {torch.float16}
    unet = load_instdiff_unet(tmp_path / "out", torch.float16)
    assert unet.position_net.null_seg_feature.dtype == torch.float32 and unet.conv_in.weight.dtype == torch.float16


def save_sd15_like_folder(path, instdiff_state: dict[str, torch.Tensor], *, change: str | None = None):
    """A plain SD folder whose UNet is the base (no fusers) of a tiny InstanceDiffusion UNet."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    from realcompo_sdk.testing.components import tiny_sd_components

    config = {k: v for k, v in TINY_UNET_CONFIG.items() if k != "attention_type"}
    unet = UNet2DConditionModel(**config)
    base = {k: v for k, v in instdiff_state.items() if ".fuser." not in k and not k.startswith(("position_net.", "instdiff_scaleu."))}
    unet.load_state_dict(base, strict=True)
    if change is not None:
        with torch.no_grad():
            unet.get_parameter(change).add_(1.0)
    parts = tiny_sd_components(0)
    parts["unet"] = unet
    StableDiffusionPipeline(**parts, requires_safety_checker=False).save_pretrained(path)
    return path


@pytest.mark.parametrize("change", [None, "conv_in.weight", "mid_block.resnets.0.conv1.weight"])
def test_sd15_check_and_copied_components(tmp_path, fake_omegaconf, change) -> None:
    from realcompo_plugin_instancediffusion.adapter import InstanceDiffusionAdapter

    path = tmp_path / "tiny.pth"
    state = write_fake_official(path, fake_omegaconf, seed=2)
    sd15 = save_sd15_like_folder(tmp_path / "sd15", state, change=change)
    out = tmp_path / "out"
    record = convert_checkpoint(path, out, sd15=str(sd15), dtype=torch.float32, log=lambda *a: None,
                                unet_config=TINY_UNET_CONFIG, position_net_config=TINY_POSITION_NET_CONFIG)  # fmt: skip
    check = record["sd15_check"]
    assert check["base_matches_sd15"] == (change is None)
    assert check["conv_in_matches_sd15"] == (change != "conv_in.weight")
    assert check["differing_tensors"] == ([] if change is None else [change])
    assert json.loads((out / "instancediffusion.json").read_text())["sd15_check"] == check
    # VAE, text encoder, tokenizer and scheduler were copied: the folder loads without `base`
    adapter = InstanceDiffusionAdapter(model=str(out), base="not/used")
    assert adapter.make_scheduler().__class__.__name__ == "PNDMScheduler"
