"""Registers the `gligen` adapter; the adapter module (torch, diffusers) is imported on first use."""

from realcompo_sdk import hookimpl


@hookimpl
def register_l2i_adapters(register):
    register("realcompo_plugin_gligen.adapter:GligenAdapter", id="gligen")
