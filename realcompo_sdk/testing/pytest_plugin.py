"""Opt-in pytest fixtures for plugin authors: ``pytest -p realcompo_sdk.testing.pytest_plugin``
or ``pytest_plugins = ["realcompo_sdk.testing.pytest_plugin"]`` in a conftest.py.

Heavy imports happen inside the fixtures, so registering the plugin costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def tiny_registry() -> Iterator[None]:
    """The registry with the testing ids `tiny-t2i`, `tiny-l2i` and `fixed` added; restored after."""
    from realcompo_sdk import registry
    from realcompo_sdk.testing.plugin import use_testing_plugins

    use_testing_plugins()
    yield
    registry.set_report(None)


@pytest.fixture
def tiny_t2i() -> Any:
    from realcompo_sdk.testing.fakes import TinyT2IAdapter

    return TinyT2IAdapter(seed=0)


@pytest.fixture
def tiny_l2i() -> Any:
    from realcompo_sdk.testing.fakes import TinyL2IAdapter

    return TinyL2IAdapter(seed=1)


@pytest.fixture
def tiny_sd_folder(tmp_path: Any) -> Any:
    """A tiny Stable Diffusion folder on disk (loads with `from_pretrained`)."""
    from realcompo_sdk.testing.folders import save_tiny_sd_folder

    return save_tiny_sd_folder(tmp_path / "tiny-sd")
