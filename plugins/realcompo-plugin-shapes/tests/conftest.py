"""Make the plugin importable when it is not installed (running from a checkout)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

PLUGIN_ROOT = Path(__file__).resolve().parents[1]
REPO_ROOT = PLUGIN_ROOT.parents[1]

if importlib.util.find_spec("realcompo_plugin_shapes") is None:
    sys.path.insert(0, str(PLUGIN_ROOT))
if importlib.util.find_spec("realcompo_sdk") is None and (REPO_ROOT / "realcompo_sdk").is_dir():
    sys.path.insert(0, str(REPO_ROOT))
