"""InstanceDiffusion grounding inputs: a `Layout` → the 30-slot arrays the position net reads.

InstanceDiffusion pads every request to `MAX_INSTANCES` = 30 instance slots. Per slot
(coordinates normalised to [0, 1], x first):

| field       | shape          | content                                                                  |
|-------------|----------------|--------------------------------------------------------------------------|
| `boxes`     | (30, 4)        | x0, y0, x1, y1                                                           |
| `masks`     | (30,)          | 1 for a real instance (slot validity, not a segmentation)               |
| `points`    | (30, 2)        | the instance point; the box centre when the object has none             |
| `scribbles` | (30, 2·20)     | 20 points x1, y1, x2, y2, ... (`reorder_scribbles`)                     |
| `polygons`  | (30, 2·256)    | 256 boundary and interior points (`sample_sparse_points_from_mask`)      |
| `segs`      | (30, 512, 512) | the instance mask, resized to 512²                                      |

Empty slots and missing modalities are zeros; the position net turns them into its learned nulls
(or, for scribbles and polygons of a real instance, into the features of zero coordinates — the
official rule, see `position_net.py`).

How a layout object maps (`layout_to_instdiff`):

- box: `boxes`; point = box centre.
- mask (on its own pixel grid, normalised by its own width and height): `boxes` = the mask's
  bounding box (pixel edges, as the core's `Mask.bounding_box`); `polygons` = 256 points from
  `sample_sparse_points_from_mask`; `segs` = the mask resized to 512² (nearest by default);
  `scribbles` = 20 random mask pixels (`sample_random_points_from_mask`), as the official code
  does for every masked instance without a user scribble (only the scribble profile reads them).
- point: `points`; `boxes` zeros (the official point profile drops boxes). With
  `per_instance_modalities=True` the box is instead the core's padded box around the point
  (`LayoutObject.bounding_box()`, ±0.05): a zero box is the Fourier code of a box at the top-left
  corner, which a profile that reads boxes would take literally. `has_modality[:, 0]` stays 0 for
  such a derived box.
- scribble: `scribbles` = `reorder_scribbles` of the points in pixels (x·width, y·height; values
  within 1e-6 px of an integer are snapped to it so pixel ties stay exact ties), normalised back by
  width and height; `boxes` = the extent of all the scribble's points (unpadded); point = its centre.

The deterministic paths reproduce the official functions exactly (same skimage calls, same sort
keys — `np.linalg.norm` of each point, the same stable ordering). Randomness comes only from the
generator passed in (`np.random.default_rng(seed)` in `layout_to_instdiff`); the global numpy and
`random` states are never touched. The samplers also accept a `random.Random` or a legacy
`np.random.RandomState`, so a parity test can reproduce the official global-RNG draws exactly.

Deliberate deviations from the official code (frank-xwang/InstanceDiffusion):
- more than 30 objects is an error (the official code silently keeps the first or largest 30);
- masks given in the JSON are used (the official `inference.py` resets them, issues #7 and #48);
- scribbles are resampled per object (`inference.py` calls `reorder_scribbles` on the list of
  all objects' scribbles, which reorders and resamples objects instead of points);
- polygons and mask-sampled scribbles are normalised by the mask's own size (the official code
  divides by the image's, which differs only when the mask's size differs from the image's;
  `prepare_scribble_and_instmask` even divides 512²-grid scribbles by the image size).
"""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from realcompo_sdk.errors import LayoutError
from realcompo_sdk.layout import Box, Layout, LayoutObject, Mask, Point

if TYPE_CHECKING:
    import torch

MAX_INSTANCES = 30
SEG_SIZE = 512
N_SCRIBBLE = 20
N_POLYGON = 256
PROFILES = ("box", "mask", "point", "scribble")
# Columns of `InstDiffInputs.has_modality`.
MODALITIES = ("box", "point", "scribble", "mask")
SEG_RESIZE_MODES = ("nearest", "bilinear")
# The region kind each profile needs from every object (without per_instance_modalities).
PROFILE_KIND = {"box": "box", "mask": "mask", "point": "point", "scribble": "scribble"}
# `official_json_to_layout`: which annotation field becomes the object's one region, best first.
JSON_REGION_PRIORITY = ("mask", "scribble", "box", "point")

