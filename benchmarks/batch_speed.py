"""Throughput of `realcompo batch` on the bundled Shapes models, every ratio measured in one run.

    python benchmarks/batch_speed.py [--prompts 16] [--steps 25] [--markdown]

1. one prompt per forward (--batch-size 1) vs different prompts sharing batched forwards
   (--batch-size 8), local engine, all cores in one worker;
2. local (one worker, one thread) vs Ray with two workers of one thread each, --batch-size 4.
Images/s count every image over the generate stage (model loading included: the local engine
loads in it, Ray actors load in theirs, after Ray starts); "sampling" excludes the local load.
A short warm-up run comes first; the rows then run one after the other.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
from pathlib import Path

from realcompo_sdk.batch import BatchOptions, ModelConfig, run_batch

COLOURS = ["red", "blue", "green", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "triangle"]
RELATIONS = ["to the left of", "above", "to the right of", "below"]


def prompts(n: int) -> list[str]:
    combos = itertools.product(COLOURS, SHAPES, RELATIONS, reversed(COLOURS), reversed(SHAPES))
    out = []
    for c1, s1, rel, c2, s2 in combos:
        if (c1, s1) != (c2, s2):
            out.append(f"a {c1} {s1} {rel} a {c2} {s2}")
        if len(out) == n:
            return out
    return out


def measure(jobs: Path, root: Path, name: str, *, engine: str = "local", workers: int = 1, batch_size: int,
            threads: int, steps: int) -> dict[str, float]:
    options = BatchOptions(jobs=jobs, output=root / name, engine=engine, workers=workers, batch_size=batch_size,
                           defaults={"num_steps": steps}, progress=False)
    summary = run_batch(options, ModelConfig(t2i="shapes-sd", l2i=["shapes-controlnet"], threads=threads), log=lambda _: None)
    assert summary.images > 0 and not summary.failures, summary.failures
    generate = summary.seconds["generate"]
    load = summary.seconds.get("load", 0.0)
    return {"images": summary.images, "seconds": generate, "images/s": summary.images / generate,
            "sampling images/s": summary.images / (generate - load)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray rows (a machine without Ray, e.g. a lent GPU)")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        jobs = root / "prompts.txt"
        jobs.write_text("\n".join(prompts(args.prompts)) + "\n")
        warm = root / "warm-up.txt"  # first-call costs (imports, allocator, kernels) out of the first row
        warm.write_text("\n".join(prompts(4)) + "\n")
        measure(warm, root, "warm-up", batch_size=2, threads=cores, steps=2)
        rows = {
            "local, 1 prompt per forward": measure(jobs, root, "a", batch_size=1, threads=cores, steps=args.steps),
            "local, 8 prompts per forward": measure(jobs, root, "b", batch_size=8, threads=cores, steps=args.steps),
        }
        if not args.no_ray:
            rows["local, 1 worker x 1 thread, batch 4"] = measure(jobs, root, "c", batch_size=4, threads=1, steps=args.steps)
            rows["ray, 2 workers x 1 thread, batch 4"] = measure(jobs, root, "d", engine="ray", workers=2, batch_size=4,
                                                                 threads=1, steps=args.steps)
    names = list(rows)
    mixed = rows[names[1]]["sampling images/s"] / rows[names[0]]["sampling images/s"]
    ray = rows[names[3]]["images/s"] / rows[names[2]]["images/s"] if len(names) == 4 else float("nan")
    if args.markdown:
        print("| configuration | images | generate s | images/s | sampling images/s |\n|---|---|---|---|---|")
        for name, r in rows.items():
            print(f"| {name} | {r['images']:.0f} | {r['seconds']:.1f} | {r['images/s']:.2f} | "
                  + (f"{r['sampling images/s']:.2f} |" if not name.startswith("ray") else "- |"))
    else:
        for name, r in rows.items():
            print(f"{name:40s} {r['images']:4.0f} images {r['seconds']:7.1f} s {r['images/s']:6.2f} images/s")
    ray_text = "" if args.no_ray else f"; ray 2 workers vs local 1 worker: x{ray:.2f}"
    print(f"\nbatched different prompts vs one per forward (sampling): x{mixed:.2f}{ray_text}"
          f" ({args.prompts} prompts, {args.steps} steps, {cores} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
