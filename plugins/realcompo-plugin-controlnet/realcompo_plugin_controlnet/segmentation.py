"""Mask and box objects → the colour segmentation map that segmentation ControlNets read.

Segmentation ControlNets (``lllyasviel/control_v11p_sd15_seg`` and its kin) were trained on
semantic maps of the ADE20K scene-parsing benchmark (150 classes), where a colour *is* a class:
the model draws a person where it sees (150, 5, 61). So each object is painted in the colour of
the class its phrase names:

1. an explicit ``palette`` (phrase → RGB) wins: the label colours of a ControlNet trained on its
   own label set (another dataset's classes, or the bundled Shapes ControlNet's objects);
2. then an explicit ``classes`` mapping (phrase or head noun → ADE20K class name);
3. else the whole phrase, then its last word (singular or plural), is looked up among the class
   names and the synonyms in `SYNONYMS` ("woman" → person, "dog" → animal, "couch" → sofa...);
4. else the object gets a colour of `FALLBACK_COLORS`, which are not ADE20K colours, so the model
   sees "something distinct here" without a class (the n-th unknown phrase gets the n-th colour;
   objects with the same phrase share it).

``palette`` and ``classes`` keys match the phrase, or its trailing words, each also with the last
word made singular: "two big red circles" finds a key "red circle".

Pixels outside every region are black (no class). Objects are painted in layout order, later ones
on top where regions overlap. Masks are resized to the image with nearest-neighbour sampling; a box
is painted as the filled rectangle of the pixels whose centres lie inside it (a planner that gives
boxes says where an object is, not its outline, and a ControlNet trained on box maps reads them so).
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

from realcompo_sdk.layout import Layout, LayoutObject

# ADE20K (SceneParse150) classes and their RGB colours, in class-index order (index 0 = wall).
_ADE20K = """
wall 120,120,120; building 180,120,120; sky 6,230,230; floor 80,50,50; tree 4,200,3; ceiling 120,120,80;
road 140,140,140; bed 204,5,255; windowpane 230,230,230; grass 4,250,7; cabinet 224,5,255; sidewalk 235,255,7;
person 150,5,61; earth 120,120,70; door 8,255,51; table 255,6,82; mountain 143,255,140; plant 204,255,4;
curtain 255,51,7; chair 204,70,3; car 0,102,200; water 61,230,250; painting 255,6,51; sofa 11,102,255;
shelf 255,7,71; house 255,9,224; sea 9,7,230; mirror 220,220,220; rug 255,9,92; field 112,9,255;
armchair 8,255,214; seat 7,255,224; fence 255,184,6; desk 10,255,71; rock 255,41,10; wardrobe 7,255,255;
lamp 224,255,8; bathtub 102,8,255; railing 255,61,6; cushion 255,194,7; base 255,122,8; box 0,255,20;
column 255,8,41; signboard 255,5,153; chest of drawers 6,51,255; counter 235,12,255; sand 160,150,20;
sink 0,163,255; skyscraper 140,140,140; fireplace 250,10,15; refrigerator 20,255,0; grandstand 31,255,0;
path 255,31,0; stairs 255,224,0; runway 153,255,0; case 0,0,255; pool table 255,71,0; pillow 0,235,255;
screen door 0,173,255; stairway 31,0,255; river 11,200,200; bridge 255,82,0; bookcase 0,255,245;
blind 0,61,255; coffee table 0,255,112; toilet 0,255,133; flower 255,0,0; book 255,163,0; hill 255,102,0;
bench 194,255,0; countertop 0,143,255; stove 51,255,0; palm tree 0,82,255; kitchen island 0,255,41;
computer 0,255,173; swivel chair 10,0,255; boat 173,255,0; bar 0,255,153; arcade machine 255,92,0;
hovel 255,0,255; bus 255,0,245; towel 255,0,102; light 255,173,0; truck 255,0,20; tower 255,184,184;
chandelier 0,31,255; awning 0,255,61; streetlight 0,71,255; booth 255,0,204; television 0,255,194;
airplane 0,255,82; dirt track 0,10,255; apparel 0,112,255; pole 51,0,255; land 0,194,255; bannister 0,122,255;
escalator 0,255,163; ottoman 255,153,0; bottle 0,255,10; buffet 255,112,0; poster 143,255,0; stage 82,0,255;
van 163,255,0; ship 255,235,0; fountain 8,184,170; conveyer belt 133,0,255; canopy 0,255,92; washer 184,0,255;
toy 255,0,31; swimming pool 0,184,255; stool 0,214,255; barrel 255,0,112; basket 92,255,0; waterfall 0,224,255;
tent 112,224,255; bag 70,184,160; minibike 163,0,255; cradle 153,0,255; oven 71,255,0; ball 255,0,163;
food 255,204,0; step 255,0,143; tank 0,255,235; trade name 133,255,0; microwave 255,0,235; pot 245,0,255;
animal 255,0,122; bicycle 255,245,0; lake 10,190,212; dishwasher 214,255,0; screen 0,204,255; blanket 20,0,255;
sculpture 255,255,0; hood 0,153,255; sconce 0,41,255; vase 0,255,204; traffic light 41,0,255; tray 41,255,0;
ashcan 173,0,255; fan 0,245,255; pier 71,0,255; crt screen 122,0,255; plate 0,255,184; monitor 0,92,255;
bulletin board 184,255,0; shower 0,133,255; radiator 255,214,0; glass 25,194,194; clock 102,255,0; flag 92,0,255
"""


def _parse(table: str) -> dict[str, tuple[int, int, int]]:
    classes: dict[str, tuple[int, int, int]] = {}
    for entry in table.replace("\n", " ").split(";"):
        name, _, rgb = entry.strip().rpartition(" ")
        r, g, b = (int(v) for v in rgb.split(","))
        classes[name] = (r, g, b)
    return classes


ADE20K_COLORS: dict[str, tuple[int, int, int]] = _parse(_ADE20K)

# Words that name an ADE20K class without being its name.
SYNONYMS: dict[str, str] = {
    **dict.fromkeys("man woman boy girl child kid baby people men women lady gentleman player dancer "
                    "rider skier surfer student doctor chef soldier".split(), "person"),
    **dict.fromkeys("cat kitten dog puppy corgi horse cow sheep bird bear elephant zebra giraffe deer "
                    "rabbit fox lion tiger monkey duck chicken goat pig".split(), "animal"),
    "couch": "sofa", "tv": "television", "motorcycle": "minibike", "motorbike": "minibike", "bike": "bicycle",
    "plane": "airplane", "aeroplane": "airplane", "trash can": "ashcan", "bin": "ashcan", "cup": "glass",
    "mug": "glass", "window": "windowpane", "carpet": "rug", "picture": "painting", "lorry": "truck",
    "mountains": "mountain", "ocean": "sea", "pond": "lake", "stone": "rock", "bush": "plant",
    "flowers": "flower", "laptop": "computer", "teddy bear": "toy", "sign": "signboard",
}

# Distinct colours for phrases that name no ADE20K class: a golden-ratio hue walk at medium
# saturation and value, none of them an ADE20K colour.
def _fallback_colors(n: int) -> tuple[tuple[int, int, int], ...]:
    taken = set(ADE20K_COLORS.values())
    colors: list[tuple[int, int, int]] = []
    i = 0
    while len(colors) < n:
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.55, 0.7)
        color = (round(r * 255), round(g * 255), round(b * 255))
        if color not in taken and color not in colors:
            colors.append(color)
        i += 1
    return tuple(colors)


MAX_OBJECTS = 32
FALLBACK_COLORS: tuple[tuple[int, int, int], ...] = _fallback_colors(MAX_OBJECTS)


def _singular_forms(word: str) -> list[str]:
    forms = [word]
    if word.endswith("ies") and len(word) > 4:
        forms.append(word[:-3] + "y")
    if word.endswith("es") and len(word) > 3:
        forms.append(word[:-2])
    if word.endswith("s") and len(word) > 2:
        forms.append(word[:-1])
    return forms


def check_classes(classes: Mapping[str, str] | None) -> dict[str, str]:
    """Validate a phrase → ADE20K class mapping; keys are matched lower-case."""
    from realcompo_sdk.errors import LayoutError

    for key, cls in (classes or {}).items():
        if cls not in ADE20K_COLORS:
            raise LayoutError(f"classes[{key!r}] = {cls!r} is not an ADE20K class; known classes: "
                              f"{', '.join(sorted(ADE20K_COLORS))}")
    return {" ".join(k.lower().split()): v for k, v in (classes or {}).items()}


def check_palette(palette: Mapping[str, Sequence[int]] | None) -> dict[str, tuple[int, int, int]]:
    """Validate a phrase → RGB label palette; keys are matched lower-case. Black means "no object"."""
    from realcompo_sdk.errors import LayoutError

    checked: dict[str, tuple[int, int, int]] = {}
    for key, rgb in (palette or {}).items():
        values = tuple(rgb)
        if len(values) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in values):
            raise LayoutError(f"palette[{key!r}] = {rgb!r} is not an RGB colour: give three integers 0-255")
        if values == (0, 0, 0):
            raise LayoutError(f"palette[{key!r}] is black, the colour of 'no object' in a segmentation map; pick another")
        checked[" ".join(key.lower().split())] = values  # type: ignore[assignment]
    return checked


def phrase_keys(phrase: str) -> list[str]:
    """The keys a phrase matches in `palette` / `classes`, most specific first: the phrase, then its
    trailing words, each as given and with the last word made singular."""
    words = phrase.lower().split()
    keys: list[str] = []
    for i in range(len(words)):
        *head, last = words[i:]
        for form in _singular_forms(last):
            key = " ".join([*head, form])
            if key not in keys:
                keys.append(key)
    return keys


def palette_color(phrase: str, palette: Mapping[str, Sequence[int]] | None) -> tuple[int, int, int] | None:
    """The palette colour of a phrase (see `phrase_keys`), or None."""
    checked = check_palette(palette)
    return next((checked[k] for k in phrase_keys(phrase) if k in checked), None)


def ade20k_class(phrase: str, classes: Mapping[str, str] | None = None) -> str | None:
    """The ADE20K class a phrase names (see the module docstring), or None."""
    text = " ".join(phrase.lower().split())
    words = text.split()
    candidates = [text, *(" ".join(words[i:]) for i in range(1, len(words)))]
    candidates += _singular_forms(words[-1]) if words else []
    overrides = check_classes(classes)
    for candidate in candidates:
        if candidate in overrides:
            return overrides[candidate]
    for candidate in candidates:
        for form in _singular_forms(candidate):
            if form in ADE20K_COLORS:
                return form
            if form in SYNONYMS:
                return SYNONYMS[form]
    return None


def object_colors(layout: Layout, classes: Mapping[str, str] | None = None,
                  palette: Mapping[str, Sequence[int]] | None = None) -> list[tuple[int, int, int]]:
    """The colour each object is painted in, in layout order."""
    colors: list[tuple[int, int, int]] = []
    unknown: dict[str, tuple[int, int, int]] = {}
    for obj in layout.objects:
        own = palette_color(obj.phrase, palette)
        cls = ade20k_class(obj.phrase, classes) if own is None else None
        if own is not None:
            colors.append(own)
        elif cls is not None:
            colors.append(ADE20K_COLORS[cls])
        else:
            key = obj.phrase.lower()
            if key not in unknown:
                unknown[key] = FALLBACK_COLORS[len(unknown) % len(FALLBACK_COLORS)]
            colors.append(unknown[key])
    return colors


def region_pixels(obj: LayoutObject, height: int, width: int) -> np.ndarray | None:
    """(height, width) bool: the pixels a mask or box object covers; None for other kinds."""
    if obj.mask is not None:
        mask = Image.fromarray(np.asarray(obj.mask.to_rows(), dtype=np.uint8) * 255)
        return np.asarray(mask.resize((width, height), Image.NEAREST)) > 127
    if obj.box is not None:
        xs = (np.arange(width) + 0.5) / width
        ys = (np.arange(height) + 0.5) / height
        b = obj.box
        return ((ys >= b.y0) & (ys < b.y1))[:, None] & ((xs >= b.x0) & (xs < b.x1))[None, :]
    return None


def render_segmentation(layout: Layout, height: int, width: int, classes: Mapping[str, str] | None = None,
                        palette: Mapping[str, Sequence[int]] | None = None) -> Image.Image:
    """An RGB segmentation map of `height` x `width` from the layout's mask and box objects (others are skipped)."""
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for obj, color in zip(layout.objects, object_colors(layout, classes, palette)):
        inside = region_pixels(obj, height, width)
        if inside is not None:
            canvas[inside] = color
    return Image.fromarray(canvas)
