"""The auxiliary fuser losses of the grounding probe: they leave the UNet's output unchanged, the
attention loss rewards attention to an object's token inside its box only, the position heads
learn where tokens are; and the probe itself runs and reports."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from realcompo_plugin_shapes.training.grounding_attention import (  # noqa: E402
    FuserAttentionSupervision,
    FuserPositionRegression,
)
from realcompo_plugin_shapes.training.models import MAX_OBJS, unet_config  # noqa: E402


@pytest.fixture(scope="module")
def gated():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**unet_config(gated=True)).eval()
    with torch.no_grad():  # open gates and non-zero fuser outputs, so the fusers matter
        for name, p in unet.named_parameters():
            if name.endswith(("alpha_attn", "alpha_dense")):
                p.fill_(1.0)
    return unet


def _inputs(batch: int = 2):
    g = torch.Generator().manual_seed(1)
    boxes = torch.zeros(batch, MAX_OBJS, 4)
    boxes[:, 0] = torch.tensor([0.1, 0.1, 0.5, 0.6])
    gligen = {"boxes": boxes, "positive_embeddings": torch.randn(batch, MAX_OBJS, 128, generator=g),
              "masks": (torch.arange(MAX_OBJS) < 1).float().expand(batch, -1)}  # fmt: skip
    return (torch.randn(batch, 4, 32, 32, generator=g), torch.tensor([900] * batch), torch.randn(batch, 32, 128, generator=g),
            gligen)  # fmt: skip


def test_capturing_processors_compute_the_same_attention(gated) -> None:
    z, t, ctx, gligen = _inputs()
    with torch.no_grad():
        before = gated(z, t, ctx, cross_attention_kwargs={"gligen": dict(gligen)}).sample
        sup = FuserAttentionSupervision(gated, MAX_OBJS)
        with sup.capturing():
            after = gated(z, t, ctx, cross_attention_kwargs={"gligen": dict(gligen)}).sample
        outside = gated(z, t, ctx, cross_attention_kwargs={"gligen": dict(gligen)}).sample
    assert torch.allclose(before, after, atol=1e-5) and torch.allclose(before, outside, atol=1e-5)
    # one map per fuser (16×16 and 8×8 blocks, mid block), visual tokens × grounding tokens
    sizes = sorted({p.shape[1] for p in sup.store})
    assert sizes == [64, 256] and all(p.shape[-1] == MAX_OBJS for p in sup.store)
    assert len(sup.store) == len(sup.processors)
    sup.loss(gligen["boxes"][:, :4], torch.ones(2))
    assert sup.store == []  # consumed; nothing is captured outside `capturing()`


def test_loss_prefers_the_objects_token_inside_its_box_only() -> None:
    side, k = 4, 2
    boxes = torch.zeros(1, k, 4)
    boxes[0, 0] = torch.tensor([0.0, 0.0, 0.5, 0.5])  # the top-left 2×2 cells

    def attention(inside_share: float, outside_share: float) -> torch.Tensor:
        probs = torch.full((1, side * side, MAX_OBJS), 0.01)
        cells = torch.tensor([r < 2 and c < 2 for r in range(side) for c in range(side)])
        probs[0, cells, 0] = inside_share
        probs[0, ~cells, 0] = outside_share
        return probs

    for target in ("share", "absolute"):
        sup = FuserAttentionSupervision.__new__(FuserAttentionSupervision)  # no UNet needed for the loss
        sup.store, sup.processors, sup.target = [], [], target
        losses = {}
        for name, (a, b) in {"where": (10.0, 0.0), "everywhere": (10.0, 10.0), "nowhere": (0.0, 0.0), "wrong": (0.0, 10.0)}.items():
            sup.store.append(attention(a, b))
            losses[name] = float(sup.loss(boxes, torch.ones(1)))
        assert losses["where"] < min(losses["everywhere"], losses["nowhere"]), target
        assert losses["wrong"] > max(losses["everywhere"], losses["nowhere"]), target
        sup.store.append(attention(0.0, 10.0))
        assert float(sup.loss(boxes, torch.zeros(1))) == 0.0  # ungrounded samples are not supervised


def test_loss_reaches_the_query_and_key_projections(gated) -> None:
    z, t, ctx, gligen = _inputs(1)
    sup = FuserAttentionSupervision(gated, MAX_OBJS)
    gated.zero_grad()
    with sup.capturing():
        gated(z, t, ctx, cross_attention_kwargs={"gligen": dict(gligen)})
    sup.loss(gligen["boxes"][:, :4], torch.ones(1)).backward()
    grads = {n: p.grad for n, p in gated.named_parameters() if ".fuser.attn.to_q" in n or "position_net" in n}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())


def test_position_heads_see_every_fuser_and_can_learn_where_tokens_are(gated) -> None:
    z, t, ctx, gligen = _inputs(1)
    heads = FuserPositionRegression(gated)
    with torch.no_grad():
        gated(z, t, ctx, cross_attention_kwargs={"gligen": dict(gligen)})  # not capturing: nothing kept
    assert heads.seen == []
    with heads.capturing(), torch.no_grad():
        gated(z, t, ctx, cross_attention_kwargs={"gligen": dict(gligen)})
    assert len(heads.seen) == len(heads.heads)
    before = float(heads.loss())
    assert 0.05 < before  # random heads: no better than no position (1/12 per axis)
    # fit the heads alone on fixed features: the loss falls, so it measures position in the features
    optimizer = torch.optim.Adam(heads.parameters(), lr=1e-2)
    for _ in range(30):
        with heads.capturing(), torch.no_grad():
            gated(z, t, ctx, cross_attention_kwargs={"gligen": dict(gligen)})
        loss = heads.loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss) < before


def test_probe_runs_and_reports_both_box_shares(tmp_path) -> None:
    import json

    from realcompo_plugin_shapes.training.grounding_probe import main

    log = tmp_path / "probe.jsonl"
    records = main(["--steps", "2", "--eval-every", "2", "--batch-size", "2", "--pool-size", "8", "--eval-scenes", "8",
                    "--attention-loss", "0.5", "--position-loss", "1", "--log", str(log)])  # fmt: skip
    assert len(records) == 1 and json.loads(log.read_text()) == records[0]
    row = records[0]["t900"]
    assert 0.0 <= row["share_true"] <= 1.0 and 0.0 <= row["share_mirrored"] <= 1.0 and row["loss_mirrored_over_true"] > 0
    assert records[0]["attention"] > 0 and records[0]["position"] > 0
