"""Scene generation: sample a caption spec, lay its objects out, render the image, keep the truth.

`generate_scenes(n, seed)` is the entry point. Layout is sampled per scene (a few vectorised
candidate draws per object); rendering is vectorised over all objects of a chunk of scenes, so a
single core renders thousands of 64×64 scenes per second. Everything comes from one
`numpy.random.Generator`, so the same seed gives identical scenes, captions and ground truth.

A "real" scene has a textured background (linear gradient and/or smooth value noise, fine grain)
and shaded objects: a directional light from the upper left, a specular highlight, a darker
outline and slight luminance texture. A "flat" scene is the same layout with flat colours only;
the realism proxy must tell them apart.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .captions import CaptionSpec, ObjectSpec, parse_caption, sample_spec
from .geometry import BOX_ASPECT, MAX_KEYPOINTS, shape_keypoints, shape_sdf
from .world import (
    BACKGROUNDS,
    COLOURS,
    IMAGE_SIZE,
    MAX_OBJECTS,
    MIN_GAP_PX,
    RELATION_MARGIN,
    SHAPES,
    SIZE_EXTENT_PX,
    SIZES,
)

Style = Literal["real", "flat"]
BACKGROUND_STYLES: tuple[str, ...] = ("gradient", "noise", "gradient+noise")

_COLOUR_RGB = np.asarray(list(COLOURS.values()), dtype=np.float32) / 255.0
_BACKGROUND_RGB = np.asarray(list(BACKGROUNDS.values()), dtype=np.float32) / 255.0
_LIGHT = np.array([-0.6, -0.8], dtype=np.float32)  # from the upper left, y down
_NOISE_GRID = 6


@dataclass(frozen=True)
class SceneObject:
    """Ground truth of one object. Boxes and keypoints are normalised to [0, 1], origin top-left."""

    phrase: str
    shape: str
    colour: str
    size: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 of the tight pixel box of the mask
    mask: np.ndarray | None  # (H, W) bool, None when generated with masks=False
    keypoints: np.ndarray  # (K, 2) x, y: centre first, then vertices


@dataclass(frozen=True)
class Scene:
    caption: str
    spec: CaptionSpec
    image: np.ndarray  # (H, W, 3) uint8
    objects: list[SceneObject]
    background: str
    background_style: str


@dataclass
class Layout:
    """Object placement of one scene in pixels (box centres and box sizes)."""

    spec: CaptionSpec
    background: str
    centres: np.ndarray  # (n, 2) x, y of each object's box centre
    extents: np.ndarray  # (n,) larger box side


@dataclass
class SceneBatch:
    """Many scenes as arrays (the training scripts read these), indexable into `Scene`s.

    Object slots beyond `n_objects[i]` are padding: ids -1, boxes 0, keypoints NaN.
    """

    images: np.ndarray  # (N, H, W, 3) uint8
    specs: list[CaptionSpec]
    captions: list[str]
    backgrounds: list[str]
    background_styles: list[str]
    n_objects: np.ndarray  # (N,) int
    shape_ids: np.ndarray  # (N, 4) int8 index into SHAPES
    colour_ids: np.ndarray  # (N, 4) int8 index into COLOURS
    size_ids: np.ndarray  # (N, 4) int8 index into SIZES
    boxes: np.ndarray  # (N, 4, 4) float32 normalised x0, y0, x1, y1
    keypoints: np.ndarray  # (N, 4, 6, 2) float32 normalised, NaN padded
    masks: np.ndarray | None = field(default=None)  # (N, 4, H, W) bool

    def __len__(self) -> int:
        return len(self.captions)

    def phrases(self, i: int) -> list[str]:
        return self.specs[i].phrases

    def __getitem__(self, i: int) -> Scene:
        objects = []
        for k in range(int(self.n_objects[i])):
            kp = self.keypoints[i, k]
            objects.append(
                SceneObject(
                    phrase=self.specs[i].objects[k].phrase,
                    shape=SHAPES[self.shape_ids[i, k]],
                    colour=list(COLOURS)[self.colour_ids[i, k]],
                    size=SIZES[self.size_ids[i, k]],
                    box=tuple(float(c) for c in self.boxes[i, k]),  # type: ignore[arg-type]
                    mask=None if self.masks is None else self.masks[i, k],
                    keypoints=kp[~np.isnan(kp[:, 0])],
                )
            )
        return Scene(
            caption=self.captions[i],
            spec=self.specs[i],
            image=self.images[i],
            objects=objects,
            background=self.backgrounds[i],
            background_style=self.background_styles[i],
        )

    def __iter__(self) -> Iterator[Scene]:
        return (self[i] for i in range(len(self)))


# --------------------------------------------------------------------------- layout


def _box_size(obj: ObjectSpec, extent: float) -> tuple[float, float]:
    w, h = BOX_ASPECT[obj.shape]
    return w * extent, h * extent


def _relation_ok(a: np.ndarray, b: np.ndarray, relation: str, margin_px: float) -> np.ndarray:
    """Whether centres `a` (m, 2) stand in `relation` to centre `b` (2,), with a clear margin."""
    dx, dy = a[:, 0] - b[0], a[:, 1] - b[1]
    main, other = {"left": (-dx, dy), "right": (dx, dy), "above": (-dy, dx), "below": (dy, dx)}[relation]
    return (main >= margin_px) & (np.abs(other) <= 0.5 * main)


def sample_layout(spec: CaptionSpec, background: str, rng: np.random.Generator, *, max_restarts: int = 30) -> Layout:
    """Place the spec's objects: inside the image, boxes at least MIN_GAP_PX apart, relation true.

    When a crowded spec (e.g. four big objects) cannot be placed after `max_restarts`, the
    biggest object is made one size smaller and the spec changes with it, so the caption always
    describes the image.
    """
    size = IMAGE_SIZE
    objs = list(spec.objects)
    margin_px = RELATION_MARGIN * size
    gap = MIN_GAP_PX + 1.0  # + 1 px: rasterised boxes may grow by half a pixel on each side
    while True:
        lo_hi = [SIZE_EXTENT_PX[o.size] for o in objs]
        for _ in range(max_restarts):
            extents = np.array([rng.uniform(lo, hi) for lo, hi in lo_hi])
            whs = np.array([_box_size(o, e) for o, e in zip(objs, extents)])
            centres = np.zeros((len(objs), 2))
            # Relation scenes place the reference object (objects[1]) first.
            order = [1, 0] if spec.form == "relation" else list(range(len(objs)))
            placed: list[int] = []
            for i in order:
                w, h = whs[i]
                cand = np.stack(
                    [
                        rng.uniform(w / 2 + 1, size - w / 2 - 1, 48),
                        rng.uniform(h / 2 + 1, size - h / 2 - 1, 48),
                    ],
                    1,
                )
                ok = np.ones(len(cand), dtype=bool)
                for j in placed:
                    sep_x = np.abs(cand[:, 0] - centres[j, 0]) - (w + whs[j, 0]) / 2
                    sep_y = np.abs(cand[:, 1] - centres[j, 1]) - (h + whs[j, 1]) / 2
                    ok &= np.maximum(sep_x, sep_y) >= gap
                if spec.form == "relation" and i == 0:
                    ok &= _relation_ok(cand, centres[1], spec.relation or "", margin_px)
                hits = np.flatnonzero(ok)
                if len(hits) == 0:
                    break
                centres[i] = cand[hits[0]]
                placed.append(i)
            else:
                return Layout(
                    CaptionSpec(spec.form, tuple(objs), spec.relation, spec.background),
                    background,
                    centres,
                    extents,
                )
        biggest = max(range(len(objs)), key=lambda k: SIZES.index(objs[k].size))
        if objs[biggest].size == "small":
            raise RuntimeError(f"cannot lay out {spec.caption!r} in a {size}px image")
        smaller = SIZES[SIZES.index(objs[biggest].size) - 1]
        if spec.form == "count":  # count objects stay identical
            objs = [ObjectSpec(o.colour, o.shape, smaller) for o in objs]
        else:
            objs[biggest] = ObjectSpec(objs[biggest].colour, objs[biggest].shape, smaller)


# --------------------------------------------------------------------------- rendering


def _bilinear_matrix(n_out: int, n_in: int) -> np.ndarray:
    pos = (np.arange(n_out) + 0.5) / n_out * (n_in - 1)
    i0 = np.clip(np.floor(pos).astype(int), 0, n_in - 2)
    t = pos - i0
    m = np.zeros((n_out, n_in), dtype=np.float32)
    m[np.arange(n_out), i0] = 1 - t
    m[np.arange(n_out), i0 + 1] = t
    return m


def _backgrounds(
    bg_ids: np.ndarray,
    bg_styles: np.ndarray,
    grain: np.ndarray,
    rng: np.random.Generator,
    style: Style,
) -> np.ndarray:
    n, size = len(bg_ids), IMAGE_SIZE
    base = _BACKGROUND_RGB[bg_ids][:, None, None, :]
    # Random draws happen for both styles so that the same seed gives the same layout either way.
    angle = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
    amp = rng.uniform(0.06, 0.14, n).astype(np.float32)[:, None, None]
    grid = rng.standard_normal((n, _NOISE_GRID, _NOISE_GRID), dtype=np.float32)
    noise_amp = rng.uniform(0.03, 0.06, n).astype(np.float32)[:, None, None]
    grain_amp = rng.uniform(0.01, 0.025, n).astype(np.float32)[:, None, None]
    if style == "flat":
        return np.broadcast_to(base, (n, size, size, 3)).copy()
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    ramp = np.cos(angle)[:, None, None] * coords[None, None, :] + np.sin(angle)[:, None, None] * coords[None, :, None]
    up = _bilinear_matrix(size, _NOISE_GRID)
    smooth = up @ grid @ up.T
    use_ramp = (bg_styles != 1).astype(np.float32)[:, None, None]
    use_noise = (bg_styles != 0).astype(np.float32)[:, None, None]
    delta = (use_ramp * 2 * amp) * ramp + (use_noise * noise_amp) * smooth + grain_amp * grain
    out = base + delta[..., None]
    np.clip(out, 0.0, 1.0, out=out)
    return out


_WINDOW = 28  # every object, with its anti-aliased rim, fits in a 28×28 pixel window


def render_layouts(
    layouts: Sequence[Layout],
    rng: np.random.Generator,
    *,
    style: Style = "real",
    masks: bool = True,
) -> SceneBatch:
    """Render laid-out scenes into a `SceneBatch` (images, boxes, masks, keypoints)."""
    n, size, win = len(layouts), IMAGE_SIZE, _WINDOW
    bg_ids = np.array([list(BACKGROUNDS).index(lay.background) for lay in layouts], dtype=int)
    bg_styles = rng.integers(0, len(BACKGROUND_STYLES), n)
    # One luminance grain field per scene, used by the background and by the objects (they never
    # overlap, so sharing it costs nothing in variety).
    grain = rng.standard_normal((n, size, size), dtype=np.float32)
    images = _backgrounds(bg_ids, bg_styles, grain, rng, style)

    n_objects = np.array([len(lay.spec.objects) for lay in layouts], dtype=int)
    shape_ids = np.full((n, MAX_OBJECTS), -1, dtype=np.int8)
    colour_ids = np.full((n, MAX_OBJECTS), -1, dtype=np.int8)
    size_ids = np.full((n, MAX_OBJECTS), -1, dtype=np.int8)
    centres = np.zeros((n, MAX_OBJECTS, 2), dtype=np.float32)
    extents = np.ones((n, MAX_OBJECTS), dtype=np.float32)
    colour_names = list(COLOURS)
    for i, lay in enumerate(layouts):
        for k, obj in enumerate(lay.spec.objects):
            shape_ids[i, k] = SHAPES.index(obj.shape)
            colour_ids[i, k] = colour_names.index(obj.colour)
            size_ids[i, k] = SIZES.index(obj.size)
        centres[i, : n_objects[i]] = lay.centres
        extents[i, : n_objects[i]] = lay.extents
    # Per-object lighting parameters, drawn for every slot so the stream does not depend on shapes.
    shade_amp = rng.uniform(0.14, 0.26, (n, MAX_OBJECTS)).astype(np.float32)
    highlight = rng.uniform(0.22, 0.32, (n, MAX_OBJECTS)).astype(np.float32)
    outline_w = rng.uniform(0.9, 1.5, (n, MAX_OBJECTS)).astype(np.float32)

    boxes = np.zeros((n, MAX_OBJECTS, 4), dtype=np.float32)
    keypoints = np.full((n, MAX_OBJECTS, MAX_KEYPOINTS, 2), np.nan, dtype=np.float32)
    mask_out = np.zeros((n, MAX_OBJECTS, size, size), dtype=bool) if masks else None
    steps = np.arange(win)
    for s, shape in enumerate(SHAPES):
        sel_n, sel_k = np.nonzero(shape_ids == s)
        if len(sel_n) == 0:
            continue
        c = centres[sel_n, sel_k]
        e = extents[sel_n, sel_k][:, None, None]
        # Top-left corner of each object's window, kept inside the image.
        off = np.clip(np.floor(c - win / 2).astype(int), 0, size - win)
        xs = (off[:, 0, None] + steps[None]).astype(np.float32) + 0.5  # (m, win) pixel centres
        ys = (off[:, 1, None] + steps[None]).astype(np.float32) + 0.5
        u = (xs[:, None, :] - c[:, 0, None, None]) / e
        v = (ys[:, :, None] - c[:, 1, None, None]) / e
        d = shape_sdf(shape, u, v) * e  # pixels, negative inside
        cover = np.clip(0.5 - d, 0.0, 1.0)
        inside = d <= 0
        rgb = _COLOUR_RGB[colour_ids[sel_n, sel_k]][:, None, None, :]
        rows = off[:, 1, None, None] + steps[None, :, None]  # (m, win, 1)
        cols = off[:, 0, None, None] + steps[None, None, :]  # (m, 1, win)
        if style == "real":
            su, sv = 2 * u, 2 * v
            lit = su * float(_LIGHT[0]) + sv * float(_LIGHT[1])
            shade = 1.0 + shade_amp[sel_n, sel_k, None, None] * lit
            rim = np.clip(d + outline_w[sel_n, sel_k, None, None] + 0.5, 0.0, 1.0)
            texture = 1.0 + 0.03 * grain[sel_n[:, None, None], rows, cols]
            lum = shade * (1.0 - 0.45 * rim) * texture
            hx, hy = 0.35 * float(_LIGHT[0]), 0.35 * float(_LIGHT[1])
            spot = np.exp(-((su - hx) ** 2 + (sv - hy) ** 2) / 0.18)
            spot = highlight[sel_n, sel_k, None, None] * spot * (1.0 - rim)
            colour = np.clip(rgb * lum[..., None], 0.0, 1.0)
            colour += (1.0 - colour) * spot[..., None]
        else:
            colour = np.broadcast_to(rgb, cover.shape + (3,))
        a = cover[..., None]
        # Objects never overlap, so the compositing order does not matter; fancy-index writes
        # with a repeated scene index would drop all but one, hence one object slot at a time.
        for k in range(MAX_OBJECTS):
            r = np.flatnonzero(sel_k == k)
            if len(r):
                idx = (sel_n[r, None, None], rows[r], cols[r])
                images[idx] = images[idx] * (1 - a[r]) + colour[r] * a[r]
        cols_any, rows_any = inside.any(axis=1), inside.any(axis=2)
        x0 = off[:, 0] + cols_any.argmax(axis=1)
        x1 = off[:, 0] + win - cols_any[:, ::-1].argmax(axis=1)
        y0 = off[:, 1] + rows_any.argmax(axis=1)
        y1 = off[:, 1] + win - rows_any[:, ::-1].argmax(axis=1)
        boxes[sel_n, sel_k] = np.stack([x0, y0, x1, y1], 1) / size
        kp = shape_keypoints(shape)
        kp_px = c[:, None, :] + kp[None, :, :] * e[:, :, 0, None]
        keypoints[sel_n, sel_k, : len(kp)] = np.clip(kp_px / size, 0.0, 1.0)
        if mask_out is not None:
            mask_out[sel_n[:, None, None], sel_k[:, None, None], rows, cols] = inside

    image_u8 = (images * 255.0 + 0.5).astype(np.uint8)
    return SceneBatch(
        images=image_u8,
        specs=[lay.spec for lay in layouts],
        captions=[lay.spec.caption for lay in layouts],
        backgrounds=[lay.background for lay in layouts],
        background_styles=[BACKGROUND_STYLES[int(b)] for b in bg_styles],
        n_objects=n_objects,
        shape_ids=shape_ids,
        colour_ids=colour_ids,
        size_ids=size_ids,
        boxes=boxes,
        keypoints=keypoints,
        masks=mask_out,
    )


def _concat(batches: list[SceneBatch]) -> SceneBatch:
    if len(batches) == 1:
        return batches[0]
    masks = None if batches[0].masks is None else np.concatenate([b.masks for b in batches])  # type: ignore[misc]
    return SceneBatch(
        images=np.concatenate([b.images for b in batches]),
        specs=[s for b in batches for s in b.specs],
        captions=[c for b in batches for c in b.captions],
        backgrounds=[c for b in batches for c in b.backgrounds],
        background_styles=[c for b in batches for c in b.background_styles],
        n_objects=np.concatenate([b.n_objects for b in batches]),
        shape_ids=np.concatenate([b.shape_ids for b in batches]),
        colour_ids=np.concatenate([b.colour_ids for b in batches]),
        size_ids=np.concatenate([b.size_ids for b in batches]),
        boxes=np.concatenate([b.boxes for b in batches]),
        keypoints=np.concatenate([b.keypoints for b in batches]),
        masks=masks,
    )


def generate_scenes(
    n: int,
    seed: int | np.random.Generator = 0,
    *,
    style: Style = "real",
    masks: bool = True,
    form_weights: dict[str, float] | None = None,
    chunk: int = 512,
) -> SceneBatch:
    """`n` random scenes of the Shapes world, identical for identical arguments.

    `style="flat"` renders the very same scenes (same captions, layouts, boxes) with flat
    colours; `masks=False` skips the (N, 4, 64, 64) mask array, which training does not need.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    layouts = []
    for _ in range(n):
        spec, background = sample_spec(rng, form_weights)
        layouts.append(sample_layout(spec, background, rng))
    batches = [render_layouts(layouts[i : i + chunk], rng, style=style, masks=masks) for i in range(0, n, chunk)]
    return _concat(batches) if batches else render_layouts([], rng, style=style, masks=masks)


def scenes_for_caption(
    caption: str | CaptionSpec,
    n: int = 1,
    seed: int | np.random.Generator = 0,
    *,
    background: str | None = None,
    style: Style = "real",
) -> SceneBatch:
    """`n` ground-truth scenes for one caption (random layouts that make it true)."""
    spec = caption if isinstance(caption, CaptionSpec) else parse_caption(caption)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    layouts = []
    for _ in range(n):
        bg = spec.background or background or list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
        layouts.append(sample_layout(spec, bg, rng))
    return render_layouts(layouts, rng, style=style)
