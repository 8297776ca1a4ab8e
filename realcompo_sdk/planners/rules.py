"""The `rules` planner: simple English to a layout of boxes, offline and deterministic.

It reads noun phrases ("a small red circle", "two cats", "three apples"), lists joined by "and",
"with" and commas, spatial relations between them ("to the left of", "right of", "above", "below",
"on top of", "under", "next to", "between ... and ...", "in front of", "behind"), absolute places
("on the left", "at the top of the image", "in the bottom right corner") and an optional
background ("on a grey background"). Words it does not know are kept inside a phrase or skipped
between phrases, so "a cat sitting on top of a table next to a dog" gives a cat on a table and a dog
beside it. It covers the whole caption grammar of the Shapes world.

Layout: every object instance is a box whose larger side is its size; "small", unnamed and "big"
objects take 0.17, 0.26 and 0.36 of the image side (the Shapes world's size classes: 9-12, 15-18 and
21-25 px of 64); a few common nouns are larger or smaller, wider or taller. Groups ("two cats", "a
cat and a dog") are laid out in a row, or a grid when a row does not fit (left-placed objects
first, right-placed last, top- and bottom-placed ones in rows above and below); relations stack the
groups left to right or top to bottom, one relation at a time from the first one, so each relation
holds between box centres with a clear margin. The whole arrangement is scaled down uniformly if
needed, then centred in the image with `margin` around it, or moved to the image's side when
every placed object names the same side ("a cat on the left"). Boxes never overlap.

Phrases are the prompt's own words, without articles and numbers: "two red circles" gives two
objects with the phrase "red circles"; the core's token aligner maps each phrase to its tokens.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import ClassVar

from pydantic import Field, model_validator

from ..errors import PlannerInputError
from ..interfaces import AdapterOptions, LayoutPlanner
from ..layout import Box, Layout, LayoutObject

# -- vocabulary ---------------------------------------------------------------------------------

_ARTICLES = {"a", "an", "the", "this", "that", "these", "those", "my", "your", "his", "her", "its", "our",
             "their", "each", "every", "another", "some", "any"}
_SINGLE_DETERMINERS = {"a", "an", "this", "that", "another", "each", "every"}
_NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
            "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "single": 1, "both": 2, "twin": 2,
            "several": 3, "few": 3, "many": 4, "multiple": 3, "dozen": 12}
# Multi-word counts, read before articles: "a pair of shoes", "a couple of birds", "a few apples".
_COUNT_PHRASES: tuple[tuple[tuple[str, ...], int], ...] = (
    (("a", "pair", "of"), 2), (("a", "couple", "of"), 2), (("a", "few"), 3), (("a", "dozen"), 12),
    (("a", "group", "of"), 3), (("a", "bunch", "of"), 3), (("a", "lot", "of"), 4), (("lots", "of"), 4),
    (("a", "row", "of"), 3), (("a", "set", "of"), 3), (("pair", "of"), 2), (("couple", "of"), 2),
)

# (words, relation, tight): "tight" relations touch (a cat *on* a table), others keep a gap.
_RELATIONS: tuple[tuple[tuple[str, ...], str, bool], ...] = tuple(sorted([
    *[(("to", "the", side, "of"), side, False) for side in ("left", "right")],
    *[(("on", "the", side, "of"), side, False) for side in ("left", "right")],
    *[(("at", "the", side, "of"), side, False) for side in ("left", "right")],
    *[(("to", "the", side, "side", "of"), side, False) for side in ("left", "right")],
    *[(("on", "the", side, "side", "of"), side, False) for side in ("left", "right")],
    *[((side, "of"), side, False) for side in ("left", "right")],
    (("above",), "above", False), (("over",), "above", False),
    (("on", "top", "of"), "above", True), (("on",), "above", True), (("atop",), "above", True),
    (("upon",), "above", True), (("onto",), "above", True), (("resting", "on"), "above", True),
    (("below",), "below", False), (("under",), "below", False), (("beneath",), "below", False),
    (("underneath",), "below", False), (("at", "the", "bottom", "of"), "below", False),
    (("next", "to"), "next", False), (("beside",), "next", False), (("besides",), "next", False),
    (("near",), "next", False), (("by",), "next", False), (("alongside",), "next", False),
    (("close", "to"), "next", False), (("adjacent", "to"), "next", False), (("nearby",), "next", False),
    (("between",), "between", False), (("in", "between"), "between", False),
    (("in", "front", "of"), "below", False), (("behind",), "above", False),
], key=lambda r: -len(r[0])))

# Absolute places in the image ("a cat on the left"), read before relations so that "on" does not
# become "on top of"; with "of" after them they are relations ("on the left of a dog") unless the
# "of" names the picture itself ("on the left side of the image").
_ANCHORS: tuple[tuple[tuple[str, ...], str], ...] = tuple(sorted([
    *[((prep, "the", side, *tail), side) for prep in ("on", "to", "at", "in") for side in ("left", "right")
      for tail in ((), ("side",), ("half",))],
    *[((prep, "the", side, *tail), side) for prep in ("at", "in", "on") for side in ("top", "bottom")
      for tail in ((), ("half",))],
    *[((prep, "the", v, h, *tail), f"{v} {h}") for prep in ("at", "in", "on") for v in ("top", "bottom")
      for h in ("left", "right") for tail in ((), ("corner",))],
], key=lambda a: -len(a[0])))
_PICTURE_NOUNS = {"image", "picture", "frame", "scene", "canvas", "photo", "photograph", "painting", "view"}

_CONJUNCTIONS = {"and", "with", "plus", "&", "alongside", "together", "as", "well", "also", "or", "nor"}
# Words that end a noun phrase and are otherwise ignored (verbs, prepositions, pronouns...).
_FUNCTION_WORDS = {
    "is", "are", "was", "were", "be", "been", "being", "am", "has", "have", "had", "having", "does", "do",
    "did", "which", "who", "whom", "whose", "while", "where", "when", "there", "here", "it", "they", "them",
    "he", "she", "we", "you", "i", "of", "in", "at", "to", "for", "from", "into", "through", "across",
    "inside", "within", "around", "toward", "towards", "against", "along", "about", "than", "then", "not",
    "no", "very", "sits", "stands", "lies", "holds", "looks", "faces", "rests", "sit", "stand", "lie",
    "hold", "look", "chases", "eats", "plays", "walks", "runs", "flies", "jumps", "wears", "carries",
    "rides", "drinks", "reads", "watches", "sleeps", "swims", "floats", "hangs", "grows", "shows",
    "left", "right", "top", "bottom", "middle", "center", "centre", "side", "corner", "front", "back",
    "foreground", "distance", "each", "other", "one", "another",
}
_INTENSIFIERS = {"very", "really", "quite", "extremely", "super", "rather", "slightly", "bright", "dark",
                 "light", "pale", "deep"}
_SIZE_WORDS = {
    "small": "small", "little": "small", "tiny": "small", "mini": "small", "miniature": "small",
    "smaller": "small", "short": "small",
    "big": "big", "large": "big", "huge": "big", "giant": "big", "enormous": "big", "massive": "big",
    "bigger": "big", "larger": "big", "tall": "big", "gigantic": "big",
    "medium": "medium", "medium-sized": "medium",
}
_ADJECTIVES = {
    "red", "green", "blue", "yellow", "purple", "orange", "pink", "brown", "black", "white", "grey", "gray",
    "beige", "golden", "silver", "cyan", "magenta", "violet", "teal", "turquoise", "crimson", "navy",
    "wooden", "metal", "metallic", "glass", "plastic", "stone", "shiny", "old", "young", "new", "happy",
    "sad", "cute", "fluffy", "furry", "striped", "spotted", "round", "square", "triangular", "colorful",
    "colourful", "bright", "dark", "pale", "beautiful", "ugly", "wet", "dry", "hot", "cold", "fresh",
    "ripe", "empty", "full", "open", "closed", "sleeping", "running", "flying", "smiling", *_SIZE_WORDS,
}
# Nouns with an unusual size or shape: (size factor, width/height aspect). Unknown nouns are 1, 1.
_NOUN_SHAPES: dict[str, tuple[float, float]] = {
    "person": (1.2, 0.5), "man": (1.2, 0.5), "woman": (1.2, 0.5), "child": (0.9, 0.55), "boy": (1.0, 0.55),
    "girl": (1.0, 0.55), "people": (1.2, 0.5), "astronaut": (1.2, 0.55), "player": (1.2, 0.5),
    "giraffe": (1.4, 0.6), "bottle": (0.8, 0.4), "vase": (0.8, 0.6), "lamp": (1.0, 0.5), "tree": (1.5, 0.7),
    "tower": (1.5, 0.4), "candle": (0.6, 0.4), "glass": (0.6, 0.7), "cup": (0.7, 1.0), "mug": (0.7, 1.0),
    "table": (1.4, 1.6), "bench": (1.3, 2.0), "couch": (1.4, 2.0), "sofa": (1.4, 2.0), "bed": (1.5, 1.6),
    "car": (1.4, 1.8), "bus": (1.5, 1.8), "truck": (1.5, 1.7), "train": (1.6, 2.2), "boat": (1.3, 1.7),
    "horse": (1.4, 1.3), "cow": (1.3, 1.4), "elephant": (1.5, 1.3), "bear": (1.2, 1.1), "dog": (1.0, 1.2),
    "cat": (0.9, 1.1), "bird": (0.6, 1.1), "apple": (0.55, 1.0), "orange": (0.55, 1.0), "banana": (0.6, 1.6),
    "ball": (0.6, 1.0), "book": (0.6, 1.3), "phone": (0.5, 0.6), "house": (1.6, 1.2), "building": (1.6, 0.8),
    "mountain": (1.6, 1.6), "sun": (0.8, 1.0), "moon": (0.7, 1.0), "chair": (1.0, 0.8), "laptop": (0.8, 1.4),
    "keyboard": (0.8, 2.5), "clock": (0.6, 1.0), "flower": (0.6, 0.8), "key": (0.4, 1.5), "spoon": (0.5, 0.4),
    "fork": (0.5, 0.4), "knife": (0.5, 0.4), "egg": (0.4, 0.8),
}
_NOUNS = {
    "berry", "shelf", "cupcake", "candle", "pillow", "wall", "lamp", "shoe", "sock", "bus", "brush",
    # Shapes world, COCO categories and other everyday nouns: used to find the head of a phrase
    # ("a dog chases" → "dog"); an unknown word can still be a head.
    "circle", "square", "triangle", "star", "rectangle", "oval", "diamond", "heart", "hexagon", "cube",
    "sphere", "cone", "cylinder", "pyramid", "shape", "block", "object",
    "person", "bicycle", "bike", "car", "motorcycle", "airplane", "plane", "train", "truck", "boat",
    "traffic", "light", "hydrant", "sign", "meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "bag", "tie", "suitcase",
    "frisbee", "skis", "snowboard", "ball", "kite", "bat", "glove", "skateboard", "surfboard", "racket",
    "bottle", "glass", "cup", "mug", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "pizza", "donut", "doughnut", "cake", "chair", "couch", "sofa", "plant",
    "bed", "table", "toilet", "tv", "television", "laptop", "mouse", "remote", "keyboard", "phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "fridge", "book", "clock", "vase", "scissors",
    "teddy", "toothbrush", "man", "woman", "child", "boy", "girl", "baby", "people", "astronaut", "player",
    "tree", "flower", "house", "building", "tower", "castle", "bridge", "mountain", "river", "lake", "sun",
    "moon", "cloud", "rock", "stone", "hat", "shirt", "dress", "window", "door",
    "box", "basket", "chicken", "duck", "fish", "rabbit", "lion", "tiger", "monkey", "fox", "wolf", "owl",
    "frog", "turtle", "snake", "pig", "goat", "deer", "butterfly", "bee", "robot", "egg", "key", "pen",
    "pencil", "painting", "ring", "crown", "sword", "shield", "guitar", "piano", "drum", "violin", "balloon",
    "cookie", "lemon", "strawberry", "cherry", "grape", "pear", "peach", "tomato", "potato", "pumpkin",
    "mushroom", "leaf", "teapot", "kettle", "plate", "pot", "pan", "jar", "can", "coin", "wallet",
}
_PLURAL_EXCEPTIONS = {"people": "person", "men": "man", "women": "woman", "children": "child", "mice": "mouse",
                      "geese": "goose", "feet": "foot", "teeth": "tooth", "knives": "knife", "leaves": "leaf",
                      "wolves": "wolf", "shelves": "shelf", "loaves": "loaf", "halves": "half", "sheep": "sheep",
                      "fish": "fish", "deer": "deer", "skis": "skis", "scissors": "scissors", "glasses": "glasses"}
_NOT_PLURAL = {"glass", "bus", "grass", "dress", "chess", "lens", "cactus", "octopus", "walrus", "compass",
               "class", "moss", "boss", "circus", "tennis", "hummus", "platypus", "iris", "canvas", "news",
               "ms", "is", "was", "has", "this", "his", "its", "yes", "gas", "atlas", "lotus", "virus"}
_BACKGROUND_WORDS = {"background", "backdrop", "backgrounds", "backdrops"}
# Places read as the background when they end the prompt after "in", "at" or a relation ("on the moon").
_SETTINGS = {"park", "forest", "woods", "beach", "desert", "field", "meadow", "city", "street", "room", "kitchen",
             "garden", "ocean", "sea", "sky", "space", "snow", "moon", "jungle", "countryside", "landscape",
             "night", "sunset", "studio", "living", "bedroom", "office", "classroom", "library", "savanna",
             "grassland", "valley", "village", "town", "underwater", "universe", "galaxy"}
_FILLER_HEADS = {"photo", "photograph", "picture", "image", "painting", "drawing", "illustration", "render",
                 "rendering", "sketch", "scene", "view", "shot", "close-up", "closeup", "portrait", "snapshot",
                 "artwork", "poster", "cartoon", "style"}

_WORD_RE = re.compile(r"[A-Za-z0-9]+(?:['’\-][A-Za-z0-9]+)*|[,;:.!?&]")


def singular(word: str) -> str:
    """A noun's singular form, by rule ("circles" → "circle", "boxes" → "box", "berries" → "berry")."""
    w = word.lower()
    if w in _PLURAL_EXCEPTIONS:
        return _PLURAL_EXCEPTIONS[w]
    if w in _NOT_PLURAL or len(w) <= 3 or not w.endswith("s") or w.endswith("ss"):
        return w
    candidates = [w[:-1], w[:-2]]  # "houses" → "house", "buses" → "bus"
    if w.endswith("ies") and len(w) > 4:
        candidates.insert(0, w[:-3] + "y")
    if w.endswith("ves"):
        candidates[:0] = [w[:-3] + "f", w[:-3] + "fe"]
    for candidate in candidates:
        if candidate in _NOUNS:
            return candidate
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith(("ches", "shes", "xes", "zes", "sses")):
        return w[:-2]
    return w[:-1]


