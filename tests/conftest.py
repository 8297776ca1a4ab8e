pytest_plugins = ["realcompo_sdk.testing.pytest_plugin"]
