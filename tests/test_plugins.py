"""Plugin loading through real entry points of distributions laid out on disk.

Each test writes small plugin distributions (`<name>.dist-info/{METADATA,entry_points.txt}` next
to their modules) into a temporary directory on `sys.path`, reads their entry points with
`importlib.metadata`, and hands them to a `PluginLoader`, exactly as installed plugins are found.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from realcompo_sdk import registry
from realcompo_sdk.errors import PluginConflictError, PluginLoadError, UnknownPluginError
from realcompo_sdk.plugins import ENTRY_POINT_GROUP, PluginLoader, PluginReport

_counter = itertools.count()

GOOD_PLUGIN = """
from realcompo_sdk import hookimpl


class EchoAdapter:
    id = "echo-t2i"

    def __init__(self, **options):
        self.options = options


@hookimpl
def register_t2i_adapters(register):
    register(EchoAdapter)
    register(EchoAdapter, id="echo-preset", options={{"size": 8, "seed": 1}})
    register("{lazy_module}:LazyAdapter", id="lazy-t2i")
"""

LAZY_MODULE = """
class LazyAdapter:
    id = "lazy-t2i"

    def __init__(self, **options):
        self.options = options
"""

IMPORT_FAILS = """
raise RuntimeError("this plugin is broken at import")
"""

HOOK_RAISES = """
from realcompo_sdk import hookimpl


class Registered:
    id = "registered-before-the-failure"


@hookimpl
def register_t2i_adapters(register):
    register(Registered)


@hookimpl
def register_l2i_adapters(register):
    raise ValueError("the hook itself is broken")
"""

INVALID_HOOKIMPL = """
from realcompo_sdk import hookimpl


@hookimpl
def register_t2i_adapters(register, colour):
    pass
"""

DUPLICATE_ID = """
from realcompo_sdk import hookimpl


class Other:
    id = "echo-t2i"


@hookimpl
def register_t2i_adapters(register):
    register(Other)
"""


@dataclass
class Site:
    """A directory on `sys.path` holding plugin distributions, as site-packages does."""

    path: Path

    def module(self, source: str, **format_args: str) -> str:
        """Write a module with a unique name (modules are cached in sys.modules) and return it."""
        name = f"rc_test_plugin_{os.getpid()}_{next(_counter)}"
        (self.path / f"{name}.py").write_text(textwrap.dedent(source.format(**format_args)))
        return name

    def distribution(self, dist: str, entry_points: dict[str, str], version: str = "1.0", requires: tuple[str, ...] = ()) -> None:
        info = self.path / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        requirements = "".join(f"Requires-Dist: {r}\n" for r in requires)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n{requirements}")
        lines = [f"[{ENTRY_POINT_GROUP}]"] + [f"{name} = {target}" for name, target in entry_points.items()]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")

    def entry_points(self) -> list[metadata.EntryPoint]:
        return [
            ep
            for dist in metadata.distributions(path=[str(self.path)])
            for ep in dist.entry_points
            if ep.group == ENTRY_POINT_GROUP
        ]

    def load(self) -> PluginReport:
        return PluginLoader(entry_points=self.entry_points(), builtins=[]).load()

    def good_plugin(self, dist: str = "realcompo-plugin-echo", name: str = "echo") -> tuple[str, str]:
        lazy = self.module(LAZY_MODULE)
        module = self.module(GOOD_PLUGIN, lazy_module=lazy)
        self.distribution(dist, {name: module})
        return module, lazy


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    for var in ("REALCOMPO_STRICT_PLUGINS", "REALCOMPO_PLUGINS_ALLOW", "REALCOMPO_PLUGINS_DENY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield Site(tmp_path)
    for name in set(sys.modules) - before:
        if name.startswith("rc_test_plugin_"):
            del sys.modules[name]


@pytest.fixture
def use_report() -> Any:
    """Install a report as the registry's loaded plugins; restores lazy discovery afterwards."""
    yield registry.set_report
    registry.set_report(None)


def plugin(report: PluginReport, name: str) -> Any:
    (info,) = [p for p in report.plugins if p.name == name]
    return info


# --- loading ----------------------------------------------------------------------------------


def test_good_plugin_registers_classes_presets_and_lazy_targets(site: Site) -> None:
    module, lazy = site.good_plugin()
    report = site.load()
    info = plugin(report, "echo")
    assert (info.status, info.error) == ("loaded", None)
    assert (info.distribution, info.version) == ("realcompo-plugin-echo", "1.0")
    assert info.ids == ["t2i:echo-t2i", "t2i:echo-preset", "t2i:lazy-t2i"]
    assert report.problems == []
    echo = report.registrations[("t2i", "echo-t2i")]
    assert echo.target.__module__ == module
    assert (echo.plugin, echo.distribution) == ("echo", "realcompo-plugin-echo")
    assert report.registrations[("t2i", "echo-preset")].options == {"size": 8, "seed": 1}
    assert report.registrations[("t2i", "lazy-t2i")].target == f"{lazy}:LazyAdapter"


