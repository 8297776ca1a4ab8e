"""The exact evaluator of the Shapes world: object detection, prompt checks and a realism proxy.

Detection (`detect_objects`) needs no learning:
1. A pixel belongs to an object when it is coloured: chroma (max − min of RGB) ≥ 0.15, value
   ≥ 0.2 and saturation ≥ 0.35. Backgrounds are grey/white/black/beige, all below that.
2. Each object pixel votes for the palette colour of nearest hue.
3. Object pixels are grouped into 8-connected components (objects are ≥ 2 px apart). A component
   whose votes are ≥ 70 % one colour is one object; otherwise (two touching objects in a
   generated image) it is split by colour. Pieces under `min_area` pixels are dropped.
4. Holes (a highlight too pale to count as coloured) are filled, the tight box is measured and the
   shape is the template (circle, square, triangle, star fitted to that box) of highest IoU with
   the mask. Size is read from the box's larger side (see `world.SIZE_THRESHOLDS_PX`).

`evaluate_image(image, caption, planned=...)` checks one image against its caption: attribute
binding, counting, the spatial relation and, given planned boxes, the IoU of each planned box
with the detected object of the same colour and shape.

The realism proxy is documented at `realism_features`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from .captions import CaptionSpec, ObjectSpec, parse_caption
from .geometry import BOX_ASPECT, shape_sdf
from .world import COLOURS, IMAGE_SIZE, SHAPES, SIZE_THRESHOLDS_PX, colour_hues

BoxTuple = tuple[float, float, float, float]

_HUES = np.asarray(list(colour_hues().values()), dtype=np.float32)
_COLOUR_NAMES = list(COLOURS)


@dataclass(frozen=True)
class DetectedObject:
    """An object found in an image. `box` is normalised (x0, y0, x1, y1), origin top-left."""

    colour: str
    shape: str
    size: str
    box: BoxTuple
    area: int  # pixels of the (hole-filled) mask
    shape_score: float  # IoU of the mask with the winning shape template, in [0, 1]
    mask: np.ndarray = field(repr=False)  # (H, W) bool

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)

    @property
    def phrase(self) -> str:
        return ObjectSpec(self.colour, self.shape, self.size).phrase


@dataclass(frozen=True)
class PromptEvaluation:
    """How well one image depicts its caption.

    `binding` is the fraction of the caption's objects found with the right colour and shape
    (one detection serves one object); `size_accuracy` the fraction of those found whose size
    also matches. `count_ok` (count captions only) says whether exactly `count` objects of the
    colour and shape were found. `relation_ok` (relation captions only): both objects found and
    their box centres in the stated relation (see `relation_holds`). `ious` (only with planned
    boxes): per planned box, the IoU with the detected object of its colour and shape assigned to
    it (greedy, one-to-one; 0 when none). `success`: binding complete and, where they apply,
    count and relation right. `exact`: success, sizes right and no extra object.
    """

    caption: str
    spec: CaptionSpec
    detected: list[DetectedObject]
    binding: float
    binding_ok: bool
    size_accuracy: float
    count_ok: bool | None
    detected_count: int | None
    relation_ok: bool | None
    extra_objects: int
    ious: list[float] | None
    success: bool
    exact: bool

    @property
    def mean_iou(self) -> float | None:
        return None if not self.ious else float(np.mean(self.ious))

    def as_dict(self) -> dict[str, Any]:
        return {
            "caption": self.caption,
            "binding": self.binding,
            "binding_ok": self.binding_ok,
            "size_accuracy": self.size_accuracy,
            "count_ok": self.count_ok,
            "detected_count": self.detected_count,
            "relation_ok": self.relation_ok,
            "extra_objects": self.extra_objects,
            "mean_iou": self.mean_iou,
            "success": self.success,
            "exact": self.exact,
            "detected": [{"phrase": d.phrase, "box": list(d.box), "shape_score": d.shape_score} for d in self.detected],
        }


# --------------------------------------------------------------------------- image helpers


def as_float_image(image: Any) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] from a PIL image, a uint8 array or a float array in [0, 1]."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL, without importing it
        image = np.asarray(image.convert("RGB"))
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got an array of shape {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    return np.clip(a.astype(np.float32), 0.0, 1.0)


def connected_components(mask: np.ndarray, *, diagonal: bool = True) -> tuple[np.ndarray, int]:
    """Label the connected components of a 2-D bool mask: (labels with 0 = background, count).

    Min-label propagation with pointer jumping, vectorised over the whole image (no SciPy).
    """
    h, w = mask.shape
    if not mask.any():
        return np.zeros((h, w), dtype=np.int32), 0
    big = h * w
    flat_idx = np.arange(big, dtype=np.int64).reshape(h, w)
    lab = np.where(mask, flat_idx, big)
    shifts = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if diagonal:
        shifts += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    while True:
        padded = np.pad(lab, 1, constant_values=big)
        best = lab.copy()
        for dy, dx in shifts:
            np.minimum(best, padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w], out=best)
        best = np.where(mask, best, big)
        flat = np.append(best.ravel(), big)
        for _ in range(4):  # pointer jumping: follow labels to their own (smaller) labels
            flat[:-1] = np.where(flat[:-1] < big, flat[np.minimum(flat[:-1], big)], big)
        best = flat[:-1].reshape(h, w)
        if np.array_equal(best, lab):
            break
        lab = best
    roots, labels = np.unique(lab[mask], return_inverse=True)
    out = np.zeros((h, w), dtype=np.int32)
    out[mask] = labels.astype(np.int32) + 1
    return out, len(roots)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every background region not touching the border filled in."""
    padded = np.pad(mask, 1, constant_values=False)
    labels, _ = connected_components(~padded, diagonal=False)
    outside = labels == labels[0, 0]
    return ~outside[1:-1, 1:-1]


