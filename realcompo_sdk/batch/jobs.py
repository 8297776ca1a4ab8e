"""Batch jobs: read a JSONL or plain prompt file, validate every line before any model loads.

A JSONL line is one job::

    {"id": "cat-dog", "prompt": "a cat to the left of a dog", "seeds": [0, 1]}
    {"layout": {"prompt": "...", "objects": [...]}, "num_seeds": 4, "num_steps": 30}

A job has a `prompt` (planned into a layout), a `layout`, or both (the layout is used, the prompt
replaces its prompt); `seeds` or `num_seeds` (seeds 0..n-1), else the run's default seeds; and
per-job overrides of `negative_prompt`, `num_steps`, `guidance_scale`, `height`, `width`, `mode`.
Any other file is a prompt file: one prompt per non-empty line, `#` starts a comment line.
A bad line is an `InvalidJob` carrying its line number and the reason; the others still run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import RealCompoError
from ..layout import Layout, format_validation_error
from ..settings import MAX_SEED, check_sampling


class JobSpec(BaseModel):
    """One line of a jobs file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = Field(None, min_length=1, max_length=100, description="a name for the job's files; default: line<N>")
    prompt: str | None = None
    layout: Layout | None = None
    seeds: list[int] | None = Field(None, min_length=1, max_length=10_000)
    num_seeds: int | None = Field(None, ge=1, le=10_000, description="seeds 0 .. num_seeds-1")
    negative_prompt: str | None = None
    num_steps: int | None = None
    guidance_scale: float | None = None
    height: int | None = None
    width: int | None = None
    mode: Literal["balanced", "t2i", "l2i"] | None = None

    @model_validator(mode="after")
    def _complete(self) -> JobSpec:
        if self.prompt is None and self.layout is None:
            raise ValueError("a job needs a 'prompt', a 'layout', or both")
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError("'prompt' is empty")
        if self.seeds is not None and self.num_seeds is not None:
            raise ValueError("give 'seeds' or 'num_seeds', not both")
        for seed in self.seeds or []:
            if not 0 <= seed <= MAX_SEED:
                raise ValueError(f"seed {seed} is outside 0 .. 2**63-1")
        check_sampling(num_steps=self.num_steps, guidance_scale=self.guidance_scale, height=self.height,
                       width=self.width, negative_prompt=self.negative_prompt or "")
        return self


@dataclass(frozen=True)
class Job:
    """A valid job with its seeds resolved."""

    line: int
    name: str  # its id, else "line<N>"
    spec: JobSpec
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class InvalidJob:
    line: int
    error: str


def parse_seeds(text: str) -> tuple[int, ...]:
    """'0,1,5' or '0-3' (inclusive) or a mix: '0-2,10'."""
    seeds: list[int] = []
    try:
        for part in text.replace(" ", "").split(","):
            first, dash, last = part.partition("-")
            lo, hi = int(first), int(last) if dash else int(first)
            if hi < lo:
                raise ValueError
            seeds += range(lo, hi + 1)
    except ValueError:
        raise RealCompoError(f"--seeds {text!r}: give seeds as '0,1,5', a range '0-3' (inclusive) or a mix '0-2,10'") from None
    if not seeds or any(not 0 <= s <= MAX_SEED for s in seeds):
        raise RealCompoError(f"--seeds {text!r}: seeds are whole numbers from 0 to 2**63-1")
    return tuple(dict.fromkeys(seeds))


def read_jobs(path: str | Path, default_seeds: tuple[int, ...] = (0,)) -> tuple[list[Job], list[InvalidJob]]:
    """Every job of the file, valid or not, in file order. Raises only when the file itself
    cannot be read or holds no job."""
    path = Path(path)
    if not path.is_file():
        raise RealCompoError(f"jobs file {path}: {'is a folder' if path.is_dir() else 'no such file'}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise RealCompoError(f"jobs file {path}: not UTF-8 text") from None
    jsonl = path.suffix == ".jsonl" or next((ln.lstrip().startswith("{") for ln in lines if ln.strip()), False)
    jobs: list[Job] = []
    invalid: list[InvalidJob] = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or (not jsonl and text.startswith("#")):
            continue
        try:
            spec = _parse_line(text, jsonl)
        except RealCompoError as exc:
            invalid.append(InvalidJob(number, str(exc)))
            continue
        seeds = tuple(spec.seeds) if spec.seeds else tuple(range(spec.num_seeds)) if spec.num_seeds else default_seeds
        jobs.append(Job(line=number, name=spec.id or f"line{number}", spec=spec, seeds=tuple(dict.fromkeys(seeds))))
    if not jobs and not invalid:
        raise RealCompoError(f"jobs file {path} holds no job: one JSON object or one prompt per line")
    names = [j.name for j in jobs]
    for job in jobs:
        if names.count(job.name) > 1 and job.spec.id is not None:
            first = next(j.line for j in jobs if j.name == job.name)
            if first != job.line:
                invalid.append(InvalidJob(job.line, f"id {job.name!r} is already used by line {first}; ids must be unique"))
    bad_lines = {i.line for i in invalid}
    return [j for j in jobs if j.line not in bad_lines], sorted(invalid, key=lambda i: i.line)


def _parse_line(text: str, jsonl: bool) -> JobSpec:
    if not jsonl:
        return _validate({"prompt": text})
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RealCompoError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, dict):
        raise RealCompoError(f"a job is a JSON object, got {type(data).__name__}")
    return _validate(data)


def _validate(data: dict[str, Any]) -> JobSpec:
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise RealCompoError(format_validation_error(exc, data, what="job")) from None
    except RealCompoError as exc:  # check_sampling inside the validator
        raise RealCompoError(str(exc)) from None
