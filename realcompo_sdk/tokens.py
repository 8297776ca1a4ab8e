"""Token alignment: where each layout phrase sits in an adapter's own tokenization of the prompt.

The balancer reads cross-attention maps at token positions, so the positions must come from the
exact tokenizer whose embeddings the model attends to — never from an LLM's guess of word
indices. Rules:

- a phrase is located as a contiguous run of its tokens (multi-token words work);
- each object takes the first occurrence not already taken by an earlier object, so the second
  "corgi" of "a corgi and a corgi" gets the second occurrence, whether the phrases read "corgi"
  or "a corgi" and "corgi"; when no occurrence is free ("two corgis" planned as two objects), the
  last one is shared;
- a phrase not literally in the prompt falls back to its head noun (last word, singular/plural
  variants), then to its other words from the end (never to articles, numerals or prepositions);
- a phrase in a script written without spaces (Chinese, Japanese, Thai...) is also looked for
  inside the prompt's words: byte-level BPE tokenizes "猫" alone differently from the "猫" inside
  "一只猫和一只狗", so its positions are the tokens whose bytes cover the phrase's bytes;
- otherwise a `TokenAlignmentError` explains the problem, unless `append_missing` is set, in
  which case the phrase is appended to the prompt (", phrase") and located there.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from .errors import TokenAlignmentError


class Tokenizer(Protocol):
    model_max_length: int

    def __call__(self, text: str, **kwargs: Any) -> Any: ...


def _ids(tokenizer: Tokenizer, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special, truncation=False).input_ids)


def _find_all(haystack: list[int], needle: list[int]) -> list[int]:
    n = len(needle)
    return [i for i in range(len(haystack) - n + 1) if n and haystack[i : i + n] == needle]


# Words that never identify an object on their own, so the fallback never locates a phrase by them.
_FUNCTION_WORDS = frozenset(
    "a an the one two three four some several many of and or on in at to with by from near next "
    "left right above below under over behind between".split()
)


def _variants(word: str) -> list[str]:
    forms = [word]
    if word.endswith("es") and len(word) > 3:
        forms.append(word[:-2])
    if word.endswith("s") and len(word) > 2:
        forms.append(word[:-1])
    else:
        forms += [word + "s", word + "es"]
    return forms


def align_phrases(
    tokenizer: Tokenizer, prompt: str, phrases: list[str], *, append_missing: bool = False,
    beyond_context: Literal["error", "drop"] = "error",
) -> tuple[str, list[list[int]]]:
    """Return the prompt (extended when phrases had to be appended) and each phrase's positions.

    Positions index the tokenizer's full sequence including the start token, i.e. the rows of the
    text encoder's output that cross-attention attends to. A phrase past the encoder's context is
    an error, or with ``beyond_context="drop"`` gets no positions (for a model that also reads the
    prompt through a longer encoder, as SD3 reads it through T5 after CLIP's 77 tokens).
    """
    prompt_ids = _ids(tokenizer, prompt, special=True)
    taken: set[int] = set()  # token positions already given to an earlier object
    positions: list[list[int]] = []
    for index, phrase in enumerate(phrases):
        found = _locate(tokenizer, prompt_ids, phrase, taken)
        if found is None:
            if not append_missing:
                raise TokenAlignmentError(
                    f"object {index} ({phrase!r}): neither the phrase nor its head noun occurs in "
                    f"the prompt {prompt!r}. Use words of the prompt as the phrase, or pass "
                    "append_missing=True (CLI: --append-missing-phrases) to append it to the prompt."
                )
            prompt = f"{prompt}, {phrase}"
            prompt_ids = _ids(tokenizer, prompt, special=True)
            found = _locate(tokenizer, prompt_ids, phrase, taken)
            assert found is not None
        limit = tokenizer.model_max_length - 1  # the last slot holds the end token
        if max(found) >= limit and beyond_context == "drop":
            positions.append([])
            continue
        if max(found) >= limit:
            raise TokenAlignmentError(
                f"object {index} ({phrase!r}) sits at token {max(found)}, beyond the text "
                f"encoder's context of {tokenizer.model_max_length} tokens (prompt has "
                f"{len(prompt_ids)}). Shorten the prompt or move the object earlier."
            )
        positions.append(found)
    return prompt, positions


def _locate(tokenizer: Tokenizer, prompt_ids: list[int], phrase: str, taken: set[int]) -> list[int] | None:
    words = phrase.lower().split()
    candidates = [" ".join(words)]
    for word in reversed(words):  # head noun first, then the other words from the end
        if word not in _FUNCTION_WORDS:  # "a dog" must not be found at the "a" of "a cat"
            candidates += _variants(word)
    # Non-ASCII phrases by bytes first: "猫" tokenizes alone as the word-final form, so matching
    # token ids would find only a "猫" that ends a word.
    spans = [] if phrase.isascii() else _byte_spans(tokenizer, prompt_ids, phrase)
    for candidate in candidates if not spans else []:
        needle = _ids(tokenizer, candidate, special=False)
        spans = [list(range(h, h + len(needle))) for h in _find_all(prompt_ids, needle)]
        if spans:
            break
    if not spans:
        return None
    free = [span for span in spans if taken.isdisjoint(span)]
    span = free[0] if free else spans[-1]  # no free occurrence left: share the last one
    taken.update(span)
    return span


def _byte_spans(tokenizer: Tokenizer, prompt_ids: list[int], phrase: str) -> list[list[int]]:
    """Token spans covering each occurrence of the phrase's UTF-8 bytes in the prompt's tokens,
    for byte-level BPE tokenizers (CLIP's); [] for other tokenizers."""
    pieces = _token_bytes(tokenizer, prompt_ids)
    if pieces is None:
        return []
    text = b"".join(pieces)
    needle = "".join(phrase.lower().split()).encode()  # CLIP drops spaces and lower-cases
    ends = [sum(len(p) for p in pieces[: i + 1]) for i in range(len(pieces))]
    spans, start = [], text.find(needle)
    while needle and start >= 0:
        stop = start + len(needle)
        spans.append([i for i, end in enumerate(ends) if end - len(pieces[i]) < stop and end > start and pieces[i]])
        start = text.find(needle, start + 1)
    return spans


def _byte_decoder() -> dict[str, int]:
    """Byte-level BPE writes each byte as one printable character: printable Latin-1 bytes as
    themselves, the others as chr(256 + n) in byte order. This inverts that map."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + n): b for n, b in enumerate(others)}}


_BYTE_DECODER = _byte_decoder()


def _token_bytes(tokenizer: Any, ids: list[int]) -> list[bytes] | None:
    """The UTF-8 bytes each token stands for (special tokens: none), or None when the tokenizer
    is not byte-level BPE."""
    convert = getattr(tokenizer, "convert_ids_to_tokens", None)
    if convert is None:
        return None
    decoder = _BYTE_DECODER
    special = set(getattr(tokenizer, "all_special_ids", ()))
    pieces = []
    for token_id, token in zip(ids, convert(ids)):
        if token_id in special:
            pieces.append(b"")
            continue
        try:
            pieces.append(bytes(decoder[c] for c in token.removesuffix("</w>")))
        except KeyError:
            return None
    return pieces


def warn_if_truncated(tokenizer: Any, texts: list[str], who: str) -> None:
    """The text encoder reads `model_max_length` tokens; say so when a text is longer, instead of
    dropping its end silently (diffusers' pipelines warn the same way)."""
    import warnings

    limit = tokenizer.model_max_length
    for text in dict.fromkeys(texts):  # each distinct text once
        n = len(_ids(tokenizer, text, special=True))
        if n > limit:
            warnings.warn(f"{who}: {text[:40]!r}... has {n} tokens; the text encoder reads the first {limit}, "
                          "the rest is ignored. Shorten it.", stacklevel=3)
