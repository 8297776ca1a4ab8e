"""Cost of balancing two MMDiT models (SD3 / Flux + their ControlNet) against running each alone.

Per-step models are full size with random weights (the architecture, not the values, sets the
cost): the transformer and the ControlNet from the real configs in
`plugins/realcompo-plugin-mmdit/tests/real_configs/`. Text encoders are small random stand-ins
with the real output widths (text is encoded once per request, not per step) and the VAE is left
out of the timings (decoding is the same in every row). Rows, timed interleaved after a warm-up in
one process: the T2I alone with its guidance, the L2I alone, the balanced sampler, and the ratio
balanced / (T2I + L2I); the fast sampler's latents are checked against the reference loop.

    python benchmarks/mmdit_speed.py --family flux --device cuda --dtype bfloat16 --size 1024 --steps 28
    python benchmarks/mmdit_speed.py --family sd3 --device cuda --dtype float16 --size 1024 --steps 28
    python benchmarks/mmdit_speed.py --family sd3 --tiny --steps 4          # CPU: the script itself works
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from realcompo_sdk.balancer import BalanceOptions
from realcompo_sdk.interfaces import GenerationRequest
from realcompo_sdk.layout import Layout
from realcompo_sdk.sampler import BalancedProblem, balanced_sample, plain_sample
from realcompo_sdk.testing.reference import reference_sample

CONFIGS = Path(__file__).resolve().parents[1] / "plugins" / "realcompo-plugin-mmdit" / "tests" / "real_configs"
FULL = {  # family -> (transformer config, ControlNet config, ControlNet adapter options)
    "sd3": ("sd3-medium-transformer.json", "sd3-controlnet-pose.json", {}),  # the InstantX nets fit SD3-medium
    "flux": ("flux1-dev-transformer.json", "flux-controlnet-union.json", {"control_mode": 4}),
}


def _config(name: str) -> dict[str, Any]:
    return {k: v for k, v in json.loads((CONFIGS / name).read_text()).items() if not k.startswith("_")}


def full_size_pipeline(family: str, device: str, dtype: torch.dtype) -> tuple[Any, Any]:
    """The family's pipeline with a full-size random transformer, small random text encoders of the
    real output widths, the tiny VAE (not timed), and a full-size random ControlNet."""
    transformer_config, controlnet_config, _ = FULL[family]
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in the target dtype: a float32 FLUX.1-dev alone is 48 GB
    try:
        return _build(family, device, dtype, transformer_config, controlnet_config)
    finally:
        torch.set_default_dtype(default)


def _build(family: str, device: str, dtype: torch.dtype, transformer_config: str, controlnet_config: str) -> tuple[Any, Any]:
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        FluxControlNetModel,
        FluxPipeline,
        FluxTransformer2DModel,
        SD3ControlNetModel,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    from realcompo_sdk.testing.components import (
        tiny_clip_with_projection,
        tiny_t5_encoder,
        tiny_t5_tokenizer,
        tiny_text_encoder,
        tiny_tokenizer,
    )
    from realcompo_sdk.testing.folders_mmdit import tiny_mmdit_vae

    with torch.device(device):
        if family == "sd3":
            transformer = SD3Transformer2DModel(**_config(transformer_config))
            controlnet = SD3ControlNetModel(**_config(controlnet_config))
            width = transformer.config.pooled_projection_dim // 2
            pipe = StableDiffusion3Pipeline(
                transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=tiny_mmdit_vae(0),
                text_encoder=tiny_clip_with_projection(0, hidden_size=width, projection_dim=width), tokenizer=tiny_tokenizer(),
                text_encoder_2=tiny_clip_with_projection(1, hidden_size=width, projection_dim=width), tokenizer_2=tiny_tokenizer(),
                text_encoder_3=tiny_t5_encoder(2, d_model=transformer.config.joint_attention_dim), tokenizer_3=tiny_t5_tokenizer())
        else:
            transformer = FluxTransformer2DModel(**_config(transformer_config))
            controlnet = FluxControlNetModel(**_config(controlnet_config))
            pipe = FluxPipeline(
                transformer=transformer, vae=tiny_mmdit_vae(0, scaling_factor=0.3611, shift_factor=0.1159),
                scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                          base_image_seq_len=256, max_image_seq_len=4096, shift=3.0),
                text_encoder=tiny_text_encoder(0, hidden_size=transformer.config.pooled_projection_dim), tokenizer=tiny_tokenizer(),
                text_encoder_2=tiny_t5_encoder(1, d_model=transformer.config.joint_attention_dim), tokenizer_2=tiny_t5_tokenizer())
    return pipe, controlnet


def build(family: str, args: argparse.Namespace) -> list[Any]:
    from realcompo_plugin_mmdit.controlnet import FluxControlNetPoseAdapter, SD3ControlNetPoseAdapter
    from realcompo_plugin_mmdit.flux import FluxAdapter
    from realcompo_plugin_mmdit.sd3 import SD3Adapter

    t2i_cls, cn_cls = (SD3Adapter, SD3ControlNetPoseAdapter) if family == "sd3" else (FluxAdapter, FluxControlNetPoseAdapter)
    common = {"device": args.device, "dtype": args.dtype, "max_sequence_length": 77}
    size = {} if family == "sd3" else {"default_size": args.size}
    if args.tiny:
        from realcompo_sdk.testing import folders_mmdit as tiny

        root = Path(tempfile.mkdtemp())
        model = (tiny.save_tiny_sd3_folder if family == "sd3" else tiny.save_tiny_flux_folder)(root / "m")
        cn = (tiny.save_tiny_sd3_controlnet_folder if family == "sd3" else tiny.save_tiny_flux_controlnet_folder)(
            root / "cn", union=family == "flux")
        t2i = t2i_cls(model=str(model), **common, **size)
        l2i = cn_cls.sharing(t2i, controlnet=str(cn), **FULL[family][2])
    else:
        pipe, controlnet = full_size_pipeline(family, args.device, getattr(torch, args.dtype))
        t2i = t2i_cls(pipeline=pipe, model=f"{family} full size, random weights", **common, **size)
        l2i = cn_cls.sharing(t2i, controlnet=f"{FULL[family][1]} random weights", controlnet_model=controlnet, **FULL[family][2])
    return [t2i, l2i]


def problem(adapters: list[Any], args: argparse.Namespace, options: BalanceOptions) -> BalancedProblem:
    from realcompo_sdk.layout import Keypoint, LayoutObject

    def person(x0: float) -> list[Keypoint]:
        joints = [("nose", 0.25, 0.15), ("neck", 0.25, 0.3), ("right_shoulder", 0.15, 0.3), ("left_shoulder", 0.35, 0.3),
                  ("right_hip", 0.18, 0.7), ("left_hip", 0.32, 0.7)]
        return [Keypoint(name=n, x=x0 + x, y=y) for n, x, y in joints]

    layout = Layout(prompt="a man next to a woman", objects=[LayoutObject(phrase="man", keypoints=person(0.0)),
                                                             LayoutObject(phrase="woman", keypoints=person(0.5))])
    size = args.size
    request = GenerationRequest(prompt=layout.prompt, negative_prompt="", layout=layout, batch_size=1, height=size,
                                width=size, num_steps=args.steps, guidance_scale=args.guidance)
    positions = [a.phrase_token_positions(layout.prompt, ["man", "woman"])[1] for a in adapters]
    return BalancedProblem(adapters=adapters, states=[a.prepare(request) for a in adapters], token_groups=[[p] for p in positions],
                           request=request, scheduler=adapters[0].make_scheduler(),
                           generators=[torch.Generator(device=adapters[0].device).manual_seed(0)],
                           guidance_scale=args.guidance, options=options,
                           timestep_kwargs=adapters[0].timestep_kwargs(size, size, args.steps))


def run(name: str, adapters: list[Any], p: BalancedProblem) -> Any:
    """The row's sampling call, ready to time."""
    if name == "balanced":
        return lambda: balanced_sample(p).latents
    k = 0 if name == "t2i" else 1
    return lambda: plain_sample(adapters[k], p.states[k], p)


