"""How the CLI answers bad input: a clear error before any model loads, one after, or a traceback.

    python benchmarks/bad_inputs.py [--markdown]

Runs `realcompo generate` in-process on the bundled Shapes models for each case below, counting
as "loading" any T2I or L2I adapter creation (the planner may run first, on purpose). Offline:
the LLM planner cases run without API keys. The goal is every case in "before", none in
"traceback".
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
from pathlib import Path

from realcompo_sdk import registry
from realcompo_sdk.cli import main

PROMPT = "a red circle to the left of a blue square"


def cases(tmp: Path) -> dict[str, list[str]]:
    (tmp / "folder").mkdir()
    (tmp / "binary.json").write_bytes(bytes(range(128, 256)))
    (tmp / "broken.json").write_text('{"prompt": "a cat", "objects": [')
    (tmp / "a_file").write_text("x")
    layouts = {
        "pixels": '{"prompt": "a cat", "objects": [{"phrase": "cat", "box": {"x0": 10, "y0": 10, "x1": 100, "y1": 90}}]}',
        "empty": '{"prompt": "a cat", "objects": []}',
        "inverted": '{"prompt": "a cat", "objects": [{"phrase": "cat", "box": {"x0": 0.6, "y0": 0.1, "x1": 0.2, "y1": 0.5}}]}',
        "bbox-field": '{"prompt": "a cat", "objects": [{"phrase": "cat", "bbox": [0.1, 0.1, 0.5, 0.5]}]}',
        "phrase-not-in-prompt": '{"prompt": "a cat", "objects": [{"phrase": "green hat", "box": {"x0": 0.1, "y0": 0.1, "x1": 0.5, "y1": 0.5}}]}',
        "two-regions": '{"prompt": "a cat", "objects": [{"phrase": "cat", "box": {"x0": 0.1, "y0": 0.1, "x1": 0.5, "y1": 0.5}, "point": {"x": 0.2, "y": 0.2}}]}',
    }
    for name, text in layouts.items():
        (tmp / f"{name}.json").write_text(text)
    models = _tiny_model_folders(tmp)
    out = str(tmp / "o.png")
    table = {
        # numbers
        "steps 0": ["--steps", "0"], "steps -2": ["--steps", "-2"], "steps 5000": ["--steps", "5000"],
        "guidance nan": ["--guidance", "nan"], "guidance inf": ["--guidance", "inf"], "guidance -1": ["--guidance", "-1"],
        "batch 0": ["--batch", "0"], "batch -3": ["--batch", "-3"], "seed -1": ["--seed", "-1"],
        "seed 2**64": ["--seed", str(2**64)], "seed 1.5": ["--seed", "1.5"], "height 0": ["--height", "0"],
        "width -64": ["--width", "-64"], "height 63 (not a multiple)": ["--height", "63", "--width", "64"],
        "mode bogus": ["--mode", "both"],
        # balancer options
        "--set typo": ["--set", "scale_factr=1e5"], "--set unknown": ["--set", "bbox=1"],
        "--set scale_range negative": ["--set", "scale_range=[-1, 0.5]"], "--set scale_factor NaN": ["--set", "scale_factor=NaN"],
        "--set t0 = steps": ["--steps", "10", "--set", "t0=10"], "--set t0 -1": ["--set", "t0=-1"],
        "--set init bogus": ["--set", "init=gaussian"], "--set without =": ["--set", "t0"],
        # outputs
        "-o .jpg": ["-o", str(tmp / "o.jpg")], "-o a folder": ["-o", str(tmp / "folder")],
        "-o under a file": ["-o", str(tmp / "a_file" / "o.png")], "--save-layout .gif": ["--save-layout", str(tmp / "l.gif")],
        "--save-influence a folder": ["--save-influence", str(tmp / "folder")],
        # layouts
        "--layout missing": ["--layout", str(tmp / "missing.json")], "--layout a folder": ["--layout", str(tmp / "folder")],
        "--layout binary": ["--layout", str(tmp / "binary.json")], "--layout broken JSON": ["--layout", str(tmp / "broken.json")],
        **{f"--layout {name}": ["--layout", str(tmp / f"{name}.json")] for name in layouts},
        # ids and options
        "--t2i unknown": ["--t2i", "sd15"], "--l2i unknown": ["--l2i", "glign"], "--t2i is an L2I id": ["--t2i", "shapes-controlnet"],
        "--planner unknown": ["--planner", "gpt4"], "--t2i-option unknown": ["--t2i-option", "colour=red"],
        "--l2i-option bad value": ["--l2i-option", "conditioning_scale=strong"],
        # models that cannot be balanced together (tiny folders built from configs)
        "sdxl + gligen (sd1)": ["--t2i", "sdxl", "--t2i-option", f"model={models['sdxl']}", "--l2i", "gligen",
                                "--l2i-option", f"model={models['gligen']}"],
        "sdxl + sd1 controlnet": ["--t2i", "sdxl", "--t2i-option", f"model={models['sdxl']}", "--l2i", "controlnet-seg",
                                  "--l2i-option", f"controlnet={models['controlnet']}", "--l2i-option", f"base={models['sd']}"],
        # SD3 / Flux (tiny folders built from configs)
        "sd3 + gligen (sd1)": ["--t2i", "sd3", "--t2i-option", f"model={models['sd3']}", "--l2i", "gligen",
                               "--l2i-option", f"model={models['gligen']}"],
        "flux + sd3 controlnet": ["--t2i", "flux", "--t2i-option", f"model={models['flux']}", "--l2i", "sd3-controlnet-seg",
                                  "--l2i-option", f"base={models['sd3']}", "--l2i-option", f"controlnet={models['sd3-cn']}"],
        "sd3 given a flux folder": ["--t2i", "sd3", "--t2i-option", f"model={models['flux']}"],
        "flux union control_mode 12": ["--t2i", "flux", "--t2i-option", f"model={models['flux']}", "--l2i", "flux-controlnet-seg",
                                       "--l2i-option", f"controlnet={models['flux-union']}", "--l2i-option", "control_mode=12"],
        "flux controlnet shared with sd3": ["--t2i", "sd3", "--t2i-option", f"model={models['sd3']}", "--l2i", "flux-controlnet-seg",
                                            "--l2i-option", f"controlnet={models['flux-union']}", "--l2i-option", "control_mode=2"],
        # prompts and planners
        "empty prompt": ["--prompt-override", ""], "prompt without objects": ["--prompt-override", "hello there"],
        "gpt without a key": ["--planner", "gpt"], "claude without a key": ["--planner", "claude"],
    }
    return {name: _command(flags, out) for name, flags in table.items()}


def _tiny_model_folders(tmp: Path) -> dict[str, Path]:
    from realcompo_sdk.testing.folders import save_tiny_sd_folder
    from realcompo_sdk.testing.folders_mmdit import (
        save_tiny_flux_controlnet_folder,
        save_tiny_flux_folder,
        save_tiny_sd3_controlnet_folder,
        save_tiny_sd3_folder,
    )
    from realcompo_sdk.testing.folders_xl import save_tiny_controlnet_folder, save_tiny_sdxl_folder

    sd = save_tiny_sd_folder(tmp / "tiny-sd")
    return {"sd": sd, "sdxl": save_tiny_sdxl_folder(tmp / "tiny-sdxl"),
            "gligen": save_tiny_sd_folder(tmp / "tiny-gligen", gligen=True),
            "controlnet": save_tiny_controlnet_folder(tmp / "tiny-controlnet", base=sd),
            "sd3": save_tiny_sd3_folder(tmp / "tiny-sd3"), "sd3-cn": save_tiny_sd3_controlnet_folder(tmp / "tiny-sd3-cn"),
            "flux": save_tiny_flux_folder(tmp / "tiny-flux"),
            "flux-union": save_tiny_flux_controlnet_folder(tmp / "tiny-flux-union", union=True)}


def _command(flags: list[str], out: str) -> list[str]:
    prompt = [] if "--layout" in flags else [PROMPT]
    if "--prompt-override" in flags:
        i = flags.index("--prompt-override")
        prompt, flags = [flags[i + 1]], flags[:i] + flags[i + 2 :]
    output = [] if "-o" in flags else ["-o", out]
    return ["generate", *prompt, *flags, *output, "--no-progress"]


def run_case(argv: list[str]) -> tuple[str, str]:
    """(outcome, first line of stderr): before | after | traceback | accepted."""
    loaded = []
    create = registry.create

    def counting(kind, id, **options):
        if kind in ("t2i", "l2i"):
            loaded.append(id)
        return create(kind, id, **options)

    registry.create = counting
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    except BaseException as exc:  # noqa: BLE001 - a traceback is what this script looks for
        return "traceback", f"{type(exc).__name__}: {exc}"[:160]
    finally:
        registry.create = create
    message = next((line for line in err.getvalue().splitlines() if "error" in line), "")
    if code == 0:
        return "accepted", ""
    return ("after" if loaded else "before"), message[:160]


def main_(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--markdown", action="store_true", help="print the per-case table as markdown")
    args = parser.parse_args(argv)
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        os.environ.pop(key, None)
    with tempfile.TemporaryDirectory() as tmp:
        results = {name: run_case(argv) for name, argv in cases(Path(tmp)).items()}
    counts = {k: sum(1 for o, _ in results.values() if o == k) for k in ("before", "after", "traceback", "accepted")}
    if args.markdown:
        print("| case | outcome | message |\n|---|---|---|")
        for name, (outcome, message) in results.items():
            print(f"| {name} | {outcome} | {message.replace('|', '/')} |")
        print()
    else:
        for name, (outcome, message) in results.items():
            print(f"{outcome:9s} {name:32s} {message}")
    print(f"{len(results)} cases: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main_())
