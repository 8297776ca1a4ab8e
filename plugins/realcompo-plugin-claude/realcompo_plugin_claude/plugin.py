"""Entry point of realcompo-plugin-claude: registers the `claude` layout planner, lazily."""

from __future__ import annotations

from realcompo_sdk import hookimpl
from realcompo_sdk.hookspecs import Register


@hookimpl
def register_layout_planners(register: Register) -> None:
    # A "module:Class" string: anthropic is imported only when a claude planner is first created.
    register("realcompo_plugin_claude.planner:ClaudePlanner", id="claude")
