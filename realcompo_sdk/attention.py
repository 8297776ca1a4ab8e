"""Differentiable capture of cross-attention probabilities from diffusers attention layers.

Only the cross-attention layers the balancer reads get an explicit-softmax processor; every
other layer keeps its processor (SDPA / flash). The originals are restored when the context
exits. Per layer the probabilities are averaged over heads and reduced to the requested tokens
at once, so no (heads × pixels × 77) tensor outlives the layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class StopForward(Exception):
    """Raised after the last captured layer so the rest of the forward is skipped."""


class CrossAttentionCapture:
    """Context manager: install capturing processors on `layers` (name → Attention module).

    `token_groups[b][j]` are the token positions of object j in sample b. After a forward,
    `maps()` returns (B, J, N) in float32 (float64 for a float64 model): the mean over layers of
    each object's mean-token map.
    With `stop_after_last`, the forward raises `StopForward` once the last layer (in `layers`
    order, which must be execution order) has run.
    """

    def __init__(
        self,
        layers: dict[str, Any],
        token_groups: Sequence[Sequence[Sequence[int]]],
        *,
        stop_after_last: bool = False,
        keep_batch: slice | None = None,
    ) -> None:
        self.layers = layers
        self.token_groups = token_groups
        self.stop_after_last = stop_after_last
        self.keep_batch = keep_batch  # e.g. the cond half of a CFG batch
        self._sum: torch.Tensor | None = None
        self._count = 0
        self._saved: dict[str, Any] = {}
        self._hook: Any = None

    def __enter__(self) -> CrossAttentionCapture:
        for name, module in self.layers.items():
            self._saved[name] = module.get_processor()
            module.set_processor(_CapturingProcessor(self))
        if self.stop_after_last and self.layers:
            last = list(self.layers.values())[-1]
            self._hook = last.register_forward_hook(_raise_stop)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, module in self.layers.items():
            module.set_processor(self._saved[name])
        if self._hook is not None:
            self._hook.remove()

    def add(self, probs: torch.Tensor, heads: int) -> None:
        """probs: (B*heads, N, T) from one layer."""
        bh, n, t = probs.shape
        probs = probs.reshape(bh // heads, heads, n, t).mean(dim=1)  # (B, N, T)
        if self.keep_batch is not None:
            probs = probs[self.keep_batch]
        per_sample = []
        for b, groups in enumerate(self.token_groups):
            objs = [upcast_half(probs[b, :, list(tokens)]).mean(dim=-1) for tokens in groups]
            per_sample.append(torch.stack(objs, dim=0))  # (J, N)
        layer_maps = torch.stack(per_sample, dim=0)  # (B, J, N)
        self._sum = layer_maps if self._sum is None else self._sum + layer_maps
        self._count += 1

    def maps(self) -> torch.Tensor:
        if self._sum is None:
            raise RuntimeError("no cross-attention layer ran inside the capture context")
        return self._sum / self._count


def upcast_half(tensor: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16/float32 → float32; float64 stays float64 (a float64 run stays exact)."""
    return tensor if tensor.dtype == torch.float64 else tensor.float()


def _raise_stop(module: Any, inputs: Any, output: Any) -> None:
    raise StopForward


class _CapturingProcessor:
    """Explicit attention (as diffusers' `AttnProcessor`) that reports its probabilities."""

    def __init__(self, capture: CrossAttentionCapture) -> None:
        self.capture = capture

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch, seq_len, _ = hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        attention_mask = attn.prepare_attention_mask(attention_mask, seq_len, batch)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        query = attn.head_to_batch_dim(query)
        key = attn.head_to_batch_dim(key)
        value = attn.head_to_batch_dim(value)
        probs = attn.get_attention_scores(query, key, attention_mask)
        self.capture.add(probs, attn.heads)
        hidden_states = torch.bmm(probs, value)
        hidden_states = attn.batch_to_head_dim(hidden_states)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor
