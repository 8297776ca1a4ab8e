"""What one worker does: load the models once, then sample units and hand back PNG bytes.

The same class runs in the driver process (`--engine local`) and inside each Ray actor
(`--engine ray`), so both engines make the same images. Results go back to the driver, the
output folder's only writer, as PNG bytes: no shared file system is needed between machines.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..images import png_bytes
from .units import WorkItem


class ModelConfig(BaseModel):
    """Everything a worker needs to build its `RealCompo` (ids and options, no objects)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    t2i: str
    l2i: list[str]
    t2i_options: dict[str, Any] = {}
    l2i_options: dict[str, Any] = {}
    balance: dict[str, Any] = {}
    scheduler: str | None = None
    append_missing_phrases: bool = False
    # Threads per worker. Float rounding depends on the thread count, so it is fixed (not "all
    # cores") for every engine: the same jobs give the same bytes locally and on Ray.
    threads: int = 1


@dataclass
class ItemResult:
    key: str
    png: bytes | None
    record: dict[str, Any] | None  # the generation record
    error: str | None
    seconds: float  # this item's share of its unit's sampling time


class UnitWorker:
    """Holds one model replica; `run(items)` samples one unit."""

    def __init__(self, config: ModelConfig | dict[str, Any]) -> None:
        import torch

        from ..compose import RealCompo

        self.config = ModelConfig.model_validate(config)
        torch.set_num_threads(self.config.threads)
        started = time.perf_counter()
        self.rc = RealCompo(t2i=self.config.t2i, l2i=list(self.config.l2i), planner=None,
                            t2i_options=dict(self.config.t2i_options),
                            l2i_options=[dict(self.config.l2i_options) for _ in self.config.l2i],
                            balance=dict(self.config.balance), scheduler=self.config.scheduler,
                            append_missing_phrases=self.config.append_missing_phrases)
        self.load_seconds = time.perf_counter() - started
        self.pid = os.getpid()

    def run(self, items: list[WorkItem]) -> list[ItemResult]:
        from ..compose import BatchItem
        from ..errors import RealCompoError

        settings = dict(items[0].settings)
        started = time.perf_counter()
        try:
            results = self.rc.generate_batch(
                [BatchItem(seed=item.seed, layout=item.layout, prompt=item.prompt) for item in items],
                negative_prompt=settings.get("negative_prompt") or "", height=settings.get("height"),
                width=settings.get("width"), num_steps=settings.get("num_steps"),
                guidance_scale=settings.get("guidance_scale"), mode=settings.get("mode") or "balanced")
        except RealCompoError as exc:  # e.g. a phrase missing from its prompt: the unit's items fail, the run goes on
            if len(items) > 1:  # find the culprit: run the items one by one
                return [result for item in items for result in self.run([item])]
            return [ItemResult(items[0].key, None, None, str(exc), time.perf_counter() - started)]
        share = (time.perf_counter() - started) / len(items)
        out = []
        for item, result in zip(items, results):
            record = result.record.model_dump(mode="json", exclude_none=True)
            record.pop("seconds", None)  # timings go to the manifest: the image bytes must not depend on them
            png = png_bytes(result.images[0], json.dumps(record, sort_keys=True))
            out.append(ItemResult(item.key, png, record, None, share))
        return out
