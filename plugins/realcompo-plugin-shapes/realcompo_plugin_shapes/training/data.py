"""A pool of pre-generated scenes as tensors on the training device.

Scenes are generated once, up front, in parallel processes (numpy only), then moved to the device:
a training step is pure tensor indexing, with no CPU work per step.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..captions import CaptionSpec
from ..scenes import generate_scenes
from ..world import COLOURS, MAX_OBJECTS, PLURALS, SHAPES, object_phrases

# Grounding phrases as a layout names them: the grammar's singular object phrases, plus the plural
# that a count caption's objects get from the rules planner ("two red stars" → 2 × "red stars").
PHRASES = object_phrases() + [f"{colour} {PLURALS[shape]}" for colour in COLOURS for shape in SHAPES]
_PHRASE_INDEX = {p: i for i, p in enumerate(PHRASES)}


def grounding_phrases(spec: CaptionSpec) -> list[str]:
    """The phrase of each object of a caption, as the rules planner lays the caption out."""
    if spec.form == "count":
        obj = spec.objects[0]
        return [f"{obj.colour} {PLURALS[obj.shape]}"] * len(spec.objects)
    return list(spec.phrases)
_CHUNK = 2000


def _generate_chunk(args: tuple[int, np.random.SeedSequence, str, bool]) -> dict[str, np.ndarray | list[str] | None]:
    n, seq, style, masks = args
    batch = generate_scenes(n, np.random.default_rng(seq), style=style, masks=masks)  # type: ignore[arg-type]
    phrase_idx = np.full((n, MAX_OBJECTS), -1, dtype=np.int64)
    for i, spec in enumerate(batch.specs):
        for k, phrase in enumerate(grounding_phrases(spec)):
            phrase_idx[i, k] = _PHRASE_INDEX[phrase]
    return {
        "images": batch.images,
        "captions": batch.captions,
        "phrase_idx": phrase_idx,
        "boxes": batch.boxes,
        "n_objects": batch.n_objects,
        "masks": batch.masks,
    }


@dataclass
class ScenePoolArrays:
    images: np.ndarray  # (N, 64, 64, 3) uint8
    captions: list[str]
    phrase_idx: np.ndarray  # (N, 4) int64 index into PHRASES, -1 padding
    boxes: np.ndarray  # (N, 4, 4) float32 normalised
    n_objects: np.ndarray  # (N,)
    masks: np.ndarray | None = None  # (N, 4, 64, 64) bool, when asked for


def build_pool(
    n: int, seed: int, workers: int | None = None, *, style: str = "real", masks: bool = False
) -> ScenePoolArrays:
    """`n` scenes, identical for a given (n, seed) whatever the number of workers. The two styles
    of one (n, seed) are the very same scenes (captions, layouts, boxes), rendered differently."""
    sizes = [min(_CHUNK, n - i) for i in range(0, n, _CHUNK)]
    seqs = np.random.SeedSequence(seed).spawn(len(sizes))
    jobs = [(size, seq, style, masks) for size, seq in zip(sizes, seqs)]
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
        masks=np.concatenate([p["masks"] for p in parts]) if masks else None,  # type: ignore[misc]
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


def caption_token_ids(captions: list[str], tokenizer: Any, max_length: int) -> np.ndarray:
    """Token ids padded to max_length, as SD pipelines tokenize prompts.

    Every grammar word is a single token, so a word → id table is exact and 100× faster than
    the BPE tokenizer; it is checked against the tokenizer on a sample before use.
    """
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    table: dict[str, int] = {}
    for word in {w for c in captions[:5000] for w in c.replace(",", " ,").split()}:
        ids = tokenizer(word).input_ids
        if len(ids) != 3:
            break
        table[word] = ids[1]
    out = np.full((len(captions), max_length), eos, dtype=np.int64)
    out[:, 0] = bos
    try:
        for i, c in enumerate(captions):
            words = c.replace(",", " ,").split()[: max_length - 2]
            out[i, 1 : 1 + len(words)] = [table[w] for w in words]
    except KeyError:
        return tokenizer(
            captions, padding="max_length", max_length=max_length, truncation=True, return_tensors="np"
        ).input_ids
    check = tokenizer(
        captions[:256], padding="max_length", max_length=max_length, truncation=True, return_tensors="np"
    ).input_ids
    if not np.array_equal(check, out[:256]):
        return tokenizer(
            captions, padding="max_length", max_length=max_length, truncation=True, return_tensors="np"
        ).input_ids
    return out


# --------------------------------------------------------------------------- the run


def control_maps(
    boxes: torch.Tensor, masks: torch.Tensor, colours: torch.Tensor, present: torch.Tensor, use_mask: torch.Tensor
) -> torch.Tensor:
    """The `controlnet-seg` control images of a batch of scenes, (B, 3, H, W) in [0, 1].

    boxes (B, K, 4) normalised, masks (B, K, H, W) bool, colours (B, K, 3) uint8 label colours,
    present (B, K) bool, use_mask (B,) bool: paint the masks, else the filled boxes (pixel centres
    inside the box, as `segmentation.region_pixels`). Objects are painted in order, as the adapter
    paints a layout; the tests check equality with `segmentation.render_segmentation`."""
    b, k, h, w = masks.shape
    ys = (torch.arange(h, device=boxes.device) + 0.5) / h
    xs = (torch.arange(w, device=boxes.device) + 0.5) / w
    x0, y0, x1, y1 = (boxes[..., i, None, None] for i in range(4))
    in_box = (ys[:, None] >= y0) & (ys[:, None] < y1) & (xs[None, :] >= x0) & (xs[None, :] < x1)
    region = torch.where(use_mask[:, None, None, None], masks, in_box) & present[..., None, None]
    rgb = colours.float() / 255.0
    canvas = torch.zeros(b, 3, h, w, device=boxes.device)
    for slot in range(k):
        canvas = torch.where(region[:, slot, None], rgb[:, slot, :, None, None], canvas)
    return canvas
