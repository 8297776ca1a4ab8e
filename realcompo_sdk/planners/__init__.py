"""Layout planners shipped with the core, and what the LLM planner plugins share.

- `rules` (`realcompo_sdk.planners.rules.RulesPlanner`): offline, deterministic, simple English.
- `realcompo_sdk.planners.llm`: the prompt design, reply schema, validation and repair loop, and
  the `LLMLayoutPlanner` base of the `gpt` and `claude` plugins (realcompo-plugin-gpt,
  realcompo-plugin-claude).
- `realcompo_sdk.planners.cache`: the on-disk cache of planned layouts (replay).

Nothing here imports an LLM SDK; the plugins import theirs when a plan is first made.
"""

from __future__ import annotations

from .cache import PlanCache, default_cache_dir
from .rules import RulesPlanner

__all__ = ["PlanCache", "RulesPlanner", "default_cache_dir"]
