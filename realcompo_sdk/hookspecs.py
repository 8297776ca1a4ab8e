"""Plugin hooks of the `realcompo` pluggy project.

A plugin is a module listed under the `realcompo` entry-point group whose functions are marked
with `realcompo_sdk.hookimpl`. Each hook receives a `register` callable. Hooks only ever gain
arguments (pluggy lets an implementation accept fewer), so plugins written today keep working.
"""

from __future__ import annotations

from typing import Any, Protocol

import pluggy

PROJECT = "realcompo"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class Register(Protocol):
    """The `register` callable handed to each hook.

    ``register(cls)`` registers `cls` under `cls.id`. `cls` may also be a string
    ``"package.module:Class"`` (then `id` is required): the module is imported only when the
    adapter is first created, which keeps `realcompo --help` and `realcompo plugins` fast. ``register(cls, id="shapes-sd",
    options={"model": path})`` registers a preset: the same class under another id with default
    options (user options override them). A T2I preset may also recommend how to sample with it,
    ``generation={"num_steps": 25, "guidance_scale": 5.0, "scheduler": "ddim", "balance": {...}}``
    (any of these keys): `RealCompo` uses each one the caller leaves unset (``balance`` key by key),
    and the record shows what was used.
    """

    def __call__(self, cls: type | str, *, id: str | None = None, options: dict[str, Any] | None = None,
                 generation: dict[str, Any] | None = None) -> None: ...


@hookspec
def register_t2i_adapters(register: Register) -> None:
    """Register text-to-image adapters (subclasses of `realcompo_sdk.T2IAdapter`).

    :param register: call ``register(AdapterClass)`` once per adapter (or with ``id=`` and
        ``options=`` for a preset).
    """


@hookspec
def register_l2i_adapters(register: Register) -> None:
    """Register layout-to-image adapters (subclasses of `realcompo_sdk.L2IAdapter`).

    :param register: call ``register(AdapterClass)`` once per adapter (or with ``id=`` and
        ``options=`` for a preset).
    """


@hookspec
def register_layout_planners(register: Register) -> None:
    """Register layout planners (subclasses of `realcompo_sdk.LayoutPlanner`).

    :param register: call ``register(PlannerClass)`` once per planner (or with ``id=`` and
        ``options=`` for a preset).
    """
