"""Write small tokenizers learned from a word list, so tests and the Shapes world never download one.

- `write_clip_tokenizer`: a CLIP-format BPE tokenizer (vocab.json + merges.txt) that loads with
  `transformers.CLIPTokenizer` exactly like a Stable Diffusion folder's tokenizer. BPE merges are
  learned the classic way (most frequent pair first) until every listed word is one token; other
  words still tokenize, into byte-level pieces.
- `write_t5_tokenizer`: a T5-format Unigram tokenizer (tokenizer.json) that loads with
  `transformers.T5Tokenizer`, as the third text encoder of SD3 and the second of Flux use.
"""

from __future__ import annotations

import json
import string
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


@lru_cache
def _bytes_to_unicode() -> dict[int, str]:
    # CLIP's (and GPT-2's) reversible byte → printable character table.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """BPE merges that turn each word (lower-case, byte-level, with `</w>`) into one symbol."""
    table = _bytes_to_unicode()
    freq = Counter(w.lower() for w in words)
    segmented = {}
    for word in freq:
        symbols = [table[b] for b in word.encode("utf-8")]
        symbols[-1] += "</w>"
        segmented[word] = symbols
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, symbols in segmented.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += freq[word]
        if not pairs:
            return merges
        best = max(pairs, key=lambda p: (pairs[p], p))  # ties broken deterministically
        merges.append(best)
        for word, symbols in segmented.items():
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            segmented[word] = merged


def write_clip_tokenizer(folder: str | Path, words: list[str], model_max_length: int = 77) -> Path:
    """Write vocab.json, merges.txt and the tokenizer configs into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    base = list(_bytes_to_unicode().values())
    vocab_list = base + [c + "</w>" for c in base]
    merges = learn_merges(words)
    vocab_list += ["".join(m) for m in merges]
    vocab_list += [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": model_max_length,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return folder


T5_PAD, T5_EOS, T5_UNK = "<pad>", "</s>", "<unk>"
METASPACE = "\u2581"  # "▁", sentencepiece's word-start marker
# Characters every T5 tokenizer here knows, so that any ASCII word splits into pieces, never <unk>.
T5_ALPHABET = sorted(set(string.ascii_letters + string.digits + string.punctuation + METASPACE))


def _t5_sentences(words: list[str]) -> list[str]:
    """The training corpus: each word alone, then every run of three consecutive words."""
    return words + [" ".join(words[i:i + 3]) for i in range(max(len(words) - 2, 0))]


def train_t5_vocab(words: list[str]) -> list[tuple[str, float]]:
    """A Unigram vocabulary [(piece, log-probability)], special tokens first (ids 0, 1, 2).

    `tokenizers`' UnigramTrainer learns the sub-word pieces, so an unlisted word splits the way
    sentencepiece would split it. Its output needs two fixes, done here:
    - it only seeds substrings shared by several distinct words, so a word that is no part of
      another never becomes a piece: every listed word is added as "▁word", scored at the best
      score, which makes it one token (any split has two pieces or more, each scoring at most as
      much, and scores are negative);
    - it orders ties (the floor-scored alphabet characters) in hash order, which changes from run
      to run: single characters all get one floor score, scores are rounded and pieces sorted, so
      the same words give the same file.
    """
    from tokenizers import Tokenizer, models, trainers

    words = list(dict.fromkeys(w for w in words if w))
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = _t5_pre_tokenizer()
    trainer = trainers.UnigramTrainer(
        vocab_size=8 * len(words) + len(T5_ALPHABET), special_tokens=[T5_PAD, T5_EOS, T5_UNK],
        unk_token=T5_UNK, initial_alphabet=T5_ALPHABET, max_piece_length=16, show_progress=False,
    )
    tok.train_from_iterator(_t5_sentences(words), trainer)
    trained = json.loads(tok.to_str())["model"]["vocab"]
    specials = {T5_PAD, T5_EOS, T5_UNK}
    pieces = {p: round(s, 4) for p, s in trained if p not in specials and len(p) > 1}
    best = max(pieces.values(), default=-1.0)
    floor = round(min(pieces.values(), default=-1.0) - 1.0, 4)
    pieces.update((c, floor) for c in T5_ALPHABET)
    pieces.update((METASPACE + w, best) for w in words)
    ordered = sorted(pieces.items(), key=lambda ps: (-ps[1], ps[0]))
    return [(T5_PAD, 0.0), (T5_EOS, 0.0), (T5_UNK, 0.0)] + ordered


def _t5_pre_tokenizer() -> Any:
    """As transformers' T5Tokenizer sets it: split on whitespace, prefix each word with "▁"."""
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True),
    ])


def write_t5_tokenizer(folder: str | Path, words: list[str], model_max_length: int = 512) -> Path:
    """Write tokenizer.json and the tokenizer configs of a T5 tokenizer into `folder`.

    Like T5's: <pad> is id 0, </s> id 1 (appended to every sequence), <unk> id 2; no sentinel
    tokens (extra_ids 0), since no test needs them and they would only grow the vocabulary.
    """
    from tokenizers import Tokenizer, decoders, models, processors

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = train_t5_vocab(words)
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = _t5_pre_tokenizer()
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single=["$A", T5_EOS], pair=["$A", T5_EOS, "$B", T5_EOS], special_tokens=[(T5_EOS, 1)],
    )
    tok.add_special_tokens([T5_PAD, T5_EOS, T5_UNK])
    (folder / "tokenizer.json").write_text(tok.to_str(pretty=True) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "T5Tokenizer",
        "model_max_length": model_max_length,
        "pad_token": T5_PAD,
        "eos_token": T5_EOS,
        "unk_token": T5_UNK,
        "extra_ids": 0,
        "additional_special_tokens": [],
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special = {"pad_token": T5_PAD, "eos_token": T5_EOS, "unk_token": T5_UNK}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    return folder
