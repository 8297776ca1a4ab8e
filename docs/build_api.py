"""Write docs/api.md, the API reference, from the docstrings and signatures of the public API.

    python docs/build_api.py          # rewrite docs/api.md
    python docs/build_api.py --check  # exit 1 when docs/api.md is out of date (the tests run this)

The page is generated so that it cannot drift from the code; edit docstrings, not api.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

OUT = Path(__file__).with_name("api.md")

# (section title, introduction, [(module, [names])]) in reading order
SECTIONS: list[tuple[str, str, list[tuple[str, list[str]]]]] = [
    ("Generating", "The Python API: one object to plan, balance and decode.", [
        ("realcompo_sdk.compose", ["RealCompo", "GenerationResult", "BatchItem"]),
        ("realcompo_sdk.balancer", ["BalanceOptions"]),
        ("realcompo_sdk.settings", ["SamplingSettings"]),
        ("realcompo_sdk.record", ["GenerationRecord"]),
    ]),
    ("Layouts", "Regions are fractions of the image, origin top-left.", [
        ("realcompo_sdk.layout", ["Layout", "LayoutObject", "Box", "Mask", "RLE", "Keypoint", "Point", "load_layout"]),
    ]),
    ("Interfaces", "What every adapter and planner implements; the sampler asks nothing else of them.", [
        ("realcompo_sdk.interfaces", ["DiffusionAdapter", "T2IAdapter", "L2IAdapter", "LayoutPlanner", "AdapterOptions",
                                      "LatentSpec", "GenerationRequest", "StepInfo", "NoisePrediction"]),
    ]),
    ("Building on diffusers UNets", "The base class of every first-party adapter, and its helpers.", [
        ("realcompo_sdk.unet_adapter", ["UNetAdapter", "UNetState", "TorchModelOptions", "resolve_device_dtype",
                                        "latent_spec_from", "place"]),
        ("realcompo_sdk.diffusers_loading", ["load_sd_components", "SDComponents"]),
        ("realcompo_sdk.tokens", ["align_phrases"]),
        ("realcompo_sdk.balancer", ["region_masks"]),
    ]),
    ("Building on diffusers MMDiT transformers", "SD3 / Flux-style models: joint attention, flow matching, distilled guidance.", [
        ("realcompo_sdk.mmdit_adapter", ["MMDiTAdapter", "MMDiTOptions", "GuidanceInput", "default_attention_blocks",
                                         "latent_spec_for_transformer", "resolution_shift"]),
        ("realcompo_sdk.joint_attention", ["JointAttentionCapture", "text_attention", "sd3_queries_keys",
                                           "flux_queries_keys"]),
    ]),
    ("Plugins", "Hooks a plugin implements; see plugins.md for entry points and discovery.", [
        ("realcompo_sdk.hookspecs", ["Register", "register_t2i_adapters", "register_l2i_adapters",
                                     "register_layout_planners"]),
    ]),
    ("Errors", "Every error the SDK raises on purpose is a `RealCompoError`.", [
        ("realcompo_sdk.errors", ["RealCompoError", "LayoutError", "TokenAlignmentError", "IncompatibleAdaptersError",
                                  "UnknownPluginError", "PluginConflictError", "PluginLoadError", "PlannerError",
                                  "MissingAPIKeyError", "PlannerInputError", "PlannerRefusalError", "InvalidPlanError",
                                  "NonFiniteNoiseError"]),
    ]),
    ("Testing kit", "Contract tests for plugins, as pytest mixins.", [
        ("realcompo_sdk.testing.contracts", ["T2IAdapterContract", "L2IAdapterContract"]),
        ("realcompo_sdk.testing.planner_contract", ["LayoutPlannerContract"]),
        ("realcompo_sdk.testing.fake_llm_server", ["FakeLLMServer"]),
    ]),
]


def _annotation(annotation: Any) -> str:
    # the modules use `from __future__ import annotations`: annotations are already source text
    return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)


def signature(obj: Any, name: str) -> str:
    """`name(a: int = 1, *, b: str = 'x') -> T` as the source spells it, without self/cls."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return name
    parts: list[str] = []
    star_done = False
    params = list(sig.parameters.values())
    if params and params[0].name in {"self", "cls"}:
        params = params[1:]
    for param in params:
        if param.kind is param.KEYWORD_ONLY and not star_done:
            parts.append("*")
            star_done = True
        prefix = {param.VAR_POSITIONAL: "*", param.VAR_KEYWORD: "**"}.get(param.kind, "")
        star_done = star_done or param.kind is param.VAR_POSITIONAL
        text = prefix + param.name
        if param.annotation is not param.empty:
            text += f": {_annotation(param.annotation)}"
        if param.default is not param.empty:
            text += f" = {param.default!r}"
        parts.append(text)
    returns = "" if sig.return_annotation is sig.empty else f" -> {_annotation(sig.return_annotation)}"
    return f"{name}({', '.join(parts)}){returns}"


