"""The README's offline command, end to end, checked by the exact evaluator.

`realcompo generate PROMPT` with no model options uses the rules planner, `shapes-sd` and
`shapes-controlnet`, with the sampling settings the `shapes-sd` preset recommends (tuned on the
tuning captions, docs/benchmarks.md). Thresholds sit well below what was measured, so that a
broken pipeline, wrong weights, a decoder mix-up or a lost layout fails while the sampling noise
of four seeds does not.
"""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from realcompo_plugin_shapes import evaluate_image

from realcompo_sdk.cli import main
from realcompo_sdk.images import read_record
from realcompo_sdk.layout import Layout

README_PROMPT = "a red circle to the left of a blue square"


def _generate(tmp_path, prompt: str, seed: int):
    out = tmp_path / f"{seed}-{prompt.replace(' ', '_')}.png"
    assert main(["generate", prompt, "-o", str(out), "--seed", str(seed), "--no-progress"]) == 0
    record = json.loads(read_record(out))
    image = np.asarray(Image.open(out).convert("RGB"))
    return record, image, evaluate_image(image, prompt, planned=Layout.model_validate(record["layout"]))


def test_readme_command_puts_both_objects_in_their_planned_boxes(tmp_path):
    results = [_generate(tmp_path, README_PROMPT, seed) for seed in range(4)]
    record = results[0][0]
    assert [a["id"] for a in record["adapters"]] == ["shapes-sd", "shapes-controlnet"]
    assert record["mode"] == "balanced" and record["num_steps"] == 25 and record["guidance_scale"] == 5.0
    assert record["scheduler"] == "DDIMScheduler" and record["balance"]["t0"] == 15  # the preset's tuned warm-up
    assert all(image.shape == (64, 64, 3) for _, image, _ in results)
    evaluations = [ev for _, _, ev in results]
    placed = [ev.relation_ok and min(ev.ious) >= 0.3 for ev in evaluations]
    assert sum(placed) >= 3, [(ev.relation_ok, [round(i, 2) for i in ev.ious]) for ev in evaluations]


def test_default_command_draws_easy_prompts(tmp_path):
    easy = ["a red circle", "a blue square", "a purple circle", "a green triangle"]
    passed = [_generate(tmp_path, prompt, 0)[2].binding_ok for prompt in easy]
    assert sum(passed) >= 3, f"easy prompts drawn correctly: {dict(zip(easy, passed))}"


def test_no_progress_prints_only_what_was_written(tmp_path, capfd):
    """No loading bars, no library warnings (e.g. diffusers asking for `accelerate`), no tqdm."""
    out = tmp_path / "quiet.png"
    capfd.readouterr()
    assert main(["generate", "a red circle", "-o", str(out), "--no-progress"]) == 0
    captured = capfd.readouterr()
    assert captured.out.strip() == f"wrote {out}" and captured.err.strip() == "", captured


def test_the_presets_warmup_keeps_its_fraction_at_other_step_counts(tmp_path):
    """shapes-sd recommends t0=15 of 25 steps; with --steps 10 the warm-up is 6 (the same 60 %), and an
    explicit --set t0 wins."""
    out = tmp_path / "ten.png"
    assert main(["generate", "a red circle", "-o", str(out), "--steps", "10", "--no-progress"]) == 0
    record = json.loads(read_record(out))
    assert record["num_steps"] == 10 and record["balance"]["t0"] == 6
    assert main(["generate", "a red circle", "-o", str(out), "--steps", "10", "--set", "t0=2", "--no-progress"]) == 0
    assert json.loads(read_record(out))["balance"]["t0"] == 2


def test_verbose_shows_what_the_libraries_say(tmp_path):
    """In a fresh process: the libraries' log handlers bind stderr once, so in-process capture is unreliable."""
    import subprocess
    import sys

    def stderr_of(*flags: str) -> str:
        command = [sys.executable, "-m", "realcompo_sdk.cli", "generate", "a red circle", "-o", str(tmp_path / "o.png"),
                   "--no-progress", *flags]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stderr

    assert "UNet2DConditionModel" in stderr_of("-v")  # diffusers' loading notes
    assert stderr_of() == ""  # hidden by default
