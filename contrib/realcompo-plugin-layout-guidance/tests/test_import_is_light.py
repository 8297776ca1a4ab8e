"""Importing the plugin and running its hooks imports no heavy library, so `realcompo --help`
and `realcompo plugins` stay fast however many plugins are installed."""

import json
import subprocess
import sys

HEAVY = ("torch", "diffusers", "transformers", "openai", "anthropic")

CHECK = f"""
import json, sys
import realcompo_plugin_layout_guidance.plugin
from realcompo_sdk.plugins import PluginLoader

report = PluginLoader(entry_points=[], builtins=[realcompo_plugin_layout_guidance.plugin]).load()
assert ("l2i", "layout-guidance") in report.registrations, report.problems
print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""


def test_importing_and_registering_imports_nothing_heavy():
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    heavy = json.loads(result.stdout.strip().splitlines()[-1])
    assert heavy == [], f"importing realcompo_plugin_layout_guidance.plugin imported {heavy}: move those imports into realcompo_plugin_layout_guidance/adapter.py"
