"""The generation record: everything needed to know and reproduce what was done (no secrets)."""

from __future__ import annotations

from importlib import metadata
from typing import Any

from pydantic import BaseModel, ConfigDict

from .layout import Layout


class GenerationRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str
    negative_prompt: str
    layout: Layout
    mode: str
    seeds: list[int]
    height: int
    width: int
    num_steps: int
    guidance_scale: float
    scheduler: str
    balance: dict[str, Any]
    adapters: list[dict[str, Any]]
    planner: dict[str, Any] | None
    token_positions: dict[str, list[list[int]]]
    passes: dict[str, int]
    versions: dict[str, str]
    seconds: float | None = None  # None in `realcompo batch` images: their timings are in its manifest
    # For an image made in a mixed batch (`RealCompo.generate_batch`): its index and the seeds of
    # the batch it shared forwards with. Float rounding depends on the batch, so exact pixel
    # reproduction needs the same batch.
    batch: dict[str, Any] | None = None


def environment_versions() -> dict[str, str]:
    versions = {}
    names = ["realcompo-sdk", "torch", "diffusers", "transformers"]
    try:
        names += sorted({d.metadata["Name"] for d in metadata.distributions()
                         if (d.metadata["Name"] or "").startswith("realcompo-plugin-")})
    except Exception:  # metadata of a broken distribution must not break generation
        pass
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
