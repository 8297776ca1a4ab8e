"""Docs stay honest: every hook is documented with its exact signature."""

from __future__ import annotations

import inspect
from pathlib import Path

from realcompo_sdk import hookspecs

DOC = Path(__file__).parents[1] / "docs" / "plugins.md"


def hook_names() -> list[str]:
    return [n for n, f in vars(hookspecs).items() if callable(f) and hasattr(f, "realcompo_spec")]


def test_there_are_hooks_to_document():
    assert {"register_t2i_adapters", "register_l2i_adapters", "register_layout_planners"} <= set(hook_names())


def test_every_hook_has_a_section_with_its_exact_signature():
    text = DOC.read_text()
    for name in hook_names():
        params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"### {name}\n" in text, f"docs/plugins.md has no section for hook {name}"
        assert f"`{name}({params})`" in text, f"docs/plugins.md does not give the signature {name}({params})"


def test_api_reference_is_generated_from_the_current_code():
    import importlib.util

    path = Path(__file__).parents[1] / "docs" / "build_api.py"
    spec = importlib.util.spec_from_file_location("build_api", path)
    build_api = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_api)
    text = build_api.render()
    for needed in ("### UNetAdapter", "#### `prepare_conditioning(", "#### `unet_kwargs(", "#### `run_unet(",
                   "### UNetState", "### GenerationRequest", "### L2IAdapterContract", "### RealCompo"):
        assert needed in text
    assert build_api.main(["--check"]) == 0, "docs/api.md is stale: run python docs/build_api.py"