def test_lazy_target_is_imported_only_when_its_class_is_loaded(site: Site) -> None:
    _, lazy = site.good_plugin()
    registration = site.load().registrations[("t2i", "lazy-t2i")]
    assert lazy not in sys.modules
    cls = registration.load_class()
    assert lazy in sys.modules
    assert (cls.__module__, cls.__name__) == (lazy, "LazyAdapter")
    assert registration.target is cls


def test_plugin_whose_import_raises_is_recorded_and_others_still_load(site: Site) -> None:
    site.good_plugin()
    site.distribution("realcompo-plugin-broken", {"broken": site.module(IMPORT_FAILS)})
    report = site.load()
    broken = plugin(report, "broken")
    assert broken.status == "failed"
    assert "import failed: RuntimeError: this plugin is broken at import" in broken.error
    assert broken.ids == []
    assert plugin(report, "echo").status == "loaded"
    assert ("t2i", "echo-t2i") in report.registrations
    (problem,) = report.problems
    assert problem.startswith("plugin 'broken' (realcompo-plugin-broken 1.0): import failed")


def test_plugin_whose_hook_raises_is_recorded_and_registers_nothing(site: Site) -> None:
    site.good_plugin()
    site.distribution("realcompo-plugin-hooky", {"hooky": site.module(HOOK_RAISES)})
    report = site.load()
    info = plugin(report, "hooky")
    assert info.status == "failed"
    assert "hook register_l2i_adapters raised ValueError: the hook itself is broken" in info.error
    # not even what its register_t2i_adapters hook registered before the other hook failed
    assert info.ids == []
    assert ("t2i", "registered-before-the-failure") not in report.registrations
    assert plugin(report, "echo").status == "loaded"


def test_plugin_with_an_unknown_hook_argument_is_rejected_naming_the_argument(site: Site) -> None:
    site.distribution("realcompo-plugin-invalid", {"invalid": site.module(INVALID_HOOKIMPL)})
    report = site.load()
    info = plugin(report, "invalid")
    assert info.status == "failed"
    assert info.error.startswith("invalid hook implementation:")
    assert "colour" in info.error
    assert "register_t2i_adapters" in info.error


def test_a_shared_id_goes_to_neither_and_each_claimant_stays_reachable_by_its_qualified_id(site: Site, use_report: Any) -> None:
    module, _ = site.good_plugin(dist="realcompo-plugin-aaa", name="aaa")
    dup = site.module(DUPLICATE_ID)
    site.distribution("realcompo-plugin-zzz", {"zzz": dup})
    report = site.load()
    assert ("t2i", "echo-t2i") not in report.registrations
    assert report.conflicts[("t2i", "echo-t2i")] == ["realcompo-plugin-aaa", "realcompo-plugin-zzz"]
    assert report.registrations[("t2i", "realcompo-plugin-aaa:echo-t2i")].target.__module__ == module
    assert report.registrations[("t2i", "realcompo-plugin-zzz:echo-t2i")].target.__module__ == dup
    (problem,) = report.problems
    assert "'echo-t2i' is registered by realcompo-plugin-aaa and realcompo-plugin-zzz; neither is used" in problem
    assert "t2i:realcompo-plugin-zzz:echo-t2i" in plugin(report, "zzz").ids
    use_report(report)
    with pytest.raises(PluginConflictError, match="name the one you mean: 'realcompo-plugin-aaa:echo-t2i' or"):
        registry.lookup("t2i", "echo-t2i")
    assert registry.lookup("t2i", "realcompo-plugin-zzz:echo-t2i").distribution == "realcompo-plugin-zzz"


def test_a_third_party_never_shadows_a_first_party_id_whatever_its_name(site: Site) -> None:
    first_party = site.module(DUPLICATE_ID.replace('"echo-t2i"', '"sd"'))
    squatter = site.module(DUPLICATE_ID.replace('"echo-t2i"', '"sd"'))
    site.distribution("realcompo-plugin-sd", {"sd": first_party})
    site.distribution("aaa-loads-first", {"aaa": squatter})  # sorts, and so loads, before realcompo-plugin-sd
    report = site.load()
    assert report.registrations[("t2i", "sd")].distribution == "realcompo-plugin-sd"
    assert report.registrations[("t2i", "aaa-loads-first:sd")].target.__module__ == squatter
    (problem,) = report.problems
    assert "it is first-party, so 'sd' stays realcompo-plugin-sd's" in problem
    assert "first-party" in plugin(report, "aaa").error and plugin(report, "sd").error is None


