"""Discovery and loading of plugins through the `realcompo` entry-point group.

Each entry point is loaded on its own: an import error, a hook that raises, or an id already
registered by another distribution is recorded in `PluginReport` and shown by `realcompo
plugins`, never fatal — one broken plugin must not break the host. Plugin authors set
``REALCOMPO_STRICT_PLUGINS=1`` to turn every such problem into an exception.

``REALCOMPO_PLUGINS_ALLOW`` / ``REALCOMPO_PLUGINS_DENY`` (comma-separated entry-point or
distribution names) choose which installed plugins may run code at all.
"""

from __future__ import annotations

import importlib
import os
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginLoadError

ENTRY_POINT_GROUP = "realcompo"
KINDS = ("t2i", "l2i", "planner")
_HOOK_OF_KIND = {
    "t2i": "register_t2i_adapters",
    "l2i": "register_l2i_adapters",
    "planner": "register_layout_planners",
}


@dataclass
class Registration:
    kind: str
    id: str
    target: type | str  # a class, or "module:Class" imported on first use
    options: dict[str, Any]
    plugin: str  # entry-point name, or "builtin"
    distribution: str
    version: str
    generation: dict[str, Any] = field(default_factory=dict)  # recommended sampling settings (see `Register`)

    def load_class(self) -> type:
        """The registered class; a "module:Class" target is imported now (heavy imports here)."""
        if isinstance(self.target, str):
            module_name, _, attr = self.target.partition(":")
            module = importlib.import_module(module_name)
            self.target = getattr(module, attr)
        assert isinstance(self.target, type)
        return self.target


GENERATION_SETTINGS = frozenset({"num_steps", "guidance_scale", "scheduler", "balance"})
"""What a T2I preset may recommend: `RealCompo` uses each one the caller leaves unset."""


@dataclass
class PluginInfo:
    name: str
    distribution: str
    version: str
    ids: list[str] = field(default_factory=list)
    error: str | None = None
    status: str = "loaded"  # loaded | failed | denied


@dataclass
class PluginReport:
    plugins: list[PluginInfo] = field(default_factory=list)
    registrations: dict[tuple[str, str], Registration] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _env_list(name: str) -> set[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return {item.strip() for item in value.split(",") if item.strip()}


def _strict() -> bool:
    return os.environ.get("REALCOMPO_STRICT_PLUGINS", "").lower() in {"1", "true", "yes"}


def _short_error(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" ({frame[0].filename.rsplit('/', 1)[-1]}:{frame[0].lineno})" if frame else ""
    return f"{type(exc).__name__}: {exc}{where}"


class PluginLoader:
    """Loads entry points one at a time and collects what they register."""

    def __init__(self, entry_points: list[metadata.EntryPoint] | None = None, builtins: list[Any] | None = None):
        self._entry_points = entry_points
        self._builtins = builtins

    def load(self) -> PluginReport:
        report = PluginReport()
        allow, deny = _env_list("REALCOMPO_PLUGINS_ALLOW"), _env_list("REALCOMPO_PLUGINS_DENY")
        builtins = self._builtins
        if builtins is None:
            from . import builtin

            builtins = [builtin]
        for module in builtins:
            self._load_module(report, module, "builtin", "realcompo-sdk", _version("realcompo-sdk"))
        eps = self._entry_points
        if eps is None:
            eps = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
        for ep in sorted(eps, key=lambda e: (e.dist.name if e.dist else "", e.name)):
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            names = {ep.name, dist}
            if (allow is not None and not names & allow) or (deny is not None and names & deny):
                report.plugins.append(PluginInfo(ep.name, dist, version, status="denied",
                                                 error="skipped by REALCOMPO_PLUGINS_ALLOW/DENY"))
                continue
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin must not break the host
                self._fail(report, PluginInfo(ep.name, dist, version), f"import failed: {_short_error(exc)}", exc)
                continue
            self._load_module(report, module, ep.name, dist, version)
        return report

    def _fail(self, report: PluginReport, info: PluginInfo, message: str, exc: BaseException | None = None) -> None:
        info.status, info.error = "failed", message
        if info not in report.plugins:
            report.plugins.append(info)
        report.problems.append(f"plugin {info.name!r} ({info.distribution} {info.version}): {message}")
        if _strict():
            raise PluginLoadError(report.problems[-1]) from exc

    def _load_module(self, report: PluginReport, module: Any, name: str, dist: str, version: str) -> None:
        info = PluginInfo(name, dist, version)
        report.plugins.append(info)
        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        try:
            pm.register(module, name=name)
        except Exception as exc:  # e.g. a hookimpl with an unknown argument
            self._fail(report, info, f"invalid hook implementation: {_short_error(exc)}", exc)
            return
        staged: list[Registration] = []  # committed only once every hook has run, so a failed plugin registers nothing
        for kind, hook_name in _HOOK_OF_KIND.items():
            def register(cls: type | str, *, id: str | None = None, options: dict[str, Any] | None = None,
                         generation: dict[str, Any] | None = None,
                         _kind: str = kind, _staged: list[Registration] = staged) -> None:
                reg_id = id or getattr(cls, "id", None)
                if not isinstance(reg_id, str) or not reg_id:
                    raise TypeError(f"{cls!r} has no class-level 'id' and no id= was given")
                if isinstance(cls, str) and ":" not in cls:
                    raise TypeError(f"a lazy target must read 'module:Class', got {cls!r}")
                unknown = sorted(set(generation or {}) - GENERATION_SETTINGS)
                if unknown:
                    raise TypeError(f"generation= of {reg_id!r} has unknown setting(s) {unknown}; "
                                    f"known: {sorted(GENERATION_SETTINGS)}")
                if generation and _kind != "t2i":
                    raise TypeError(f"generation= is for T2I presets (it sets how RealCompo samples); {reg_id!r} is {_kind}")
                _staged.append(Registration(_kind, reg_id, cls, dict(options or {}), name, dist, version,
                                            dict(generation or {})))

            try:
                getattr(pm.hook, hook_name)(register=register)
            except Exception as exc:
                self._fail(report, info, f"hook {hook_name} raised {_short_error(exc)}", exc)
                return
        for reg in staged:
            key = (reg.kind, reg.id)
            if key in report.registrations:
                first = report.registrations[key]
                message = (f"{reg.kind} id {reg.id!r} is already registered by {first.distribution} "
                           f"(plugin {first.plugin!r}); this registration is ignored")
                report.problems.append(f"plugin {name!r} ({dist} {version}): {message}")
                info.error = (info.error + "; " if info.error else "") + message
                if _strict():
                    raise PluginLoadError(report.problems[-1])
                continue
            report.registrations[key] = reg
            info.ids.append(f"{reg.kind}:{reg.id}")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"