def _hsv(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hue (degrees), saturation, value and chroma of an (H, W, 3) float image."""
    mx, mn = img.max(axis=2), img.min(axis=2)
    chroma = mx - mn
    sat = chroma / np.maximum(mx, 1e-6)
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    safe = np.maximum(chroma, 1e-6)
    hue = np.where(mx == r, np.mod((g - b) / safe, 6.0), np.where(mx == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    return hue * 60.0, sat, mx, chroma


def _nearest_colour(hue: np.ndarray) -> np.ndarray:
    diff = np.abs(hue[..., None] - _HUES)
    diff = np.minimum(diff, 360.0 - diff)
    return diff.argmin(axis=-1)


def _shape_area(shape: str, n: int = 400) -> float:
    """Area of the shape in extent units² (its tight box has larger side 1)."""
    g = (np.arange(n) + 0.5) / n - 0.5
    return float((shape_sdf(shape, g[None, :], g[:, None]) <= 0).mean())


_SHAPE_AREA = {shape: _shape_area(shape) for shape in SHAPES}


def _classify_shape(mask: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> tuple[str, float]:
    """The shape whose template, fitted to the mask's box, overlaps the mask best (and that IoU).

    Rasterising cuts thin tips, so a star's pixel box is up to ~2 px smaller than the star; each
    template is also tried on the box grown by 1 and 2 px.
    """
    pad = 2
    crop = np.pad(mask[y0:y1, x0:x1], pad)
    bw, bh = x1 - x0, y1 - y0
    xs = np.arange(bw + 2 * pad, dtype=np.float32) + 0.5 - pad - bw / 2
    ys = np.arange(bh + 2 * pad, dtype=np.float32) + 0.5 - pad - bh / 2
    best, best_iou = SHAPES[0], -1.0
    for shape in SHAPES:
        w_c, h_c = BOX_ASPECT[shape]
        for grow in (0.0, 1.0, 2.0):
            template = shape_sdf(shape, xs[None, :] * w_c / (bw + grow), ys[:, None] * h_c / (bh + grow)) <= 0
            inter = np.logical_and(template, crop).sum()
            union = np.logical_or(template, crop).sum()
            iou = float(inter) / max(float(union), 1.0)
            if iou > best_iou:
                best, best_iou = shape, iou
    return best, best_iou


def size_of_extent(extent_px: float, image_size: int = IMAGE_SIZE) -> str:
    """small / medium / big from an object's extent in pixels (scaled to a 64 px image)."""
    e = extent_px * IMAGE_SIZE / image_size
    small_max, medium_max = SIZE_THRESHOLDS_PX
    return "small" if e < small_max else ("medium" if e < medium_max else "big")


def extent_from_area(shape: str, area_px: float) -> float:
    """The extent (larger box side) of a `shape` covering `area_px` pixels.

    Robust where the pixel box is not: thin star tips and triangle apexes lose pixels to
    rasterisation, the area barely changes.
    """
    return math.sqrt(area_px / _SHAPE_AREA[shape])


# --------------------------------------------------------------------------- detection


def detect_objects(
    image: Any,
    *,
    min_area: int = 12,
    min_chroma: float = 0.15,
    min_value: float = 0.2,
    min_saturation: float = 0.35,
    majority: float = 0.7,
) -> list[DetectedObject]:
    """Find the coloured objects of an image (H×W×3 uint8/float array or PIL image).

    Returns objects sorted top-to-bottom, left-to-right. Images of any square-ish size work;
    areas are in pixels of the given image, `min_area` is scaled from 64×64.
    """
    img = as_float_image(image)
    h, w = img.shape[:2]
    min_area = max(1, round(min_area * h * w / (IMAGE_SIZE * IMAGE_SIZE)))
    hue, sat, val, chroma = _hsv(img)
    fg = (chroma >= min_chroma) & (val >= min_value) & (sat >= min_saturation)
    colour_of = _nearest_colour(hue)
    labels, n = connected_components(fg)
    pieces: list[tuple[np.ndarray, int]] = []
    for lab in range(1, n + 1):
        comp = labels == lab
        if comp.sum() < min_area:
            continue
        votes = np.bincount(colour_of[comp], minlength=len(_COLOUR_NAMES))
        top = int(votes.argmax())
        if votes[top] >= majority * comp.sum():
            pieces.append((comp, top))
            continue
        for c in np.flatnonzero(votes >= min_area):
            sub_labels, m = connected_components(comp & (colour_of == c))
            for s in range(1, m + 1):
                sub = sub_labels == s
                if sub.sum() >= min_area:
                    pieces.append((sub, int(c)))
    found = []
    for comp, c in pieces:
        filled = fill_holes(comp)
        ys, xs = np.nonzero(filled)
        x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
        shape, score = _classify_shape(filled, x0, y0, x1, y1)
        found.append(
            DetectedObject(
                colour=_COLOUR_NAMES[c],
                shape=shape,
                size=size_of_extent(extent_from_area(shape, float(filled.sum())), max(h, w)),
                box=(x0 / w, y0 / h, x1 / w, y1 / h),
                area=int(filled.sum()),
                shape_score=score,
                mask=filled,
            )
        )
    found.sort(key=lambda d: (round(d.centre[1] * 8), d.centre[0]))
    return found


# --------------------------------------------------------------------------- prompt checks


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two (x0, y0, x1, y1) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def relation_holds(a: tuple[float, float], b: tuple[float, float], relation: str, margin: float = 0.0) -> bool:
    """Whether centre `a` is `relation` (left/right/above/below) of centre `b`.

    The offset along the relation's axis must point the right way, exceed `margin` and be larger
    than the offset along the other axis (so "left of" is not satisfied by an object mostly above).
    """
    dx, dy = a[0] - b[0], a[1] - b[1]
    main, other = {"left": (-dx, dy), "right": (dx, dy), "above": (-dy, dx), "below": (dy, dx)}[relation]
    return main > margin and abs(other) < main


def _planned_boxes(spec: CaptionSpec, planned: Any) -> list[tuple[ObjectSpec, BoxTuple]]:
    """Normalise planned boxes: a realcompo Layout, (phrase, box) pairs or boxes in spec order."""
    objects = getattr(planned, "objects", None)
    if objects is not None:  # a realcompo_sdk Layout
        pairs = [(o.phrase, o.box.as_tuple() if hasattr(o.box, "as_tuple") else o.box) for o in objects]
        pairs = [(p, b) for p, b in pairs if b is not None]
    else:
        items = list(planned)
        if items and isinstance(items[0], (tuple, list)) and len(items[0]) == 2 and isinstance(items[0][0], str):
            pairs = [(str(p), tuple(b)) for p, b in items]
        else:
            if len(items) != len(spec.objects):
                raise ValueError(
                    f"{len(items)} planned boxes for {len(spec.objects)} objects of "
                    f"{spec.caption!r}; give one box per object in caption order, or (phrase, box) pairs"
                )
            return [(o, tuple(float(c) for c in b)) for o, b in zip(spec.objects, items)]  # type: ignore[misc]
    out = []
    for phrase, box in pairs:
        words = phrase.lower().split()
        if words and words[0] == "a":
            words = words[1:]
        if words and words[-1].endswith("s") and words[-1][:-1] in SHAPES:  # "red circles" of a count caption
            words[-1] = words[-1][:-1]
        obj = parse_caption("a " + " ".join(words)).objects[0]
        out.append((obj, tuple(float(c) for c in box)))
    return out  # type: ignore[return-value]


def evaluate_image(
    image: Any,
    caption: str | CaptionSpec,
    planned: Any = None,
    *,
    relation_margin: float = 0.0,
    detected: list[DetectedObject] | None = None,
) -> PromptEvaluation:
    """Evaluate one image against its caption (and optionally the planned layout boxes).

    `planned` is a `realcompo_sdk.layout.Layout`, a list of (phrase, (x0, y0, x1, y1)) pairs or a
    list of boxes in the caption's object order; boxes normalised to [0, 1].
    """
    spec = caption if isinstance(caption, CaptionSpec) else parse_caption(caption)
    found = detect_objects(image) if detected is None else detected
    used: set[int] = set()
    matched_sizes = []
    for obj in spec.objects:
        candidates = [
            i for i, d in enumerate(found) if i not in used and (d.colour, d.shape) == (obj.colour, obj.shape)
        ]
        if not candidates:
            continue
        # Prefer a detection of the right size, then the largest.
        i = max(candidates, key=lambda j: (found[j].size == obj.size, found[j].area))
        used.add(i)
        matched_sizes.append(found[i].size == obj.size)
    required = len(spec.objects)
    binding = len(used) / required
    size_accuracy = (sum(matched_sizes) / required) if required else 1.0

    count_ok = detected_count = None
    if spec.form == "count":
        target = spec.objects[0]
        detected_count = sum((d.colour, d.shape) == (target.colour, target.shape) for d in found)
        count_ok = detected_count == len(spec.objects)

    relation_ok = None
    if spec.form == "relation":
        ends = []
        for obj in spec.objects:
            same = [d for d in found if (d.colour, d.shape) == (obj.colour, obj.shape)]
            ends.append(max(same, key=lambda d: d.area) if same else None)
        a, b = ends
        relation_ok = (
            a is not None and b is not None and relation_holds(a.centre, b.centre, spec.relation or "", relation_margin)
        )

    ious = None
    if planned is not None:
        pairs = _planned_boxes(spec, planned)
        scores = np.zeros((len(pairs), len(found)))
        for p, (obj, box) in enumerate(pairs):
            for j, d in enumerate(found):
                if (d.colour, d.shape) == (obj.colour, obj.shape):
                    scores[p, j] = box_iou(box, d.box)
        ious = [0.0] * len(pairs)
        while scores.size and scores.max() > 0:
            p, j = np.unravel_index(scores.argmax(), scores.shape)
            ious[p] = float(scores[p, j])
            scores[p, :] = 0
            scores[:, j] = 0

    binding_ok = len(used) == required
    success = binding_ok and count_ok is not False and relation_ok is not False
    extra = len(found) - len(used)
    return PromptEvaluation(
        caption=spec.caption,
        spec=spec,
        detected=found,
        binding=binding,
        binding_ok=binding_ok,
        size_accuracy=size_accuracy,
        count_ok=count_ok,
        detected_count=detected_count,
        relation_ok=relation_ok,
        extra_objects=extra,
        ious=ious,
        success=success,
        exact=success and size_accuracy == 1.0 and extra == 0,
    )


def summarize(evaluations: Iterable[PromptEvaluation]) -> dict[str, float | int | None]:
    """Aggregate metrics over many evaluations (means; count/relation over their captions only)."""
    evs = list(evaluations)

    def mean(values: list[float]) -> float | None:
        return float(np.mean(values)) if values else None

    return {
        "n": len(evs),
        "success": mean([e.success for e in evs]),
        "exact": mean([e.exact for e in evs]),
        "binding": mean([e.binding for e in evs]),
        "binding_ok": mean([e.binding_ok for e in evs]),
        "size_accuracy": mean([e.size_accuracy for e in evs]),
        "count_ok": mean([e.count_ok for e in evs if e.count_ok is not None]),
        "relation_ok": mean([e.relation_ok for e in evs if e.relation_ok is not None]),
        "mean_iou": mean([e.mean_iou for e in evs if e.mean_iou is not None]),
        "extra_objects": mean([e.extra_objects for e in evs]),
    }


# --------------------------------------------------------------------------- realism proxy

REALISM_FEATURES: tuple[str, ...] = (
    "edge_sharpness",
    "grain",
    "shading",
    "highlight",
    "outline",
    "background_variation",
)


def _luma(img: np.ndarray) -> np.ndarray:
    return img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _box_blur(a: np.ndarray, r: int) -> np.ndarray:
    k = 2 * r + 1
    p = np.pad(a, r, mode="edge")
    c = np.cumsum(np.cumsum(np.pad(p, ((1, 0), (1, 0))), 0), 1)
    return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)