def test_ids_do_not_depend_on_the_order_plugins_are_found(site: Site) -> None:
    site.good_plugin(dist="realcompo-plugin-aaa", name="aaa")
    site.distribution("realcompo-plugin-zzz", {"zzz": site.module(DUPLICATE_ID)})
    forward = PluginLoader(entry_points=site.entry_points(), builtins=[]).load()
    reversed_eps = sorted(site.entry_points(), key=lambda ep: ep.dist.name, reverse=True)
    backward = PluginLoader(entry_points=reversed_eps, builtins=[]).load()
    assert set(forward.registrations) == set(backward.registrations) and forward.conflicts == backward.conflicts


def test_a_plugin_for_another_sdk_version_is_reported_and_not_imported(site: Site) -> None:
    site.distribution("realcompo-plugin-future", {"future": site.module(IMPORT_FAILS)}, requires=("realcompo-sdk>=99",))
    site.good_plugin(dist="realcompo-plugin-echo", name="echo")
    report = site.load()
    future = plugin(report, "future")
    assert future.status == "failed" and "requires realcompo-sdk>=99, but" in future.error
    assert "not loaded" in future.error and "import failed" not in future.error  # never imported
    assert plugin(report, "echo").status == "loaded"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (IMPORT_FAILS, "import failed"),
        (HOOK_RAISES, "hook register_l2i_adapters raised"),
        (INVALID_HOOKIMPL, "invalid hook implementation"),
        (DUPLICATE_ID, "is registered by realcompo-plugin-aaa and"),
    ],
    ids=["import-raises", "hook-raises", "invalid-hookimpl", "duplicate-id"],
)
def test_strict_mode_turns_each_plugin_problem_into_an_error(
    site: Site, monkeypatch: pytest.MonkeyPatch, source: str, expected: str
) -> None:
    site.good_plugin(dist="realcompo-plugin-aaa", name="aaa")
    site.distribution("realcompo-plugin-zzz", {"zzz": site.module(source)})
    assert site.load().problems  # recorded, not raised, by default
    monkeypatch.setenv("REALCOMPO_STRICT_PLUGINS", "1")
    with pytest.raises(PluginLoadError, match=expected) as info:
        site.load()
    assert "realcompo-plugin-zzz" in str(info.value)  # the message names the plugin at fault


