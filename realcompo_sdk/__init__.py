"""realcompo-sdk: compositional text-to-image generation by balancing T2I and L2I models.

`import realcompo_sdk` imports no torch; the sampler and the Python API load it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    IncompatibleAdaptersError,
    LayoutError,
    PlannerError,
    RealCompoError,
    TokenAlignmentError,
    UnknownPluginError,
)
from .hookspecs import hookimpl
from .interfaces import (
    AdapterOptions,
    DiffusionAdapter,
    GenerationRequest,
    L2IAdapter,
    LatentSpec,
    LayoutPlanner,
    NoisePrediction,
    StepInfo,
    T2IAdapter,
)
from .layout import Box, Keypoint, Layout, LayoutObject, Mask, load_layout

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .balancer import BalanceOptions
    from .compose import GenerationResult, RealCompo

_LAZY = {
    "RealCompo": ("compose", "RealCompo"),
    "GenerationResult": ("compose", "GenerationResult"),
    "BalanceOptions": ("balancer", "BalanceOptions"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'realcompo_sdk' has no attribute {name!r}")


__all__ = [
    "AdapterOptions", "BalanceOptions", "Box", "DiffusionAdapter", "GenerationRequest",
    "GenerationResult", "IncompatibleAdaptersError", "Keypoint", "L2IAdapter", "LatentSpec",
    "Layout", "LayoutError", "LayoutObject", "LayoutPlanner", "Mask", "NoisePrediction",
    "PlannerError", "RealCompo", "RealCompoError", "StepInfo", "T2IAdapter",
    "TokenAlignmentError", "UnknownPluginError", "hookimpl", "load_layout",
]