def _is_plural(word: str) -> bool:
    w = word.lower()
    return w in ("people", "men", "women", "children", "mice", "geese", "feet", "teeth") or singular(w) != w


# -- parsing ------------------------------------------------------------------------------------

@dataclass
class _Word:
    text: str
    low: str
    start: int
    end: int


@dataclass
class _NounPhrase:
    start: int  # character span of the phrase in the prompt
    end: int
    head: str  # singular, lower case
    size: str | None  # small | medium | big | None (unsaid)
    count: int
    is_background: bool = False
    anchor: str | None = None  # "left", "right", "top", "bottom" or "top left" etc.: a place in the image


@dataclass
class _Group:
    phrases: list[_NounPhrase] = field(default_factory=list)


@dataclass
class _Parse:
    groups: list[_Group]
    relations: list[tuple[str, bool]]  # between groups[i] and groups[i + 1]
    background: tuple[int, int] | None  # character span


def _tokenize(prompt: str) -> list[_Word]:
    return [_Word(m.group(), m.group().lower().replace("’", "'"), m.start(), m.end()) for m in _WORD_RE.finditer(prompt)]


def _match(words: list[_Word], i: int, pattern: tuple[str, ...]) -> bool:
    return tuple(w.low for w in words[i:i + len(pattern)]) == pattern


