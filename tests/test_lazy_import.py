"""`import realcompo_sdk`, plugin discovery and `realcompo --help` stay light: no torch.

Each check runs in a fresh interpreter, since this test session may already have imported torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import realcompo_sdk

HEAVY = ("torch", "diffusers", "transformers", "openai", "anthropic")


def heavy_modules_after(code: str) -> list[str]:
    """Run `code` in a fresh interpreter; return the heavy top-level modules it left imported."""
    script = textwrap.dedent(code) + textwrap.dedent(f"""
        import json, sys
        print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REALCOMPO_")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_check_detects_a_heavy_import() -> None:
    # guards the helper itself: without it, every test below would pass vacuously
    pytest.importorskip("torch")
    assert heavy_modules_after("import torch") == ["torch"]


def test_importing_the_package_imports_no_heavy_dependency() -> None:
    assert heavy_modules_after("import realcompo_sdk") == []


def test_public_names_that_need_no_torch_import_none() -> None:
    code = """
        from realcompo_sdk import Layout, LayoutPlanner, L2IAdapter, T2IAdapter, hookimpl, load_layout
        from realcompo_sdk import errors, hookspecs, layout, plugins, registry
        load_layout({"prompt": "a cat", "objects": [{"phrase": "cat", "box": {"x0": 0, "y0": 0, "x1": 1, "y1": 1}}]})
    """
    assert heavy_modules_after(code) == []


def test_loading_the_plugin_registry_imports_no_heavy_dependency() -> None:
    code = """
        from realcompo_sdk import registry
        report = registry.report()
        assert report.plugins, "the builtin plugin at least should be listed"
    """
    assert heavy_modules_after(code) == []


def test_cli_help_imports_no_heavy_dependency() -> None:
    if not (Path(realcompo_sdk.__file__).parent / "cli.py").exists():
        pytest.skip("realcompo_sdk/cli.py is not written yet (the `realcompo` command)")
    code = """
        import contextlib, io
        from realcompo_sdk import cli
        with contextlib.redirect_stdout(io.StringIO()) as out:
            try:
                cli.main(["--help"])
            except SystemExit as exc:
                assert exc.code in (0, None), exc.code
        assert "usage" in out.getvalue().lower(), out.getvalue()
    """
    assert heavy_modules_after(code) == []
