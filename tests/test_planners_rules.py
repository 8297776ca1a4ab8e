"""The offline `rules` planner: a table of prompts, the whole Shapes caption grammar, the contract."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import pytest
from pydantic import ValidationError

from realcompo_sdk import Layout, PlannerError
from realcompo_sdk.errors import PlannerInputError
from realcompo_sdk.planners.rules import RulesPlanner, singular
from realcompo_sdk.testing.planner_contract import LayoutPlannerContract

PLANNER = RulesPlanner()
SMALL, MEDIUM, BIG = PLANNER.options.small, PLANNER.options.medium, PLANNER.options.big
RELATION_MARGIN = 0.15  # the Shapes world's generated scenes keep centres this far apart


@dataclass(frozen=True)
class Case:
    prompt: str
    phrases: tuple[str, ...]  # every object's phrase, in layout order
    relations: tuple[tuple[int, str, int], ...] = ()  # (object i, left|right|above|below, object j)
    background: str | None = None


def c(prompt: str, phrases: str, *relations: tuple[int, str, int], background: str | None = None) -> Case:
    return Case(prompt, tuple(p.strip() for p in phrases.split("|")), tuple(relations), background)


CASES = [
    # -- the Shapes world's caption forms ------------------------------------------------------
    c("a red circle", "red circle"),
    c("a small green square", "small green square"),
    c("a big blue triangle", "big blue triangle"),
    c("a yellow star on a grey background", "yellow star", background="a grey background"),
    c("a small purple circle on a white background", "small purple circle", background="a white background"),
    c("a big orange star on a black background", "big orange star", background="a black background"),
    c("a red circle to the left of a blue square", "red circle|blue square", (0, "left", 1)),
    c("a small yellow triangle to the right of a big purple star", "small yellow triangle|big purple star",
      (0, "right", 1)),
    c("a green square above a orange circle", "green square|orange circle", (0, "above", 1)),
    c("a big red star below a small green circle on a beige background", "big red star|small green circle",
      (0, "below", 1), background="a beige background"),
    c("a small blue circle to the left of a small red circle", "small blue circle|small red circle", (0, "left", 1)),
    c("a big yellow square above a big purple triangle on a grey background", "big yellow square|big purple triangle",
      (0, "above", 1), background="a grey background"),
    c("two red circles", "red circles|red circles", (0, "left", 1)),
    c("three blue squares on a beige background", "blue squares|blue squares|blue squares", (0, "left", 1),
      (1, "left", 2), background="a beige background"),
    c("four yellow stars", "yellow stars|yellow stars|yellow stars|yellow stars", (0, "left", 1), (2, "left", 3),
      (0, "above", 2), (1, "above", 3)),
    c("two purple triangles on a white background", "purple triangles|purple triangles", (0, "left", 1),
      background="a white background"),
    c("three orange stars on a black background", "orange stars|orange stars|orange stars",
      background="a black background"),
    c("a red circle and a blue square", "red circle|blue square", (0, "left", 1)),
    c("a small green star and a big orange triangle on a grey background", "small green star|big orange triangle",
      (0, "left", 1), background="a grey background"),
    c("a red circle, a blue square and a green star", "red circle|blue square|green star", (0, "left", 1),
      (1, "left", 2)),
    c("a red circle, a blue square, a green star and a yellow triangle",
      "red circle|blue square|green star|yellow triangle"),
    c("a big purple square, a small orange circle, a yellow star and a blue triangle on a black background",
      "big purple square|small orange circle|yellow star|blue triangle", background="a black background"),
    c("a big red circle, a big blue square and a big green star", "big red circle|big blue square|big green star"),
    # -- general English -----------------------------------------------------------------------
    c("a cat sitting on top of a table next to a dog", "cat|table|dog", (0, "above", 1), (0, "left", 2),
      (1, "left", 2)),
    c("three apples between two cups", "apples|apples|apples|cups|cups", (3, "left", 0), (2, "left", 4),
      (3, "left", 4)),
    c("a vase between two candles", "vase|candles|candles", (1, "left", 0), (0, "left", 2)),
    c("a cat between a dog and a bird", "cat|dog|bird", (1, "left", 0), (0, "left", 2)),
    c("a dog to the right of a cat", "dog|cat", (0, "right", 1)),
    c("a dog right of a cat", "dog|cat", (0, "right", 1)),
    c("a lamp left of a sofa", "lamp|sofa", (0, "left", 1)),
    c("a lamp next to a sofa", "lamp|sofa", (0, "left", 1)),
    c("a bird flying above a house", "bird|house", (0, "above", 1)),
    c("a ball under a chair", "ball|chair", (0, "below", 1)),
    c("a red apple beside a green pear", "red apple|green pear", (0, "left", 1)),
    c("a car in front of a house", "car|house", (0, "below", 1)),
    c("a tree behind a bench", "tree|bench", (0, "above", 1)),
    c("a book on a shelf", "book|shelf", (0, "above", 1)),
    c("a cat beneath a table", "cat|table", (0, "below", 1)),
    c("two cats and three dogs", "cats|cats|dogs|dogs|dogs"),
    c("apples and oranges", "apples|apples|oranges|oranges"),
    c("a pair of shoes next to a bag", "shoes|shoes|bag", (0, "left", 2), (1, "left", 2)),
    c("5 balloons above a cake", "balloons|balloons|balloons|balloons|balloons|cake", (0, "above", 5),
      (4, "above", 5)),
    c("a very small red circle above four blue squares", "very small red circle|blue squares|blue squares|"
      "blue squares|blue squares", (0, "above", 1), (0, "above", 4)),
    c("A Red Circle To The Left Of A Blue Square", "Red Circle|Blue Square", (0, "left", 1)),
    c("  a red circle to the left of a blue square.  ", "red circle|blue square", (0, "left", 1)),
    c("a big, fluffy cat", "big, fluffy cat"),
    c("a dog chases a cat", "dog|cat"),
    c("a sleeping cat under a tree", "sleeping cat|tree", (0, "below", 1)),
    c("a man with a hat", "man|hat"),
    c("the sun above a mountain", "sun|mountain", (0, "above", 1)),
    c("a photo of a cat", "cat"),
    c("a cup of coffee on a table", "cup|table", (0, "above", 1)),
    c("a cat, a dog, and a bird", "cat|dog|bird", (0, "left", 1), (1, "left", 2)),
    c("an astronaut riding a white horse on the moon", "astronaut|white horse", background="the moon"),
    c("two people walking a dog in a park", "people|people|dog", background="a park"),
    c("a boat on the sea", "boat", background="the sea"),
    c("a wooden table with a glass vase on it", "wooden table|glass vase"),
    c("a blue mug on a red plate against a white backdrop", "blue mug|red plate", (0, "above", 1),
      background="a white backdrop"),
    c("a glorb next to a zib", "glorb|zib", (0, "left", 1)),
    c("a small cat above a big dog to the left of a tree", "small cat|big dog|tree", (0, "above", 1),
      (1, "left", 2), (0, "left", 2)),
    c("the two red circles above a green square", "red circles|red circles|green square", (0, "above", 2),
      (1, "above", 2)),
    c("an orange cat", "orange cat"),
    c("an orange and a banana", "orange|banana"),
]


def centre(layout: Layout, i: int) -> tuple[float, float]:
    box = layout.objects[i].box
    assert box is not None
    return (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2


def assert_relation(layout: Layout, i: int, relation: str, j: int) -> None:
    (xi, yi), (xj, yj) = centre(layout, i), centre(layout, j)
    along = {"left": xj - xi, "right": xi - xj, "above": yj - yi, "below": yi - yj}[relation]
    assert along >= RELATION_MARGIN, (
        f"{layout.objects[i].phrase!r} is not clearly {relation} of {layout.objects[j].phrase!r}: centres "
        f"({xi:.3f}, {yi:.3f}) and ({xj:.3f}, {yj:.3f})")


def assert_well_formed(layout: Layout, margin: float = 0.0) -> None:
    """Phrases from the prompt, boxes inside the image (with the margin), no two boxes overlapping."""
    prompt = layout.prompt.lower()
    boxes = []
    for obj in layout.objects:
        assert obj.phrase.lower() in prompt, f"{obj.phrase!r} is not words of {layout.prompt!r}"
        assert obj.box is not None
        b = obj.box
        assert margin - 1e-9 <= b.x0 < b.x1 <= 1 - margin + 1e-9 and margin - 1e-9 <= b.y0 < b.y1 <= 1 - margin + 1e-9
        boxes.append(b)
    for a, b in itertools.combinations(boxes, 2):
        overlap_w = min(a.x1, b.x1) - max(a.x0, b.x0)
        overlap_h = min(a.y1, b.y1) - max(a.y0, b.y0)
        assert overlap_w <= 1e-9 or overlap_h <= 1e-9, f"boxes {a.as_tuple()} and {b.as_tuple()} overlap"


def test_the_table_has_at_least_fifty_prompts() -> None:
    assert len(CASES) >= 50


@pytest.mark.parametrize("case", CASES, ids=[case.prompt.strip() for case in CASES])
def test_prompt_gives_expected_objects_relations_and_background(case: Case) -> None:
    layout = PLANNER.plan(case.prompt)
    assert layout.prompt == case.prompt.strip()
    assert tuple(o.phrase for o in layout.objects) == case.phrases
    for i, relation, j in case.relations:
        assert_relation(layout, i, relation, j)
    assert layout.background == case.background
    assert_well_formed(layout, PLANNER.options.margin)


# -- the whole Shapes caption grammar --------------------------------------------------------

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPES = ("circle", "square", "triangle", "star")
SIZE_OF = {"small": SMALL, "": MEDIUM, "big": BIG}
RELATIONS = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}
BACKGROUNDS = ("grey", "white", "black", "beige")
OBJECTS = [(size, colour, shape) for size in ("small", "", "big") for colour in COLOURS for shape in SHAPES]


def obj_words(size: str, colour: str, shape: str) -> str:
    return f"{size} {colour} {shape}".strip()


def extent(layout: Layout, i: int) -> float:
    box = layout.objects[i].box
    assert box is not None
    return max(box.x1 - box.x0, box.y1 - box.y0)


def shapes_captions(seed: int = 0, per_form: int = 150) -> list[tuple[str, list[tuple[str, str, str]], str | None, str | None]]:
    """(caption, objects, relation, background): every single object, and random captions of every form."""
    rng = random.Random(seed)
    out = [(f"a {obj_words(*o)}", [o], None, None) for o in OBJECTS]
    for _ in range(per_form):
        background = rng.choice((None, *BACKGROUNDS))
        a, b = rng.sample(OBJECTS, 2)
        relation = rng.choice(list(RELATIONS))
        out.append((f"a {obj_words(*a)} {RELATIONS[relation]} a {obj_words(*b)}", [a, b], relation, background))
        n = rng.choice((2, 3, 4))
        colour, shape = rng.choice(COLOURS), rng.choice(SHAPES)
        count = {2: "two", 3: "three", 4: "four"}[n]
        out.append((f"{count} {colour} {shape}s", [("", colour, shape)] * n, None, background))
        items = rng.sample(OBJECTS, rng.choice((2, 3, 4)))
        words = [f"a {obj_words(*o)}" for o in items]
        out.append((", ".join(words[:-1]) + " and " + words[-1], items, None, background))
    return [(caption + (f" on a {bg} background" if bg else ""), objs, rel, bg) for caption, objs, rel, bg in out]


SHAPES_CAPTIONS = shapes_captions()


def test_every_shapes_caption_is_planned_exactly() -> None:
    for caption, objects, relation, background in SHAPES_CAPTIONS:
        layout = PLANNER.plan(caption)
        count_caption = caption.split()[0] in ("two", "three", "four")
        expected = [f"{colour} {shape}s" if count_caption else obj_words(size, colour, shape)
                    for size, colour, shape in objects]
        assert [o.phrase for o in layout.objects] == expected, caption
        assert layout.background == (f"a {background} background" if background else None), caption
        for i, (size, _, _) in enumerate(objects):
            assert extent(layout, i) == pytest.approx(SIZE_OF[size], abs=2e-4), (caption, i)
        if relation is not None:
            assert_relation(layout, 0, relation, 1)
            (xa, ya), (xb, yb) = centre(layout, 0), centre(layout, 1)
            along, across = (abs(xa - xb), abs(ya - yb)) if relation in ("left", "right") else (abs(ya - yb), abs(xa - xb))
            assert across <= 0.5 * along, caption  # as in the Shapes world's own relation scenes
        assert_well_formed(layout, PLANNER.options.margin)


def test_shapes_list_and_count_read_left_to_right_then_top_to_bottom() -> None:
    layout = PLANNER.plan("a red circle, a blue square, a green star and a yellow triangle")
    centres = [centre(layout, i) for i in range(4)]
    assert centres == sorted(centres, key=lambda c: (round(c[1], 3), c[0]))


# -- sizes, options, errors ------------------------------------------------------------------

def test_small_unnamed_and_big_objects_take_their_sizes() -> None:
    layout = PLANNER.plan("a small red circle, a blue square and a big green star")
    assert [round(extent(layout, i), 4) for i in range(3)] == [SMALL, MEDIUM, BIG]
    assert 0.15 <= SMALL < MEDIUM < BIG <= 0.45


def test_known_nouns_get_plausible_shapes() -> None:
    layout = PLANNER.plan("a cup on a table next to a person")
    cup, table, person = (o.box for o in layout.objects)
    assert cup and table and person
    assert (table.x1 - table.x0) > (table.y1 - table.y0)  # a table is wide
    assert (person.y1 - person.y0) > (person.x1 - person.x0)  # a person is tall
    assert cup.area < table.area


def test_crowded_prompt_is_scaled_to_fit_inside_the_margin() -> None:
    layout = PLANNER.plan("ten big red circles next to six big blue squares")
    assert len(layout.objects) == 16
    assert all(extent(layout, i) < BIG for i in range(16))  # scaled down, uniformly
    assert len({round(extent(layout, i), 4) for i in range(16)}) == 1
    assert_well_formed(layout, PLANNER.options.margin)
    assert_relation(layout, 0, "left", 15)


def test_options_change_sizes_and_margin() -> None:
    planner = RulesPlanner(medium=0.3, margin=0.1)
    layout = planner.plan("a red circle, a blue square and a green star")
    assert extent(layout, 0) == pytest.approx(0.3, abs=1e-3)
    assert_well_formed(layout, 0.1)


def test_options_reject_unordered_sizes() -> None:
    with pytest.raises(ValidationError, match="small <= medium <= big"):
        RulesPlanner(small=0.5)


def test_plural_count_option_sets_bare_plurals() -> None:
    assert len(RulesPlanner(plural_count=3).plan("cats").objects) == 3


@pytest.mark.parametrize("prompt", ["hello there", "and the of", "very quickly", "a red and", "on top of the left"])
def test_prompt_without_a_noun_phrase_is_a_clear_error(prompt: str) -> None:
    with pytest.raises(PlannerInputError, match="found no object to place"):
        PLANNER.plan(prompt)


def test_too_many_objects_is_a_clear_error() -> None:
    with pytest.raises(PlannerError, match="max_objects"):
        RulesPlanner(max_objects=4).plan("five cats")


def test_same_prompt_same_layout_across_instances() -> None:
    prompt = "three apples between two cups on a white background"
    assert RulesPlanner().plan(prompt) == RulesPlanner().plan(prompt)


@pytest.mark.parametrize("plural,single", [("circles", "circle"), ("boxes", "box"), ("berries", "berry"),
                                           ("knives", "knife"), ("people", "person"), ("glass", "glass"),
                                           ("buses", "bus"), ("sheep", "sheep"), ("leaves", "leaf")])
def test_singular(plural: str, single: str) -> None:
    assert singular(plural) == single


def test_registered_as_builtin() -> None:
    from realcompo_sdk import builtin
    from realcompo_sdk.plugins import PluginLoader

    report = PluginLoader(entry_points=[], builtins=[builtin]).load()
    assert report.registrations[("planner", "rules")].load_class() is RulesPlanner


class TestRulesPlannerContract(LayoutPlannerContract):
    prompts = ("a red circle to the left of a blue square", "two green triangles on a grey background",
               "a cat sitting on top of a table next to a dog")

    def make_planner(self) -> RulesPlanner:
        return RulesPlanner()


# -- absolute places ("on the left", "at the top of the image") ------------------------------------


@pytest.mark.parametrize(("prompt", "relation"), [
    ("a red circle on the left and a blue square on the right", (0, "left", 1)),
    ("a blue square on the right and a red circle on the left", (1, "left", 0)),
    ("on the left, a tree and on the right, a house", (0, "left", 1)),
    ("a bird at the top and a dog at the bottom", (0, "above", 1)),
    ("a dog at the bottom and a bird in the sky", (1, "above", 0)),
])  # fmt: skip
def test_absolute_places_order_the_objects(prompt: str, relation: tuple[int, str, int]) -> None:
    layout = PLANNER.plan(prompt)
    assert len(layout.objects) == 2  # the place words are not objects
    assert_relation(layout, *relation)
    assert_well_formed(layout, PLANNER.options.margin)


@pytest.mark.parametrize(("prompt", "side"), [
    ("a red circle on the left", "left"),
    ("a red circle on the right side of the image", "right"),
    ("a small cat at the top of the picture", "top"),
    ("a boat at the bottom", "bottom"),
    ("a red circle at the bottom right", "bottom right"),
    ("a cat in the top left corner", "top left"),
])  # fmt: skip
def test_a_single_placed_object_goes_to_its_side(prompt: str, side: str) -> None:
    box = PLANNER.plan(prompt).objects[0].box
    margin = PLANNER.options.margin
    assert box is not None
    edges = {"left": box.x0, "right": 1 - box.x1, "top": box.y0, "bottom": 1 - box.y1}
    for part in side.split():
        assert edges[part] == pytest.approx(margin, abs=1e-3), (prompt, box)
    assert len(PLANNER.plan(prompt).objects) == 1


def test_of_after_a_side_is_still_a_relation() -> None:
    layout = PLANNER.plan("a cat on the left of a dog")
    assert [o.phrase for o in layout.objects] == ["cat", "dog"]
    assert_relation(layout, 0, "left", 1)
    assert layout.objects[0].box.x0 > PLANNER.options.margin + 0.05  # not pushed to the edge