def _is_content(word: _Word) -> bool:
    low = word.low
    if not re.match(r"[a-z0-9]", low) or low in _ARTICLES or low in _CONJUNCTIONS:
        return False
    if low in _NUMBERS or low.isdigit():
        return False
    if low in _FUNCTION_WORDS and low not in _NOUNS and low not in _ADJECTIVES:
        return False
    return not (low.endswith("ly") and len(low) > 4 and low not in _NOUNS and low not in ("holly", "jelly", "belly"))


def _anchor_at(words: list[_Word], i: int) -> tuple[str, int] | None:
    """An absolute place at `i` ("on the left", "at the top of the image") and its length in words."""
    for pattern, side in _ANCHORS:
        if not _match(words, i, pattern):
            continue
        end = i + len(pattern)
        if end < len(words) and words[end].low == "of":
            k = end + 1 + (end + 1 < len(words) and words[end + 1].low in _ARTICLES)
            if k < len(words) and words[k].low in _PICTURE_NOUNS:
                return side, k + 1 - i
            return None  # "on the left of a dog" is a relation
        return side, len(pattern)
    return None


def _relation_at(words: list[_Word], i: int) -> tuple[str, bool, int] | None:
    for pattern, relation, tight in _RELATIONS:
        if _match(words, i, pattern):
            return relation, tight, len(pattern)
    return None


