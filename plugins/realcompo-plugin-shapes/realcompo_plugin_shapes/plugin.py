"""RealCompo hooks of the Shapes world: `shapes-sd` and `shapes-controlnet` are presets of the generic
`sd` and `controlnet-seg` adapters pointed at the bundled folders — no Shapes-specific loading code.
The ControlNet's base is the bundled T2I folder, so balanced with `shapes-sd` it runs on that
adapter's own UNet (one copy in memory); its `palette` gives each Shapes object the label colour it
was trained with."""

from __future__ import annotations

from pathlib import Path

from realcompo_sdk import hookimpl

from .world import control_palette

WEIGHTS = Path(__file__).parent / "weights"

# How RealCompo samples with `shapes-sd` unless the caller says otherwise: the tiny models need
# neither 50 steps nor guidance 7.5, and the balancer's warm-up (t0, in steps: 60 % of 25) is the
# tuning grid's pick on the tuning captions (docs/benchmarks.md, "Shapes world").
GENERATION = {"num_steps": 25, "guidance_scale": 5.0, "scheduler": "ddim", "balance": {"t0": 15}}


@hookimpl
def register_t2i_adapters(register):
    register(
        "realcompo_plugin_sd.adapter:StableDiffusionAdapter",
        id="shapes-sd",
        options={"model": str(WEIGHTS / "shapes-sd")},
        generation=GENERATION,
    )


@hookimpl
def register_l2i_adapters(register):
    register(
        "realcompo_plugin_controlnet.adapter:ControlNetSegAdapter",
        id="shapes-controlnet",
        options={"controlnet": str(WEIGHTS / "shapes-controlnet"), "base": str(WEIGHTS / "shapes-sd"), "palette": control_palette()},
    )
