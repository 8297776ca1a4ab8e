"""RealCompo layout planner `gpt`: OpenAI structured output, or any OpenAI-compatible server.

Importing this package does not import `openai`; the planner class lives in
`realcompo_plugin_gpt.planner` and is loaded on first use.
"""

__version__ = "0.1.0"