def _read_noun_phrase(words: list[_Word], i: int) -> tuple[_NounPhrase | None, int]:
    """Read ``[count|article] modifiers* head`` at `i`; return the phrase (or None) and the next index."""
    count: int | None = None
    determined = False  # an article or a count introduces the phrase
    single = False
    for pattern, n in _COUNT_PHRASES:
        if _match(words, i, pattern):
            count, i, determined = n, i + len(pattern), True
            break
    else:
        low = words[i].low
        if low in _ARTICLES:
            single, determined = low in _SINGLE_DETERMINERS, True
            i += 1
        elif low in _NUMBERS or low.isdigit():
            count, i, determined = (_NUMBERS[low] if low in _NUMBERS else int(low)), i + 1, True
    if i < len(words) and count is None and words[i].low in _NUMBERS and words[i].low != "one":
        count, i = _NUMBERS[words[i].low], i + 1  # "the two cats"
    run: list[_Word] = []
    while i < len(words):
        word = words[i]
        if word.low == "," and run and not _has_noun(run) and i + 1 < len(words) and _is_content(words[i + 1]) \
                and _relation_at(words, i + 1) is None:
            i += 1  # "a big, fluffy cat": a comma between adjectives
            continue
        if _relation_at(words, i) is not None:
            break
        if not _is_content(word):
            if word.low in _INTENSIFIERS and i + 1 < len(words) and _is_content(words[i + 1]):
                run.append(word)  # "a very small circle"
                i += 1
                continue
            break
        if run and _has_noun(run) and _is_verb_like(word.low) and not _is_noun(word.low):
            break  # "a dog bites a man", "a cat sitting on a mat": a verb after the noun ends the phrase
        if _is_participle(word.low) and not run and (i + 1 >= len(words) or not _is_content(words[i + 1])
                                                     or _relation_at(words, i + 1) is not None):
            break  # "... riding a horse": a participle, not a modifier
        run.append(word)
        i += 1
        if i + 1 < len(words) and words[i].low == "of" and _is_content(words[i + 1]) \
                and run[-1].low not in _FILLER_HEADS:
            run.append(words[i])  # "a cup of coffee" is one phrase about a cup
            i += 1
    head_index = _head_index(run)
    if head_index is None:
        return None, i
    run = run[: head_index + 1]
    head_word = run[-1].low
    head = singular(head_word)
    if head in _FILLER_HEADS and i < len(words) and words[i].low == "of":
        return None, i + 1  # "a photo of a cat": the photo is not an object
    modified = any(w.low in _ADJECTIVES for w in run[:-1])
    if not (determined or modified or _is_noun(head_word)):
        return None, i  # "hello there": an unknown bare word is not read as an object
    size = next((_SIZE_WORDS[w.low] for w in run[:-1] if w.low in _SIZE_WORDS), None)
    if count is None:
        count = 1 if single or not _is_plural(head_word) else 0  # 0: the plural_count option decides
    return _NounPhrase(run[0].start, run[-1].end, head, size, count,
                       is_background=head_word in _BACKGROUND_WORDS), i


