"""Once installed (`pip install -e .`), realcompo finds `layout-guidance` through its entry point."""

from importlib import metadata

import pytest
from realcompo_sdk import registry
from realcompo_sdk.plugins import ENTRY_POINT_GROUP


@pytest.fixture
def installed():
    """The registry loaded afresh from the installed entry points; reset afterwards."""
    yield registry.report(reload=True)
    registry.set_report(None)


def test_the_entry_point_is_installed():
    found = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert "layout-guidance" in found, "no `realcompo` entry point named 'layout-guidance': run `pip install -e .` in this project first"
    assert found["layout-guidance"].value == "realcompo_plugin_layout_guidance.plugin"


def test_the_registry_lists_it(installed):
    registration = installed.registrations.get(("l2i", "layout-guidance"))
    assert registration is not None, f"'layout-guidance' is not registered; plugin problems: {installed.problems}"
    assert registration.distribution == "realcompo-plugin-layout-guidance"
    assert registration.load_class().__name__ == "LayoutGuidanceAdapter"
