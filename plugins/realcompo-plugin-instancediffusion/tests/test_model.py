"""The InstanceDiffusion model pieces against their specification (tiny, randomised models)."""

from __future__ import annotations

import pytest
import torch
from realcompo_plugin_instancediffusion.fourier import fourier_features
from realcompo_plugin_instancediffusion.position_net import InstDiffPositionNet
from realcompo_plugin_instancediffusion.scaleu import InstDiffScaleU, backbone_channels, low_frequency_scale
from realcompo_plugin_instancediffusion.testing import TINY_POSITION_NET_CONFIG, randomize_, tiny_instdiff_unet
from realcompo_plugin_instancediffusion.unet import (
    SD15_POSITION_NET_CONFIG,
    SD15_UNET_CONFIG,
    build_instdiff_unet,
    fusers,
    set_grounding,
)

N = 30


def test_fourier_features_interleave_sin_and_cos_per_frequency() -> None:
    x = torch.rand(2, 3, 5)
    out = fourier_features(x, num_freqs=4, temperature=100.0)
    expected = []
    for k in range(4):
        f = 100.0 ** (k / 4)
        expected += [torch.sin(f * x), torch.cos(f * x)]
    assert out.shape == (2, 3, 2 * 4 * 5)
    torch.testing.assert_close(out, torch.cat(expected, dim=-1), rtol=0, atol=1e-6)


def test_fourier_features_are_float32_for_half_inputs() -> None:
    x = torch.rand(4, 2).half()
    assert fourier_features(x).dtype == torch.float32


