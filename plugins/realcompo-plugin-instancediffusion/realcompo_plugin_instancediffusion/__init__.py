"""InstanceDiffusion (Wang et al., CVPR 2024) for realcompo-sdk: per-instance boxes, masks, points
and scribbles on SD1.5, ported onto diffusers' UNet with its own position net and ScaleU.

Importing the package is cheap; torch and diffusers load with the adapter or the converter."""
