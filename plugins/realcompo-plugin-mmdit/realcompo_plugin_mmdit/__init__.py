"""SD3 / SD3.5 and FLUX.1 adapters for realcompo-sdk (MMDiT transformers), with their ControlNets."""
