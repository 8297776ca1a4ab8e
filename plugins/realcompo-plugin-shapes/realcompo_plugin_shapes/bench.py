"""Shapes benchmark: single models, RealCompo and its ablations on the same captions, layouts, seeds
and sampler, scored by the exact evaluator, with 95 % bootstrap intervals.

    python -m realcompo_plugin_shapes.bench --out bench-shapes          # held-out set, every method
    python -m realcompo_plugin_shapes.bench --tune --out tune-shapes    # balancer grid on the tuning set
    realcompo-shapes-bench ...                                          # the same, as an installed command

The tuning captions (seed 1000) and the held-out captions (seed 2000) are drawn from the grammar
with different seeds, so settings chosen on one are judged on the other. Every method gets the
rules planner's layout of the caption, and caption i is sampled with seeds 100·i + s, s < --seeds.
Writes `results.md` (tables and the command that made them), `results.json` (every image's
scores), `images/<method>/<seed>.png` and `grid.png` (the same seeds across methods) into --out.
`--merge DIR ...` reports runs of different methods on the same captions and seeds as one table
(e.g. two processes, one per CPU core).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .captions import format_caption, sample_spec
from .evaluate import evaluate_image, realism_score

SETS = {"tuning": 1000, "heldout": 2000}
T2I = "shapes-sd"
METRICS = ("success", "binding", "count_ok", "relation_ok", "mean_iou", "realism")
OFFICIAL = {
    "updates_during_warmup": True,
    "init": "random",
    "lookahead_noise": "cond",
    "detach_t2i_attention": True,
    "lookahead": "ddim",
}
"""The official code's behaviour (docs/algorithm.md): every compatibility switch on."""


TUNED = ("scale_factor", "t0", "attention_resolution")
"""The balancer settings the tuning grid searches (and a report names)."""


@dataclass(frozen=True)
class Method:
    label: str
    l2i: tuple[str, ...]  # L2I adapter ids; "t2i" mode ignores them, "l2i" mode uses the first
    mode: str = "balanced"
    balance: dict[str, Any] = field(default_factory=dict)  # overrides of the benchmark's balancer options


def methods_for(l2i_ids: Sequence[str]) -> dict[str, Method]:
    """Every method the benchmark knows for these L2I adapters, keyed by a short name."""
    table = {"t2i": Method(f"T2I alone ({T2I})", (l2i_ids[0],), "t2i")}
    for l2i in l2i_ids:
        table[l2i] = Method(f"L2I alone ({l2i})", (l2i,), "l2i")
    for l2i in l2i_ids:
        pair = f"{T2I} + {l2i}"
        table[f"rc:{l2i}"] = Method(f"RealCompo ({pair})", (l2i,))
        table[f"fixed:{l2i}"] = Method(f"fixed equal weights ({pair})", (l2i,), balance={"scale_factor": 0.0})
        table[f"official:{l2i}"] = Method(f"official-code mode ({pair})", (l2i,), balance=OFFICIAL)
    if len(l2i_ids) > 1:
        table["rc:" + "+".join(l2i_ids)] = Method(f"RealCompo ({' + '.join((T2I, *l2i_ids))})", tuple(l2i_ids))
    return table


def captions(which: str, n: int) -> list[str]:
    rng = np.random.default_rng(SETS[which])
    return [format_caption(sample_spec(rng)[0]) for _ in range(n)]


# --------------------------------------------------------------------------- running


