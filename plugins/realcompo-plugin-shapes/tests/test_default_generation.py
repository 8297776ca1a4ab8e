"""The README's offline command, end to end, checked by the exact evaluator.

`realcompo generate PROMPT` with no options uses the rules planner and the bundled Shapes models.
Threshold: with these defaults, single-object captions were drawn with the right colour and shape
in 15 of 17 generations (seeds 0–2 over six captions, measured 2026-11-26, docs/benchmarks.md),
so at least 3 of these 4 must pass; a broken pipeline, wrong weights or a decoder mix-up gives 0–1.
"""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from realcompo_plugin_shapes import evaluate_image

from realcompo_sdk.cli import main
from realcompo_sdk.images import read_record

EASY = ["a red circle", "a blue square", "a purple circle", "a green triangle"]


def test_default_command_draws_easy_prompts(tmp_path):
    passed = []
    for i, prompt in enumerate(EASY):
        out = tmp_path / f"{i}.png"
        assert main(["generate", prompt, "-o", str(out), "--no-progress"]) == 0
        record = json.loads(read_record(out))
        assert [a["id"] for a in record["adapters"]] == ["shapes-sd", "shapes-gligen"]
        image = np.asarray(Image.open(out).convert("RGB"))
        assert image.shape == (64, 64, 3)
        passed.append(evaluate_image(image, prompt).binding_ok)
    assert sum(passed) >= 3, f"easy prompts drawn correctly: {dict(zip(EASY, passed))}"
