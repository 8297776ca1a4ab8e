"""A plugin module registering the testing kit's tiny adapters and planner (ids `tiny-t2i`,
`tiny-l2i`, `fixed`). Not an installed entry point: tests load it with
`use_testing_plugins()` or the pytest plugin's `tiny_registry` fixture."""

from __future__ import annotations

from ..hookspecs import Register, hookimpl


@hookimpl
def register_t2i_adapters(register: Register) -> None:
    register("realcompo_sdk.testing.fakes:TinyT2IAdapter", id="tiny-t2i")


@hookimpl
def register_l2i_adapters(register: Register) -> None:
    register("realcompo_sdk.testing.fakes:TinyL2IAdapter", id="tiny-l2i")


@hookimpl
def register_layout_planners(register: Register) -> None:
    register("realcompo_sdk.testing.fakes:FixedPlanner", id="fixed")


def use_testing_plugins() -> None:
    """Make the registry hold the built-ins, the installed plugins and these testing ids."""
    from .. import builtin, registry
    from ..plugins import PluginLoader

    registry.set_report(PluginLoader(builtins=[builtin, __import__(__name__, fromlist=["x"])]).load())
