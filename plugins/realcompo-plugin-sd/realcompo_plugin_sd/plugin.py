"""Registers the `sd` and `sdxl` adapters; the adapter modules (torch, diffusers) are imported on first use."""

from realcompo_sdk import hookimpl


@hookimpl
def register_t2i_adapters(register):
    register("realcompo_plugin_sd.adapter:StableDiffusionAdapter", id="sd")
    register("realcompo_plugin_sd.sdxl:StableDiffusionXLAdapter", id="sdxl")
