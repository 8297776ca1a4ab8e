"""Auxiliary losses on GLIGEN's fusers, for `grounding_probe` (training-only: a model trained with
them is still a stock diffusers GLIGEN).

A fuser is self-attention over [visual tokens; grounding tokens]. For it to put an object in its
box, a visual token inside box j must attend to grounding token j: the attention logit
q(position) · k(box) must depend jointly on where the token is and where the box is. From a T2I or
random start both factors are near zero and each one's gradient is proportional to the other (a
saddle), so the diffusion loss alone moves them slowly. Two direct signals:

- `FuserAttentionSupervision`: object j's token should take the attention of the visual tokens
  inside box j and not of those outside it (binary cross-entropy, inside and outside averaged
  apart), on the attention among the grounding tokens ("share") or on the whole softmax
  ("absolute").
- `FuserPositionRegression`: linear heads (not part of the model) read each fuser's input features
  and regress the token's (x, y), so the features the query is made of tell where they are.

docs/benchmarks.md ("Can a Shapes GLIGEN learn where?") has what they did on the CPU.
"""

from __future__ import annotations

from typing import Any, Literal

import torch


def _fusers(unet: torch.nn.Module) -> list[torch.nn.Module]:
    fusers = [m for m in unet.modules() if type(m).__name__ == "GatedSelfAttentionDense"]
    if not fusers:
        raise ValueError("the UNet has no GLIGEN fuser layers (attention_type='gated')")
    return fusers