def _is_noun(low: str) -> bool:
    return low in _NOUNS or singular(low) in _NOUNS


def _has_noun(run: list[_Word]) -> bool:
    return any(_is_noun(w.low) for w in run)


def _is_participle(low: str) -> bool:
    return low.endswith("ing") and len(low) > 4 and not _is_noun(low) and low not in _ADJECTIVES


def _is_verb_like(low: str) -> bool:
    return low.endswith(("es", "ed")) or low in _FUNCTION_WORDS or _is_participle(low)


def _head_index(run: list[_Word]) -> int | None:
    """The last known noun of the run (words after it are dropped), else its last word."""
    if not run:
        return None
    for k in range(len(run) - 1, -1, -1):
        low = run[k].low
        if low in _BACKGROUND_WORDS:
            return k
        if _is_noun(low) and not (low in _ADJECTIVES and k < len(run) - 1):  # "orange" in "orange cat"
            return k
    if all(w.low in _ADJECTIVES or w.low in _INTENSIFIERS for w in run) or _is_participle(run[-1].low):
        return None  # "a red", "a sleeping": no noun
    return len(run) - 1


def _parse(prompt: str) -> _Parse:
    words = _tokenize(prompt)
    groups: list[_Group] = [_Group()]
    relations: list[tuple[str, bool]] = []
    pending: tuple[str, bool] | None = None
    background: tuple[int, int] | None = None
    pending_anchor: str | None = None
    i = 0
    while i < len(words):
        anchor = _anchor_at(words, i)
        if anchor is not None:
            side, length = anchor
            last = groups[-1].phrases[-1] if groups[-1].phrases else None
            if last is not None and last.anchor is None and pending is None:
                last.anchor = side  # "a cat on the left"
            else:
                pending_anchor = side  # "on the left, a cat"
            i += length
            continue
        relation = _relation_at(words, i)
        if relation is not None:
            name, tight, length = relation
            if groups[-1].phrases:
                pending = (name, tight)
            i += length
            continue
        phrase, nxt = _read_noun_phrase(words, i)
        if phrase is None:
            i = max(nxt, i + 1)
            continue
        preceding = words[i - 1].low if i > 0 else ""
        setting = (phrase.head in _SETTINGS and phrase.count <= 1 and (pending is not None or preceding in ("in", "at"))
                   and not any(_relation_at(words, k) or _read_noun_phrase(words, k)[0] for k in range(nxt, len(words))))
        if phrase.is_background or setting:
            start = words[i].start  # keep the article: "a grey background", "the moon"
            background = (start, phrase.end)
            pending = None  # "on a grey background" places nothing
            i = nxt
            continue
        i = nxt
        if pending_anchor is not None:
            phrase.anchor, pending_anchor = pending_anchor, None
        if pending is not None:
            groups.append(_Group())
            relations.append(pending)
            pending = None
        groups[-1].phrases.append(phrase)
    return _Parse([g for g in groups if g.phrases], relations, background)


