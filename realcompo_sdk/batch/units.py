"""Work items (one image each) and units (the items sampled in one batched forward).

Units are cut from the full, ordered item list of a run, never from what is left to do, so a
resumed run samples exactly the batches an uninterrupted one would: float rounding depends on
the batch, and the same batch gives the same pixels.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from ..layout import Layout
from .jobs import Job

SETTINGS = ("negative_prompt", "num_steps", "guidance_scale", "height", "width", "mode")


@dataclass(frozen=True)
class WorkItem:
    """One image to make: a job's layout at one seed, with the run settings it uses."""

    key: str  # deterministic: job content, seed and run configuration
    job: str  # the job's name
    line: int
    seed: int
    prompt: str
    layout: Layout
    settings: tuple[tuple[str, Any], ...]  # the sampling settings (SETTINGS) this item uses
    filename: str

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "job": self.job, "line": self.line, "seed": self.seed, "prompt": self.prompt,
                "layout": self.layout.model_dump(mode="json"), "settings": dict(self.settings), "filename": self.filename}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkItem:
        return cls(key=data["key"], job=data["job"], line=data["line"], seed=data["seed"], prompt=data["prompt"],
                   layout=Layout.model_validate(data["layout"]), settings=tuple(data["settings"].items()),
                   filename=data["filename"])


@dataclass(frozen=True)
class Unit:
    """Items sampled together; they share every sampling setting."""

    index: int
    items: tuple[WorkItem, ...]


def item_key(job: Job, seed: int, run_config: dict[str, Any]) -> str:
    """What an image depends on, hashed: the job's name and content as written (not its planned
    layout), the seed, and the models, options and settings of the run."""
    content = {"name": job.name, "job": job.spec.model_dump(mode="json", exclude={"seeds", "num_seeds"}),
               "seed": seed, "run": run_config}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def make_items(jobs: list[tuple[Job, Layout]], defaults: dict[str, Any], run_config: dict[str, Any]) -> list[WorkItem]:
    """One item per (job, seed), in job order then seed order."""
    items = []
    for job, layout in jobs:
        spec = job.spec
        settings = tuple((name, getattr(spec, name) if getattr(spec, name) is not None else defaults.get(name))
                         for name in SETTINGS)
        prompt = spec.prompt or layout.prompt
        for seed in job.seeds:
            key = item_key(job, seed, run_config)
            items.append(WorkItem(key=key, job=job.name, line=job.line, seed=seed, prompt=prompt, layout=layout,
                                  settings=settings, filename=f"{_slug(job.name)}-seed{seed}-{key[:8]}.png"))
    return items


def make_units(items: list[WorkItem], batch_size: int) -> list[Unit]:
    """Consecutive items with the same settings, `batch_size` at a time."""
    units: list[Unit] = []
    current: list[WorkItem] = []
    for item in items:
        if current and (len(current) == batch_size or current[0].settings != item.settings):
            units.append(Unit(len(units), tuple(current)))
            current = []
        current.append(item)
    if current:
        units.append(Unit(len(units), tuple(current)))
    return units


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:60] or "job"
