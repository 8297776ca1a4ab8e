"""Stable Diffusion 1.x/2.x T2I adapter for realcompo-sdk (id ``sd``)."""
