"""The fixed facts of the Shapes world: image size, palette, shapes, sizes and backgrounds.

Everything else (the grammar, the renderer, the evaluator, the training scripts) reads these
tables, so a change here changes the whole world at once. The models shipped in `weights/` were
trained on exactly these values.
"""

from __future__ import annotations

import colorsys

IMAGE_SIZE = 64
"""Scenes are IMAGE_SIZE × IMAGE_SIZE RGB. 64 px keeps a 4-object scene legible (a small object
is still ~10 px across, enough for an outline and shading) while a VAE with downsampling factor 2
gives a 32×32 latent, so the UNet has cross-attention at 16×16 and 8×8 like SD has at 32/16/8."""

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
PLURALS: dict[str, str] = {shape: shape + "s" for shape in SHAPES}

COLOURS: dict[str, tuple[int, int, int]] = {
    # Saturated hues at least 23° apart; every one keeps saturation > 0.75, far above the
    # backgrounds' (< 0.25), so colour segmentation is a threshold plus a nearest-hue vote.
    "red": (225, 35, 35),  # hue 0°
    "orange": (250, 135, 20),  # 30°
    "yellow": (240, 215, 30),  # 53°
    "green": (40, 175, 60),  # 129°
    "blue": (40, 90, 230),  # 224°
    "purple": (140, 50, 210),  # 274°
}

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "grey": (128, 128, 128),
    "white": (232, 232, 228),
    "black": (28, 28, 30),
    "beige": (222, 206, 172),
}

SIZES: tuple[str, ...] = ("small", "medium", "big")
"""`medium` is never said: an object without a size adjective is medium."""

SIZE_EXTENT_PX: dict[str, tuple[int, int]] = {
    # Range of the object's extent (the larger side of its tight box), in pixels; the 3 px gaps
    # between ranges let the evaluator tell sizes apart despite a pixel of rasterisation error.
    "small": (9, 12),
    "medium": (15, 18),
    "big": (21, 25),
}
SIZE_THRESHOLDS_PX: tuple[float, float] = (14.0, 20.0)
"""Extent boundaries small|medium and medium|big used by the evaluator: midway between the
ranges as measured (the evaluator estimates extent from area, within about ±1 px)."""

COUNT_WORDS: dict[int, str] = {2: "two", 3: "three", 4: "four"}
RELATIONS: tuple[str, ...] = ("left", "right", "above", "below")
RELATION_WORDS: dict[str, str] = {
    "left": "to the left of",
    "right": "to the right of",
    "above": "above",
    "below": "below",
}

MAX_OBJECTS = 4
MIN_GAP_PX = 2
"""Boxes of two objects are at least this many pixels apart, so objects never touch."""

RELATION_MARGIN = 0.15
"""Generated relation scenes have their centres at least this far apart (normalised) along the
relation's axis, and the other axis' offset is at most half of that distance."""


def colour_hues() -> dict[str, float]:
    """Hue in degrees [0, 360) of each palette colour."""
    return {name: colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] * 360.0 for name, rgb in COLOURS.items()}


def object_phrases() -> list[str]:
    """Every singular object phrase of the grammar, e.g. `red circle`, `big blue square`."""
    phrases = []
    for size in ("", "small ", "big "):
        for colour in COLOURS:
            for shape in SHAPES:
                phrases.append(f"{size}{colour} {shape}")
    return phrases


def vocabulary() -> list[str]:
    """Every word a caption of the grammar can contain (the tokenizer learns each as one token)."""
    words = ["a", "and", "to", "the", "left", "right", "of", "above", "below", "on", "background"]
    words += ["small", "big", *COLOURS, *SHAPES, *PLURALS.values(), *COUNT_WORDS.values()]
    words += list(BACKGROUNDS)
    return list(dict.fromkeys(words))


CONTROL_SHAPE_LEVELS: dict[str, float] = {"circle": 1.0, "square": 0.8, "triangle": 0.6, "star": 0.4}
"""Brightness of each shape's label in the Shapes ControlNet's segmentation maps (see `control_palette`)."""


def control_palette() -> dict[str, tuple[int, int, int]]:
    """Label colours of the bundled Shapes ControlNet (the `palette` option of `controlnet-seg`): one per
    colour–shape pair, the object's own colour at a brightness that names the shape. Sizes and plurals
    ("big red circle", "red circles") find their pair through the adapter's key matching."""
    return {
        f"{colour} {shape}": tuple(round(c * level) for c in rgb)  # type: ignore[misc]
        for colour, rgb in COLOURS.items()
        for shape, level in CONTROL_SHAPE_LEVELS.items()
    }
