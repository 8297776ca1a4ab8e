"""Registers the ControlNet adapters; the adapter module (torch, diffusers) is imported on first use."""

from realcompo_sdk import hookimpl


@hookimpl
def register_l2i_adapters(register):
    register("realcompo_plugin_controlnet.adapter:ControlNetOpenPoseAdapter", id="controlnet-openpose")
    register("realcompo_plugin_controlnet.adapter:ControlNetSegAdapter", id="controlnet-seg")
