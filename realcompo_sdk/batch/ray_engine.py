"""The Ray engine: Ray Data `map_batches` over units, an actor pool with one model replica each.

The driver keeps the plan, the output folder and the manifest; actors only sample. A unit is one
row, so each `map_batches` call samples one unit with the `UnitWorker` the actor built once.
Rows come back as units finish (in any order) and the driver writes them at once. An actor that
dies is restarted by Ray Data and its unit retried; if the driver dies, rerunning the command
resumes from the manifest like the local engine.

Without `--ray-address` a private local Ray instance is started for the run (temp files in a
fresh folder) and shut down after it; with one, the run joins that cluster, whose workers need
the same realcompo packages and model files as the driver.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import RealCompoError
from .units import Unit, WorkItem
from .worker import ItemResult, ModelConfig, UnitWorker

if TYPE_CHECKING:
    from .runner import BatchOptions


class _RayUnitWorker:
    """Ray Data's callable class: built once per actor, then called with one unit per batch."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.worker = UnitWorker(config)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        results = []
        for items_json in batch["items"]:
            items = [WorkItem.from_json(i) for i in json.loads(items_json)]
            _fault_once()
            results.append(json.dumps([_encode(r) for r in self.worker.run(items)]))
        return {"unit": batch["unit"], "results": np.array(results, dtype=object),
                "worker": np.array([f"ray:{self.worker.pid}"] * len(results), dtype=object)}


def run_on_ray(units: list[Unit], options: BatchOptions, model: ModelConfig) -> Iterator[tuple[Unit, list[ItemResult], str]]:
    if not units:
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not options.ray_address:  # a private instance on this machine: no cluster token to manage
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    try:
        import ray
        import ray.data
    except ImportError:
        raise RealCompoError("--engine ray needs Ray Data: pip install 'realcompo-sdk[ray]' (or 'ray[data]')") from None
    started_here, temp_dir = False, None
    if not ray.is_initialized():
        quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
        if options.ray_address:
            ray.init(address=options.ray_address, **quiet)
        else:
            temp_dir = tempfile.mkdtemp(prefix="rc-ray-")  # short: Ray's socket paths must fit in 107 bytes
            ray.init(address="local", num_cpus=options.workers * model.threads, include_dashboard=False,
                     num_gpus=options.workers * options.gpus_per_worker, _temp_dir=temp_dir, **quiet)
        started_here = True
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the runner shows one bar over images
        context.execution_options.preserve_order = False  # write each unit as soon as it is done
        rows = [{"unit": u.index, "items": json.dumps([i.to_json() for i in u.items])} for u in units]
        by_index = {u.index: u for u in units}
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            _RayUnitWorker, fn_constructor_args=(model.model_dump(mode="json"),),
            compute=ray.data.ActorPoolStrategy(size=options.workers), num_cpus=model.threads,
            num_gpus=options.gpus_per_worker, batch_size=1)
        for batch in dataset.iter_batches(batch_size=None):
            for index, results, worker in zip(batch["unit"], batch["results"], batch["worker"]):
                yield by_index[int(index)], [_decode(r) for r in json.loads(results)], str(worker)
    finally:
        if started_here:
            ray.shutdown()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _encode(result: ItemResult) -> dict[str, Any]:
    return {"key": result.key, "png": base64.b64encode(result.png).decode() if result.png is not None else None,
            "record": result.record, "error": result.error, "seconds": result.seconds}


def _decode(data: dict[str, Any]) -> ItemResult:
    png = base64.b64decode(data["png"]) if data["png"] is not None else None
    return ItemResult(key=data["key"], png=png, record=data["record"], error=data["error"], seconds=data["seconds"])


# Testing only: with REALCOMPO_BATCH_FAULT=unit:1 and REALCOMPO_BATCH_FAULT_ONCE=<a file path>,
# the first actor to start a unit creates that file and kills itself (SIGKILL); Ray Data must
# restart it and retry the unit.
def _fault_once() -> None:
    if os.environ.get("REALCOMPO_BATCH_FAULT") != "unit:1" or not os.environ.get("REALCOMPO_BATCH_FAULT_ONCE"):
        return
    try:
        fd = os.open(os.environ["REALCOMPO_BATCH_FAULT_ONCE"], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    import signal

    os.kill(os.getpid(), signal.SIGKILL)
