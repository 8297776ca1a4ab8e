"""RealCompo layout planner `claude`: Anthropic models through tool use with the layout schema.

Importing this package does not import `anthropic`; the planner class lives in
`realcompo_plugin_claude.planner` and is loaded on first use.
"""

__version__ = "0.1.0"
