"""Resumable batch generation (`realcompo batch`): jobs files, a planning stage, units sampled
on a local or Ray engine, atomic outputs and a manifest. See docs/batch.md."""

from .jobs import InvalidJob, Job, JobSpec, parse_seeds, read_jobs
from .runner import BatchOptions, BatchSummary, run_batch
from .worker import ModelConfig

__all__ = ["BatchOptions", "BatchSummary", "InvalidJob", "Job", "JobSpec", "ModelConfig", "parse_seeds", "read_jobs",
           "run_batch"]
