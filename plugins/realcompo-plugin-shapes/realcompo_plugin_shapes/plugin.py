"""RealCompo hooks of the Shapes world: `shapes-sd` and `shapes-gligen` are presets of the generic
`sd` and `gligen` adapters pointed at the bundled folders — no Shapes-specific loading code."""

from __future__ import annotations

from pathlib import Path

from realcompo_sdk import hookimpl

WEIGHTS = Path(__file__).parent / "weights"


@hookimpl
def register_t2i_adapters(register):
    register("realcompo_plugin_sd.adapter:StableDiffusionAdapter", id="shapes-sd", options={"model": str(WEIGHTS / "shapes-sd")})


@hookimpl
def register_l2i_adapters(register):
    register("realcompo_plugin_gligen.adapter:GligenAdapter", id="shapes-gligen", options={"model": str(WEIGHTS / "shapes-gligen")})
