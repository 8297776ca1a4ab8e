"""Speed of the balanced sampler against plain sampling and the official pass structure.

Builds SD1.5- and GLIGEN-shaped UNets with random weights (the architecture, not the values,
sets the cost) and times, in one process, interleaved, after a warm-up:

- plain T2I (SD) and plain L2I (GLIGEN, or the Shapes ControlNet) sampling with CFG,
- the balanced sampler (`realcompo_sdk.sampler.balanced_sample`),
- the same algorithm in the official pass structure (`realcompo_sdk.testing.reference`),

and checks that the balanced and reference latents agree in float32. VAE decoding is excluded
(identical in every row). Examples:

    python benchmarks/balance_speed.py --size full --device cuda --steps 50      # GPU, 512²
    python benchmarks/balance_speed.py --size small --device cpu --steps 10      # CPU
    python benchmarks/balance_speed.py --size shapes --device cpu --resolution 64  # bundled shapes-sd + shapes-controlnet
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from typing import Any, ClassVar

import torch

from realcompo_sdk.balancer import BalanceOptions
from realcompo_sdk.interfaces import DiffusionAdapter, GenerationRequest, LatentSpec, T2IAdapter
from realcompo_sdk.layout import Layout
from realcompo_sdk.sampler import BalancedProblem, balanced_sample, plain_sample
from realcompo_sdk.testing.components import tiny_scheduler_config, tiny_tokenizer
from realcompo_sdk.testing.reference import reference_sample
from realcompo_sdk.unet_adapter import UNetAdapter

SIZES = {
    # SD1.5's UNet; GLIGEN is the same with gated self-attention fusers and a position net
    "full": dict(channels=(320, 640, 1280, 1280), layers=2, sample=64, text_dim=768, head_dim=8),
    "small": dict(channels=(32, 64, 128, 128), layers=2, sample=64, text_dim=128, head_dim=8),
}


def build_unet(size: str, gated: bool, seed: int) -> Any:
    from diffusers import UNet2DConditionModel

    s = SIZES[size]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DConditionModel(
            sample_size=s["sample"], in_channels=4, out_channels=4, block_out_channels=s["channels"],
            layers_per_block=s["layers"], cross_attention_dim=s["text_dim"], attention_head_dim=s["head_dim"],
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            attention_type="gated" if gated else "default",
        )


def build_text_encoder(size: str, tokenizer: Any) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    dim = SIZES[size]["text_dim"]
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=dim, intermediate_size=4 * dim, num_hidden_layers=1,
                            num_attention_heads=8, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return CLIPTextModel(config)


def in_memory(cls: type, unet: Any, text_encoder: Any, tokenizer: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """An adapter of `cls` around models already in memory (bypasses folder loading)."""
    adapter = cls.__new__(cls)
    DiffusionAdapter.__init__(adapter)
    spec = LatentSpec(channels=4, vae_scale_factor=8, scaling_factor=0.18215, prediction_type="epsilon",
                      default_resolution=(512, 512), family="sd1", resolution_multiple=64)
    UNetAdapter.setup_models(adapter, unet=unet, text_encoder=text_encoder, tokenizer=tokenizer,
                       scheduler_config=tiny_scheduler_config(), latent_spec=spec, device=device, dtype=dtype)
    adapter._fusers = [m for m in adapter.unet.modules() if type(m).__name__ == "GatedSelfAttentionDense"]
    if adapter._fusers:  # a fresh GLIGEN's zero gates would make its branch a no-op
        with torch.no_grad():
            for name, p in adapter.unet.named_parameters():
                if name.endswith(("alpha_attn", "alpha_dense")):
                    p.fill_(0.5)
    return adapter


class BenchSD(UNetAdapter, T2IAdapter):
    id: ClassVar[str] = "sd"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    from realcompo_plugin_gligen.adapter import GligenAdapter

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(SIZES) + ["shapes"], default="small",
                   help="full: SD1.5/GLIGEN-sized random UNets; small: same structure, 10x fewer channels; shapes: the bundled trained models (shapes-sd + shapes-controlnet)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="float16 (default on cuda) or float32")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--reference-repeats", type=int, default=1)
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--parity-steps", type=int, default=10, help="steps of the float32 parity check (0: skip)")
    p.add_argument("--json", default=None, help="write results here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float16 if device.type == "cuda" else torch.float32)
    torch.backends.cuda.matmul.allow_tf32 = False

    t0 = time.perf_counter()
    if args.size == "shapes":
        from realcompo_sdk import registry

        dtype_name = str(dtype).replace("torch.", "")
        sd = registry.create("t2i", "shapes-sd", device=args.device, dtype=dtype_name)
        gl = registry.create("l2i", "shapes-controlnet", share_with=sd)  # on the T2I's UNet, as RealCompo runs it
        layout_prompt = ("a red circle to the left of a blue square", [("red circle", (0.1, 0.3, 0.4, 0.7)), ("blue square", (0.6, 0.3, 0.9, 0.7))])
    else:
        tokenizer = tiny_tokenizer()
        sd = in_memory(BenchSD, build_unet(args.size, False, 0), build_text_encoder(args.size, tokenizer), tokenizer, device, dtype)
        gl = in_memory(GligenAdapter, build_unet(args.size, True, 1), build_text_encoder(args.size, tokenizer), tokenizer, device, dtype)
        layout_prompt = ("a red cat to the left of a blue dog", [("red cat", (0.05, 0.3, 0.45, 0.8)), ("blue dog", (0.55, 0.3, 0.95, 0.8))])
    build_s = time.perf_counter() - t0
    modules = [m for a in (sd, gl) for m in (a.unet, a.text_encoder, getattr(a, "controlnet", None)) if m is not None]
    unique = {id(p): p for m in modules for p in m.parameters()}  # a shared UNet counts once
    weights_gib = sum(p.numel() * p.element_size() for p in unique.values()) / 2**30

    layout = Layout.from_boxes(*layout_prompt)

    def problem(adapters: list[Any], steps: int, opts: BalanceOptions) -> BalancedProblem:
        request = GenerationRequest(prompt=layout.prompt, negative_prompt="", layout=layout, batch_size=1,
                                    height=args.resolution, width=args.resolution, num_steps=steps)
        positions = [a.phrase_token_positions(layout.prompt, [o.phrase for o in layout.objects])[1] for a in adapters]
        return BalancedProblem(adapters=adapters, states=[a.prepare(request) for a in adapters],
                               token_groups=[[pos] for pos in positions], request=request,
                               scheduler=plms(), generators=[torch.Generator(device).manual_seed(0)],
                               guidance_scale=7.5, options=opts)

    def plms() -> Any:  # the official sampler: PLMS (PNDM without Runge-Kutta warm-up)
        from diffusers import PNDMScheduler

        return PNDMScheduler.from_config(tiny_scheduler_config(), skip_prk_steps=True)

    def run_plain(k: int) -> Any:
        prob = problem([sd, gl], args.steps, opts)
        return plain_sample(prob.adapters[k], prob.states[k], prob)

    opts = BalanceOptions(scale_factor=1e6)  # t0 = 40 % of the steps (20 of 50), as the official default
    runs: dict[str, Any] = {
        "plain T2I": lambda: run_plain(0),
        "plain L2I": lambda: run_plain(1),
        "balanced": lambda: balanced_sample(problem([sd, gl], args.steps, opts)).latents,
        "official structure": lambda: reference_sample(problem([sd, gl], args.steps, opts)),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    peaks: dict[str, float] = {}
    short = BalanceOptions(scale_factor=1e6, t0=1)  # warm-up (kernels, allocator) on short runs
    balanced_sample(problem([sd, gl], 4, short))
    reference_sample(problem([sd, gl], 4, short))
    for r in range(args.repeats):
        for name, fn in runs.items():
            if name == "official structure" and r >= args.reference_repeats:
                continue
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
            if device.type == "cuda":
                peaks[name] = max(peaks.get(name, 0.0), torch.cuda.max_memory_allocated() / 2**30)
            print(f"  {name:20s} run {r}: {times[name][-1]:.2f} s", flush=True)

    med = {k: statistics.median(v) for k, v in times.items() if v}
    plain = med["plain T2I"] + med["plain L2I"]
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(), "size": args.size, "dtype": str(dtype).replace("torch.", ""),
        "steps": args.steps, "resolution": args.resolution, "repeats": args.repeats, "build_s": round(build_s, 1),
        "median_s": {k: round(v, 3) for k, v in med.items()},
        "balanced_over_plain": round(med["balanced"] / plain, 3),
        "official_over_plain": round(med["official structure"] / plain, 3),
        "official_over_balanced": round(med["official structure"] / med["balanced"], 3),
        "weights_gib": round(weights_gib, 3), "peak_gib": {k: round(v, 3) for k, v in peaks.items()},
        "torch": torch.__version__,
    }
    if args.parity_steps:
        for a in (sd, gl):
            a.unet.float()
            a.text_encoder.float()
            a.dtype = torch.float32
        popts = BalanceOptions(scale_factor=1e6, t0=args.parity_steps // 3)
        fast = balanced_sample(problem([sd, gl], args.parity_steps, popts)).latents
        ref = reference_sample(problem([sd, gl], args.parity_steps, popts))
        result["parity_fp32_max_abs_diff"] = float((fast - ref).abs().max())
        result["parity_steps"] = args.parity_steps

    print("\n| quantity | value |\n|---|---|")
    for k, v in result.items():
        print(f"| {k} | {v} |")
    print("\ncommand: python " + " ".join(sys.argv))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
