"""Registers the `sd` adapter; the adapter module (torch, diffusers) is imported on first use."""

from realcompo_sdk import hookimpl


@hookimpl
def register_t2i_adapters(register):
    register("realcompo_plugin_sd.adapter:StableDiffusionAdapter", id="sd")
