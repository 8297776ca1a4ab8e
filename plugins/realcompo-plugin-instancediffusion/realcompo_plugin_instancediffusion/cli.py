"""`realcompo-instancediffusion`: convert the official checkpoint, check key mappings, run the model alone.

    realcompo-instancediffusion convert instancediffusion_sd15.pth OUT [--sd15 DIR_OR_HUB_ID]
    realcompo-instancediffusion convert instancediffusion_sd15.pth --shapes-only
    realcompo-instancediffusion generate layout.json --model OUT -o image.png [--mis 0.36]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="realcompo-instancediffusion", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="official .pth → safetensors folder (weights-only loading)")
    c.add_argument("checkpoint", nargs="?", type=Path, help="instancediffusion_sd15.pth (omit with --shapes-only to check the recorded key list)")
    c.add_argument("out", nargs="?", type=Path, help="output folder")
    c.add_argument("--source", choices=["ema", "model"], default="ema", help="which weights of the training checkpoint (default ema, as the official inference)")
    c.add_argument("--sd15", help="SD1.5 folder or hub id: check the base UNet against it and copy its VAE, text encoder and tokenizer")
    c.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    c.add_argument("--overwrite", action="store_true")
    c.add_argument("--shapes-only", action="store_true", help="map names and shapes on the meta device, load no weights, write nothing")

    g = sub.add_parser("generate", help="InstanceDiffusion alone, official sampler with MIS (baselines)")
    g.add_argument("layout", type=Path, help="a realcompo layout JSON, or an official demos/*.json")
    g.add_argument("--model", required=True, help="a converted folder")
    g.add_argument("-o", "--output", type=Path, default=Path("instancediffusion.png"))
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--steps", type=int, default=50)
    g.add_argument("--guidance", type=float, default=7.5)
    g.add_argument("--mis", type=float, default=0.36, help="multi-instance sampling fraction (official README: < 0.4)")
    g.add_argument("--grounding-fraction", type=float, default=0.8)
    g.add_argument("--base", help="SD1.5 parts when the folder has none")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from realcompo_sdk.errors import RealCompoError

    from .convert import ConversionError

    try:
        if args.command == "convert":
            return _convert(args)
        return _generate(args)
    except (ConversionError, RealCompoError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _convert(args: argparse.Namespace) -> int:
    import torch

    from .convert import convert_checkpoint, load_training_checkpoint, pick_state_dict, shapes_only_report

    if args.shapes_only:
        shapes = None
        if args.checkpoint is not None:
            state = pick_state_dict(load_training_checkpoint(args.checkpoint), args.source)
            shapes = {k: tuple(v.shape) for k, v in state.items()}
        print(json.dumps(shapes_only_report(shapes), indent=2))
        return 0
    if args.checkpoint is None or args.out is None:
        print("error: convert needs CHECKPOINT and OUT (or --shapes-only)", file=sys.stderr)
        return 2
    convert_checkpoint(args.checkpoint, args.out, source=args.source, sd15=args.sd15,
                       dtype=getattr(torch, args.dtype), overwrite=args.overwrite, progress=True)  # fmt: skip
    return 0


def _generate(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from realcompo_sdk.errors import RealCompoError
    from realcompo_sdk.images import save_png
    from realcompo_sdk.layout import load_layout

    from .adapter import InstanceDiffusionAdapter
    from .inputs import official_json_to_layout

    try:
        data = json.loads(args.layout.read_text())
    except json.JSONDecodeError as exc:
        raise RealCompoError(f"{args.layout} is not JSON ({exc}); give a realcompo layout or an official demos/*.json file") from exc
    layout = official_json_to_layout(data)[0] if "annos" in data else load_layout(data)
    options = {"model": args.model, "grounding_fraction": args.grounding_fraction}
    if args.base:
        options["base"] = args.base
    adapter = InstanceDiffusionAdapter(**options)
    images = adapter.generate(layout, seed=args.seed, num_steps=args.steps, guidance_scale=args.guidance,
                              mis_fraction=args.mis, progress=True)  # fmt: skip
    pixels = (images[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    save_png(Image.fromarray(pixels), args.output, json.dumps({"adapter": "instancediffusion", "layout": layout.model_dump(), "seed": args.seed, "steps": args.steps, "mis": args.mis}))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
