"""Token alignment of layout phrases with the real tiny CLIP tokenizer of the testing kit."""

from __future__ import annotations

from typing import Any

import pytest

from realcompo_sdk.errors import TokenAlignmentError
from realcompo_sdk.tokens import align_phrases

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from realcompo_sdk.testing.components import tiny_tokenizer

    return tiny_tokenizer()


def tokens_at(tokenizer: Any, prompt: str, positions: list[int]) -> str:
    ids = tokenizer(prompt).input_ids
    return tokenizer.decode([ids[p] for p in positions]).strip()


def test_single_token_words_get_one_position_each(tokenizer: Any) -> None:
    prompt, positions = align_phrases(tokenizer, "a cat and a dog", ["cat", "dog"])
    assert prompt == "a cat and a dog"
    # <start> a cat and a dog <end>
    assert positions == [[2], [5]]


def test_positions_skip_the_start_token(tokenizer: Any) -> None:
    _, positions = align_phrases(tokenizer, "cat", ["cat"])
    assert tokenizer("cat").input_ids[0] == tokenizer.bos_token_id
    assert positions == [[1]]


def test_multi_word_phrase_covers_all_its_tokens(tokenizer: Any) -> None:
    prompt, positions = align_phrases(tokenizer, "a photo of a red car", ["a red car"])
    assert positions == [[4, 5, 6]]
    assert tokens_at(tokenizer, prompt, positions[0]) == "a red car"


@pytest.mark.parametrize("word", ["porcupine", "hedgehog"])
def test_multi_token_word_gets_contiguous_positions_that_decode_to_it(tokenizer: Any, word: str) -> None:
    prompt = f"a {word} next to a tree"
    assert len(tokenizer(word, add_special_tokens=False).input_ids) > 1  # the premise of this test
    _, positions = align_phrases(tokenizer, prompt, [word, "tree"])
    found = positions[0]
    assert found[0] == 2
    assert found == list(range(found[0], found[0] + len(found)))
    assert tokens_at(tokenizer, prompt, found) == word
    assert positions[1] == [found[-1] + 4]  # "next to a tree"


def test_two_multi_token_words_do_not_overlap(tokenizer: Any) -> None:
    prompt = "a porcupine and a hedgehog"
    _, (porcupine, hedgehog) = align_phrases(tokenizer, prompt, ["a porcupine", "hedgehog"])
    assert tokens_at(tokenizer, prompt, porcupine) == "a porcupine"
    assert tokens_at(tokenizer, prompt, hedgehog) == "hedgehog"
    assert max(porcupine) < min(hedgehog)


def test_repeated_object_gets_the_next_occurrence(tokenizer: Any) -> None:
    _, positions = align_phrases(tokenizer, "a corgi and a corgi", ["a corgi", "a corgi"])
    assert positions == [[1, 2], [4, 5]]


def test_more_objects_than_occurrences_share_the_last_occurrence(tokenizer: Any) -> None:
    _, positions = align_phrases(tokenizer, "a corgi and a corgi", ["corgi", "corgi", "corgi"])
    assert positions == [[2], [5], [5]]


def test_occurrences_are_counted_per_phrase(tokenizer: Any) -> None:
    _, positions = align_phrases(tokenizer, "a cat, a dog and a cat", ["cat", "dog", "cat"])
    cat_ids = tokenizer("a cat, a dog and a cat").input_ids
    assert [tokenizer.decode([cat_ids[p[0]]]).strip() for p in positions] == ["cat", "dog", "cat"]
    assert positions[0] != positions[2]


def test_phrase_not_in_prompt_falls_back_to_its_head_noun(tokenizer: Any) -> None:
    _, positions = align_phrases(tokenizer, "a corgi on the grass", ["fluffy corgi"])
    assert positions == [[2]]


def test_head_noun_fallback_matches_the_plural(tokenizer: Any) -> None:
    _, positions = align_phrases(tokenizer, "two corgis on the grass", ["a corgi", "corgi"])
    # both objects share the one "corgis" token
    assert positions == [[2], [2]]


def test_head_noun_fallback_matches_the_singular(tokenizer: Any) -> None:
    _, positions = align_phrases(tokenizer, "a corgi on the grass", ["corgis"])
    assert positions == [[2]]


def test_fallback_tries_other_words_after_the_head_noun(tokenizer: Any) -> None:
    _, positions = align_phrases(tokenizer, "a red car on the street", ["red truck"])
    assert positions == [[2]]