class Runner:
    """Loads every adapter once; builds a `RealCompo` per method over those instances."""

    def __init__(self, l2i_ids: Sequence[str], scheduler: str, steps: int, guidance: float) -> None:
        from realcompo_sdk import RealCompo

        first = RealCompo(t2i=T2I, l2i=list(l2i_ids), planner="rules")
        self.t2i, self.planner = first.t2i, first.planner
        self.l2i = dict(zip(l2i_ids, first.l2i))
        self.scheduler, self.steps, self.guidance = scheduler, steps, guidance

    def compose(self, method: Method, balance: dict[str, Any]) -> Any:
        from realcompo_sdk import RealCompo

        return RealCompo(t2i=self.t2i, l2i=[self.l2i[i] for i in method.l2i], planner=self.planner,
                         balance={**balance, **method.balance}, scheduler=self.scheduler)  # fmt: skip

    def run(self, rc: Any, method: Method, prompts: list[str], layouts: list[Any], seeds: int,
            progress: Any = None) -> tuple[list[dict[str, Any]], list[Any]]:  # fmt: skip
        """One record per image (caption index, seed, scores, seconds) and the images."""
        records, images = [], []
        for i, (prompt, layout) in enumerate(zip(prompts, layouts)):
            start = time.perf_counter()
            result = rc(prompt, layout=layout, seed=100 * i, batch_size=seeds, mode=method.mode,
                        num_steps=self.steps, guidance_scale=self.guidance)  # fmt: skip
            seconds = (time.perf_counter() - start) / seeds
            for s, image in enumerate(result.images):
                array = np.asarray(image)
                ev = evaluate_image(array, prompt, planned=layout)
                records.append({
                    "caption": i, "seed": 100 * i + s, "success": float(ev.success), "binding": ev.binding,
                    "count_ok": None if ev.count_ok is None else float(ev.count_ok),
                    "relation_ok": None if ev.relation_ok is None else float(ev.relation_ok),
                    "mean_iou": ev.mean_iou, "realism": realism_score(array), "seconds": seconds,
                })  # fmt: skip
                images.append(image)
            if progress is not None:
                progress.update(1)
        return records, images


# --------------------------------------------------------------------------- statistics


def _per_caption(records: list[dict[str, Any]], metric: str) -> dict[int, float]:
    """Mean of `metric` per caption over its seeds (captions where the metric applies)."""
    values: dict[int, list[float]] = {}
    for r in records:
        if r[metric] is not None:
            values.setdefault(r["caption"], []).append(r[metric])
    return {c: float(np.mean(v)) for c, v in values.items()}


