"""Differentiable capture of text-token attention inside MMDiT joint attention (SD3, Flux).

In an MMDiT, image and text tokens attend together: one softmax per query over *all* keys, image
and text. What the balancer needs of such a layer is what it needs of a UNet's cross-attention:
for each image query, the probability mass it puts on each object's text tokens. That is a block
of the joint softmax — image-query rows, text-key columns — normalised over all keys, so a pixel
that looks mostly at other pixels has little mass on any word (unlike a cross-attention layer,
whose softmax runs over the text alone).

The capture wraps the layer's own processor instead of replacing it: the wrapper recomputes the
image queries and all keys exactly as the model's processor does (projections, q/k norms, Flux's
rotary embedding), takes the text columns of the softmax, then calls the original processor, so
the layer's output is the model's own (SDPA / flash) bit for bit. The softmax block is computed
head by head under activation checkpointing: at 1024² (4096 image tokens) one head's scores are
4096 × (4096 + 333) floats, and keeping every head's for the backward would need gigabytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from .attention import CrossAttentionCapture, upcast_half

# (attn module, hidden_states, encoder_hidden_states, processor kwargs) ->
#   (image queries (B, H, N, d), all keys (B, H, N + T, d), the text columns of the keys)
QueryKeyFn = Callable[[Any, torch.Tensor, torch.Tensor, dict[str, Any]], tuple[torch.Tensor, torch.Tensor, slice]]


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, H·d) → (B, H, L, d)."""
    b, n, _ = x.shape
    return x.view(b, n, heads, -1).transpose(1, 2)


def sd3_queries_keys(attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                     kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, slice]:
    """SD3 / SD3.5 (`JointAttnProcessor2_0`): image tokens first, then text; q/k norms per head."""
    query = _heads(attn.to_q(hidden_states), attn.heads)
    key = _heads(attn.to_k(hidden_states), attn.heads)
    text_key = _heads(attn.add_k_proj(encoder_hidden_states), attn.heads)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    if attn.norm_added_k is not None:
        text_key = attn.norm_added_k(text_key)
    n = hidden_states.shape[1]
    return query, torch.cat([key, text_key], dim=2), slice(n, n + encoder_hidden_states.shape[1])


def flux_queries_keys(attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                      kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, slice]:
    """Flux double blocks (`FluxAttnProcessor`): text tokens first, then image; per-head RMS norms,
    then the rotary embedding over the joint sequence."""
    from diffusers.models.embeddings import apply_rotary_emb

    t = encoder_hidden_states.shape[1]
    query = attn.norm_q(attn.to_q(hidden_states).unflatten(-1, (-1, attn.head_dim)))
    key = attn.norm_k(attn.to_k(hidden_states).unflatten(-1, (-1, attn.head_dim)))
    text_query = attn.norm_added_q(attn.add_q_proj(encoder_hidden_states).unflatten(-1, (-1, attn.head_dim)))
    text_key = attn.norm_added_k(attn.add_k_proj(encoder_hidden_states).unflatten(-1, (-1, attn.head_dim)))
    query = torch.cat([text_query, query], dim=1)  # (B, T + N, H, d), the processor's order
    key = torch.cat([text_key, key], dim=1)
    rotary = kwargs.get("image_rotary_emb")
    if rotary is not None:
        query = apply_rotary_emb(query, rotary, sequence_dim=1)
        key = apply_rotary_emb(key, rotary, sequence_dim=1)
    return query[:, t:].transpose(1, 2), key.transpose(1, 2), slice(0, t)


def text_attention(query: torch.Tensor, key: torch.Tensor, text: slice, *, max_bytes: int = 256 * 2**20) -> torch.Tensor:
    """Mean over heads of softmax(q·kᵀ/√d) over all keys, text columns only: (B, N, T).

    Heads are processed in chunks of at most `max_bytes` of scores each, each chunk recomputed in
    the backward (checkpointing), so memory stays at one chunk's scores."""
    b, h, n, d = query.shape
    query, key = upcast_half(query), upcast_half(key)
    per_head = b * n * key.shape[2] * query.element_size()
    chunk = max(1, min(h, max_bytes // max(per_head, 1)))

    def mass(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        scores = (q @ k.transpose(-1, -2)) * d**-0.5
        return (scores[..., text] - scores.logsumexp(dim=-1, keepdim=True)).exp().sum(dim=1)

    total = None
    for start in range(0, h, chunk):
        q, k = query[:, start:start + chunk], key[:, start:start + chunk]
        part = checkpoint(mass, q, k, use_reentrant=False) if torch.is_grad_enabled() else mass(q, k)
        total = part if total is None else total + part
    assert total is not None
    return total / h


class JointAttentionCapture(CrossAttentionCapture):
    """Context manager: wrap the processors of `layers` (name → joint attention module, execution
    order) so that each reports its text attention; `maps()` as `CrossAttentionCapture`.

    `queries_keys` recomputes one layer's image queries and keys (`sd3_queries_keys`,
    `flux_queries_keys`); `token_groups[b][j]` index the text sequence as the model sees it.
    """

    def __init__(self, layers: dict[str, Any], token_groups: Sequence[Sequence[Sequence[int]]],
                 queries_keys: QueryKeyFn, *, stop_after_last: bool = False) -> None:
        super().__init__(layers, token_groups, stop_after_last=stop_after_last)
        self.queries_keys = queries_keys

    def __enter__(self) -> JointAttentionCapture:
        for name, module in self.layers.items():
            self._saved[name] = module.processor
            module.processor = _ReportingProcessor(self, module.processor)
        if self.stop_after_last and self.layers:
            from .attention import _raise_stop

            self._hook = list(self.layers.values())[-1].register_forward_hook(_raise_stop)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, module in self.layers.items():
            module.processor = self._saved[name]
        if self._hook is not None:
            self._hook.remove()


class _ReportingProcessor:
    """The layer's own processor, after reporting the text attention of its image queries."""

    def __init__(self, capture: JointAttentionCapture, original: Any) -> None:
        self.capture = capture
        self.original = original

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, *args: Any, **kwargs: Any) -> Any:
        if encoder_hidden_states is None:
            raise RuntimeError("joint attention capture on a layer without text tokens (a single-stream block?): "
                               "choose joint (double-stream) blocks")
        # Flux's attention module passes the rotary embedding positionally, SD3's passes nothing more
        named = {"image_rotary_emb": args[0], **kwargs} if args else kwargs
        query, key, text = self.capture.queries_keys(attn, hidden_states, encoder_hidden_states, named)
        self.capture.add(text_attention(query, key, text), heads=1)
        return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
