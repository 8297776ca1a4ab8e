"""Registers the `instancediffusion` adapter; the adapter module is imported on first use."""

from realcompo_sdk import hookimpl


@hookimpl
def register_l2i_adapters(register):
    register("realcompo_plugin_instancediffusion.adapter:InstanceDiffusionAdapter", id="instancediffusion")
