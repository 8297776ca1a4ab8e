"""InstanceDiffusion's position net ("UniFusion"): per-instance layout tokens for the fusers.

Inputs use 30 instance slots (`masks[i] = 1` for a real instance). For every slot it builds one
token per modality — box, point, scribble, polygon — from the phrase embedding concatenated with
the Fourier features of the coordinates, each through its own MLP; the instance masks, resized to
`seg_size`, go through a small conv and a ConvNeXt trunk into 64 more tokens. Output
`objs` (B, 4·30 + 64, out_dim), token order box, point, scribble, polygon, segmentation.

Rules kept exactly as the trained model expects them (they look odd, they are the model):
- padding slots and dropped modalities get learned null vectors;
- scribble and polygon tokens use the null only when the slot is empty *and* has all-zero
  coordinates: a real instance without a scribble gets the features of zero coordinates;
- the segmentation tokens use the null per *sample* (no mask at all in the sample);
- the segmentation tokens are a raw memory reshape of the (B, C, 16, 16) features to (B, 4C, 64),
  not a spatial pooling;
- which modalities are dropped at test time is a global profile, not per instance.

`forward(objs=...)` returns precomputed tokens unchanged: the adapter computes the tokens once per
request and diffusers' UNet calls the position net with the cached tensor at every step.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from .convnext import TINY_DEPTHS, TINY_DIMS, ConvNeXtFeatures
from .fourier import fourier_features

Profile = Literal["box", "mask", "point", "scribble"]

# Modalities dropped (replaced by their null) in each official test profile: configs/test_*.yaml.
PROFILE_DROPS: dict[str, dict[str, bool]] = {
    "box": {"box": False, "point": False, "scribble": True, "mask": True},
    "mask": {"box": False, "point": False, "scribble": True, "mask": False},
    "point": {"box": True, "point": False, "scribble": True, "mask": True},
    "scribble": {"box": False, "point": False, "scribble": False, "mask": False},
}
SEG_DOWNSAMPLING = 64  # the ConvNeXt's factor 32, and the reshape packs 2×2 cells into one token


def _mlp(in_dim: int, mid_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, mid_dim), nn.SiLU(), nn.Linear(mid_dim, mid_dim), nn.SiLU(), nn.Linear(mid_dim, out_dim))


class InstDiffPositionNet(nn.Module):
    """Parameter names equal the official `position_net.*` keys, so converted weights load 1:1."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        mid_dim: int = 3072,
        *,
        max_instances: int = 30,
        fourier_freqs: int = 16,
        scribble_points: int = 20,
        polygon_points: int = 256,
        seg_size: int = 512,
        convnext_dims: tuple[int, ...] = TINY_DIMS,
        convnext_depths: tuple[int, ...] = TINY_DEPTHS,
    ) -> None:
        super().__init__()
        if seg_size % SEG_DOWNSAMPLING:
            raise ValueError(f"seg_size must be a multiple of {SEG_DOWNSAMPLING}, got {seg_size}")
        self.max_instances = max_instances
        self.fourier_freqs = fourier_freqs
        self.scribble_points = scribble_points
        self.polygon_points = polygon_points
        self.seg_size = seg_size
        self.num_seg_tokens = (seg_size // SEG_DOWNSAMPLING) ** 2
        self.seg_feature_dim = 4 * convnext_dims[-1]
        box_dim, point_dim = 2 * fourier_freqs * 4, 2 * fourier_freqs * 2
        scribble_dim, polygon_dim = 2 * fourier_freqs * 2 * scribble_points, 2 * fourier_freqs * 2 * polygon_points

        self.in_conv = nn.Conv2d(max_instances, 3, 3, 1, 1)
        self.convnext_tiny_backbone = ConvNeXtFeatures(3, tuple(convnext_dims), tuple(convnext_depths))
        self.pos_embedding = nn.Parameter(torch.zeros(1, self.num_seg_tokens, self.seg_feature_dim))
        self.linears_list = nn.ModuleList(
            [_mlp(in_dim + d, mid_dim, out_dim) for d in (box_dim, point_dim, scribble_dim, polygon_dim)]
            + [_mlp(self.seg_feature_dim, mid_dim, out_dim)]
        )
        self.null_positive_feature = nn.Parameter(torch.zeros(in_dim))
        self.null_position_feature = nn.Parameter(torch.zeros(box_dim))
        self.null_point_feature = nn.Parameter(torch.zeros(point_dim))
        self.null_scribble_feature = nn.Parameter(torch.zeros(scribble_dim))
        self.null_polygon_feature = nn.Parameter(torch.zeros(polygon_dim))
        self.null_seg_feature = nn.Parameter(torch.zeros(self.seg_feature_dim))

    @property
    def num_tokens(self) -> int:
        return 4 * self.max_instances + self.num_seg_tokens

    def forward(
        self,
        boxes: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        positive_embeddings: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
        scribbles: torch.Tensor | None = None,
        polygons: torch.Tensor | None = None,
        segs: torch.Tensor | None = None,
        *,
        profile: Profile = "mask",
        objs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Shapes: boxes (B, N, 4) xyxy in [0, 1]; masks (B, N); positive_embeddings (B, N, in_dim);
        points (B, N, 2) (default: box centres); scribbles (B, N, 2·20); polygons (B, N, 2·256);
        segs (B, N, H, W) binary instance masks. N = 30. Returns (B, 184, out_dim)."""
        if objs is not None:
            return objs
        if boxes is None or masks is None or positive_embeddings is None:
            raise ValueError("the position net needs boxes, masks and positive_embeddings (or precomputed objs)")
        if profile not in PROFILE_DROPS:
            raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILE_DROPS)}")
        drop = dict(PROFILE_DROPS[profile])
        if all(drop.values()):  # the reference keeps boxes when everything else is dropped
            drop["box"] = False
        b, n, _ = boxes.shape
        if n != self.max_instances:
            raise ValueError(f"the position net takes exactly {self.max_instances} instance slots (padded), got {n}")
        dtype = self.null_positive_feature.dtype
        masks = masks.to(dtype).unsqueeze(-1)
        zeros = boxes.new_zeros
        if points is None:
            points = (boxes[..., :2] + boxes[..., 2:]) / 2
        if scribbles is None:
            scribbles = zeros(b, n, 2 * self.scribble_points)
        if polygons is None:
            polygons = zeros(b, n, 2 * self.polygon_points)

        def mixed(features: torch.Tensor, keep: torch.Tensor, null: torch.Tensor) -> torch.Tensor:
            features = features.to(dtype)
            return features * keep + (1 - keep) * null.view(1, 1, -1)

        no_slot = torch.zeros_like(masks)
        text = mixed(positive_embeddings, masks, self.null_positive_feature)
        ff = self.fourier_freqs
        box_tok = mixed(fourier_features(boxes, ff), no_slot if drop["box"] else masks, self.null_position_feature)
        point_tok = mixed(fourier_features(points, ff), no_slot if drop["point"] else masks, self.null_point_feature)
        # Scribbles and polygons: a slot is "present" if it is a real instance or has coordinates.
        scribble_keep = no_slot if drop["scribble"] else ((scribbles.sum(-1, keepdim=True).to(dtype) + masks) > 0).to(dtype)
        scribble_tok = mixed(fourier_features(scribbles, ff), scribble_keep, self.null_scribble_feature)
        polygon_keep = no_slot if drop["mask"] else ((polygons.sum(-1, keepdim=True).to(dtype) + masks) > 0).to(dtype)
        polygon_tok = mixed(fourier_features(polygons, ff), polygon_keep, self.null_polygon_feature)
        seg_tok = self._segmentation_tokens(segs, b, drop["mask"], dtype, boxes.device)

        tokens = [
            mlp(torch.cat([text, layout], dim=-1))
            for mlp, layout in zip(self.linears_list[:4], (box_tok, point_tok, scribble_tok, polygon_tok))
        ]
        tokens.append(self.linears_list[4](seg_tok))
        return torch.cat(tokens, dim=1)

    def _segmentation_tokens(
        self, segs: torch.Tensor | None, batch: int, dropped: bool, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """(B, 64, 4C): ConvNeXt features of the masks for samples that have any, else the null."""
        null = self.null_seg_feature.view(1, 1, -1).expand(batch, self.num_seg_tokens, -1)
        tokens = null.clone()
        if segs is not None and not dropped:
            has_mask = segs.flatten(1).sum(-1) > 0
            if bool(has_mask.any()):
                # Only samples with a mask run the trunk; the others would be multiplied by 0.
                x = segs[has_mask].to(dtype)
                if x.shape[-2:] != (self.seg_size, self.seg_size):
                    x = nn.functional.interpolate(x, size=self.seg_size, mode="nearest")
                features = self.convnext_tiny_backbone(self.in_conv(x))  # (b', C, s/32, s/32)
                # The reference reads the (C, h, w) memory as (4C, 64) — keep this exact reshape.
                features = features.reshape(features.shape[0], -1, self.num_seg_tokens).permute(0, 2, 1)
                tokens[has_mask] = features
        return tokens + self.pos_embedding.to(device)
