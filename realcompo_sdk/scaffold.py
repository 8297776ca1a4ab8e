"""`realcompo new-plugin`: render a plugin distribution from the template shipped in this package.

The template lives in `realcompo_sdk/templates/plugin/`: `common/` holds the files every plugin
gets (pyproject with the `realcompo` entry point, README, the light `plugin` module, the
installed-via-entry-point and import-is-light tests), and `t2i/`, `l2i/`, `planner/` the adapter
or planner skeleton and its contract test. Files ending in ``.tmpl`` are filled with
`string.Template` (``$id``, ``$package``...); a path part named ``__package__`` becomes the
import package. Pure standard library: rendering needs no torch and no extra dependency.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING

from .errors import RealCompoError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

KINDS = ("t2i", "l2i", "planner")
DIST_PREFIX = "realcompo-plugin-"
_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
_KIND_FACTS = {
    # kind: (hook, module, class suffix, contract mixin, noun)
    "t2i": ("register_t2i_adapters", "adapter", "Adapter", "T2IAdapterContract", "text-to-image adapter"),
    "l2i": ("register_l2i_adapters", "adapter", "Adapter", "L2IAdapterContract", "layout-to-image adapter"),
    "planner": ("register_layout_planners", "planner", "Planner", "LayoutPlannerContract", "layout planner"),
}
_PROMPT = "a red cat to the left of a blue dog"


@dataclass(frozen=True)
class PluginNames:
    """Every name the template needs, derived from the plugin's id and kind."""

    id: str  # "my-model": the registered id and the entry-point name
    kind: str  # "t2i" | "l2i" | "planner"
    distribution: str  # "realcompo-plugin-my-model"
    package: str  # "realcompo_plugin_my_model"
    class_name: str  # "MyModelAdapter" / "MyModelPlanner"
    hook: str  # "register_l2i_adapters"
    module: str  # "adapter" | "planner": the module holding the class (heavy imports go there)
    contract: str  # the realcompo_sdk.testing contract mixin the generated test subclasses
    noun: str  # "layout-to-image adapter"
    sdk_requirement: str  # "realcompo-sdk>=0.1,<0.2"
    usage: str  # one shell command that uses the plugin

    @property
    def target(self) -> str:
        return f"{self.package}.{self.module}:{self.class_name}"


def sdk_requirement(version: str) -> str:
    """The compatible range for plugins built against `version`: the same minor series before
    1.0 (0.x may add hook arguments at a minor release), the same major after."""
    parts = [int(p) for p in re.findall(r"\d+", version)[:2]] + [0, 0]
    major, minor = parts[0], parts[1]
    if major == 0:
        return f"realcompo-sdk>={major}.{minor},<{major}.{minor + 1}"
    return f"realcompo-sdk>={major}.{minor},<{major + 1}"


def plugin_names(name: str, kind: str) -> PluginNames:
    """Names for plugin `name` (``my-model`` or ``realcompo-plugin-my-model``) of `kind`."""
    from . import __version__

    if kind not in KINDS:
        raise RealCompoError(f"plugin kind must be one of {', '.join(KINDS)}; got {kind!r}")
    plugin_id = name.strip()
    if plugin_id.startswith(DIST_PREFIX):
        plugin_id = plugin_id[len(DIST_PREFIX):]
    if not _NAME.fullmatch(plugin_id):
        raise RealCompoError(
            f"plugin name {name!r} is not usable as an id: use lower-case letters, digits and single "
            "hyphens, starting with a letter (e.g. 'my-boxes'); the distribution becomes "
            f"'{DIST_PREFIX}<name>' and the package 'realcompo_plugin_<name>'"
        )
    hook, module, suffix, contract, noun = _KIND_FACTS[kind]
    words = plugin_id.split("-")
    class_name = "".join(w[:1].upper() + w[1:] for w in words) + suffix
    if kind == "t2i":
        usage = f'realcompo generate "{_PROMPT}" --t2i {plugin_id} --t2i-option model=PATH_OR_HUB_ID -o out.png'
    elif kind == "l2i":
        usage = f'realcompo generate "{_PROMPT}" --l2i {plugin_id} --l2i-option model=PATH_OR_HUB_ID -o out.png'
    else:
        usage = f'realcompo plan "{_PROMPT}" --planner {plugin_id}'
    return PluginNames(
        id=plugin_id, kind=kind, distribution=DIST_PREFIX + plugin_id,
        package="realcompo_plugin_" + plugin_id.replace("-", "_"), class_name=class_name, hook=hook,
        module=module, contract=contract, noun=noun, sdk_requirement=sdk_requirement(__version__), usage=usage,
    )


def template_root() -> Traversable:
    """The template folder inside the installed package."""
    return resources.files(__package__ or "realcompo_sdk") / "templates" / "plugin"


def _walk(folder: Traversable, parts: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Traversable]]:
    files: list[tuple[tuple[str, ...], Traversable]] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name == "__pycache__":
            continue
        if entry.is_dir():
            files += _walk(entry, (*parts, entry.name))
        else:
            files.append(((*parts, entry.name), entry))
    return files


def render_files(names: PluginNames) -> dict[str, str]:
    """Relative path → text of every file of the plugin, without writing anything."""
    root = template_root()
    values = {**asdict(names), "target": names.target}
    rendered: dict[str, str] = {}
    for section in ("common", names.kind):
        for parts, entry in _walk(root / section):
            out_parts = [names.package if p == "__package__" else p for p in parts]
            text = entry.read_text(encoding="utf-8")
            if out_parts[-1].endswith(".tmpl"):
                out_parts[-1] = out_parts[-1][: -len(".tmpl")]
                try:
                    text = Template(text).substitute(values)
                except (KeyError, ValueError) as exc:  # a template bug, not a user error
                    raise RealCompoError(f"template file {'/'.join(parts)} has a bad placeholder: {exc}") from exc
            rendered["/".join(out_parts)] = text
    return rendered


def render_plugin(name: str, kind: str, directory: str | Path = ".", *, overwrite: bool = False) -> Path:
    """Write the distribution ``realcompo-plugin-<name>`` of `kind` into `directory`; return its path.

    The result installs with ``pip install -e <path>`` and its tests (``pytest <path>``) pass as
    generated: the entry point is found, importing the plugin imports nothing heavy, and the
    skeleton passes the core contract for its kind. Refuses to write into a non-empty folder
    unless `overwrite`.
    """
    names = plugin_names(name, kind)
    target = Path(directory).expanduser() / names.distribution
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise RealCompoError(f"{target} already exists and is not empty; choose another --dir or remove it")
    for relative, text in render_files(names).items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return target