def _token_grid(tokens: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Centres of a square token grid in [0, 1], (side,)."""
    side = int(round(tokens**0.5))
    return (torch.arange(side, device=device, dtype=dtype) + 0.5) / side


class FuserAttentionCapture:
    """Attention processor for a fuser's `attn` that computes the softmax explicitly and, while
    `active`, keeps the visual tokens' attention to the `num_grounding` trailing (grounding) tokens,
    averaged over heads: (B, visual tokens, num_grounding)."""

    def __init__(self, store: list[torch.Tensor], num_grounding: int) -> None:
        self.store = store
        self.num_grounding = num_grounding
        self.active = False

    def __call__(self, attn: Any, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        q = attn.head_to_batch_dim(attn.to_q(hidden_states))
        k = attn.head_to_batch_dim(attn.to_k(hidden_states))
        v = attn.head_to_batch_dim(attn.to_v(hidden_states))
        probs = attn.get_attention_scores(q, k, None)
        out = attn.to_out[1](attn.to_out[0](attn.batch_to_head_dim(torch.bmm(probs, v))))
        if self.active:
            b, n = hidden_states.shape[:2]
            visual = n - self.num_grounding
            self.store.append(probs.view(b, -1, n, n)[:, :, :visual, visual:].mean(dim=1))
        return out


class _Switch:
    """`with aux.capturing(): unet(...)` records for that forward only."""

    def __init__(self, flags: list[Any]) -> None:
        self.flags = flags

    def __enter__(self) -> None:
        for f in self.flags:
            f.active = True

    def __exit__(self, *exc: object) -> None:
        for f in self.flags:
            f.active = False


class FuserAttentionSupervision:
    """Installs `FuserAttentionCapture` on every fuser; `loss` turns one captured forward into the loss."""

    def __init__(self, unet: torch.nn.Module, num_grounding: int, target: Literal["share", "absolute"] = "share") -> None:
        self.store: list[torch.Tensor] = []
        self.target = target
        self.processors = []
        for fuser in _fusers(unet):
            processor = FuserAttentionCapture(self.store, num_grounding)
            fuser.attn.set_processor(processor)
            self.processors.append(processor)

    def capturing(self) -> _Switch:
        self.store.clear()
        return _Switch(self.processors)

    def loss(self, boxes: torch.Tensor, grounded: torch.Tensor) -> torch.Tensor:
        """boxes (B, K, 4) normalised, zero rows for empty slots (slot j is grounding token j);
        grounded (B,) 0 for samples without grounding. Without the outside term, attending to an
        object's token everywhere would satisfy it: that term is what makes it a matter of *where*."""
        k = boxes.shape[1]
        present = ((boxes[..., 2] > boxes[..., 0]) & (grounded[:, None] > 0)).to(boxes.dtype)[:, None, :]  # (B, 1, K)
        sums = {"inside": [boxes.new_zeros(()), boxes.new_zeros(())], "outside": [boxes.new_zeros(()), boxes.new_zeros(())]}
        for probs in self.store:
            c = _token_grid(probs.shape[1], boxes.device, boxes.dtype)
            x0, y0, x1, y1 = (boxes[..., i, None, None] for i in range(4))
            inside = (c[:, None] >= y0) & (c[:, None] < y1) & (c[None, :] >= x0) & (c[None, :] < x1)
            inside = inside.flatten(2).transpose(1, 2).to(boxes.dtype) * present  # (B, N, K)
            p = probs[..., :k]
            if self.target == "share":
                p = p / probs.sum(dim=-1, keepdim=True).clamp_min(1e-12)
            p = p.clamp(1e-6, 1 - 1e-6)
            for name, weight, log in (("inside", inside, torch.log(p)), ("outside", (1 - inside) * present, torch.log1p(-p))):
                sums[name][0] = sums[name][0] - (log * weight).sum()
                sums[name][1] = sums[name][1] + weight.sum()
        self.store.clear()
        return sum(total / count.clamp_min(1.0) for total, count in sums.values())


class FuserPositionRegression(torch.nn.Module):
    """A linear head per fuser, fed the fuser's visual input tokens through a forward pre-hook while
    `capturing()`; `loss()` is the mean squared error of the predicted (x, y) of each token (centred
    coordinates, so 1/12 per axis means no position at all)."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        fusers = _fusers(unet)
        self.heads = torch.nn.ModuleList(torch.nn.Linear(f.linear.out_features, 2) for f in fusers)
        self.seen: list[tuple[torch.nn.Module, torch.Tensor]] = []
        self.active = False
        for fuser, head in zip(fusers, self.heads):
            fuser.register_forward_pre_hook(lambda module, args, head=head: self._keep(head, args[0]))

    def _keep(self, head: torch.nn.Module, tokens: torch.Tensor) -> None:
        if self.active:
            self.seen.append((head, tokens))

    def capturing(self) -> _Switch:
        return _Switch([self])

    def loss(self) -> torch.Tensor:
        errors = []
        for head, tokens in self.seen:
            c = _token_grid(tokens.shape[1], tokens.device, tokens.dtype) - 0.5
            ys, xs = torch.meshgrid(c, c, indexing="ij")
            target = torch.stack([xs.flatten(), ys.flatten()], dim=-1)
            errors.append(((head(tokens) - target) ** 2).mean())
        self.seen.clear()
        return torch.stack(errors).mean()


class GroundingAuxiliary:
    """Both auxiliary losses as one training recipe, shared by `grounding_probe` and `train_all`.

    `watch()` wraps the training forward (the position heads read it; so does the attention loss
    with ``attention_input="batch"``); `loss(...)` then adds, with ``attention_input="noise"``, an
    extra forward of `noise_samples` samples on pure noise at t = 999, where nothing but the boxes
    can say where the objects are, and returns the weighted sum and its parts."""

    def __init__(self, unet: torch.nn.Module, num_grounding: int, *, attention_weight: float = 0.0,
                 position_weight: float = 0.0, target: Literal["share", "absolute"] = "absolute",
                 attention_input: Literal["batch", "noise"] = "noise", noise_samples: int = 8) -> None:  # fmt: skip
        self.attention = FuserAttentionSupervision(unet, num_grounding, target) if attention_weight > 0 else None
        self.position = FuserPositionRegression(unet) if position_weight > 0 else None
        self.attention_weight, self.position_weight = attention_weight, position_weight
        self.attention_input, self.noise_samples = attention_input, noise_samples

    @property
    def active(self) -> bool:
        return self.attention is not None or self.position is not None

    def parameters(self) -> list[torch.nn.Parameter]:
        """The position heads' parameters (train them with the model; they are not saved)."""
        return list(self.position.parameters()) if self.position is not None else []

    def watch(self) -> Any:
        import contextlib

        stack = contextlib.ExitStack()
        if self.attention is not None and self.attention_input == "batch":
            stack.enter_context(self.attention.capturing())
        if self.position is not None:
            stack.enter_context(self.position.capturing())
        return stack

    def loss(self, unet: torch.nn.Module, boxes: torch.Tensor, grounded: torch.Tensor, gligen: dict[str, torch.Tensor],
             context: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
        """boxes (B, K, 4), grounded (B,) and `gligen` (the cross_attention_kwargs["gligen"] inputs) of the
        training batch; context its text embeddings."""
        total, parts = boxes.new_zeros(()), {}
        if self.attention is not None:
            if self.attention_input == "noise":
                m = min(self.noise_samples, boxes.shape[0])
                shape = (m, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
                where = generator.device if generator is not None else boxes.device
                sample = torch.randn(shape, generator=generator, device=where).to(boxes.device)
                inputs = {k: v[:m] for k, v in gligen.items()}
                inputs["masks"] = (inputs["boxes"][..., 2] > inputs["boxes"][..., 0]).to(inputs["masks"].dtype)
                position = self.position.capturing() if self.position is not None else _Switch([])
                with self.attention.capturing(), position:
                    unet(sample, torch.full((m,), 999, device=boxes.device), context[:m], cross_attention_kwargs={"gligen": inputs})
                boxes, grounded = boxes[:m], torch.ones(m, device=boxes.device)
            attention = self.attention.loss(boxes, grounded)
            parts["attention"] = float(attention.detach())
            total = total + self.attention_weight * attention
        if self.position is not None:
            position = self.position.loss()
            parts["position"] = float(position.detach())
            total = total + self.position_weight * position
        return total, parts
