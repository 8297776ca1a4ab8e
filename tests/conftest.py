import pytest

pytest_plugins = ["realcompo_sdk.testing.pytest_plugin"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # noqa: ANN001, ANN201
    """Marks a test whose call failed, so fixtures (the browser page) can save a screenshot."""
    outcome = yield
    if call.when == "call" and outcome.get_result().failed:
        item.failed = True
