"""Entry point of realcompo-plugin-gpt: registers the `gpt` layout planner, lazily."""

from __future__ import annotations

from realcompo_sdk import hookimpl
from realcompo_sdk.hookspecs import Register


@hookimpl
def register_layout_planners(register: Register) -> None:
    # A "module:Class" string: openai is imported only when a gpt planner is first created.
    register("realcompo_plugin_gpt.planner:GPTPlanner", id="gpt")
