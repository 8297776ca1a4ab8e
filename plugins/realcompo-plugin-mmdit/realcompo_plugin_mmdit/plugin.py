"""Registers the SD3 / Flux adapters; the adapter modules (torch, diffusers) are imported on first use.

The generation settings are the diffusers pipelines' defaults: 28 steps; CFG 7.0 for SD3, the
distilled guidance input 3.5 for FLUX.1-dev.
"""

from realcompo_sdk import hookimpl

SD3 = {"num_steps": 28, "guidance_scale": 7.0}
FLUX = {"num_steps": 28, "guidance_scale": 3.5}


@hookimpl
def register_t2i_adapters(register):
    register("realcompo_plugin_mmdit.sd3:SD3Adapter", id="sd3", generation=SD3)
    register("realcompo_plugin_mmdit.flux:FluxAdapter", id="flux", generation=FLUX)


@hookimpl
def register_l2i_adapters(register):
    register("realcompo_plugin_mmdit.controlnet:SD3ControlNetPoseAdapter", id="sd3-controlnet-pose")
    register("realcompo_plugin_mmdit.controlnet:SD3ControlNetSegAdapter", id="sd3-controlnet-seg")
    register("realcompo_plugin_mmdit.controlnet:FluxControlNetPoseAdapter", id="flux-controlnet-pose")
    register("realcompo_plugin_mmdit.controlnet:FluxControlNetSegAdapter", id="flux-controlnet-seg")
