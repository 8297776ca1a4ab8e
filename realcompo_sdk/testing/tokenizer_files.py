"""Write a small CLIP-format BPE tokenizer (vocab.json + merges.txt) learned from a word list.

The files load with `transformers.CLIPTokenizer` exactly like a Stable Diffusion folder's
tokenizer, so tests and the Shapes world never download one. BPE merges are learned the classic
way (most frequent pair first) until every listed word is one token; other words still tokenize,
into byte-level pieces.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import lru_cache
from pathlib import Path

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