Rng = np.random.Generator | np.random.RandomState | random.Random


# ---------------------------------------------------------------------------------------------
# Sort keys and random draws
# ---------------------------------------------------------------------------------------------


def _norm_keys(vectors: np.ndarray) -> np.ndarray:
    """Euclidean norms of the rows, bit-identical to `np.linalg.norm(row)` on each row.

    The official code sorts with `key=lambda p: np.linalg.norm(p - c)`, which goes through BLAS
    `dot` (often fused multiply-add), so its values can differ by an ulp from a vectorised
    formula, and mathematically tied points (e.g. mirror pixels around a centroid) then order
    differently. We compute a vectorised approximation and recompute with `np.linalg.norm` every
    row that lies within 1e-12 (relative) of a neighbour: rows farther apart order the same
    under either formula.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    n = len(vectors)
    if n <= 64:
        return np.array([np.linalg.norm(v) for v in vectors], dtype=np.float64)
    keys = np.sqrt((vectors * vectors).sum(axis=1))
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    close = np.diff(ordered) <= 1e-12 * ordered[1:]
    near = np.zeros(n, dtype=bool)
    near[:-1] |= close
    near[1:] |= close
    refine = order[near]
    keys[refine] = [np.linalg.norm(v) for v in vectors[refine]]
    return keys


def _order_by_norm(vectors: np.ndarray) -> np.ndarray:
    """Indices sorting rows by their norm, ties kept in input order (Python's `sorted`)."""
    return np.argsort(_norm_keys(vectors), kind="stable")


def _draws_with_replacement(rng: Rng | None, n: int, k: int) -> np.ndarray:
    """k indices in [0, n), uniform, with replacement."""
    rng = np.random.default_rng(0) if rng is None else rng
    if isinstance(rng, random.Random):
        # Same draws as the official `random.choice(seq)` for a `random.Random` in the same state.
        population = range(n)
        return np.array([rng.choice(population) for _ in range(k)], dtype=np.int64)
    if isinstance(rng, np.random.RandomState):
        return np.asarray(rng.randint(0, n, size=k), dtype=np.int64)
    return np.asarray(rng.integers(0, n, size=k), dtype=np.int64)


def _choice(rng: Rng | None, n: int, k: int, replace: bool) -> np.ndarray:
    """Like `np.random.choice(n, k, replace=replace)`, from the given generator."""
    rng = np.random.default_rng(0) if rng is None else rng
    if isinstance(rng, random.Random):
        picked = rng.choices(range(n), k=k) if replace else rng.sample(range(n), k)
        return np.array(picked, dtype=np.int64)
    return np.asarray(rng.choice(n, k, replace=replace), dtype=np.int64)


def _as_binary_mask(mask: Any) -> np.ndarray:
    """(H, W) or (H, W, 1) array, bool or numeric → (H, W) uint8 0/1 (any non-zero is 1)."""
    a = np.asarray(mask)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim != 2:
        raise ValueError(f"a mask must have shape (H, W) or (H, W, 1), got {a.shape}")
    return (a != 0).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Point sampling (the official dataset/decode_item.py semantics)
# ---------------------------------------------------------------------------------------------


def mask_contour_points(mask: np.ndarray) -> np.ndarray:
    """All contour vertices of a binary mask, (n, 2) float64 pixel (x, y), contours concatenated.

    As the official `binary_mask_to_polygon(mask, tolerance=0)`: the mask is padded by one pixel
    and the coordinates keep that +1 offset; the tolerance is also passed as the contour *level*,
    so contours run through the centres of the background pixels next to the object (integer
    coordinates); contours are closed, simplified with tolerance 0 (a no-op), and contours with
    fewer than 3 vertices are dropped.
    """
    from skimage import measure

    padded = np.pad(_as_binary_mask(mask), 1, mode="constant", constant_values=0)
    pieces = []
    for contour in measure.find_contours(padded, 0.0):
        if not np.array_equal(contour[0], contour[-1]):
            contour = np.vstack((contour, contour[0]))
        contour = measure.approximate_polygon(contour, 0.0)
        if len(contour) < 3:
            continue
        pieces.append(np.maximum(contour[:, ::-1], 0.0))  # (row, col) → (x, y); no negatives
    if not pieces:
        return np.zeros((0, 2), dtype=np.float64)
    return np.concatenate(pieces).astype(np.float64)


def _interior_points(mask01: np.ndarray, k: int, rng: Rng | None) -> np.ndarray:
    """k interior pixels (x, y): the middle pixel of each of k equal segments of the foreground
    sorted by distance to its centroid; with fewer than k pixels, k uniform draws with
    replacement (official `sample_uniform_sparse_points`)."""
    foreground = np.argwhere(mask01 == 1)  # (row, col), row-major order
    if len(foreground) == 0 or k <= 0:
        return np.zeros((0, 2), dtype=np.float64)
    if len(foreground) < k:
        picked = foreground[_draws_with_replacement(rng, len(foreground), k)]
    else:
        centre = np.mean(foreground, axis=0)
        ordered = foreground[_order_by_norm(foreground - centre)]
        per_segment = len(foreground) // k
        picked = ordered[np.arange(k) * per_segment + per_segment // 2]
    return picked[:, ::-1].astype(np.float64)


def sample_sparse_points_from_mask(mask: np.ndarray, k: int = N_POLYGON, rng: Rng | None = None) -> np.ndarray:
    """The official polygon points of a mask: (k, 2) float64 pixel (x, y), sorted by distance
    to (0, 0) (ties: interior points first, then in sampling order).

    k//2 boundary points: the contour vertices of `mask_contour_points` (with its +1 padding
    offset) at indices `int(linspace(0, n - 1, k//2))`. k - k//2 interior points: see
    `_interior_points`; only a mask with fewer than k - k//2 pixels uses `rng`. An empty mask
    gives all zeros (the official function returns None and its callers use zeros).
    """
    mask01 = _as_binary_mask(mask)
    contour = mask_contour_points(mask01)
    if len(contour) == 0:
        return np.zeros((k, 2), dtype=np.float64)
    n_boundary = k // 2
    indices = np.linspace(0, len(contour) - 1, n_boundary).astype(np.int64)  # int() truncates
    boundary = contour[indices]
    inside = _interior_points(mask01, k - len(boundary), rng)
    points = np.concatenate([inside, boundary])
    return points[_order_by_norm(points)]


def sample_random_points_from_mask(mask: np.ndarray, k: int = N_SCRIBBLE, rng: Rng | None = None) -> np.ndarray:
    """k random foreground pixels, (k, 2) float64 pixel (x, y), sorted by distance to (0, 0).

    Official `sample_random_points_from_mask`: without replacement when the mask has at least k
    pixels, with replacement otherwise; an empty mask gives zeros. `rng.choice(n, k, replace)`
    replaces the official `np.random.choice`.
    """
    foreground = np.argwhere(_as_binary_mask(mask))
    if len(foreground) == 0:
        return np.zeros((k, 2), dtype=np.float64)
    picked = foreground[_choice(rng, len(foreground), k, replace=len(foreground) < k)]
    picked = picked[_order_by_norm(picked)]
    return picked[:, ::-1].astype(np.float64)


def reorder_scribbles(points: np.ndarray, k: int = N_SCRIBBLE, rng: Rng | None = None) -> np.ndarray:
    """The official `reorder_scribbles`: (n, 2) points → (k, 2) float64.

    Sort by distance to (0, 0) (stable); take k points at equal spacing — indices i·(n // k) when
    n ≥ k, else (i·n) // k, repeating points; sort again. Deterministic: `rng` is accepted for a
    uniform signature and not used. No points give zeros.
    """
    del rng
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    n = len(pts)
    if n == 0:
        return np.zeros((k, 2), dtype=np.float64)
    pts = pts[_order_by_norm(pts)]
    if k <= n:
        indices = np.arange(k) * (n // k)
    else:
        indices = (np.arange(k) * n) // k % n
    pts = pts[indices]
    return pts[_order_by_norm(pts)]


def convert_points(points: np.ndarray, width: float, height: float) -> np.ndarray:
    """Pixel (x, y) → normalised, each coordinate clamped to ≤ 1 (official `convert_points`)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    out = np.empty_like(pts)
    out[:, 0] = np.minimum(pts[:, 0] / width, 1.0)
    out[:, 1] = np.minimum(pts[:, 1] / height, 1.0)
    return out


# ---------------------------------------------------------------------------------------------
# COCO RLE
# ---------------------------------------------------------------------------------------------


def _counts_from_string(counts: str | bytes) -> list[int]:
    """Decode COCO's compressed RLE string (pycocotools' `rleFrString` format).

    Each count is written in 5-bit groups, least significant first, as characters 48 + group,
    with 0x20 set on every group but the last and 0x10 of the last group as the sign; from the
    fourth count on, the value stored is the difference to the count two places earlier.
    """
    data = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    out: list[int] = []
    p = 0
    while p < len(data):
        value = 0
        shift = 0
        while True:
            if p >= len(data):
                raise ValueError("compressed RLE string ends in the middle of a count")
            c = data[p] - 48
            if not 0 <= c < 64:
                raise ValueError(f"compressed RLE string has an invalid character {chr(data[p])!r} at {p}")
            value |= (c & 0x1F) << shift
            p += 1
            shift += 5
            if not c & 0x20:
                if c & 0x10:
                    value |= -1 << shift  # negative: sign-extend
                break
        if len(out) > 2:
            value += out[-2]
        out.append(value)
    return out


def decode_coco_rle(rle: Mapping[str, Any] | Any) -> np.ndarray:
    """A COCO RLE → (h, w) uint8 0/1 mask.

    `rle` is `{"size": [h, w], "counts": ...}` (or an object with `size` and `counts`, such as
    the core's `RLE`). `counts` is either the uncompressed list of run lengths or the compressed
    string (bytes or str) that pycocotools writes. Runs alternate 0, 1, 0, ... starting with
    zeros, over the pixels in column-major order.
    """
    if isinstance(rle, Mapping):
        size, counts = rle.get("size"), rle.get("counts")
    else:
        size, counts = getattr(rle, "size", None), getattr(rle, "counts", None)
    if size is None or counts is None or len(size) != 2:
        raise ValueError("a COCO RLE needs 'size' [height, width] and 'counts'")
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"RLE size must be positive, got {list(size)}")
    runs = _counts_from_string(counts) if isinstance(counts, (str, bytes, bytearray)) else [int(c) for c in counts]
    if any(c < 0 for c in runs):
        raise ValueError("RLE counts must be non-negative")
    if sum(runs) != h * w:
        raise ValueError(f"RLE counts sum to {sum(runs)} but size {h}x{w} needs {h * w}")
    values = np.arange(len(runs), dtype=np.int64) % 2
    flat = np.repeat(values.astype(np.uint8), runs)
    return flat.reshape(w, h).T.copy()


def _encode_uncompressed_rle(mask01: np.ndarray) -> dict[str, Any]:
    """(h, w) 0/1 → `{"size": [h, w], "counts": [...]}` uncompressed, column-major."""
    flat = mask01.T.reshape(-1).astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:
        runs = [0, *runs]
    return {"size": [int(mask01.shape[0]), int(mask01.shape[1])], "counts": [int(r) for r in runs]}


def _mask_array(mask: Mask) -> np.ndarray:
    """The core `Mask` → (h, w) uint8 0/1 (faster than `Mask.to_rows`)."""
    if mask.rows is not None:
        return (np.asarray(mask.rows) != 0).astype(np.uint8)
    assert mask.rle is not None
    return decode_coco_rle(mask.rle)


def resize_seg(mask01: np.ndarray, mode: str = "nearest", size: int = SEG_SIZE) -> np.ndarray:
    """A mask → (size, size) float32.

    "nearest": PIL NEAREST, as the official evaluation path (`prepare_scribble_and_instmask`) and
    the training crops; values stay 0/1. "bilinear": skimage `resize` with its defaults (order 1,
    anti-aliasing when shrinking, reflect mode), as the official `inference.py` would apply if it
    did not discard the masks; values are soft in [0, 1] (not thresholded, as there).
    """
    mask01 = _as_binary_mask(mask01)
    if mode == "nearest":
        from PIL import Image

        image = Image.fromarray(mask01)  # uint8 (H, W): mode "L", as the official uint8 masks
        return np.asarray(image.resize((size, size), resample=Image.Resampling.NEAREST), dtype=np.float32)
    if mode == "bilinear":
        from skimage.transform import resize

        return resize(mask01.astype(np.float32)[:, :, None], (size, size, 1))[:, :, 0].astype(np.float32)
    raise ValueError(f"unknown seg_resize {mode!r}; choose one of {', '.join(SEG_RESIZE_MODES)}")


# ---------------------------------------------------------------------------------------------
# The inputs
# ---------------------------------------------------------------------------------------------


def _zeros(*shape: int) -> np.ndarray:
    return np.zeros(shape, dtype=np.float32)


@dataclass
class InstDiffInputs:
    """The 30-slot grounding inputs of one sample (numpy, zero-padded; see the module docstring).

    `has_modality` (30, 4) bool, columns `MODALITIES` (box, point, scribble, mask), says which
    modalities of a slot come from the object itself or from the official derivations (a mask's
    box, a box's centre point, a mask's random scribble); it is False for padding slots and for
    stand-ins such as a point object's derived box. The official model does not read it (its
    modality drops are global per profile); a position net with per-instance nulls can.
    """

    phrases: list[str]
    profile: str
    boxes: np.ndarray = field(default_factory=lambda: _zeros(MAX_INSTANCES, 4))
    masks: np.ndarray = field(default_factory=lambda: _zeros(MAX_INSTANCES))
    points: np.ndarray = field(default_factory=lambda: _zeros(MAX_INSTANCES, 2))
    scribbles: np.ndarray = field(default_factory=lambda: _zeros(MAX_INSTANCES, 2 * N_SCRIBBLE))
    polygons: np.ndarray = field(default_factory=lambda: _zeros(MAX_INSTANCES, 2 * N_POLYGON))
    segs: np.ndarray = field(default_factory=lambda: _zeros(MAX_INSTANCES, SEG_SIZE, SEG_SIZE))
    has_modality: np.ndarray = field(default_factory=lambda: np.zeros((MAX_INSTANCES, len(MODALITIES)), dtype=bool))
    per_instance_modalities: bool = False

    TENSOR_KEYS = ("boxes", "masks", "points", "scribbles", "polygons", "segs")

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; choose one of {', '.join(PROFILES)}")
        if len(self.phrases) > MAX_INSTANCES:
            raise ValueError(f"at most {MAX_INSTANCES} phrases, got {len(self.phrases)}")
        shapes = {
            "boxes": (MAX_INSTANCES, 4),
            "masks": (MAX_INSTANCES,),
            "points": (MAX_INSTANCES, 2),
            "scribbles": (MAX_INSTANCES, 2 * N_SCRIBBLE),
            "polygons": (MAX_INSTANCES, 2 * N_POLYGON),
            "segs": (MAX_INSTANCES, SEG_SIZE, SEG_SIZE),
            "has_modality": (MAX_INSTANCES, len(MODALITIES)),
        }
        for name, shape in shapes.items():
            value = np.asarray(getattr(self, name), dtype=bool if name == "has_modality" else np.float32)
            if value.shape != shape:
                raise ValueError(f"InstDiffInputs.{name} must have shape {shape}, got {value.shape}")
            setattr(self, name, value)

    @property
    def num_instances(self) -> int:
        return len(self.phrases)

    @classmethod
    def null(cls, profile: str = "box") -> InstDiffInputs:
        """All-zero inputs, no instance: the unconditional branch (official `get_null_input`)."""
        return cls(phrases=[], profile=profile)

    def to_torch(self, device: torch.device | str, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Batched tensors [1, ...] for the position net: boxes, masks, points, scribbles,
        polygons, segs (dtype float32 unless given)."""
        import torch

        dtype = torch.float32 if dtype is None else dtype
        return {
            key: torch.from_numpy(np.ascontiguousarray(getattr(self, key))).unsqueeze(0).to(device=device, dtype=dtype)
            for key in self.TENSOR_KEYS
        }


def _where(layout: Layout, index: int) -> str:
    return layout.describe_error_location(index)


def _auto_profile(kinds: Sequence[str], per_instance: bool) -> str:
    present = set(kinds)
    if per_instance:
        # The richest official profile that reads every kind present: only "scribble" reads
        # scribbles (and it reads masks too), "mask" reads masks, boxes and points.
        for profile in ("scribble", "mask", "box"):
            if profile in present:
                return profile
        return "point"
    if "mask" in present:
        return "mask"
    if "scribble" in present:
        return "scribble"
    if present == {"point"}:
        return "point"
    return "box"


def _fix_hint(requested: str, chosen: str) -> str:
    alternative = "" if requested == "auto" else ', choose the profile that fits the layout (profile="auto")'
    return (
        f"give it a {PROFILE_KIND[chosen]} region{alternative}, or set per_instance_modalities=True "
        "(a non-official generalisation: each object fills the modalities it has, the rest stay zero)"
    )


def choose_profile(layout: Layout, *, profile: str = "auto", per_instance_modalities: bool = False) -> str:
    """The official profile for `layout`, or a `LayoutError` naming the object that does not fit
    (too many objects, keypoints, mixed kinds): the checks of `layout_to_instdiff` without
    building any array."""
    if profile != "auto" and profile not in PROFILES:
        raise ValueError(f'unknown profile {profile!r}; choose "auto" or one of {", ".join(PROFILES)}')
    objects = layout.objects
    if len(objects) > MAX_INSTANCES:
        raise LayoutError(
            f"InstanceDiffusion takes at most {MAX_INSTANCES} objects; the layout has {len(objects)} "
            f"(the official code silently drops the rest). Merge or drop objects, e.g. group many "
            f"small ones under one phrase with one box or mask, so that at most {MAX_INSTANCES} remain."
        )
    for i, obj in enumerate(objects):
        if obj.kind == "keypoints":
            raise LayoutError(
                f"{_where(layout, i)}: keypoints (OpenPose body joints) are not an InstanceDiffusion "
                "input; InstanceDiffusion takes one location per instance. Give the object a 'point' "
                "(e.g. the body centre) or a 'box', 'mask' or 'scribble' instead."
            )
    kinds = [obj.kind for obj in objects]
    chosen = _auto_profile(kinds, per_instance_modalities) if profile == "auto" else profile
    if not per_instance_modalities:
        needed = PROFILE_KIND[chosen]
        for i, kind in enumerate(kinds):
            if kind != needed:
                how = "chosen automatically" if profile == "auto" else "requested"
                raise LayoutError(
                    f"{_where(layout, i)}: has a {kind} region, but the InstanceDiffusion profile "
                    f"{chosen!r} ({how}; layout kinds: {', '.join(sorted(set(kinds)))}) needs a "
                    f"{needed} region on every object. Fix: {_fix_hint(profile, chosen)}."
                )
    return chosen


def layout_to_instdiff(
    layout: Layout,
    *,
    width: int,
    height: int,
    profile: str = "auto",
    seed: int,
    per_instance_modalities: bool = False,
    seg_resize: str = "nearest",
) -> InstDiffInputs:
    """Map a `Layout` onto InstanceDiffusion's inputs (module docstring: the rules per kind).

    `width`/`height` are the image size in pixels; they matter for scribbles (sorted in pixel
    space, as the model was trained). `profile` is one of `PROFILES` or "auto": any mask → "mask";
    else any scribble → "scribble"; else all points → "point"; else "box". Without
    `per_instance_modalities` every object must have the region kind its profile needs (box:
    box, mask: mask, point: point, scribble: scribble), as in the official profiles. With it,
    objects may mix kinds; "auto" then picks the richest profile present (scribble > mask > box >
    point) and each object fills only what it has. Randomness: `np.random.default_rng(seed)`.
    """
    if int(width) <= 0 or int(height) <= 0:
        raise ValueError(f"width and height must be positive pixels, got {width}x{height}")
    if seg_resize not in SEG_RESIZE_MODES:
        raise ValueError(f"unknown seg_resize {seg_resize!r}; choose one of {', '.join(SEG_RESIZE_MODES)}")
    objects = layout.objects
    chosen = choose_profile(layout, profile=profile, per_instance_modalities=per_instance_modalities)

    rng = np.random.default_rng(seed)
    out = InstDiffInputs(
        phrases=[obj.phrase for obj in objects], profile=chosen, per_instance_modalities=per_instance_modalities
    )
    box_col, point_col, scribble_col, mask_col = range(len(MODALITIES))
    for i, obj in enumerate(objects):
        out.masks[i] = 1.0
        box: tuple[float, float, float, float] | None = None
        point: tuple[float, float] | None = None
        if obj.box is not None:
            box = obj.box.as_tuple()
        elif obj.mask is not None:
            mask01 = _mask_array(obj.mask)
            mh, mw = mask01.shape
            box = _mask_bbox(mask01)
            scribble = sample_random_points_from_mask(mask01, N_SCRIBBLE, rng)
            out.scribbles[i] = convert_points(scribble, mw, mh).reshape(-1)
            polygon = sample_sparse_points_from_mask(mask01, N_POLYGON, rng)
            out.polygons[i] = convert_points(polygon, mw, mh).reshape(-1)
            out.segs[i] = resize_seg(mask01, seg_resize)
            out.has_modality[i, scribble_col] = True
            out.has_modality[i, mask_col] = True
        elif obj.scribble is not None:
            raw = np.array([(p.x, p.y) for p in obj.scribble], dtype=np.float64)
            pixels = _snap(raw * np.array([width, height], dtype=np.float64))
            out.scribbles[i] = convert_points(reorder_scribbles(pixels, N_SCRIBBLE), width, height).reshape(-1)
            box = (float(raw[:, 0].min()), float(raw[:, 1].min()), float(raw[:, 0].max()), float(raw[:, 1].max()))
            out.has_modality[i, scribble_col] = True
        else:
            assert obj.point is not None
            point = (obj.point.x, obj.point.y)
            if per_instance_modalities:
                out.boxes[i] = obj.bounding_box().as_tuple()
        if box is not None:
            out.boxes[i] = box
            out.has_modality[i, box_col] = True
            if point is None:
                point = ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)
        assert point is not None
        out.points[i] = point
        out.has_modality[i, point_col] = True
    return out


def _mask_bbox(mask01: np.ndarray) -> tuple[float, float, float, float]:
    """Pixel-edge bounding box of a non-empty mask, normalised by its size (as `Mask.bounding_box`)."""
    h, w = mask01.shape
    ys = np.flatnonzero(mask01.any(axis=1))
    xs = np.flatnonzero(mask01.any(axis=0))
    return (int(xs[0]) / w, int(ys[0]) / h, (int(xs[-1]) + 1) / w, (int(ys[-1]) + 1) / h)


def _snap(pixels: np.ndarray) -> np.ndarray:
    """Snap values within 1e-6 px of an integer to it (undoes x/width·width rounding)."""
    rounded = np.round(pixels)
    return np.where(np.abs(pixels - rounded) < 1e-6, rounded, pixels)


# ---------------------------------------------------------------------------------------------
# The official demos/*.json format
# ---------------------------------------------------------------------------------------------


def _clip01(v: float) -> float:
    return min(1.0, max(0.0, float(v)))


def official_json_to_layout(data: Mapping[str, Any] | str | Path) -> tuple[Layout, dict[str, Any]]:
    """Read the official `demos/*.json` format into a `Layout` plus extras.

    Input: `{caption, width, height, annos: [{caption, bbox: [x, y, w, h] px, mask: COCO RLE (compressed
    string or counts list) or [], point: [x, y] px, scribble: [[x, y], ...] px, category_name}]}`
    (a path, JSON text or the parsed dict). The official format lets an annotation carry several
    regions at once; a layout object has exactly one, chosen by `JSON_REGION_PRIORITY`: mask >
    scribble (≥ 2 points) > box (non-empty after clipping to the image) > point — the richest
    shape wins, the others are derived from it in `layout_to_instdiff` (a mask's box, a box's
    centre point). Coordinates are divided by width/height and clipped to [0, 1]. The phrase is
    the annotation's caption (its category_name when the caption is empty). An annotation with no
    usable region (e.g. a zero-size box and no mask) is skipped with a warning and listed in
    `extras["skipped"]`. Unlike the official `inference.py`, masks are used, not discarded.

    Extras: `width`, `height`, `caption`, and per layout object (aligned with `layout.objects`)
    `anno_index` (its index in `annos`), `kinds` (the region chosen), and the original pixel
    values `boxes` ([x, y, w, h] or None), `points` ([x, y] or None), `scribbles` (or None),
    `category_names`; `skipped`: [(anno index, caption, reason)].
    """
    if isinstance(data, Path) or (isinstance(data, str) and not data.lstrip().startswith("{")):
        data = json.loads(Path(data).read_text())
    elif isinstance(data, str):
        data = json.loads(data)
    if not isinstance(data, Mapping):
        raise LayoutError("an InstanceDiffusion JSON must be an object with caption, width, height and annos")
    missing = [k for k in ("caption", "width", "height", "annos") if k not in data]
    if missing:
        raise LayoutError(
            f"the InstanceDiffusion JSON lacks {', '.join(missing)}; it needs caption, width, height and annos"
        )
    width, height = float(data["width"]), float(data["height"])
    if width <= 0 or height <= 0:
        raise LayoutError(f"the InstanceDiffusion JSON has a non-positive size {data['width']}x{data['height']}")
    extras: dict[str, Any] = {
        "width": data["width"],
        "height": data["height"],
        "caption": data["caption"],
        "anno_index": [],
        "kinds": [],
        "boxes": [],
        "points": [],
        "scribbles": [],
        "category_names": [],
        "skipped": [],
    }
    objects: list[LayoutObject] = []
    for j, anno in enumerate(data["annos"]):
        phrase = str(anno.get("caption") or anno.get("category_name") or "").strip()
        where = f"annotation {j} ({phrase!r})"
        if not phrase:
            raise LayoutError(
                f"annotation {j}: has neither caption nor category_name; give it a caption naming the object"
            )
        region: dict[str, Any] | None = None
        kind = None
        for candidate in JSON_REGION_PRIORITY:
            try:
                region = _json_region(anno, candidate, width, height)
            except ValueError as exc:
                raise LayoutError(f"{where}: invalid {candidate}: {exc}") from exc
            if region is not None:
                kind = candidate
                break
        if region is None:
            reason = "no usable region (mask, scribble with ≥ 2 points, non-empty box or point)"
            warnings.warn(f"InstanceDiffusion JSON: skipping {where}: {reason}", stacklevel=2)
            extras["skipped"].append((j, phrase, reason))
            continue
        objects.append(LayoutObject(phrase=phrase, **region))
        extras["anno_index"].append(j)
        extras["kinds"].append(kind)
        extras["boxes"].append(list(anno["bbox"]) if anno.get("bbox") else None)
        extras["points"].append(list(anno["point"]) if anno.get("point") else None)
        extras["scribbles"].append([list(p) for p in anno["scribble"]] if anno.get("scribble") else None)
        extras["category_names"].append(anno.get("category_name", ""))
    if not objects:
        raise LayoutError("the InstanceDiffusion JSON has no annotation with a usable region")
    layout = Layout(prompt=str(data["caption"]), objects=objects)
    return layout, extras


def _json_region(anno: Mapping[str, Any], kind: str, width: float, height: float) -> dict[str, Any] | None:
    """The layout region of one official annotation for `kind`, or None if it has none usable."""
    if kind == "mask":
        rle = anno.get("mask")
        if not rle:
            return None
        mask01 = decode_coco_rle(rle)
        if not mask01.any():
            return None
        return {"mask": Mask(rle=_encode_uncompressed_rle(mask01))}
    if kind == "scribble":
        pts = anno.get("scribble")
        if not pts or len(pts) < 2:
            return None
        return {"scribble": [Point(x=_clip01(p[0] / width), y=_clip01(p[1] / height)) for p in pts]}
    if kind == "box":
        bbox = anno.get("bbox")
        if not bbox:
            return None
        x, y, w, h = (float(v) for v in bbox)
        x0, y0, x1, y1 = _clip01(x / width), _clip01(y / height), _clip01((x + w) / width), _clip01((y + h) / height)
        if x1 <= x0 or y1 <= y0:
            return None
        return {"box": Box(x0=x0, y0=y0, x1=x1, y1=y1)}
    point = anno.get("point")
    if not point:
        return None
    return {"point": Point(x=_clip01(point[0] / width), y=_clip01(point[1] / height))}