# -- layout -------------------------------------------------------------------------------------

@dataclass
class _Leaf:
    index: int  # position in the layout's objects
    w: float
    h: float
    anchor: str | None = None

    def size(self) -> tuple[float, float]:
        return self.w, self.h

    def place(self, x: float, y: float, out: dict[int, tuple[float, float, float, float]]) -> None:
        out[self.index] = (x, y, x + self.w, y + self.h)


@dataclass
class _Stack:
    horizontal: bool
    children: list[_Leaf | _Stack]
    gap: float

    def size(self) -> tuple[float, float]:
        sizes = [c.size() for c in self.children]
        gaps = self.gap * (len(sizes) - 1)
        if self.horizontal:
            return sum(w for w, _ in sizes) + gaps, max(h for _, h in sizes)
        return max(w for w, _ in sizes), sum(h for _, h in sizes) + gaps

    def place(self, x: float, y: float, out: dict[int, tuple[float, float, float, float]]) -> None:
        width, height = self.size()
        for child in self.children:
            cw, ch = child.size()
            if self.horizontal:
                child.place(x, y + (height - ch) / 2, out)
                x += cw + self.gap
            else:
                child.place(x + (width - cw) / 2, y, out)
                y += ch + self.gap


class RulesPlanner(LayoutPlanner):
    """Plans boxes from simple English with fixed rules: no network, same prompt → same layout."""

    id: ClassVar[str] = "rules"

    class Options(AdapterOptions):
        small: float = Field(0.17, gt=0, le=1, description="larger box side of a 'small' object (image fraction)")
        medium: float = Field(0.26, gt=0, le=1, description="larger box side of an object with no size word")
        big: float = Field(0.36, gt=0, le=1, description="larger box side of a 'big' object")
        margin: float = Field(0.04, ge=0, lt=0.25, description="free border around the arrangement")
        gap: float = Field(0.06, ge=0, lt=0.5, description="space between neighbouring boxes")
        min_size: float = Field(0.04, gt=0, lt=1, description="smallest allowed box side after fitting")
        max_objects: int = Field(16, ge=1, description="most object instances one prompt may ask for")
        plural_count: int = Field(2, ge=1, le=12, description="instances of a plural given without a number")
        noun_shapes: bool = Field(True, description="scale and stretch boxes of known nouns (a table is wide)")

        @model_validator(mode="after")
        def _sizes_ordered(self) -> RulesPlanner.Options:
            if not self.small <= self.medium <= self.big:
                raise ValueError(f"sizes must satisfy small <= medium <= big, got small={self.small}, "
                                 f"medium={self.medium}, big={self.big}")
            return self

    options: Options

    def plan(self, prompt: str) -> Layout:
        from .llm import check_prompt

        text = check_prompt(prompt, self.id)
        parsed = _parse(text)
        if not parsed.groups:
            raise PlannerInputError(
                f"the 'rules' planner found no object to place in {text!r}. It reads simple English noun "
                "phrases such as 'a red circle', 'two cats' or 'a dog next to a tree'. Name at least one "
                "object, use an LLM planner ('gpt', 'claude'), or give a layout by hand.")
        opts = self.options
        objects: list[tuple[str, float, float]] = []  # phrase, w, h
        blocks: list[_Leaf | _Stack] = []
        for group in parsed.groups:
            leaves: list[_Leaf] = []
            for np_ in group.phrases:
                count = np_.count or opts.plural_count
                for _ in range(count):
                    w, h = self._box_size(np_)
                    leaves.append(_Leaf(len(objects), w, h, np_.anchor))
                    objects.append((text[np_.start:np_.end], w, h))
                    if len(objects) > opts.max_objects:
                        raise PlannerInputError(
                            f"the prompt {text!r} asks for more than {opts.max_objects} objects, the rules planner's "
                            "max_objects option; raise it or ask for fewer objects.")
            blocks.append(self._arrange_group(leaves))
        root = blocks[0]
        for (relation, tight), block in zip(parsed.relations, blocks[1:]):
            root = self._relate(root, relation, tight, block)
        boxes = self._fit(root)
        for index, (phrase, _, _) in enumerate(objects):
            x0, y0, x1, y1 = boxes[index]
            if min(x1 - x0, y1 - y0) < opts.min_size - 1e-9:
                raise PlannerInputError(
                    f"the prompt {text!r} has too many objects for boxes of at least {opts.min_size} of the image "
                    f"side ({phrase!r} would be {min(x1 - x0, y1 - y0):.3f}); ask for fewer objects or lower min_size.")
        layout_objects = [LayoutObject(phrase=phrase, box=Box(x0=boxes[k][0], y0=boxes[k][1], x1=boxes[k][2],
                                                              y1=boxes[k][3]))
                          for k, (phrase, _, _) in enumerate(objects)]
        background = text[parsed.background[0]:parsed.background[1]] if parsed.background else None
        return Layout(prompt=text, objects=layout_objects, background=background)

    def _box_size(self, np_: _NounPhrase) -> tuple[float, float]:
        opts = self.options
        extent = {"small": opts.small, "big": opts.big}.get(np_.size or "", opts.medium)
        aspect = 1.0
        if opts.noun_shapes and np_.head in _NOUN_SHAPES:
            factor, aspect = _NOUN_SHAPES[np_.head]
            if np_.size is None:
                extent = min(opts.big * 1.25, max(opts.small * 0.75, opts.medium * factor))
        if aspect >= 1:
            return extent, extent / aspect
        return extent * aspect, extent

    def _arrange_group(self, leaves: list[_Leaf]) -> _Leaf | _Stack:
        if any(_sides(x) & {"top", "bottom"} for x in leaves):
            # top-anchored objects in a row above the others, bottom-anchored ones below
            rows = [[x for x in leaves if "top" in _sides(x)], [x for x in leaves if not _sides(x) & {"top", "bottom"}],
                    [x for x in leaves if "bottom" in _sides(x)]]
            blocks = [self._arrange_row(row) for row in rows if row]
            return blocks[0] if len(blocks) == 1 else _Stack(False, blocks, self.options.gap)
        return self._arrange_row(leaves)

    def _arrange_row(self, leaves: list[_Leaf]) -> _Leaf | _Stack:
        """A row (or a grid when a row does not fit); left-anchored objects first, right-anchored
        last (a stable sort keeps the reading order otherwise)."""
        leaves = sorted(leaves, key=lambda x: 0 if "left" in _sides(x) else 2 if "right" in _sides(x) else 1)
        if len(leaves) == 1:
            return leaves[0]
        row = _Stack(True, list(leaves), self.options.gap)
        if row.size()[0] <= 1 - 2 * self.options.margin:
            return row
        columns = math.ceil(math.sqrt(len(leaves)))
        rows = [_Stack(True, leaves[k:k + columns], self.options.gap) for k in range(0, len(leaves), columns)]
        return _Stack(False, list(rows), self.options.gap)

    def _relate(self, subject: _Leaf | _Stack, relation: str, tight: bool, other: _Leaf | _Stack) -> _Stack:
        gap = self.options.gap / 4 if tight else self.options.gap
        if relation in ("left", "next"):
            return _Stack(True, [subject, other], gap)
        if relation == "right":
            return _Stack(True, [other, subject], gap)
        if relation == "above":
            return _Stack(False, [subject, other], gap)
        if relation == "below":
            return _Stack(False, [other, subject], gap)
        # between: the subject in the middle of the other group's members
        members = _members(other)
        if len(members) < 2:
            return _Stack(True, [subject, other], gap)
        half = (len(members) + 1) // 2
        left = members[0] if half == 1 else _Stack(True, members[:half], gap)
        right = members[half] if len(members) - half == 1 else _Stack(True, members[half:], gap)
        return _Stack(True, [left, subject, right], gap)

    def _fit(self, root: _Leaf | _Stack) -> dict[int, tuple[float, float, float, float]]:
        placed: dict[int, tuple[float, float, float, float]] = {}
        root.place(0.0, 0.0, placed)
        width, height = root.size()
        room = 1 - 2 * self.options.margin
        scale = min(1.0, room / width, room / height)
        ox, oy = (1 - width * scale) / 2, (1 - height * scale) / 2
        # Every anchored object names the same side: move the arrangement to that side.
        sides = {side for leaf in _members(root) for side in _sides(leaf)}
        margin = self.options.margin
        if sides & {"left", "right"} and len(sides & {"left", "right"}) == 1:
            ox = margin if "left" in sides else 1 - margin - width * scale
        if sides & {"top", "bottom"} and len(sides & {"top", "bottom"}) == 1:
            oy = margin if "top" in sides else 1 - margin - height * scale
        out = {}
        for index, (x0, y0, x1, y1) in placed.items():
            box = (ox + x0 * scale, oy + y0 * scale, ox + x1 * scale, oy + y1 * scale)
            out[index] = tuple(min(1.0, max(0.0, round(v, 4))) for v in box)
        return out  # type: ignore[return-value]


def _sides(leaf: _Leaf) -> set[str]:
    return set(leaf.anchor.split()) if leaf.anchor else set()


def _members(block: _Leaf | _Stack) -> list[_Leaf]:
    """The leaves of a block in reading order (rows of a grid flattened)."""
    if isinstance(block, _Leaf):
        return [block]
    out: list[_Leaf] = []
    for child in block.children:
        out.extend(_members(child))
    return out
