"""The caption grammar of the Shapes world: structured specs, formatting, parsing and sampling.

Every caption is lower case and has one of these forms (obj = `[small|big] {colour} {shape}`):

    a {obj}
    a {obj} {to the left of|to the right of|above|below} a {obj}
    {two|three|four} {colour} {shape}s
    a {obj} and a {obj}
    a {obj}, a {obj} and a {obj}
    a {obj}, a {obj}, a {obj} and a {obj}

each optionally followed by ` on a {grey|white|black|beige} background`. An object without a size
adjective is medium; the objects of a count caption are medium. In relation and list captions no
two objects share both colour and shape, so every phrase names exactly one object.
`format_caption(parse_caption(c)) == c` for every caption of the grammar.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .world import BACKGROUNDS, COLOURS, COUNT_WORDS, PLURALS, RELATION_WORDS, SHAPES, SIZES

Form = Literal["single", "relation", "count", "list"]
FORMS: tuple[str, ...] = ("single", "relation", "count", "list")
DEFAULT_FORM_WEIGHTS: dict[str, float] = {"single": 0.2, "relation": 0.35, "count": 0.15, "list": 0.3}


class CaptionError(ValueError):
    """A caption that the Shapes grammar does not produce."""


@dataclass(frozen=True)
class ObjectSpec:
    """One object a caption asks for."""

    colour: str
    shape: str
    size: str = "medium"  # small | medium | big; medium is the unsaid size

    @property
    def phrase(self) -> str:
        """The object's words as they appear in a caption: `big blue square`, `red circle`."""
        adjective = "" if self.size == "medium" else f"{self.size} "
        return f"{adjective}{self.colour} {self.shape}"


@dataclass(frozen=True)
class CaptionSpec:
    """A parsed caption.

    `objects` lists every object the scene holds, in caption order (a count caption repeats its
    object `count` times). For `relation`, `objects[0]` is `relation` of `objects[1]`: relation
    `left` means objects[0] is to the left of objects[1].
    """

    form: str
    objects: tuple[ObjectSpec, ...]
    relation: str | None = None  # left | right | above | below
    background: str | None = None  # the background colour the caption names, if any

    @property
    def count(self) -> int | None:
        return len(self.objects) if self.form == "count" else None

    @property
    def phrases(self) -> list[str]:
        return [o.phrase for o in self.objects]

    @property
    def caption(self) -> str:
        return format_caption(self)


def format_caption(spec: CaptionSpec) -> str:
    """The caption of a spec (the inverse of `parse_caption`)."""
    objs = spec.objects
    if spec.form == "single":
        text = f"a {objs[0].phrase}"
    elif spec.form == "relation":
        text = f"a {objs[0].phrase} {RELATION_WORDS[spec.relation or '']} a {objs[1].phrase}"
    elif spec.form == "count":
        text = f"{COUNT_WORDS[len(objs)]} {objs[0].colour} {PLURALS[objs[0].shape]}"
    elif spec.form == "list":
        items = [f"a {o.phrase}" for o in objs]
        text = ", ".join(items[:-1]) + " and " + items[-1]
    else:
        raise CaptionError(f"unknown caption form {spec.form!r}; known forms: {', '.join(FORMS)}")
    if spec.background is not None:
        text += f" on a {spec.background} background"
    return text


_SIZE_WORDS = ("small", "big")
_COUNT_NUMBERS = {word: n for n, word in COUNT_WORDS.items()}
_SINGULARS = {plural: shape for shape, plural in PLURALS.items()}


def _parse_object(words: list[str], caption: str) -> ObjectSpec:
    if len(words) < 3 or words[0] != "a":
        raise CaptionError(f"expected 'a [small|big] <colour> <shape>' but found {' '.join(words)!r} in {caption!r}")
    size = "medium"
    rest = words[1:]
    if rest[0] in _SIZE_WORDS:
        size, rest = rest[0], rest[1:]
    if len(rest) != 2 or rest[0] not in COLOURS or rest[1] not in SHAPES:
        raise CaptionError(
            f"cannot read object {' '.join(words)!r} in {caption!r}: need a colour "
            f"({', '.join(COLOURS)}) then a shape ({', '.join(SHAPES)})"
        )
    return ObjectSpec(colour=rest[0], shape=rest[1], size=size)


