"""Shapes benchmark: T2I alone, L2I alone and RealCompo on held-out captions, scored exactly.

    python -m realcompo_plugin_shapes.bench --out bench-shapes            # held-out set, defaults
    python -m realcompo_plugin_shapes.bench --tune --out tune-shapes      # grid on the tuning set
    python -m realcompo_plugin_shapes.bench --extra-l2i shapes-layout-guidance   # + another L2I, alone and balanced

The tuning set (seed 1000+) and the held-out set (seed 2000+) are drawn from the caption grammar
with different seeds, so hyper-parameters chosen on one are judged on the other. Every method
uses the same rules-planner layout, scheduler, steps, guidance and seeds. Writes `results.md`
and `results.json` into --out, and prints the command that reproduces them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .captions import format_caption, sample_spec
from .evaluate import evaluate_image, realism_score, summarize

SETS = {"tuning": 1000, "heldout": 2000}
METRICS = ["success", "binding", "count_ok", "relation_ok", "mean_iou", "realism", "seconds"]


def captions(which: str, n: int) -> list[str]:
    rng = np.random.default_rng(SETS[which])
    return [format_caption(sample_spec(rng)[0]) for _ in range(n)]


def run_method(rc: Any, mode: str, prompts: list[str], seeds: int, steps: int, guidance: float) -> dict[str, Any]:
    evaluations, realism, seconds = [], [], []
    for i, prompt in enumerate(prompts):
        layout = rc.plan(prompt)
        for s in range(seeds):
            start = time.perf_counter()
            image = rc(prompt, layout=layout, seed=100 * i + s, mode=mode, num_steps=steps, guidance_scale=guidance).images[0]
            seconds.append(time.perf_counter() - start)
            evaluations.append(evaluate_image(np.asarray(image), prompt, planned=layout))
            realism.append(realism_score(np.asarray(image)))
    summary = summarize(evaluations)
    summary["realism"] = float(np.mean(realism))
    summary["seconds"] = float(np.mean(seconds))
    return summary


def combined(summary: dict[str, Any]) -> float:
    """One number for tuning: composition (mean of success rate and box IoU) and realism, equally."""
    composition = ((summary["success"] or 0.0) + (summary["mean_iou"] or 0.0)) / 2
    return 0.5 * composition + 0.5 * summary["realism"]


def markdown(rows: dict[str, dict[str, Any]]) -> str:
    lines = ["| method | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for name, s in rows.items():
        cells = [("–" if s.get(m) is None else f"{s[m]:.3f}") for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from realcompo_sdk import RealCompo

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench-shapes")
    p.add_argument("--prompts", type=int, default=24)
    p.add_argument("--seeds", type=int, default=1, help="images per prompt")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--scheduler", default="ddim")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="balancer option for RealCompo")
    p.add_argument("--tune", action="store_true", help="grid over scale_factor, t0, attention_resolution on the tuning set")
    p.add_argument("--scale-factors", default="1e4,1e5,1e6", help="tuning grid: influence step sizes")
    p.add_argument("--t0-fractions", default="0.2,0.4", help="tuning grid: warm-up as a fraction of the steps")
    p.add_argument("--resolutions", default="8,16", help="tuning grid: attention map heights")
    p.add_argument("--extra-l2i", metavar="ID", help="also compare this L2I adapter alone and balanced with shapes-sd (e.g. shapes-layout-guidance)")
    args = p.parse_args(argv)
    balance = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m realcompo_plugin_shapes.bench " + " ".join(argv if argv is not None else sys.argv[1:])

    rows: dict[str, dict[str, Any]] = {}
    if args.tune:
        prompts = captions("tuning", args.prompts)
        grid = {"scale_factor": [float(v) for v in args.scale_factors.split(",")],
                "t0": [float(v) for v in args.t0_fractions.split(",")],
                "attention_resolution": [int(v) for v in args.resolutions.split(",")]}
        for values in itertools.product(*grid.values()):
            opts = dict(zip(grid, values))
            opts["t0"] = round(opts["t0"] * args.steps)
            rc = RealCompo(t2i="shapes-sd", l2i="shapes-gligen", planner="rules", scheduler=args.scheduler, balance=opts)
            name = ", ".join(f"{k}={v:g}" for k, v in opts.items())
            rows[name] = run_method(rc, "balanced", prompts, args.seeds, args.steps, args.guidance)
            rows[name]["combined"] = combined(rows[name])
            print(name, {k: round(v, 3) for k, v in rows[name].items() if isinstance(v, float)}, flush=True)
        best = max(rows, key=lambda k: rows[k]["combined"])
        header = f"Tuning set ({args.prompts} captions, seed {SETS['tuning']}); best by combined score: **{best}**"
    else:
        prompts = captions("heldout", args.prompts)
        rc = RealCompo(t2i="shapes-sd", l2i="shapes-gligen", planner="rules", scheduler=args.scheduler, balance=balance)
        for label, mode in [("T2I alone (shapes-sd)", "t2i"), ("L2I alone (shapes-gligen)", "l2i"), ("RealCompo", "balanced")]:
            rows[label] = run_method(rc, mode, prompts, args.seeds, args.steps, args.guidance)
            print(label, {k: round(v, 3) for k, v in rows[label].items() if isinstance(v, float)}, flush=True)
        if args.extra_l2i:
            extra = RealCompo(t2i="shapes-sd", l2i=args.extra_l2i, planner="rules", scheduler=args.scheduler, balance=balance)
            for label, mode in [(f"L2I alone ({args.extra_l2i})", "l2i"), (f"RealCompo (shapes-sd + {args.extra_l2i})", "balanced")]:
                rows[label] = run_method(extra, mode, prompts, args.seeds, args.steps, args.guidance)
                print(label, {k: round(v, 3) for k, v in rows[label].items() if isinstance(v, float)}, flush=True)
        header = f"Held-out set ({args.prompts} captions, seed {SETS['heldout']}), balancer options {balance or 'defaults'}"
    text = f"{header}; {args.steps} {args.scheduler} steps, guidance {args.guidance}, {args.seeds} seed(s) per caption.\n\n{markdown(rows)}\n\n`{command}`\n"
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps({"command": command, "prompts": prompts, "rows": rows}, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
