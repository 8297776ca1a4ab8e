"""Id → class lookup over everything the plugins registered, loaded lazily on first use."""

from __future__ import annotations

import difflib
from typing import Any

from .errors import PluginConflictError, UnknownPluginError
from .plugins import FIRST_PARTY, KINDS, PluginLoader, PluginReport, Registration

_KIND_NAMES = {"t2i": "T2I adapter", "l2i": "L2I adapter", "planner": "layout planner"}

_report: PluginReport | None = None


def report(reload: bool = False) -> PluginReport:
    """Load plugins on first use (or again with `reload`) and return what was found."""
    global _report
    if _report is None or reload:
        _report = PluginLoader().load()
    return _report


def set_report(new: PluginReport | None) -> None:
    """Replace the loaded plugins (tests use it with a `PluginLoader` over chosen entry points)."""
    global _report
    _report = new


def ids(kind: str) -> list[str]:
    """The ids of one kind, qualified `DISTRIBUTION:ID` ones included where an id is shared."""
    return sorted(i for (k, i) in report().registrations if k == kind)


def lookup(kind: str, id: str) -> Registration:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    regs = report().registrations
    if (kind, id) in regs:
        return regs[(kind, id)]
    if (kind, id) in report().conflicts:
        claimants = report().conflicts[(kind, id)]
        choices = " or ".join(repr(f"{d}:{id}") for d in claimants)
        raise PluginConflictError(f"{_KIND_NAMES[kind]} id {id!r} is registered by {' and '.join(claimants)}, so "
                                  f"it is ambiguous; name the one you mean: {choices} (see `realcompo plugins`)")
    elsewhere = [k for k in KINDS if k != kind and (k, id) in regs]
    if elsewhere:  # installed, but asked for in the wrong role
        flag = {"t2i": "--t2i / t2i=", "l2i": "--l2i / l2i=", "planner": "--planner / planner="}[elsewhere[0]]
        raise UnknownPluginError(f"{id!r} is an installed {_KIND_NAMES[elsewhere[0]]}, not a {_KIND_NAMES[kind]}; "
                                 f"pass it as {flag} (installed {_KIND_NAMES[kind]}s: {', '.join(ids(kind)) or 'none'})")
    known = ids(kind)
    parts = [f"no {_KIND_NAMES[kind]} with id {id!r} is installed."]
    close = difflib.get_close_matches(id, known, n=3, cutoff=0.5)
    if close:
        parts.append(f"Did you mean {', '.join(repr(c) for c in close)}?")
    denied = {p.distribution for p in report().plugins if p.status == "denied"}
    if id in FIRST_PARTY and FIRST_PARTY[id] in denied:
        parts.append(f"It is provided by {FIRST_PARTY[id]}, which is installed but skipped by "
                     "REALCOMPO_PLUGINS_ALLOW / REALCOMPO_PLUGINS_DENY.")
    elif id in FIRST_PARTY:
        parts.append(f"It is provided by the first-party plugin: pip install {FIRST_PARTY[id]}")
    failed = [p for p in report().plugins if p.status == "failed"]
    if failed:
        parts.append("Plugins that failed to load: " + "; ".join(f"{p.name} ({p.error})" for p in failed))
    parts.append(f"Installed: {', '.join(known) or 'none'} (see `realcompo plugins`).")
    raise UnknownPluginError(" ".join(parts))


def create(kind: str, id: str, **options: Any) -> Any:
    """Instantiate a registered class with the preset's options overridden by `options`."""
    reg = lookup(kind, id)
    merged = {**reg.options, **options}
    cls = reg.load_class()
    instance = cls(**merged)
    if getattr(cls, "id", None) != id:
        instance.registered_id = id  # a preset: report the id the user asked for
    if reg.generation:
        instance.generation_defaults = dict(reg.generation)
    return instance