def bootstrap(records: list[dict[str, Any]], metric: str, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float] | None:  # fmt: skip
    """Mean and 95 % percentile interval, resampling captions (a caption keeps all its seeds)."""
    by_caption = _per_caption(records, metric)
    if not by_caption:
        return None
    values = np.array(list(by_caption.values()))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    return float(values.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def paired_difference(a: list[dict[str, Any]], b: list[dict[str, Any]], metric: str, resamples: int = 2000,
                      seed: int = 0) -> tuple[float, float, float] | None:  # fmt: skip
    """Mean of a − b and its 95 % interval, resampling the captions both were run on."""
    pa, pb = _per_caption(a, metric), _per_caption(b, metric)
    common = sorted(set(pa) & set(pb))
    if not common:
        return None
    diff = np.array([pa[c] - pb[c] for c in common])
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (resamples, len(diff)))].mean(axis=1)
    return float(diff.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summary(records: list[dict[str, Any]], resamples: int = 2000) -> dict[str, Any]:
    out: dict[str, Any] = {m: bootstrap(records, m, resamples) for m in METRICS}
    out["images"] = len(records)
    out["seconds"] = float(np.mean([r["seconds"] for r in records]))
    return out


def _cell(value: tuple[float, float, float] | None) -> str:
    return "–" if value is None else f"{value[0]:.3f} [{value[1]:.2f}, {value[2]:.2f}]"


def _signed(value: tuple[float, float, float] | None) -> str:
    return "–" if value is None else f"{value[0]:+.3f} [{value[1]:+.2f}, {value[2]:+.2f}]"


def results_table(rows: dict[str, dict[str, Any]]) -> str:
    header = "| method | success | binding | counting | relations | box IoU | realism | s / image |"
    lines = [header, "|---|" + "---|" * 7]
    for label, s in rows.items():
        cells = [_cell(s[m]) for m in METRICS] + [f"{s['seconds']:.2f}"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparisons(names: dict[str, str], records: dict[str, list[dict[str, Any]]], resamples: int) -> list[tuple[str, str]]:  # fmt: skip
    """The pairs that test the paper's claim, for every RealCompo row present."""
    pairs = []
    for key in records:
        if not key.startswith("rc:"):
            continue
        l2i = key[3:]
        for other in ("t2i", l2i, f"fixed:{l2i}", f"official:{l2i}", *l2i.split("+")):
            if other in records and (key, other) not in pairs and other != key:
                pairs.append((key, other))
    return pairs


def differences_table(names: dict[str, str], records: dict[str, list[dict[str, Any]]], resamples: int) -> str:
    lines = ["| RealCompo row − other row | Δ success | Δ box IoU | Δ realism |", "|---|---|---|---|"]
    for a, b in comparisons(names, records, resamples):
        cells = [_signed(paired_difference(records[a], records[b], m, resamples)) for m in ("success", "mean_iou", "realism")]
        lines.append(f"| {names[a]} − {names[b]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- pictures


def grid_picture(prompts: list[str], layouts: list[Any], columns: dict[str, list[Any]], rows: int, seeds: int,
                 scale: int = 2) -> Any:  # fmt: skip
    """Rows: the first `rows` captions (their first seed); columns: the layout, then each method's
    image with the planned boxes outlined, so "inside its box" can be judged by eye."""
    from PIL import Image, ImageDraw

    from realcompo_sdk.images import layout_overlay

    rows = min(rows, len(prompts))
    cell, header, label_w = 64 * scale, 14, 190
    names = ["layout", *(k.replace("shapes-", "") for k in columns)]
    canvas = Image.new("RGB", (label_w + cell * len(names), header + cell * rows), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(names):
        draw.text((label_w + c * cell + 2, 1), name, fill=(0, 0, 0))
    for r in range(rows):
        y = header + r * cell
        text, line = [], ""
        for word in prompts[r].split():  # wrap the caption into the label column
            if line and len(line) + len(word) > 28:
                text.append(line)
                line = ""
            line = f"{line} {word}".strip()
        draw.multiline_text((4, y + 4), "\n".join([*text, line]), fill=(0, 0, 0))
        canvas.paste(layout_overlay(layouts[r], size=2 * cell).resize((cell, cell), Image.LANCZOS), (label_w, y))
        boxes = [o.bounding_box() for o in layouts[r].objects]
        for c, images in enumerate(columns.values(), start=1):
            x = label_w + c * cell
            canvas.paste(images[r * seeds].convert("RGB").resize((cell, cell), Image.NEAREST), (x, y))
            for b in boxes:
                draw.rectangle([x + b.x0 * cell, y + b.y0 * cell, x + b.x1 * cell - 1, y + b.y1 * cell - 1], outline=(255, 255, 255))
    return canvas


# --------------------------------------------------------------------------- command


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m realcompo_plugin_shapes.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench-shapes", help="output folder")
    p.add_argument("--prompts", type=int, default=64, help="captions")
    p.add_argument("--seeds", type=int, default=2, help="images per caption")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--scheduler", default="ddim")
    p.add_argument("--l2i", default="shapes-controlnet", help="L2I adapter ids, comma-separated")
    p.add_argument("--methods", default=None, help="method keys, comma-separated (default: all; --list-methods)")
    p.add_argument("--list-methods", action="store_true", help="print the method keys and exit")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="balancer option of every balanced method")
    p.add_argument("--tune", action="store_true", help="grid over scale_factor, t0, attention_resolution on the tuning set")
    p.add_argument("--scale-factors", default="1e3,1e4,1e5", help="tuning grid: influence step sizes")
    p.add_argument("--t0-fractions", default="0.2,0.4", help="tuning grid: warm-up as a fraction of the steps")
    p.add_argument("--resolutions", default="8,16", help="tuning grid: attention map heights")
    p.add_argument("--grid-rows", type=int, default=8, help="captions in grid.png")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--merge", nargs="+", metavar="DIR", help="report runs of different methods (their --out folders) as one")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    args.l2i_ids = [s.strip() for s in args.l2i.split(",") if s.strip()]
    if not args.l2i_ids:
        p.error("--l2i needs at least one L2I adapter id")
    known = methods_for(args.l2i_ids)
    if args.list_methods:
        print("\n".join(f"{k:40s} {m.label}" for k, m in known.items()))
        raise SystemExit(0)
    args.method_keys = list(known) if args.methods is None else [m.strip() for m in args.methods.split(",")]
    unknown = [m for m in args.method_keys if m not in known]
    if unknown:
        p.error(f"unknown method(s) {unknown}; known: {', '.join(known)}")
    for name in ("prompts", "seeds", "steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    try:
        args.balance = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    except (ValueError, json.JSONDecodeError) as exc:
        p.error(f"--set expects KEY=VALUE with a JSON value: {exc}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m realcompo_plugin_shapes.bench " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.merge:
        results = merge([json.loads((Path(d) / "results.json").read_text()) for d in args.merge], command)
        image_dirs = [Path(d) / "images" for d in args.merge]
    else:
        results = run(args, out, command)
        image_dirs = [out / "images"]
    text = report(results, args.bootstrap)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    if results["set"] == "heldout":
        grid(results, image_dirs, args.grid_rows).save(out / "grid.png")
    print(text)
    return 0


def run(args: argparse.Namespace, out: Path, command: str) -> dict[str, Any]:
    """Generate and score every image of the plan; images go to out/images/<method>/<seed>.png."""
    from tqdm.auto import tqdm

    which = "tuning" if args.tune else "heldout"
    prompts = captions(which, args.prompts)
    known = methods_for(args.l2i_ids)
    if args.tune:  # the single models for reference, then the balanced grid for each L2I
        plan: dict[str, tuple[Method, dict[str, Any]]] = {k: (known[k], {}) for k in ("t2i", *args.l2i_ids)}
        grid_points = itertools.product([float(v) for v in args.scale_factors.split(",")],
                                        [float(v) for v in args.t0_fractions.split(",")],
                                        [int(v) for v in args.resolutions.split(",")])  # fmt: skip
        for (sf, t0, res), l2i in itertools.product(list(grid_points), args.l2i_ids):
            opts = {"scale_factor": sf, "t0": round(t0 * args.steps), "attention_resolution": res}
            name = f"rc:{l2i} scale_factor={sf:g} t0={opts['t0']} res={res}"
            plan[name] = (Method(f"RealCompo ({T2I} + {l2i}), {name.split(' ', 1)[1]}", (l2i,)), opts)
    else:
        plan = {k: (known[k], {}) for k in args.method_keys}
    needed = list(dict.fromkeys(i for method, _ in plan.values() for i in method.l2i))
    runner = Runner(needed, args.scheduler, args.steps, args.guidance)
    layouts = [runner.planner.plan(p) for p in prompts]
    bar = tqdm(total=len(plan) * len(prompts), desc="images", unit="caption", disable=args.no_progress)
    methods: dict[str, Any] = {}
    for key, (method, opts) in plan.items():
        rc = runner.compose(method, {**args.balance, **opts})
        records, images = runner.run(rc, method, prompts, layouts, args.seeds, bar)
        folder = out / "images" / _safe(key)
        folder.mkdir(parents=True, exist_ok=True)
        for record, image in zip(records, images):
            image.save(folder / f"{record['seed']}.png")
        methods[key] = {"label": method.label, "l2i": list(method.l2i), "mode": method.mode,
                        "balance": rc.balance.model_dump(mode="json") if method.mode == "balanced" else None,
                        "images": records}  # fmt: skip
    bar.close()
    return {"command": command, "set": which, "prompts": prompts, "layouts": [l.model_dump(mode="json") for l in layouts],
            "seeds": args.seeds, "steps": args.steps, "scheduler": args.scheduler, "guidance": args.guidance,
            "balance": args.balance, "methods": methods}  # fmt: skip


def merge(parts: list[dict[str, Any]], command: str) -> dict[str, Any]:
    """One result from runs of different methods on the same captions, seeds and sampler."""
    same = ("set", "prompts", "seeds", "steps", "scheduler", "guidance")
    for part in parts[1:]:
        differing = [k for k in same if part[k] != parts[0][k]]
        if differing:
            raise SystemExit(f"--merge: the runs differ in {differing}; merge runs of one set, seeds and sampler only")
    merged = {**parts[0], "command": command, "merged": [p["command"] for p in parts], "methods": {}}
    for part in parts:
        twice = sorted(set(part["methods"]) & set(merged["methods"]))
        if twice:  # one would silently replace the other
            raise SystemExit(f"--merge: method(s) {twice} are in more than one run; merge runs of different methods")
        merged["methods"].update(part["methods"])
    return merged


def _safe(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key)


def report(results: dict[str, Any], resamples: int) -> str:
    methods = results["methods"]
    which = results["set"]
    balances = {k: _balance_text(m["balance"]) for k, m in methods.items() if m["mode"] == "balanced" and m["balance"]}
    # Merged runs made with different --set: each balanced row says what it ran with. (Tuning rows
    # already name their grid point; ablation rows differ only in what their name says.)
    per_row = which == "heldout" and _runs_differ(methods)
    names = {k: m["label"] + (f" [{balances[k]}]" if per_row and k in balances else "") for k, m in methods.items()}
    records = {k: m["images"] for k, m in methods.items()}
    rows = {names[k]: summary(records[k], resamples) for k in methods}
    for k, m in methods.items():
        m["summary"] = rows[names[k]]
    first_rc = next((balances[k] for k in balances if k.startswith("rc:")), next(iter(balances.values()), "–"))
    balance_text = "given on each row" if per_row else first_rc
    setting = (f"{'Tuning' if which == 'tuning' else 'Held-out'} set: {len(results['prompts'])} captions (seed "
               f"{SETS[which]}) × {results['seeds']} seeds, {results['steps']} {results['scheduler']} steps, guidance "
               f"{results['guidance']}. Balancer of the RealCompo rows: {balance_text} (the ablation rows "
               "change only what their name says).")  # fmt: skip
    text = [setting, "", "Means with 95 % bootstrap intervals over captions.", "", results_table(rows), ""]
    if which == "heldout":
        text += ["Paired differences (same captions and seeds), 95 % bootstrap intervals:", "",
                 differences_table(names, records, resamples), ""]  # fmt: skip
    else:
        plan = {k: (Method(m["label"], tuple(m["l2i"]), m["mode"]), {}) for k, m in methods.items()}
        text += [f"Best: {best_setting(plan, rows, names)}", ""]
    text += [f"`{c}`" for c in results.get("merged", [])] + [f"`{results['command']}`"]
    return "\n".join(text) + "\n"


def _runs_differ(methods: dict[str, Any]) -> bool:
    """Whether balanced rows disagree on a tuned setting that their methods do not set themselves."""
    seen: dict[str, set[Any]] = {}
    for key, m in methods.items():
        if m["mode"] != "balanced" or not m["balance"]:
            continue
        known = methods_for(m["l2i"]).get(key)
        own = known.balance if known else {}
        for setting in TUNED:
            if setting not in own:
                seen.setdefault(setting, set()).add(m["balance"].get(setting))
    return any(len(values) > 1 for values in seen.values())


def _balance_text(balance: dict[str, Any] | None) -> str:
    if not balance:
        return "–"
    return ", ".join(f"{k}={balance.get(k)}" for k in TUNED)


def grid(results: dict[str, Any], image_dirs: list[Path], rows: int) -> Any:
    from PIL import Image

    from realcompo_sdk.layout import Layout

    layouts = [Layout.model_validate(data) for data in results["layouts"]]
    columns = {}
    for key, method in results["methods"].items():
        folder = next(d / _safe(key) for d in image_dirs if (d / _safe(key)).is_dir())
        columns[key] = [Image.open(folder / f"{r['seed']}.png") for r in method["images"]]
    return grid_picture(results["prompts"], layouts, columns, rows, results["seeds"])


def best_setting(plan: dict[str, tuple[Method, dict[str, Any]]], rows: dict[str, dict[str, Any]], names: dict[str, str]) -> str:  # fmt: skip
    """Per L2I: the grid point with the highest success + box IoU among those whose realism is within
    5 % of the T2I model's on this set (all points if none is)."""
    t2i_realism = rows[names["t2i"]]["realism"][0]
    picks = []
    for l2i in {m.l2i[0] for k, (m, _) in plan.items() if k.startswith("rc:")}:
        points = [k for k in plan if k.startswith(f"rc:{l2i} ")]
        ok = [k for k in points if rows[names[k]]["realism"][0] >= 0.95 * t2i_realism] or points
        best = max(ok, key=lambda k: rows[names[k]]["success"][0] + (rows[names[k]]["mean_iou"] or (0.0,))[0])
        picks.append(best)
    return "; ".join(picks)


if __name__ == "__main__":
    raise SystemExit(main())
