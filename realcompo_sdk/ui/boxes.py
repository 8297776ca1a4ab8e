"""A layout as the box annotator's value, and back.

The annotator edits boxes in image pixels on a square canvas; layouts hold fractions of the
image. Masks, points and scribbles cannot be edited as boxes: they are drawn on the canvas behind
their bounding box, and they keep their region as long as that box is left where it was (moving
or resizing it turns the object into a box, which the UI says).
"""

from __future__ import annotations

from typing import Any

from ..errors import LayoutError
from ..images import PALETTE
from ..layout import Box, Layout, LayoutObject, format_validation_error

CANVAS = 512  # pixels of the editing canvas


def to_annotation(layout: Layout, size: int = CANVAS) -> dict[str, Any]:
    """The annotator's value: a canvas with the non-box regions drawn, and one box per object."""
    boxes = []
    for i, obj in enumerate(layout.objects):
        box = obj.bounding_box()
        boxes.append({"xmin": round(box.x0 * size), "ymin": round(box.y0 * size), "xmax": round(box.x1 * size),
                      "ymax": round(box.y1 * size), "label": obj.phrase, "color": tuple(PALETTE[i % len(PALETTE)])})
    return {"image": region_backdrop(layout, size), "boxes": boxes}


def from_annotation(value: dict[str, Any] | None, prompt: str, previous: Layout | None = None) -> Layout:
    """The edited layout. Raises `LayoutError` naming the box that is wrong and how to fix it."""
    if not value or not value.get("boxes"):
        raise LayoutError("the layout has no boxes: plan one from the prompt, upload a layout, or draw a box "
                          "(Create box, then drag on the canvas)")
    width, height = _image_size(value.get("image"))
    kept = {(o.phrase, _pixel_box(o.bounding_box(), width, height)): o for o in (previous.objects if previous else [])}
    objects = []
    for i, b in enumerate(value["boxes"]):
        phrase = str(b.get("label") or "").strip()
        if not phrase:
            raise LayoutError(f"box {i} has no phrase: double-click it and type the words of the prompt it stands for")
        pixels = tuple(int(round(float(b[k]))) for k in ("xmin", "ymin", "xmax", "ymax"))
        same = kept.get((phrase, pixels))
        if same is not None:  # untouched: keeps its mask, keypoints, point or scribble
            objects.append(same)
            continue
        x0, y0, x1, y1 = (max(0.0, min(1.0, v / d)) for v, d in zip(pixels, (width, height, width, height)))
        try:
            objects.append(LayoutObject(phrase=phrase, box=Box(x0=x0, y0=y0, x1=x1, y1=y1)))
        except ValueError as exc:
            raise LayoutError(f"box {i} ({phrase!r}): {format_validation_error(exc, what='box').splitlines()[-1].strip()}") from None
    try:
        return Layout(prompt=prompt.strip() or (previous.prompt if previous else ""), objects=objects)
    except ValueError as exc:
        raise LayoutError(format_validation_error(exc)) from None


def region_backdrop(layout: Layout | None, size: int = CANVAS) -> Any:
    """The canvas behind the boxes: light grey, with masks tinted and points and scribbles drawn."""
    from PIL import Image, ImageDraw

    canvas = Image.new("RGB", (size, size), (238, 238, 238))
    if layout is None:
        return canvas
    draw = ImageDraw.Draw(canvas)
    r = max(3, size // 100)
    for i, obj in enumerate(layout.objects):
        color = tuple(PALETTE[i % len(PALETTE)])
        if obj.mask is not None:
            rows = obj.mask.to_rows()
            mh, mw = len(rows), len(rows[0])
            tint = Image.new("RGB", (size, size), color)
            mask = Image.frombytes("L", (mw, mh), bytes(255 * v for row in rows for v in row)).resize((size, size))
            canvas.paste(Image.blend(canvas, tint, 0.45), (0, 0), mask)
            draw = ImageDraw.Draw(canvas)
        dots = [k for k in obj.keypoints if k.visible] if obj.keypoints else [obj.point] if obj.point else []
        for p in dots:
            draw.ellipse((p.x * size - r, p.y * size - r, p.x * size + r, p.y * size + r), fill=color)
        if obj.scribble:
            draw.line([(p.x * size, p.y * size) for p in obj.scribble], fill=color, width=r)
    return canvas


def _image_size(image: Any) -> tuple[int, int]:
    if image is None:
        return CANVAS, CANVAS
    if hasattr(image, "size") and isinstance(image.size, tuple):  # PIL
        return image.size
    shape = getattr(image, "shape", None)  # numpy (h, w, c)
    return (shape[1], shape[0]) if shape is not None else (CANVAS, CANVAS)


def _pixel_box(box: Box, width: int, height: int) -> tuple[int, ...]:
    return (round(box.x0 * width), round(box.y0 * height), round(box.x1 * width), round(box.y1 * height))
