"""ControlNet L2I adapters for realcompo-sdk: ``controlnet-openpose`` (keypoints) and ``controlnet-seg`` (masks)."""
