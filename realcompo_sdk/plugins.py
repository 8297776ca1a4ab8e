"""Discovery and loading of plugins through the `realcompo` entry-point group.

Each entry point is loaded on its own: an import error, a hook that raises, or an id already
registered by another distribution is recorded in `PluginReport` and shown by `realcompo
plugins`, never fatal — one broken plugin must not break the host. Plugin authors set
``REALCOMPO_STRICT_PLUGINS=1`` to turn every such problem into an exception.

``REALCOMPO_PLUGINS_ALLOW`` / ``REALCOMPO_PLUGINS_DENY`` (comma-separated entry-point or
distribution names) choose which installed plugins may run code at all.

Ids are owned, never first-come: when two distributions register the same id, a first-party id
stays with its first-party distribution, and any other shared id is given to neither. Every
claimant stays reachable by its qualified id, ``DISTRIBUTION:ID`` (e.g. ``acme-models:sd``), so the
user picks; `realcompo plugins` lists the conflicts first. A plugin that requires a newer (or
older) `realcompo-sdk` than the one installed is reported and not imported.
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
SDK_DISTRIBUTION = "realcompo-sdk"

# First-party ids and the distribution that owns each: "pip install" hints, and ownership when
# another distribution registers the same id. The built-in ids belong to realcompo-sdk.
FIRST_PARTY = {
    "rules": SDK_DISTRIBUTION,
    "sd": "realcompo-plugin-sd",
    "sdxl": "realcompo-plugin-sd",
    "gligen": "realcompo-plugin-gligen",
    "controlnet-openpose": "realcompo-plugin-controlnet",
    "controlnet-seg": "realcompo-plugin-controlnet",
    "instancediffusion": "realcompo-plugin-instancediffusion",
    "gpt": "realcompo-plugin-gpt",
    "claude": "realcompo-plugin-claude",
    "shapes-sd": "realcompo-plugin-shapes",
    "shapes-controlnet": "realcompo-plugin-shapes",
    "layout-guidance": "realcompo-plugin-layout-guidance",
    "shapes-layout-guidance": "realcompo-plugin-layout-guidance",
}
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
            try:
                self.target = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError) as exc:  # e.g. its distribution was uninstalled since
                raise PluginLoadError(
                    f"{self.kind} id {self.id!r} of {self.distribution} {self.version}: its code {module_name}:{attr} "
                    f"cannot be loaded ({_short_error(exc)}); reinstall or upgrade {self.distribution}"
                ) from exc
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
    # (kind, id) registered by several distributions and given to none: the claimants' distributions
    conflicts: dict[tuple[str, str], list[str]] = field(default_factory=dict)


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
        self._staged: list[Registration] = []  # every plugin's registrations, ids assigned at the end

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
            mismatch = _sdk_mismatch(ep.dist)
            if mismatch:  # importing it could fail in confusing ways, or worse, half-work
                self._fail(report, PluginInfo(ep.name, dist, version), mismatch)
                continue
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin must not break the host
                self._fail(report, PluginInfo(ep.name, dist, version), f"import failed: {_short_error(exc)}", exc)
                continue
            self._load_module(report, module, ep.name, dist, version)
        self._assign_ids(report)
        return report

    def _assign_ids(self, report: PluginReport) -> None:
        """Give each id to its one claimant, or by ownership (see the module docstring)."""
        claims: dict[tuple[str, str], list[Registration]] = {}
        for reg in self._staged:
            claims.setdefault((reg.kind, reg.id), []).append(reg)
        infos = {(p.name, p.distribution): p for p in report.plugins}
        for (kind, id_), regs in claims.items():
            if len(regs) == 1:
                report.registrations[(kind, id_)] = regs[0]
                infos[(regs[0].plugin, regs[0].distribution)].ids.append(f"{kind}:{id_}")
                continue
            owner = next((r for r in regs if FIRST_PARTY.get(id_) == r.distribution), None)
            for reg in regs:  # every claimant stays reachable by its qualified id
                qualified = f"{reg.distribution}:{id_}"
                report.registrations[(kind, qualified)] = reg
                infos[(reg.plugin, reg.distribution)].ids.append(f"{kind}:{qualified}")
            names = " and ".join(r.distribution for r in regs)
            choices = ", ".join(repr(f"{r.distribution}:{id_}") for r in regs)
            if owner is not None:
                report.registrations[(kind, id_)] = owner
                infos[(owner.plugin, owner.distribution)].ids.append(f"{kind}:{id_}")
                message = (f"{kind} id {id_!r} is registered by {names}; it is first-party, so "
                           f"{id_!r} stays {owner.distribution}'s. Choose explicitly with {choices}")
            else:
                report.conflicts[(kind, id_)] = [r.distribution for r in regs]
                message = (f"{kind} id {id_!r} is registered by {names}; neither is used under that name. "
                           f"Choose one with {choices}, or uninstall one of them")
            report.problems.append(message)
            for reg in regs:
                if reg is not owner:
                    info = infos[(reg.plugin, reg.distribution)]
                    info.error = (info.error + "; " if info.error else "") + message
            if _strict():
                raise PluginLoadError(message)

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
        self._staged.extend(staged)


def _sdk_mismatch(dist: metadata.Distribution | None) -> str | None:
    """Why a distribution cannot run with the installed realcompo-sdk, or None when it can."""
    from packaging.requirements import InvalidRequirement, Requirement

    installed = _version(SDK_DISTRIBUTION)
    if dist is None or installed == "unknown":
        return None
    for line in dist.requires or []:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.name.lower().replace("_", "-") != SDK_DISTRIBUTION or (req.marker and not req.marker.evaluate()):
            continue
        if not req.specifier.contains(installed, prereleases=True):
            return (f"requires {SDK_DISTRIBUTION}{req.specifier}, but {installed} is installed; not loaded. "
                    f"Install a matching {SDK_DISTRIBUTION} or a version of this plugin made for {installed}")
    return None


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"