def timed(fn: Any, device: str) -> tuple[float, Any]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=sorted(FULL), required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--guidance", type=float, default=None, help="default: 7.0 for sd3, 3.5 for flux")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="the tiny random test models (checks the script, not speed)")
    parser.add_argument("--no-parity", action="store_true", help="skip the reference-loop check (it costs ~3 balanced runs)")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    if args.tiny:
        args.size = min(args.size, 64)
    args.guidance = args.guidance if args.guidance is not None else (7.0 if args.family == "sd3" else 3.5)
    adapters = build(args.family, args)
    options = BalanceOptions(t0=max(1, args.steps // 5))
    rows: dict[str, list[float]] = {"t2i": [], "l2i": [], "balanced": []}
    with torch.no_grad():
        plain_sample(adapters[0], problem(adapters, args, options).states[0], problem(adapters, args, options))  # warm-up
    for _ in range(args.repeats):
        for name in rows:
            rows[name].append(timed(run(name, adapters, problem(adapters, args, options)), args.device)[0])
    parity = None if args.no_parity else float((balanced_sample(problem(adapters, args, options)).latents
                                                 - reference_sample(problem(adapters, args, options))).abs().max())
    best = {k: min(v) for k, v in rows.items()}
    result = {
        "family": args.family, "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
        "dtype": args.dtype, "size": args.size, "steps": args.steps, "tiny": args.tiny,
        "seconds": {k: round(v, 3) for k, v in best.items()},
        "median_seconds": {k: round(statistics.median(v), 3) for k, v in rows.items()},
        "balanced_over_t2i_plus_l2i": round(best["balanced"] / (best["t2i"] + best["l2i"]), 3),
        "max_abs_diff_vs_reference_loop": parity,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if args.device.startswith("cuda") else None,
        "parameters": {"transformer": sum(p.numel() for p in adapters[0].transformer.parameters()),
                       "controlnet": sum(p.numel() for p in adapters[1].controlnet.parameters())},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
