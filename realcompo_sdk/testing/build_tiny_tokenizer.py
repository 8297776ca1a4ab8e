"""Regenerate the testing kit's tokenizer files: `python -m realcompo_sdk.testing.build_tiny_tokenizer`."""

from __future__ import annotations

from pathlib import Path

from .tokenizer_files import write_clip_tokenizer, write_t5_tokenizer

# Deliberately small. "porcupine" and "hedgehog" are left out so that they split into several
# tokens, which the token-alignment tests rely on.
WORDS = """
a an the and of on in at to with next left right above below top bottom between near under over
one two three four five photo picture image painting of big small tiny large red green blue yellow
purple orange black white grey gray brown pink cat cats dog dogs corgi corgis bird birds car cars
tree trees house houses person people man woman child apple apples table chair cup ball balls
circle circles square squares triangle triangles star stars sky grass field street room beach
background sitting standing running flying wearing hat scarf
""".split()

DATA = Path(__file__).parent / "data" / "tiny-clip-tokenizer"
T5_DATA = Path(__file__).parent / "data" / "tiny-t5-tokenizer"

if __name__ == "__main__":
    write_clip_tokenizer(DATA, WORDS)
    write_t5_tokenizer(T5_DATA, WORDS)
    print(f"wrote {DATA} and {T5_DATA}")