def test_missing_phrase_raises_an_error_that_explains_what_to_do(tokenizer: Any) -> None:
    with pytest.raises(TokenAlignmentError) as info:
        align_phrases(tokenizer, "a cat on the grass", ["cat", "a dog"])
    text = str(info.value)
    assert "object 1 ('a dog')" in text
    assert "'a cat on the grass'" in text
    assert "append_missing=True" in text


def test_articles_alone_do_not_locate_a_missing_phrase(tokenizer: Any) -> None:
    # "a dog" shares only "a" with the prompt; it must not be aligned to that article
    with pytest.raises(TokenAlignmentError, match="'a dog'"):
        align_phrases(tokenizer, "a cat", ["a dog"])


def test_append_missing_extends_the_prompt_and_locates_the_phrase_there(tokenizer: Any) -> None:
    prompt, positions = align_phrases(tokenizer, "a cat on the grass", ["cat", "a dog"], append_missing=True)
    assert prompt == "a cat on the grass, a dog"
    assert positions[0] == [2]
    assert tokens_at(tokenizer, prompt, positions[1]) == "a dog"
    assert min(positions[1]) > 5  # after the original prompt's tokens


def test_append_missing_leaves_a_prompt_with_every_phrase_unchanged(tokenizer: Any) -> None:
    prompt, _ = align_phrases(tokenizer, "a cat and a dog", ["cat", "dog"], append_missing=True)
    assert prompt == "a cat and a dog"


def test_phrase_beyond_the_context_is_an_error() -> None:
    from realcompo_sdk.testing.components import tiny_tokenizer

    short = tiny_tokenizer(model_max_length=8)
    # <start>=0 a=1 cat=2 and=3 a=4 dog=5 on=6 the=7 grass=8 <end>; slot 7 is reserved for <end>
    prompt = "a cat and a dog on the grass"
    assert align_phrases(short, prompt, ["on"])[1] == [[6]]
    with pytest.raises(TokenAlignmentError) as info:
        align_phrases(short, prompt, ["cat", "grass"])
    text = str(info.value)
    assert "object 1 ('grass')" in text
    assert "context of 8 tokens" in text
    assert "Shorten the prompt" in text


def test_phrase_reaching_the_end_token_slot_is_an_error() -> None:
    from realcompo_sdk.testing.components import tiny_tokenizer

    with pytest.raises(TokenAlignmentError, match="sits at token 7"):
        align_phrases(tiny_tokenizer(model_max_length=8), "a cat and a dog on the grass", ["the"])


def test_different_phrases_do_not_claim_the_same_occurrence():
    from realcompo_sdk.testing.components import tiny_tokenizer
    from realcompo_sdk.tokens import align_phrases

    _, positions = align_phrases(tiny_tokenizer(), "a corgi and a corgi", ["a corgi", "corgi"])
    assert positions == [[1, 2], [5]]


@pytest.mark.parametrize(("prompt", "phrases"), [
    ("一只猫和一只狗", ["猫", "狗"]),  # Chinese: no spaces, the phrase sits inside one BPE word
    ("赤い猫と青い犬", ["赤い猫", "犬"]),  # Japanese, a multi-character phrase
    ("고양이와 강아지", ["고양이", "강아지"]),  # Korean: a word with its particle attached
])
def test_phrases_of_scripts_without_spaces_are_found_inside_words(tokenizer: Any, prompt: str, phrases: list[str]) -> None:
    _, positions = align_phrases(tokenizer, prompt, phrases)
    for phrase, span in zip(phrases, positions):
        covered = tokens_at(tokenizer, prompt, span)
        assert phrase in covered and len(covered) <= len(phrase) + 2, (phrase, covered)
    assert positions[0] != positions[1]


def test_a_repeated_cjk_phrase_takes_each_occurrence_in_turn(tokenizer: Any) -> None:
    _, positions = align_phrases(tokenizer, "一只猫和一只猫", ["猫", "猫"])
    assert positions[0] != positions[1] and max(positions[0]) < min(positions[1])
    assert all(tokens_at(tokenizer, "一只猫和一只猫", span).endswith("猫") for span in positions)


def test_a_cjk_phrase_not_in_the_prompt_is_still_an_error(tokenizer: Any) -> None:
    with pytest.raises(TokenAlignmentError, match="'鸟'"):
        align_phrases(tokenizer, "一只猫和一只狗", ["鸟"])
