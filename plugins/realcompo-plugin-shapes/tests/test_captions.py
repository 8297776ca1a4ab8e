from __future__ import annotations

import numpy as np
import pytest
from realcompo_plugin_shapes.captions import (
    CaptionError,
    CaptionSpec,
    ObjectSpec,
    all_forms_examples,
    format_caption,
    parse_caption,
    sample_spec,
)
from realcompo_plugin_shapes.world import vocabulary


@pytest.mark.parametrize("caption", all_forms_examples())
def test_every_form_round_trips(caption: str) -> None:
    assert format_caption(parse_caption(caption)) == caption


def test_sampled_captions_round_trip_and_use_only_vocabulary_words() -> None:
    rng = np.random.default_rng(0)
    words = set(vocabulary()) | {","}
    forms = set()
    for _ in range(2000):
        spec, _ = sample_spec(rng)
        caption = spec.caption
        assert caption == caption.lower()
        assert parse_caption(caption) == spec
        assert set(caption.replace(",", " ,").split()) <= words
        forms.add(spec.form)
    assert forms == {"single", "relation", "count", "list"}


def test_parse_gives_structure() -> None:
    spec = parse_caption("a big blue square to the left of a small yellow star on a grey background")
    assert spec == CaptionSpec(
        "relation",
        (ObjectSpec("blue", "square", "big"), ObjectSpec("yellow", "star", "small")),
        relation="left",
        background="grey",
    )
    assert spec.phrases == ["big blue square", "small yellow star"]
    count = parse_caption("three orange stars")
    assert count.count == 3 and count.phrases == ["orange star"] * 3
    listed = parse_caption("a red circle, a green square, a purple star and a blue triangle")
    assert listed.form == "list" and len(listed.objects) == 4


def test_relation_and_list_objects_are_distinct() -> None:
    rng = np.random.default_rng(1)
    for _ in range(500):
        spec, _ = sample_spec(rng, {"relation": 1, "list": 1})
        pairs = [(o.colour, o.shape) for o in spec.objects]
        assert len(set(pairs)) == len(pairs)


@pytest.mark.parametrize(
    "caption",
    ["a star", "a pink circle", "five red circles", "two red circle", "a red circle on a pink background",
     "a red circle, a blue star, a red square, a green star and a big blue circle", ""],
)  # fmt: skip
def test_bad_captions_raise_caption_error(caption: str) -> None:
    with pytest.raises(CaptionError):
        parse_caption(caption)
