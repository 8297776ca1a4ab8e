"""Adapter options as form fields, generated from each adapter's pydantic `Options`.

Each field gets the widget its type calls for (checkbox, number, choice, text, or JSON text for
dicts and lists), prefilled with the registration's value (a preset's) or the default. Only the
fields the user changed are passed on, so presets keep their own values; the adapter's `Options`
model then validates them, with the SDK's usual messages.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import RealCompoError

Widget = Literal["checkbox", "int", "float", "choice", "text", "optional-text", "json"]
UNSET = "(model default)"


@dataclass(frozen=True)
class FieldSpec:
    name: str
    widget: Widget
    default: Any
    description: str
    choices: tuple[str, ...] = ()


def form_fields(kind: str, adapter_id: str | None) -> list[FieldSpec]:
    """The fields of an adapter's options, in declaration order (imports its module, no weights)."""
    if not adapter_id:
        return []
    from .. import registry

    registration = registry.lookup(kind, adapter_id)
    specs = []
    for name, info in registration.load_class().Options.model_fields.items():
        default = registration.options.get(name, info.get_default(call_default_factory=True))
        widget, choices = _widget(info.annotation)
        specs.append(FieldSpec(name, widget, default, info.description or "", choices))
    return specs


def shown_value(spec: FieldSpec) -> Any:
    """What the widget starts with."""
    if spec.widget == "json":
        return json.dumps(spec.default)
    if spec.widget == "optional-text":
        return "" if spec.default is None else str(spec.default)
    if spec.widget == "choice" and spec.default is None:
        return UNSET
    return spec.default


def changed_options(kind: str, adapter_id: str | None, values: dict[str, Any]) -> dict[str, Any]:
    """The options the user changed, converted back from the widgets' values."""
    specs = {s.name: s for s in form_fields(kind, adapter_id)}
    options = {}
    for name, raw in values.items():
        spec = specs.get(name)
        if spec is None or raw == shown_value(spec):
            continue
        options[name] = _parse(spec, raw, f"{adapter_id} option {name!r}")
    return options


def _widget(annotation: Any) -> tuple[Widget, tuple[str, ...]]:
    args = typing.get_args(annotation)
    optional = type(None) in args
    inner = [a for a in args if a is not type(None)] if optional else [annotation]
    base = inner[0] if len(inner) == 1 else annotation
    if typing.get_origin(base) is Literal:
        return "choice", ((UNSET,) if optional else ()) + tuple(str(a) for a in typing.get_args(base))
    if base is bool:
        return ("choice", (UNSET, "true", "false")) if optional else ("checkbox", ())
    if base is int and not optional:
        return "int", ()
    if base is float and not optional:
        return "float", ()
    if base is str:
        return ("optional-text" if optional else "text"), ()
    return "json", ()  # dicts, lists, tuples, unions: JSON text


def _parse(spec: FieldSpec, raw: Any, what: str) -> Any:
    if spec.widget == "json":
        try:
            return json.loads(raw or "null")
        except json.JSONDecodeError as exc:
            raise RealCompoError(f"{what}: not valid JSON ({exc.msg})") from None
    if spec.widget == "optional-text":
        return raw or None
    if spec.widget == "choice":
        return {UNSET: None, "true": True, "false": False}.get(raw, raw)
    if spec.widget == "int":
        return int(raw)
    if spec.widget == "float":
        return float(raw)
    return raw
