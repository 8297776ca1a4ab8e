"""`realcompo batch`: validate every job, plan layouts concurrently, then sample units on an engine.

Stages, each timed in the summary:
1. validate: the jobs file, the adapters' ids and options (no weights), the output folder;
2. plan: jobs given as prompts are planned concurrently (bounded threads; the planners' own
   retries, backoff and cache apply), before any model loads, so no GPU waits on HTTP;
3. generate: units (items sharing a batched forward) run on the engine, `local` (this process)
   or `ray` (one model replica per Ray actor); the driver writes every image and manifest line.
Rerunning the same command skips the items already done (see `store.py`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import RealCompoError
from ..layout import Layout
from .jobs import InvalidJob, Job, read_jobs
from .store import OutputStore
from .units import Unit, make_items, make_units
from .worker import ItemResult, ModelConfig, UnitWorker


@dataclass
class BatchOptions:
    jobs: str | Path
    output: str | Path
    engine: Literal["local", "ray"] = "local"
    workers: int = 1  # ray: actors, each with one model replica
    gpus_per_worker: float = 0  # ray: GPUs each actor asks for (models then run on cuda)
    batch_size: int = 4  # items per batched forward
    ray_address: str | None = None  # None: start a local Ray instance for this run
    max_failures: int | None = None  # stop once more items than this have failed
    seeds: tuple[int, ...] = (0,)  # for jobs that name none
    defaults: dict[str, Any] = field(default_factory=dict)  # SETTINGS values for jobs that set none
    planner: str = "rules"
    planner_options: dict[str, Any] = field(default_factory=dict)
    plan_concurrency: int = 8
    progress: bool = True


@dataclass
class BatchSummary:
    images: int = 0  # written by this run
    skipped: int = 0  # done by an earlier run
    failures: list[dict[str, Any]] = field(default_factory=list)  # line, job, seed, error
    seconds: dict[str, float] = field(default_factory=dict)  # per stage
    stopped: str | None = None  # why the run stopped early

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds["generate"] if self.seconds.get("generate") else 0.0


class TooManyFailures(RealCompoError):
    pass


def run_batch(options: BatchOptions, model: ModelConfig, log: Callable[[str], None] = print) -> BatchSummary:
    summary = BatchSummary()
    started = time.perf_counter()
    if options.batch_size < 1 or options.workers < 1:
        raise RealCompoError("--batch-size and --workers must be at least 1")
    if not options.gpus_per_worker >= 0:  # also NaN
        raise RealCompoError(f"--gpus-per-worker must be 0 or more (a fraction shares a GPU), got {options.gpus_per_worker}")
    jobs, invalid = read_jobs(options.jobs, options.seeds)
    _check_models(model)
    store = OutputStore(options.output)
    try:
        _stages(options, model, jobs, invalid, store, summary, started, log)
    except TooManyFailures as exc:
        summary.stopped = str(exc)
    finally:
        store.close()
    return summary


def _stages(options: BatchOptions, model: ModelConfig, jobs: list[Job], invalid: list[InvalidJob], store: OutputStore,
            summary: BatchSummary, started: float, log: Callable[[str], None]) -> None:
    previous = store.records()
    done = store.done_keys(previous)
    for bad in invalid:
        _fail(summary, store, previous, {"status": "invalid", "line": bad.line, "error": bad.error}, log, options)
    summary.seconds["validate"] = time.perf_counter() - started

    started = time.perf_counter()
    planned = _plan(jobs, options, summary, store, previous, log)
    summary.seconds["plan"] = time.perf_counter() - started

    run_config = {**model.model_dump(mode="json"), "defaults": options.defaults}
    run_config.pop("threads")  # threads change rounding, not what the image is of
    items = make_items(planned, options.defaults, run_config)
    units = make_units(items, options.batch_size)
    pending = [u for u in units if any(i.key not in done for i in u.items)]
    summary.skipped = sum(1 for i in items if i.key in done)
    if summary.skipped:
        log(f"{summary.skipped} of {len(items)} images already done in {options.output}; {len(items) - summary.skipped} to make")
    started = time.perf_counter()
    try:
        _generate(pending, done, options, model, summary, store, log)
    finally:
        summary.seconds["generate"] = time.perf_counter() - started


def _check_models(model: ModelConfig) -> None:
    """Ids, options and latent compatibility, before any weights load (workers load them)."""
    from ..compose import _check_before_loading

    _check_before_loading(model.t2i, model.t2i_options, list(model.l2i), [model.l2i_options] * len(model.l2i), None)
    from ..settings import check_balance

    check_balance(model.balance)


def _plan(jobs: list[Job], options: BatchOptions, summary: BatchSummary, store: OutputStore,
          previous: list[dict[str, Any]], log: Callable[[str], None]) -> list[tuple[Job, Layout]]:
    """Each job's layout: its own, or the planner's (concurrently, bounded)."""
    to_plan = [job for job in jobs if job.spec.layout is None]
    layouts: dict[int, Layout] = {job.line: job.spec.layout for job in jobs if job.spec.layout is not None}
    if to_plan:
        from .. import registry

        planner = registry.create("planner", options.planner, **options.planner_options)

        def plan(job: Job) -> Layout | str:
            try:
                return planner.plan(job.spec.prompt or "")
            except RealCompoError as exc:
                return str(exc)

        with ThreadPoolExecutor(max_workers=max(1, options.plan_concurrency)) as pool:
            for job, outcome in zip(to_plan, pool.map(plan, to_plan)):
                if isinstance(outcome, str):
                    _fail(summary, store, previous, {"status": "plan_failed", "line": job.line, "job": job.name,
                                                     "error": outcome}, log, options)
                else:
                    layouts[job.line] = outcome
    return [(job, layouts[job.line]) for job in jobs if job.line in layouts]


def _generate(units: list[Unit], done: set[str], options: BatchOptions, model: ModelConfig, summary: BatchSummary,
              store: OutputStore, log: Callable[[str], None]) -> None:
    todo = sum(1 for u in units for i in u.items if i.key not in done)
    if not todo:
        return
    bar = _progress(todo, options.progress)
    engine = _local_engine if options.engine == "local" else _ray_engine
    try:
        for unit, results, worker in engine(units, options, model, summary):
            for item, result in zip(unit.items, results):
                if item.key in done:  # made again with its unit, already in place: keep the first
                    continue
                if result.error is not None:
                    _fail(summary, store, [], {"status": "failed", "key": item.key, "line": item.line, "job": item.job,
                                               "seed": item.seed, "error": result.error}, log, options)
                else:
                    assert result.png is not None and result.record is not None
                    store.write_image(item.filename, result.png)
                    store.append({"status": "ok", "key": item.key, "line": item.line, "job": item.job, "seed": item.seed,
                                  "prompt": item.prompt, "file": f"images/{item.filename}", "unit": unit.index,
                                  "seconds": round(result.seconds, 4), "worker": worker, "record": result.record})
                    summary.images += 1
                done.add(item.key)
                bar(1)
    finally:
        bar(0, close=True)


def _local_engine(units: list[Unit], options: BatchOptions, model: ModelConfig,
                  summary: BatchSummary) -> Iterator[tuple[Unit, list[ItemResult], str]]:
    started = time.perf_counter()
    worker = UnitWorker(model)
    summary.seconds["load"] = time.perf_counter() - started
    for unit in units:
        yield unit, worker.run(list(unit.items)), f"local:{worker.pid}"


def _ray_engine(units: list[Unit], options: BatchOptions, model: ModelConfig,
                summary: BatchSummary) -> Iterator[tuple[Unit, list[ItemResult], str]]:
    from .ray_engine import run_on_ray

    yield from run_on_ray(units, options, model)


def _fail(summary: BatchSummary, store: OutputStore, previous: list[dict[str, Any]], record: dict[str, Any],
          log: Callable[[str], None], options: BatchOptions) -> None:
    error = " ".join(str(record["error"]).split())
    record = {**record, "error": error}
    where = f"line {record['line']}" + (f" ({record['job']}, seed {record['seed']})" if "seed" in record else "")
    log(f"{record['status']}: {where}: {error}")
    summary.failures.append(record)
    if record not in previous:  # a rerun does not repeat a known invalid line
        store.append(record)
    if options.max_failures is not None and len(summary.failures) > options.max_failures:
        raise TooManyFailures(f"stopped: {len(summary.failures)} failures, more than --max-failures {options.max_failures}")


def _progress(total: int, enabled: bool) -> Callable[..., None]:
    if not enabled:
        return lambda n, close=False: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="images", unit="img")

    def update(n: int, close: bool = False) -> None:
        bar.update(n)
        if close:
            bar.close()

    return update



__all__ = ["BatchOptions", "BatchSummary", "InvalidJob", "ModelConfig", "run_batch"]
