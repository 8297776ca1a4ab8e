"""A pool of pre-generated scenes as tensors on the training device.

Scenes are generated once, up front, in parallel processes (numpy only), then moved to the device:
a training step is pure tensor indexing, with no CPU work per step.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from ..scenes import generate_scenes
from ..world import MAX_OBJECTS, object_phrases

PHRASES = object_phrases()
_PHRASE_INDEX = {p: i for i, p in enumerate(PHRASES)}
_CHUNK = 2000


def _generate_chunk(args: tuple[int, np.random.SeedSequence]) -> dict[str, np.ndarray | list[str]]:
    n, seq = args
    batch = generate_scenes(n, np.random.default_rng(seq), masks=False)
    phrase_idx = np.full((n, MAX_OBJECTS), -1, dtype=np.int64)
    for i, spec in enumerate(batch.specs):
        for k, phrase in enumerate(spec.phrases):
            phrase_idx[i, k] = _PHRASE_INDEX[phrase]
    return {
        "images": batch.images,
        "captions": batch.captions,
        "phrase_idx": phrase_idx,
        "boxes": batch.boxes,
        "n_objects": batch.n_objects,
    }


@dataclass
class ScenePoolArrays:
    images: np.ndarray  # (N, 64, 64, 3) uint8
    captions: list[str]
    phrase_idx: np.ndarray  # (N, 4) int64 index into PHRASES, -1 padding
    boxes: np.ndarray  # (N, 4, 4) float32 normalised
    n_objects: np.ndarray  # (N,)


def build_pool(n: int, seed: int, workers: int | None = None) -> ScenePoolArrays:
    """`n` scenes, identical for a given (n, seed) whatever the number of workers."""
    sizes = [min(_CHUNK, n - i) for i in range(0, n, _CHUNK)]
    seqs = np.random.SeedSequence(seed).spawn(len(sizes))
    jobs = list(zip(sizes, seqs))
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    if workers > 1 and len(jobs) > 1:
        # fork: the children only run numpy; the parent has not touched CUDA yet.
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(workers, mp_context=mp.get_context(method)) as ex:
            parts = list(ex.map(_generate_chunk, jobs))
    else:
        parts = [_generate_chunk(job) for job in jobs]
    return ScenePoolArrays(
        images=np.concatenate([p["images"] for p in parts]),  # type: ignore[misc]
        captions=[c for p in parts for c in p["captions"]],  # type: ignore[union-attr]
        phrase_idx=np.concatenate([p["phrase_idx"] for p in parts]),  # type: ignore[misc]
        boxes=np.concatenate([p["boxes"] for p in parts]),  # type: ignore[misc]
        n_objects=np.concatenate([p["n_objects"] for p in parts]),  # type: ignore[misc]
    )


def gligen_inputs(
    boxes: torch.Tensor, phrase_idx: torch.Tensor, phrase_table: torch.Tensor, keep: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """GLIGEN's grounding inputs for scenes: (B, 4) object slots padded to the 30 slots diffusers'
    pipeline uses. `phrase_idx` is -1 for empty slots; `keep` (B,) in {0, 1} switches a scene's
    grounding off (all masks 0), as for classifier-free guidance."""
    from .models import MAX_OBJS

    b, k = phrase_idx.shape
    present = (phrase_idx >= 0).to(phrase_table.dtype)
    masks = present if keep is None else present * keep[:, None]
    out = {
        "boxes": boxes.new_zeros(b, MAX_OBJS, 4),
        "positive_embeddings": phrase_table.new_zeros(b, MAX_OBJS, phrase_table.shape[1]),
        "masks": phrase_table.new_zeros(b, MAX_OBJS),
    }
    out["boxes"][:, :k] = boxes * present[..., None]
    out["positive_embeddings"][:, :k] = phrase_table[phrase_idx.clamp(min=0)] * present[..., None]
    out["masks"][:, :k] = masks
    return out
