"""What realcompo-sdk itself registers, through the same hooks as any plugin."""

from __future__ import annotations

from .hookspecs import Register, hookimpl


@hookimpl
def register_layout_planners(register: Register) -> None:
    from .planners.rules import RulesPlanner

    register(RulesPlanner)