def test_strict_mode_accepts_healthy_plugins(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    site.good_plugin()
    monkeypatch.setenv("REALCOMPO_STRICT_PLUGINS", "1")
    assert plugin(site.load(), "echo").status == "loaded"


# --- allow / deny -----------------------------------------------------------------------------


@pytest.fixture
def two_plugins(site: Site) -> dict[str, str]:
    """Plugins 'echo' (realcompo-plugin-echo) and 'other' (realcompo-plugin-other); their modules."""
    echo, _ = site.good_plugin()
    other = site.module(DUPLICATE_ID.replace('"echo-t2i"', '"other-t2i"'))
    site.distribution("realcompo-plugin-other", {"other": other})
    return {"echo": echo, "other": other}


@pytest.mark.parametrize("denied", ["other", "realcompo-plugin-other", " echo-x , other "],
                         ids=["entry-point-name", "distribution-name", "list-with-spaces"])
def test_denied_plugin_is_skipped_and_never_imported(
    site: Site, two_plugins: dict[str, str], monkeypatch: pytest.MonkeyPatch, denied: str
) -> None:
    monkeypatch.setenv("REALCOMPO_PLUGINS_DENY", denied)
    report = site.load()
    info = plugin(report, "other")
    assert info.status == "denied"
    assert "REALCOMPO_PLUGINS_ALLOW/DENY" in info.error
    assert two_plugins["other"] not in sys.modules
    assert ("t2i", "other-t2i") not in report.registrations
    assert plugin(report, "echo").status == "loaded"
    assert report.problems == []


@pytest.mark.parametrize("allowed", ["echo", "realcompo-plugin-echo"], ids=["entry-point-name", "distribution-name"])
def test_only_allowed_plugins_run(
    site: Site, two_plugins: dict[str, str], monkeypatch: pytest.MonkeyPatch, allowed: str
) -> None:
    monkeypatch.setenv("REALCOMPO_PLUGINS_ALLOW", allowed)
    report = site.load()
    assert plugin(report, "echo").status == "loaded"
    assert plugin(report, "other").status == "denied"
    assert two_plugins["other"] not in sys.modules


def test_deny_wins_over_allow(site: Site, two_plugins: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REALCOMPO_PLUGINS_ALLOW", "echo,other")
    monkeypatch.setenv("REALCOMPO_PLUGINS_DENY", "realcompo-plugin-echo")
    report = site.load()
    assert plugin(report, "echo").status == "denied"
    assert two_plugins["echo"] not in sys.modules
    assert plugin(report, "other").status == "loaded"


def test_denied_broken_plugin_does_not_fail_strict_mode(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    module = site.module(IMPORT_FAILS)
    site.distribution("realcompo-plugin-broken", {"broken": module})
    monkeypatch.setenv("REALCOMPO_STRICT_PLUGINS", "1")
    monkeypatch.setenv("REALCOMPO_PLUGINS_DENY", "broken")
    assert plugin(site.load(), "broken").status == "denied"


# --- registry ---------------------------------------------------------------------------------

TINY_PLUGIN = """
from realcompo_sdk import hookimpl


@hookimpl
def register_t2i_adapters(register):
    register("realcompo_sdk.testing.fakes:TinyT2IAdapter", id="tiny-t2i")


@hookimpl
def register_l2i_adapters(register):
    register("realcompo_sdk.testing.fakes:TinyL2IAdapter", id="tiny-l2i")
"""


def test_lookup_of_unknown_id_suggests_close_matches(site: Site, use_report: Any) -> None:
    site.distribution("realcompo-plugin-tiny", {"tiny": site.module(TINY_PLUGIN)})
    use_report(site.load())
    with pytest.raises(UnknownPluginError) as info:
        registry.lookup("t2i", "tiny-t2")
    text = str(info.value)
    assert "no T2I adapter with id 'tiny-t2' is installed" in text
    assert "Did you mean 'tiny-t2i'?" in text
    assert "Installed: tiny-t2i" in text
    assert "pip install" not in text


def test_lookup_of_missing_first_party_id_gives_the_pip_install_hint(site: Site, use_report: Any) -> None:
    site.distribution("realcompo-plugin-tiny", {"tiny": site.module(TINY_PLUGIN)})
    use_report(site.load())
    with pytest.raises(UnknownPluginError, match="pip install realcompo-plugin-gligen"):
        registry.lookup("l2i", "gligen")


def test_a_denied_first_party_plugin_is_not_told_to_pip_install(site: Site, use_report: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    site.distribution("realcompo-plugin-gligen", {"gligen": site.module(TINY_PLUGIN)})
    monkeypatch.setenv("REALCOMPO_PLUGINS_DENY", "realcompo-plugin-gligen")
    use_report(site.load())
    with pytest.raises(UnknownPluginError, match="installed but skipped by REALCOMPO_PLUGINS_ALLOW / REALCOMPO_PLUGINS_DENY") as info:
        registry.lookup("l2i", "gligen")
    assert "pip install" not in str(info.value)


def test_a_registration_whose_code_is_gone_names_the_distribution_to_reinstall(site: Site) -> None:
    _, lazy = site.good_plugin()
    registration = site.load().registrations[("t2i", "lazy-t2i")]
    (site.path / f"{lazy}.py").unlink()  # uninstalled after discovery
    with pytest.raises(PluginLoadError, match=r"t2i id 'lazy-t2i' of realcompo-plugin-echo 1.0: its code .* cannot be "
                                              r"loaded \(ModuleNotFoundError.*reinstall or upgrade realcompo-plugin-echo"):
        registration.load_class()


def test_lookup_error_lists_plugins_that_failed_to_load(site: Site, use_report: Any) -> None:
    site.distribution("realcompo-plugin-broken", {"broken": site.module(IMPORT_FAILS)})
    use_report(site.load())
    with pytest.raises(UnknownPluginError) as info:
        registry.lookup("t2i", "broken-t2i")
    assert "Plugins that failed to load: broken (import failed: RuntimeError" in str(info.value)
    assert "Installed: none" in str(info.value)


def test_lookup_rejects_an_unknown_kind(use_report: Any) -> None:
    use_report(PluginReport())
    with pytest.raises(ValueError, match="kind must be one of"):
        registry.lookup("vae", "sd")


def test_registry_lists_ids_by_kind(site: Site, use_report: Any) -> None:
    site.good_plugin()
    site.distribution("realcompo-plugin-tiny", {"tiny": site.module(TINY_PLUGIN)})
    use_report(site.load())
    assert registry.ids("t2i") == ["echo-preset", "echo-t2i", "lazy-t2i", "tiny-t2i"]
    assert registry.ids("l2i") == ["tiny-l2i"]
    assert registry.ids("planner") == []


def test_create_applies_preset_options_then_user_overrides(site: Site, use_report: Any) -> None:
    site.good_plugin()
    use_report(site.load())
    adapter = registry.create("t2i", "echo-preset", seed=7, extra="x")
    assert adapter.options == {"size": 8, "seed": 7, "extra": "x"}
    assert adapter.registered_id == "echo-preset"


def test_create_of_a_plain_class_has_no_preset_id(site: Site, use_report: Any) -> None:
    site.good_plugin()
    use_report(site.load())
    adapter = registry.create("t2i", "echo-t2i", size=4)
    assert adapter.options == {"size": 4}
    assert not hasattr(adapter, "registered_id")


def test_create_imports_a_lazy_target(site: Site, use_report: Any) -> None:
    _, lazy = site.good_plugin()
    use_report(site.load())
    assert lazy not in sys.modules
    adapter = registry.create("t2i", "lazy-t2i", seed=3)
    assert type(adapter).__module__ == lazy
    assert adapter.options == {"seed": 3}


def test_builtin_rules_planner_is_registered() -> None:
    if not (Path(registry.__file__).parent / "planners" / "rules.py").exists():
        pytest.skip("realcompo_sdk/planners/rules.py is not written yet (the builtin 'rules' planner)")
    report = PluginLoader(entry_points=[]).load()
    registration = report.registrations[("planner", "rules")]
    assert (registration.plugin, registration.distribution) == ("builtin", "realcompo-sdk")
    assert plugin(report, "builtin").status == "loaded"


# --- end to end: a broken plugin pip-installed into a real environment ------------------------

BROKEN_DIST_PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "realcompo-plugin-rc-e2e-broken"
version = "0.0.1"

[project.entry-points.realcompo]
e2e-broken = "rc_e2e_broken"
e2e-good = "rc_e2e_good"

[tool.setuptools]
py-modules = ["rc_e2e_broken", "rc_e2e_good"]
"""

E2E_CHECK = """
import json
from realcompo_sdk import load_layout, registry
from realcompo_sdk.errors import UnknownPluginError

report = registry.report()
try:
    registry.lookup("t2i", "e2e-missing")
    lookup_error = None
except UnknownPluginError as exc:
    lookup_error = str(exc)
layout = load_layout({"prompt": "a cat", "objects": [{"phrase": "cat", "box": {"x0": 0, "y0": 0, "x1": 1, "y1": 1}}]})
print(json.dumps({
    "plugins": {p.name: [p.status, p.error, p.distribution] for p in report.plugins},
    "ids": registry.ids("t2i"),
    "lookup_error": lookup_error,
    "created": type(registry.create("t2i", "echo-t2i")).__name__,
    "layout": layout.objects[0].phrase,
}))
"""


def test_pip_installed_broken_plugin_is_recorded_and_the_host_keeps_working(tmp_path: Path) -> None:
    project = tmp_path / "plugin"
    project.mkdir()
    (project / "pyproject.toml").write_text(BROKEN_DIST_PYPROJECT)
    (project / "rc_e2e_broken.py").write_text("import rc_e2e_dependency_that_is_not_installed\n")
    (project / "rc_e2e_good.py").write_text(textwrap.dedent(GOOD_PLUGIN.format(lazy_module="rc_e2e_good")) + LAZY_MODULE)

    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    # See the host environment's packages (realcompo-sdk, pip, setuptools) behind the new venv's own.
    host_site = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "pluggy").exists())
    env_site = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    (env_site / "host.pth").write_text(f"import site; site.addsitedir({host_site!r})\n")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("REALCOMPO_", "PYTHON", "PIP_"))}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", str(project)],
        check=True, env=env, cwd=tmp_path, capture_output=True, text=True,
    )
    result = subprocess.run([str(python), "-c", E2E_CHECK], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])

    status, error, dist = out["plugins"]["e2e-broken"]
    assert (status, dist) == ("failed", "realcompo-plugin-rc-e2e-broken")
    assert "import failed: ModuleNotFoundError" in error
    assert "rc_e2e_dependency_that_is_not_installed" in error
    assert out["plugins"]["e2e-good"][0] == "loaded"
    assert {"echo-t2i", "lazy-t2i"} <= set(out["ids"])
    assert "Plugins that failed to load: e2e-broken" in out["lookup_error"]
    assert out["created"] == "EchoAdapter"
    assert out["layout"] == "cat"