def doc(obj: Any) -> str:
    return inspect.getdoc(obj) or ""


def own_members(cls: type) -> list[tuple[str, Any]]:
    """Public methods and properties defined on `cls` or on its private (underscore) bases."""
    sources = [c for c in cls.__mro__ if c is cls or (c.__name__.startswith("_") and c.__module__.startswith("realcompo"))]
    plain = not (issubclass(cls, BaseModel) or dataclasses.is_dataclass(cls))
    seen: dict[str, Any] = {}
    for source in reversed(sources):
        for name, value in vars(source).items():
            own_code = getattr(value, "__module__", None) == cls.__module__  # not Protocol's generated __init__
            public = not name.startswith("_") or (plain and own_code and name in {"__init__", "__call__"})
            if not public or name in {"model_config", "Options", "id"}:
                continue
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            if callable(value) or isinstance(value, property):
                seen[name] = value
    return sorted(seen.items(), key=lambda kv: _line(kv[1]))


def _line(member: Any) -> int:
    target = member.fget if isinstance(member, property) else member
    try:
        return inspect.getsourcelines(target)[1]
    except (OSError, TypeError):
        return 0


def fields(cls: type) -> list[str]:
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        rows = []
        for name, info in cls.model_fields.items():
            kind = getattr(info.annotation, "__name__", None) or str(info.annotation).replace("typing.", "")
            default = "required" if info.is_required() else f"default `{info.get_default(call_default_factory=True)!r}`"
            text = f"- `{name}`: `{kind}`, {default}"
            rows.append(text + (f". {info.description}" if info.description else ""))
        return rows
    if dataclasses.is_dataclass(cls):
        return [f"- `{f.name}`: `{f.type}`" for f in dataclasses.fields(cls) if not f.name.startswith("_")]
    return []


def render_class(cls: type, module: str) -> list[str]:
    bases = ", ".join(b.__name__ for b in cls.__bases__ if b is not object)
    lines = [f"### {cls.__name__}", "", f"`{module}.{cls.__name__}`" + (f" ({bases})" if bases else ""), ""]
    if doc(cls):
        lines += [doc(cls), ""]
    rows = fields(cls)
    if rows:
        lines += ["Fields:", "", *rows, ""]
    if issubclass(cls, BaseException):
        return lines
    for name, member in own_members(cls):
        if isinstance(member, property):
            lines += [f"#### `{name}` (property)", ""]
        else:
            shown = cls.__name__ if name == "__init__" else name
            lines += [f"#### `{signature(member, shown)}`", ""]
        if getattr(member.fget if isinstance(member, property) else member, "__isabstractmethod__", False):
            lines += ["*Abstract: implement it.*", ""]
        text = doc(getattr(cls, name))  # through the class: an override without a docstring inherits its base's
        if text:
            lines += [text, ""]
    return lines


def render_function(func: Any, module: str) -> list[str]:
    name = func.__name__
    lines = [f"### {name}", "", f"`{module}.{name}`", "", "```python", signature(func, name), "```", ""]
    return lines + ([doc(func), ""] if doc(func) else [])


def render() -> str:
    lines = ["# API reference", "",
             "Generated from the code by `python docs/build_api.py`; do not edit by hand. The guide",
             "([guide.md](guide.md)) explains how the pieces fit; this page lists them.", ""]
    lines += [f"- [{title}](#{title.lower().replace(' ', '-')})" for title, _, _ in SECTIONS] + [""]
    for title, intro, groups in SECTIONS:
        lines += [f"## {title}", "", intro, ""]
        for module_name, names in groups:
            module = importlib.import_module(module_name)
            for name in names:
                obj = getattr(module, name)
                lines += render_class(obj, module_name) if inspect.isclass(obj) else render_function(obj, module_name)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when docs/api.md is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT.name} is out of date: run python docs/build_api.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
