"""Registers `layout-guidance`, and `shapes-layout-guidance` (the same adapter on the bundled Shapes
SD folder) when realcompo-plugin-shapes is installed. This module runs for every `realcompo`
command (`--help` included), so it names the class as a "module:Class" string and imports
nothing heavy."""

from realcompo_sdk import hookimpl
from realcompo_sdk.hookspecs import Register

TARGET = "realcompo_plugin_layout_guidance.adapter:LayoutGuidanceAdapter"


@hookimpl
def register_l2i_adapters(register: Register) -> None:
    register(TARGET, id="layout-guidance")
    try:  # numpy only: the Shapes package keeps torch out of its import
        from realcompo_plugin_shapes import WEIGHTS_DIR
    except ImportError:
        return
    register(TARGET, id="shapes-layout-guidance", options={"model": str(WEIGHTS_DIR / "shapes-sd")})