def _erode(mask: np.ndarray, steps: int) -> np.ndarray:
    m = mask.copy()
    for _ in range(steps):
        p = np.pad(m, 1, constant_values=False)
        m = m & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m


def realism_features(image: Any, detected: list[DetectedObject] | None = None) -> np.ndarray:
    """Six statistics of what makes a Shapes scene look "real" (NaN where no object is found).

    On luminance L (Rec. 601) of the image, at 64×64:
    - edge_sharpness: 95th percentile of |∇L| (central differences). Blur lowers it.
    - grain: 1.4826 · median |L − 3×3 box mean of L| over background pixels (a robust noise
      level). Real scenes carry a fine grain; flat ones have none, noised ones too much.
    - shading: per object, the slope of a least-squares fit of L/mean(L) against the position
      along the world's light direction (upper left), over the mask eroded by 2 px (1 px for
      objects too small for that); averaged over objects.
    - highlight: per object, (95th percentile − median) of L over the eroded mask / median.
    - outline: per object, mean L of the 1-px inner rim / mean L of the eroded mask (≈ 0.6 for
      real scenes with their dark outline, ≈ 1 for flat ones).
    - background_variation: std of the 7×7 box-smoothed L over background pixels (gradients and
      noise textures; a flat backdrop has none).
    """
    img = as_float_image(image)
    if img.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE):
        from PIL import Image

        u8 = (img * 255 + 0.5).astype(np.uint8)
        img = as_float_image(Image.fromarray(u8).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR))
        detected = None
    found = detect_objects(img) if detected is None else detected
    lum = _luma(img)
    gy, gx = np.gradient(lum)
    edge = float(np.percentile(np.hypot(gx, gy), 95))

    obj_union = np.zeros(lum.shape, dtype=bool)
    for d in found:
        obj_union |= d.mask
    # Background: away from objects by 2 px, so outlines and anti-aliasing do not count.
    near = ~_erode(~obj_union, 2)
    bg = ~near
    resid = np.abs(lum - _box_blur(lum, 1))
    grain = float(1.4826 * np.median(resid[bg])) if bg.any() else math.nan
    bg_var = float(np.std(_box_blur(lum, 3)[bg])) if bg.any() else math.nan

    shading, highlight, outline = [], [], []
    h, w = lum.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    for d in found:
        inner = _erode(d.mask, 2)
        if inner.sum() < 6:  # small stars and triangles: their outline is thinner than 2 px
            inner = _erode(d.mask, 1)
        if inner.sum() < 4:
            continue
        x0, y0, x1, y1 = d.box[0] * w, d.box[1] * h, d.box[2] * w, d.box[3] * h
        half = max(x1 - x0, y1 - y0) / 2
        along = (-0.6 * (xx - (x0 + x1) / 2) - 0.8 * (yy - (y0 + y1) / 2)) / half
        li, ai = lum[inner], along[inner]
        mu = float(li.mean())
        if mu <= 1e-3:
            continue
        ac = ai - ai.mean()
        shading.append(float((ac * (li / mu - 1)).sum() / max(float((ac * ac).sum()), 1e-6)))
        med = float(np.median(li))
        highlight.append((float(np.percentile(li, 95)) - med) / max(med, 1e-3))
        rim = d.mask & ~_erode(d.mask, 1)
        outline.append(float(lum[rim].mean()) / mu)

    def avg(v: list[float]) -> float:
        return float(np.mean(v)) if v else math.nan

    return np.array([edge, grain, avg(shading), avg(highlight), avg(outline), bg_var], dtype=np.float64)


