"""`realcompo new-plugin`: the template renders for every kind, and a rendered plugin, pip-installed
into a fresh virtual environment, passes its own tests as generated (entry point found, import
light, core contract).

The end-to-end test builds one venv that sees this environment's packages behind its own (as
tests/test_plugins.py does), installs three rendered plugins into it without network or build
isolation, and runs each plugin's test suite with that venv's interpreter.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import realcompo_sdk
from realcompo_sdk import cli
from realcompo_sdk.errors import RealCompoError
from realcompo_sdk.scaffold import KINDS, plugin_names, render_files, render_plugin, sdk_requirement

ROOT = Path(__file__).parents[1]
COMMON = {"pyproject.toml", "README.md", "tests/test_installed.py", "tests/test_import_is_light.py", "tests/test_contract.py"}


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REALCOMPO_", "PYTHON", "PIP_"))}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_renders_a_complete_distribution(tmp_path: Path, kind: str) -> None:
    path = render_plugin("my-boxes", kind, tmp_path)
    names = plugin_names("my-boxes", kind)
    assert path == tmp_path / "realcompo-plugin-my-boxes"
    files = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    package = "realcompo_plugin_my_boxes"
    assert files == COMMON | {f"{package}/__init__.py", f"{package}/plugin.py", f"{package}/py.typed",
                              f"{package}/{names.module}.py"}
    for name in files:
        text = (path / name).read_text()
        assert "$" not in text.replace("$ ", ""), f"{name} kept a template placeholder"
        if name.endswith(".py"):
            ast.parse(text, filename=name)


@pytest.mark.parametrize("kind", KINDS)
def test_pyproject_declares_the_entry_point_and_a_compatible_sdk_range(tmp_path: Path, kind: str) -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((render_plugin("my-boxes", kind, tmp_path) / "pyproject.toml").read_text())["project"]
    assert project["name"] == "realcompo-plugin-my-boxes"
    assert project["entry-points"]["realcompo"] == {"my-boxes": "realcompo_plugin_my_boxes.plugin"}
    assert project["dependencies"] == [sdk_requirement(realcompo_sdk.__version__)]


@pytest.mark.parametrize(("kind", "hook", "target"), [
    ("t2i", "register_t2i_adapters", "realcompo_plugin_my_boxes.adapter:MyBoxesAdapter"),
    ("l2i", "register_l2i_adapters", "realcompo_plugin_my_boxes.adapter:MyBoxesAdapter"),
    ("planner", "register_layout_planners", "realcompo_plugin_my_boxes.planner:MyBoxesPlanner"),
])
def test_plugin_module_only_registers_the_class_by_name(kind: str, hook: str, target: str) -> None:
    source = render_files(plugin_names("my-boxes", kind))["realcompo_plugin_my_boxes/plugin.py"]
    tree = ast.parse(source)
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert imported <= {"realcompo_sdk", "realcompo_sdk.hookspecs"}
    assert f"def {hook}(register" in source and f'register("{target}", id="my-boxes")' in source


def test_names_follow_the_plugin_id() -> None:
    names = plugin_names("realcompo-plugin-box-net2", "l2i")  # the distribution name is accepted too
    assert (names.id, names.distribution, names.package, names.class_name) == (
        "box-net2", "realcompo-plugin-box-net2", "realcompo_plugin_box_net2", "BoxNet2Adapter")
    assert plugin_names("gpt5", "planner").class_name == "Gpt5Planner"


@pytest.mark.parametrize("bad", ["My-Boxes", "my boxes", "2boxes", "my--boxes", "my_boxes", "boxes-", ""])
def test_names_that_cannot_be_ids_are_refused_with_the_rule(bad: str) -> None:
    with pytest.raises(RealCompoError, match="lower-case letters, digits and single hyphens"):
        plugin_names(bad, "l2i")


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(RealCompoError, match="t2i, l2i, planner"):
        plugin_names("boxes", "controlnet")


def test_sdk_range_is_the_minor_series_before_1_0_and_the_major_after() -> None:
    assert sdk_requirement("0.1.0") == "realcompo-sdk>=0.1,<0.2"
    assert sdk_requirement("0.4.2.dev1") == "realcompo-sdk>=0.4,<0.5"
    assert sdk_requirement("1.3.0") == "realcompo-sdk>=1.3,<2"


def test_a_non_empty_folder_is_not_overwritten(tmp_path: Path) -> None:
    path = render_plugin("boxes", "planner", tmp_path)
    (path / "mine.txt").write_text("keep me")
    with pytest.raises(RealCompoError, match="not empty"):
        render_plugin("boxes", "planner", tmp_path)
    assert (path / "mine.txt").read_text() == "keep me"


def test_cli_new_plugin_writes_the_distribution(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["new-plugin", "boxes", "--kind", "l2i", "--dir", str(tmp_path)]) == 0
    assert (tmp_path / "realcompo-plugin-boxes" / "realcompo_plugin_boxes" / "adapter.py").exists()
    assert "pip install -e" in capsys.readouterr().out
    assert cli.main(["new-plugin", "Boxes!", "--kind", "l2i", "--dir", str(tmp_path)]) == 2
    assert "lower-case" in capsys.readouterr().err


def test_the_template_ships_as_package_data() -> None:
    tomllib = pytest.importorskip("tomllib")
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["realcompo_sdk"]
    assert "templates/**/*" in data
    assert not list((ROOT / "realcompo_sdk" / "templates").rglob("__init__.py"))  # data, not packages


@pytest.mark.skipif(shutil.which("ruff") is None and not (Path(sys.executable).parent / "ruff").exists(),
                    reason="ruff is not installed")
def test_rendered_plugins_lint_clean(tmp_path: Path) -> None:
    for kind in KINDS:
        render_plugin(f"lint-{kind}", kind, tmp_path)
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    result = subprocess.run([ruff, "check", "--no-cache", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def venv_with_rendered_plugins(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """A fresh venv (seeing this environment's packages) with one rendered plugin per kind installed."""
    root = tmp_path_factory.mktemp("scaffold-e2e")
    projects = {kind: render_plugin(f"e2e-{kind}", kind, root / "src") for kind in KINDS}
    env_dir = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    host_site = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "pluggy").exists())
    sdk_root = str(Path(realcompo_sdk.__file__).parents[1])  # the checkout when the SDK is an editable install
    env_site = Path(subprocess.check_output(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    (env_site / "host.pth").write_text(f"import site; site.addsitedir({host_site!r}); site.addsitedir({sdk_root!r})\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", *map(str, projects.values())],
        check=True, env=clean_env(), cwd=root, capture_output=True, text=True, timeout=300,
    )
    return python, projects


@pytest.mark.parametrize("kind", KINDS)
def test_pip_installed_rendered_plugin_passes_its_own_tests(venv_with_rendered_plugins, kind: str) -> None:
    python, projects = venv_with_rendered_plugins
    result = subprocess.run([str(python), "-m", "pytest", "-v", "-p", "no:cacheprovider"], cwd=projects[kind],
                            env=clean_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    for test in ("test_installed.py::test_the_entry_point_is_installed PASSED",
                 "test_installed.py::test_the_registry_lists_it PASSED",
                 "test_import_is_light.py::test_importing_and_registering_imports_nothing_heavy PASSED",
                 "Contract::test_"):
        assert test in result.stdout, f"{test!r} did not run and pass:\n{result.stdout[-3000:]}"
    assert " failed" not in result.stdout