def test_full_size_parameter_counts_match_the_official_model() -> None:
    with torch.device("meta"):
        unet = build_instdiff_unet(SD15_UNET_CONFIG, SD15_POSITION_NET_CONFIG)

    def count(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    assert sum(count(f) for f in fusers(unet)) == 208_018_272
    assert count(unet.position_net) == 160_782_669
    assert count(unet.instdiff_scaleu) == 11_532
    assert count(unet) == 1_228_333_437
    assert len(fusers(unet)) == 16


def test_scaleu_backbone_channels_of_sd15() -> None:
    assert backbone_channels(SD15_UNET_CONFIG) == [1280] * 7 + [640] * 3 + [320] * 2


# --- position net --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def net() -> InstDiffPositionNet:
    return randomize_(InstDiffPositionNet(**TINY_POSITION_NET_CONFIG), seed=3).eval()


def inputs(batch: int = 2, instances: int = 3, seed: int = 0, segs: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(batch, N)
    masks[:, :instances] = 1
    x = {
        "boxes": torch.rand(batch, N, 4, generator=g) * masks[..., None],
        "masks": masks,
        "positive_embeddings": torch.randn(batch, N, 32, generator=g) * masks[..., None],
        "points": torch.rand(batch, N, 2, generator=g) * masks[..., None],
        "scribbles": torch.rand(batch, N, 40, generator=g) * masks[..., None],
        "polygons": torch.rand(batch, N, 512, generator=g) * masks[..., None],
        "segs": torch.zeros(batch, N, 128, 128),
    }
    if segs:
        x["segs"][:, :instances, 20:60, 30:90] = 1
    return x


def mlp_tokens(net: InstDiffPositionNet, i: int, text: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
    return net.linears_list[i](torch.cat([text, layout], dim=-1))


def test_token_order_is_box_point_scribble_polygon_segmentation(net) -> None:
    x = inputs()
    objs = net(**x, profile="scribble")  # every modality on
    text = x["positive_embeddings"] * x["masks"][..., None] + (1 - x["masks"][..., None]) * net.null_positive_feature
    m = x["masks"][..., None]
    for i, (key, null) in enumerate([("boxes", net.null_position_feature), ("points", net.null_point_feature)]):
        layout = fourier_features(x[key]) * m + (1 - m) * null
        torch.testing.assert_close(objs[:, 30 * i : 30 * (i + 1)], mlp_tokens(net, i, text, layout))
    assert objs.shape == (2, 4 * N + net.num_seg_tokens, 32)


def test_empty_slots_use_the_learned_nulls(net) -> None:
    x = inputs(instances=2)
    objs = net(**x, profile="box")
    null_text = net.null_positive_feature.expand(1, 1, -1)
    expected_box = mlp_tokens(net, 0, null_text, net.null_position_feature.expand(1, 1, -1))[0, 0]
    torch.testing.assert_close(objs[0, 5], expected_box)  # slot 5 is padding
    assert not torch.allclose(objs[0, 1], expected_box)


def test_real_instance_without_scribble_gets_zero_coordinate_features_not_the_null(net) -> None:
    x = inputs(instances=2)
    x["scribbles"][:, 1] = 0  # instance 1 has no scribble
    objs = net(**x, profile="scribble")
    text = x["positive_embeddings"][:, 1:2]
    zero_coords = mlp_tokens(net, 2, text, fourier_features(torch.zeros(2, 1, 40)))
    null = mlp_tokens(net, 2, text, net.null_scribble_feature.expand(2, 1, -1))
    torch.testing.assert_close(objs[:, 60 + 1 : 60 + 2], zero_coords)
    assert (objs[:, 61] - null[:, 0]).abs().max() > 1e-3


def test_dropped_modality_uses_the_null_but_keeps_the_phrase(net) -> None:
    x = inputs()
    objs = net(**x, profile="point")  # boxes dropped
    text = x["positive_embeddings"][:, :1]
    torch.testing.assert_close(objs[:, :1], mlp_tokens(net, 0, text, net.null_position_feature.expand(2, 1, -1)))


def test_segmentation_tokens_are_a_raw_reshape_of_the_features(net, monkeypatch) -> None:
    # Replace the trunk's output by a known (B, C, h, w) tensor: the tokens must be its memory
    # read as (C·k, T) with T tokens and k = h·w / T, then transposed — not a spatial pooling.
    c = TINY_POSITION_NET_CONFIG["convnext_dims"][-1]
    features = torch.randn(2, c, 4, 4)
    monkeypatch.setattr(net.convnext_tiny_backbone, "forward", lambda x: features[: x.shape[0]])
    captured = {}
    seg_mlp = net.linears_list[4]
    monkeypatch.setattr(seg_mlp, "forward", lambda t: (captured.setdefault("in", t), t[..., :32])[1])
    net(**inputs(), profile="mask")
    tokens = captured["in"] - net.pos_embedding  # (B, 4, 4C)
    h = w = 4
    per_token = h * w // net.num_seg_tokens
    for j in range(net.num_seg_tokens):
        for channel in (0, c - 1):
            for q in range(per_token):
                flat = (channel * per_token + q) * net.num_seg_tokens + j
                y, x = divmod(flat % (h * w), w)
                torch.testing.assert_close(tokens[:, j, channel * per_token + q], features[:, channel, y, x])


def test_sample_without_masks_gets_the_segmentation_null(net) -> None:
    x = inputs()
    x["segs"][1] = 0
    tokens = net(**x, profile="mask")[:, 4 * N :]
    null = net.linears_list[4](net.null_seg_feature + net.pos_embedding)[0]
    torch.testing.assert_close(tokens[1], null)
    assert (tokens[0] - null).abs().max() > 1e-3


def test_every_modality_dropped_would_keep_boxes(net, monkeypatch) -> None:
    from realcompo_plugin_instancediffusion import position_net

    monkeypatch.setitem(position_net.PROFILE_DROPS, "none", {"box": True, "point": True, "scribble": True, "mask": True})
    x = inputs()
    torch.testing.assert_close(net(**x, profile="none")[:, :30], net(**x, profile="box")[:, :30])


def test_precomputed_tokens_pass_through(net) -> None:
    cached = torch.randn(1, 124, 32)
    assert net(objs=cached) is cached


def test_wrong_slot_count_is_an_error(net) -> None:
    x = {k: v[:, :10] for k, v in inputs().items()}
    with pytest.raises(ValueError, match="exactly 30"):
        net(**x, profile="box")


# --- ScaleU --------------------------------------------------------------------------------------


def test_low_frequency_scale_multiplies_a_constant_image() -> None:
    x = torch.full((1, 2, 8, 8), 3.0)
    torch.testing.assert_close(low_frequency_scale(x, torch.tensor([2.0])), torch.full_like(x, 6.0))


def test_low_frequency_scale_leaves_high_frequencies() -> None:
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2.0 - 1  # Nyquist only
    x = checker.expand(1, 1, 8, 8).clone()
    torch.testing.assert_close(low_frequency_scale(x, torch.tensor([5.0])), x, atol=1e-5, rtol=0)


def test_scaleu_hook_scales_backbone_and_filters_skip() -> None:
    unet = tiny_instdiff_unet(seed=1)
    scaleu: InstDiffScaleU = unet.instdiff_scaleu
    resnet = unet.up_blocks[1].resnets[0]
    k = len(unet.up_blocks[0].resnets)  # the index of that resnet in execution order
    seen = []
    handle = resnet.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    x, ctx = torch.randn(1, 4, 16, 16), torch.randn(1, 77, 32)
    objs = torch.zeros(1, 124, 32)
    kwargs = {"encoder_hidden_states": ctx, "cross_attention_kwargs": {"gligen": {"objs": objs}}}
    unet(x, 5, **kwargs)
    scaleu.active = False
    unet(x, 5, **kwargs)
    scaleu.active = True
    handle.remove()
    with_scaleu, plain = seen
    c = scaleu.channels[k]
    b = torch.tanh(getattr(scaleu, f"scaleu_b_{k}")) + 1
    s = torch.tanh(getattr(scaleu, f"scaleu_s_{k}")) + 1
    # Same UNet up to this resnet except earlier ScaleU hooks: compare the transform on `plain`'s
    # own input by rerunning the hook.
    hooked = scaleu._hook(k)(resnet, (plain,))[0]
    torch.testing.assert_close(hooked[:, :c], plain[:, :c] * b[None, :, None, None])
    torch.testing.assert_close(hooked[:, c:], low_frequency_scale(plain[:, c:], s))
    assert with_scaleu.shape == plain.shape and not torch.allclose(with_scaleu, plain)


def test_zero_scaleu_is_the_identity() -> None:
    unet = tiny_instdiff_unet(seed=2)
    with torch.no_grad():
        for p in unet.instdiff_scaleu.parameters():
            p.zero_()
    x, ctx, objs = torch.randn(1, 4, 16, 16), torch.randn(1, 77, 32), torch.randn(1, 124, 32)
    kwargs = {"encoder_hidden_states": ctx, "cross_attention_kwargs": {"gligen": {"objs": objs}}}
    a = unet(x, 5, **kwargs).sample
    unet.instdiff_scaleu.active = False
    torch.testing.assert_close(unet(x, 5, **kwargs).sample, a, atol=1e-5, rtol=0)


def test_freeu_and_scaleu_do_not_mix() -> None:
    unet = tiny_instdiff_unet(seed=0)
    unet.enable_freeu(s1=0.9, s2=0.2, b1=1.2, b2=1.4)
    with pytest.raises(ValueError, match="FreeU"):
        unet.instdiff_scaleu.attach(unet)


def test_set_grounding_switches_every_fuser_and_changes_the_noise() -> None:
    unet = tiny_instdiff_unet(seed=0)
    x, ctx, objs = torch.randn(1, 4, 16, 16), torch.randn(1, 77, 32), torch.randn(1, 124, 32)
    kwargs = {"encoder_hidden_states": ctx, "cross_attention_kwargs": {"gligen": {"objs": objs}}}
    on = unet(x, 5, **kwargs).sample
    set_grounding(unet, False)
    assert not any(f.enabled for f in fusers(unet))
    off = unet(x, 5, **kwargs).sample
    set_grounding(unet, True)
    assert (on - off).abs().max() > 1e-3