@lru_cache(maxsize=4)
def realism_reference(n: int = 256, seed: int = 20240611) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of `realism_features` over `n` clean generated scenes (cached)."""
    from .scenes import generate_scenes

    batch = generate_scenes(n, seed, masks=False)
    feats = np.stack([realism_features(img) for img in batch.images])
    feats = feats[~np.isnan(feats).any(axis=1)]
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def realism_score(image: Any, detected: list[DetectedObject] | None = None) -> float:
    """Per-image realism in (0, 1]: exp(−½ · mean z²) of the features against real scenes.

    z is each feature's deviation from the real-scene mean in real-scene standard deviations,
    clipped to ±5 (a missing feature, e.g. no object found, counts as 5). Clean scenes score
    about 0.5–0.7 on average; blurred, noised and flat-coloured ones far less.
    """
    mean, cov = realism_reference()
    std = np.sqrt(np.diag(cov))
    z = (realism_features(image, detected) - mean) / std
    z = np.where(np.isnan(z), 5.0, np.clip(z, -5.0, 5.0))
    return float(np.exp(-0.5 * np.mean(z * z)))


def realism_fd(images: Iterable[Any]) -> float:
    """Fréchet distance between the Gaussian of the images' standardised realism features and the
    real-scene Gaussian (lower is better; ~0 for a large set of clean scenes).

    Features are standardised by the real scenes' standard deviations so each counts alike;
    images without any detected object get the real mean plus 5 σ on their missing features.
    """
    mean, cov = realism_reference()
    std = np.sqrt(np.diag(cov))
    feats = np.stack([realism_features(im) for im in images])
    z = (feats - mean) / std
    z = np.where(np.isnan(z), 5.0, z)
    ref_cov = cov / np.outer(std, std)
    mu = z.mean(axis=0)
    c = np.cov(z, rowvar=False) if len(z) > 1 else np.zeros_like(ref_cov)
    # tr(sqrt(C1 C2)) through the eigenvalues of C1 C2 (real, non-negative up to round-off).
    eig = np.linalg.eigvals(c @ ref_cov)
    tr_sqrt = float(np.sum(np.sqrt(np.clip(eig.real, 0.0, None))))
    return float(mu @ mu + np.trace(c) + np.trace(ref_cov) - 2.0 * tr_sqrt)
