"""realcompo-plugin-layout-guidance: the layout-to-image adapter `layout-guidance` for
realcompo-sdk — training-free box control by cross-attention energy guidance on any Stable
Diffusion 1.x/2.x model.

Importing this package imports nothing heavy: `plugin` only registers
`realcompo_plugin_layout_guidance.adapter:LayoutGuidanceAdapter` by name, and `adapter` is
imported the first time someone creates the adapter.
"""

__version__ = "0.1.0"