def parse_caption(caption: str) -> CaptionSpec:
    """Parse a caption of the Shapes grammar into a `CaptionSpec`; raise `CaptionError` otherwise."""
    text = " ".join(caption.strip().lower().split())
    background = None
    words = text.replace(",", " ,").split()
    if len(words) >= 4 and words[-1] == "background" and words[-4:-2] == ["on", "a"]:
        background = words[-2]
        if background not in BACKGROUNDS:
            raise CaptionError(f"unknown background {background!r} in {caption!r}; known: {', '.join(BACKGROUNDS)}")
        words = words[:-4]
    if not words:
        raise CaptionError(f"caption {caption!r} names no object")

    if words[0] in _COUNT_NUMBERS:
        if len(words) != 3 or words[1] not in COLOURS or words[2] not in _SINGULARS:
            raise CaptionError(f"a count caption reads '<two|three|four> <colour> <shape>s', got {caption!r}")
        obj = ObjectSpec(colour=words[1], shape=_SINGULARS[words[2]])
        return CaptionSpec("count", (obj,) * _COUNT_NUMBERS[words[0]], background=background)

    joined = " ".join(words)
    for relation, phrase in RELATION_WORDS.items():
        marker = f" {phrase} "
        if marker in joined:
            left, right = joined.split(marker, 1)
            objs = (_parse_object(left.split(), caption), _parse_object(right.split(), caption))
            return CaptionSpec("relation", objs, relation=relation, background=background)

    if "and" in words:
        cut = len(words) - 1 - words[::-1].index("and")
        head, last = words[:cut], words[cut + 1 :]
        items: list[list[str]] = [[]]
        for word in head:
            if word == ",":
                items.append([])
            else:
                items[-1].append(word)
        items.append(last)
        if len(items) > 4:
            raise CaptionError(f"a list caption names at most 4 objects, {caption!r} names {len(items)}")
        objs = tuple(_parse_object(item, caption) for item in items)
        return CaptionSpec("list", objs, background=background)

    return CaptionSpec("single", (_parse_object(words, caption),), background=background)


def sample_spec(
    rng: np.random.Generator,
    form_weights: dict[str, float] | None = None,
    background_mention_p: float = 0.5,
) -> tuple[CaptionSpec, str]:
    """Draw a caption spec and the scene's background colour (said or not in the caption)."""
    weights = form_weights or DEFAULT_FORM_WEIGHTS
    forms = list(weights)
    p = np.asarray([weights[f] for f in forms], dtype=float)
    form = forms[int(rng.choice(len(forms), p=p / p.sum()))]
    colours, shapes = list(COLOURS), list(SHAPES)
    size_p = np.asarray([0.3, 0.4, 0.3])

    def distinct_objects(n: int) -> tuple[ObjectSpec, ...]:
        pairs = rng.choice(len(colours) * len(shapes), size=n, replace=False)
        sizes = rng.choice(len(SIZES), size=n, p=size_p)
        return tuple(
            ObjectSpec(colours[int(k) // len(shapes)], shapes[int(k) % len(shapes)], SIZES[int(s)])
            for k, s in zip(pairs, sizes)
        )

    relation = None
    if form == "single":
        objs = distinct_objects(1)
    elif form == "relation":
        objs = distinct_objects(2)
        relation = list(RELATION_WORDS)[int(rng.integers(4))]
    elif form == "count":
        obj = ObjectSpec(colours[int(rng.integers(len(colours)))], shapes[int(rng.integers(len(shapes)))])
        objs = (obj,) * int(rng.integers(2, 5))
    else:
        objs = distinct_objects(int(rng.integers(2, 5)))
    background = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    said = background if rng.random() < background_mention_p else None
    return CaptionSpec(form, objs, relation=relation, background=said), background


def all_forms_examples() -> Sequence[str]:
    """One caption of every form (for docs and tests)."""
    return (
        "a red circle",
        "a big blue square to the left of a small yellow star",
        "a green triangle above a purple circle on a grey background",
        "three orange stars",
        "a red square and a blue circle",
        "a small red circle, a big green square and a purple star on a beige background",
        "a yellow circle, a blue square, a red triangle and a green star",
    )
