"""`realcompo batch`: jobs files validated line by line, bad jobs recorded while the rest runs,
reruns skip what is done, and a run killed at any point (SIGKILL, including mid-write) resumes
to exactly the images of an uninterrupted run, byte for byte. On the bundled Shapes models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from realcompo_sdk.batch import BatchOptions, ModelConfig, parse_seeds, read_jobs, run_batch
from realcompo_sdk.batch.store import FAULT_ENV
from realcompo_sdk.errors import RealCompoError

JOBS = [
    {"id": "circle-square", "prompt": "a red circle to the left of a blue square", "seeds": [0, 1]},
    {"prompt": "a green triangle above a yellow circle", "num_seeds": 2},
    {"layout": {"prompt": "a blue square", "objects": [
        {"phrase": "blue square", "box": {"x0": 0.2, "y0": 0.2, "x1": 0.8, "y1": 0.8}}]}, "seeds": [3, 4]},
]
FLAGS = ["--steps", "4", "--batch-size", "2", "--no-progress"]


def write_jobs(path: Path, jobs: list[dict] | None = None, extra_lines: tuple[str, ...] = ()) -> Path:
    path.write_text("\n".join([json.dumps(j) for j in (jobs or JOBS)] + list(extra_lines)) + "\n")
    return path


def images(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "images").iterdir())}


def ok_lines(out: Path) -> list[dict]:
    return [r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines()) if r["status"] == "ok"]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "realcompo_sdk.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


# ---- jobs files ------------------------------------------------------------------------------
def test_every_bad_line_is_reported_with_its_number_and_the_rest_is_kept(tmp_path):
    path = write_jobs(tmp_path / "jobs.jsonl", extra_lines=(
        "not json", '{"prompt": "a cat", "seeds": [0], "num_seeds": 2}', '{"prompt": "a cat", "colour": "red"}',
        '{"prompt": "a cat", "num_steps": 0}', '[1, 2]', '{"seeds": [1]}', '{"id": "circle-square", "prompt": "a dog"}',
        '{"prompt": "a cat", "seeds": [-1]}'))
    jobs, invalid = read_jobs(path)
    assert [j.line for j in jobs] == [1, 2, 3]
    assert [j.seeds for j in jobs] == [(0, 1), (0, 1), (3, 4)]
    reasons = {bad.line: bad.error for bad in invalid}
    assert sorted(reasons) == [4, 5, 6, 7, 8, 9, 10, 11]
    assert "not valid JSON" in reasons[4]
    assert "'seeds' or 'num_seeds', not both" in reasons[5]
    assert "colour" in reasons[6] and "Extra inputs" in reasons[6]
    assert "num_steps" in reasons[7]
    assert "JSON object" in reasons[8]
    assert "'prompt', a 'layout', or both" in reasons[9]
    assert "already used by line 1" in reasons[10]
    assert "outside 0" in reasons[11]


def test_a_prompt_file_is_one_prompt_per_line_with_the_run_seeds(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# benchmark prompts\na red circle\n\na blue square\n")
    jobs, invalid = read_jobs(path, default_seeds=parse_seeds("0-2,7"))
    assert invalid == [] and [(j.line, j.spec.prompt, j.seeds) for j in jobs] == [
        (2, "a red circle", (0, 1, 2, 7)), (4, "a blue square", (0, 1, 2, 7))]
    for bad in ("3-1", "x", "", "-4"):
        with pytest.raises(RealCompoError, match="--seeds"):
            parse_seeds(bad)


def test_a_missing_or_empty_jobs_file_is_one_clear_error(tmp_path):
    with pytest.raises(RealCompoError, match="no such file"):
        read_jobs(tmp_path / "nope.jsonl")
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(RealCompoError, match="holds no job"):
        read_jobs(tmp_path / "empty.txt")


# ---- runs ------------------------------------------------------------------------------------
def test_bad_jobs_are_recorded_the_rest_runs_and_a_rerun_skips_what_is_done(tmp_path):
    path = write_jobs(tmp_path / "jobs.jsonl", extra_lines=("not json", '{"prompt": "hello there"}'))
    options = BatchOptions(jobs=path, output=tmp_path / "out", batch_size=2, defaults={"num_steps": 4}, progress=False)
    logged: list[str] = []
    summary = run_batch(options, ModelConfig(t2i="shapes-sd", l2i=["shapes-controlnet"]), log=logged.append)
    assert summary.images == 6 and summary.skipped == 0
    assert [(f["status"], f["line"]) for f in summary.failures] == [("invalid", 4), ("plan_failed", 5)]
    assert any(line.startswith("invalid: line 4: not valid JSON") for line in logged)
    records = ok_lines(tmp_path / "out")
    assert len(records) == 6 and len({r["key"] for r in records}) == 6
    assert {r["file"] for r in records} == {f"images/{name}" for name in images(tmp_path / "out")}
    assert records[0]["record"]["batch"]["seeds"] == [0, 1] and records[0]["record"]["num_steps"] == 4
    before = images(tmp_path / "out")

    again = run_batch(options, ModelConfig(t2i="shapes-sd", l2i=["shapes-controlnet"]), log=logged.append)
    assert again.images == 0 and again.skipped == 6 and "load" not in again.seconds  # no model loaded
    assert images(tmp_path / "out") == before
    failures = [r for r in map(json.loads, (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()) if r["status"] != "ok"]
    assert len(failures) == 2  # known bad lines are not appended twice


def test_max_failures_stops_the_run(tmp_path):
    path = write_jobs(tmp_path / "jobs.jsonl", extra_lines=("x", "y", "z"))
    options = BatchOptions(jobs=path, output=tmp_path / "out", max_failures=1, defaults={"num_steps": 4}, progress=False)
    summary = run_batch(options, ModelConfig(t2i="shapes-sd", l2i=["shapes-controlnet"]), log=lambda _: None)
    assert summary.stopped and "more than --max-failures 1" in summary.stopped and summary.images == 0


def test_unknown_adapters_fail_before_any_job_runs(tmp_path):
    options = BatchOptions(jobs=write_jobs(tmp_path / "jobs.jsonl"), output=tmp_path / "out", progress=False)
    with pytest.raises(RealCompoError, match="glign"):
        run_batch(options, ModelConfig(t2i="shapes-sd", l2i=["glign"]))
    assert not (tmp_path / "out").exists()
    for bad, message in (({"batch_size": 0}, "at least 1"), ({"workers": 0}, "at least 1"),
                         ({"gpus_per_worker": -1}, "0 or more")):
        with pytest.raises(RealCompoError, match=message):
            run_batch(BatchOptions(jobs=options.jobs, output=tmp_path / "out", progress=False, **bad),
                      ModelConfig(t2i="shapes-sd", l2i=["shapes-controlnet"]))
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("batch-reference")
    result = cli("batch", str(write_jobs(root / "jobs.jsonl")), "-o", str(root / "out"), *FLAGS)
    assert result.returncode == 0, result.stderr
    assert "6 images written" in result.stdout
    return images(root / "out")


@pytest.mark.parametrize("fault", ["part:1", "part:4", "image:3", "line:1", "line:5"])
def test_a_killed_run_resumes_to_the_uninterrupted_images(tmp_path, uninterrupted, fault):
    jobs = write_jobs(tmp_path / "jobs.jsonl")
    killed = cli("batch", str(jobs), "-o", str(tmp_path / "out"), *FLAGS, env={FAULT_ENV: fault})
    assert killed.returncode == -9, killed.stderr  # SIGKILL, at that point
    resumed = cli("batch", str(jobs), "-o", str(tmp_path / "out"), *FLAGS)
    assert resumed.returncode == 0, resumed.stderr
    assert images(tmp_path / "out") == uninterrupted  # every image once, byte for byte
    assert not list((tmp_path / "out" / "images").glob(".*"))  # no partial file left
    keys = [r["key"] for r in ok_lines(tmp_path / "out")]
    assert len(keys) == len(set(keys)) == 6


# ---- the Ray engine ----------------------------------------------------------------------------
def _ray_processes(marker: str) -> list[int]:
    """Processes started with `marker` in their environment (Ray's, from one test run)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.fixture
def ray_run(tmp_path):
    """Runs `realcompo batch --engine ray --workers 2` on a private local Ray instance; afterwards
    waits until every process that run started is gone (a killed driver orphans Ray's agents,
    which exit on their own once they lose the raylet)."""
    pytest.importorskip("ray.data")
    import shutil
    import tempfile
    import time
    import uuid

    marker = f"REALCOMPO_TEST_RAY_RUN={uuid.uuid4().hex}"
    temp = tempfile.mkdtemp(prefix="rct")  # Ray's session files (short: socket paths are limited)

    def run(out: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return cli("batch", str(write_jobs(tmp_path / "jobs.jsonl")), "-o", str(out), *FLAGS, "--engine", "ray",
                   "--workers", "2", env={marker.split("=")[0]: marker.split("=")[1], "TMPDIR": temp, **(env or {})})

    yield run
    deadline = time.monotonic() + 120
    while _ray_processes(marker) and time.monotonic() < deadline:
        time.sleep(1)
    shutil.rmtree(temp, ignore_errors=True)
    assert _ray_processes(marker) == [], "Ray processes outlived the run"


def test_ray_with_two_workers_makes_the_local_images_byte_for_byte(tmp_path, uninterrupted, ray_run):
    result = ray_run(tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert images(tmp_path / "out") == uninterrupted
    workers = {r["worker"] for r in ok_lines(tmp_path / "out")}
    # Ray actors made them; which of the two replicas takes which unit is Ray's scheduling (one
    # actor that starts first may take all three units on a busy machine)
    assert 1 <= len(workers) <= 2 and all(w.startswith("ray:") for w in workers)


def test_a_killed_ray_worker_is_replaced_and_its_unit_retried(tmp_path, uninterrupted, ray_run):
    once = tmp_path / "killed-once"
    result = ray_run(tmp_path / "out", env={FAULT_ENV: "unit:1", "REALCOMPO_BATCH_FAULT_ONCE": str(once)})
    assert once.exists() and result.returncode == 0, result.stderr
    assert images(tmp_path / "out") == uninterrupted
    assert len({r["worker"] for r in ok_lines(tmp_path / "out")}) >= 2


def test_a_killed_ray_driver_resumes_to_the_uninterrupted_images(tmp_path, uninterrupted, ray_run):
    killed = ray_run(tmp_path / "out", env={FAULT_ENV: "line:3"})
    assert killed.returncode == -9, killed.stderr
    resumed = ray_run(tmp_path / "out")
    assert resumed.returncode == 0, resumed.stderr
    assert "3 of 6 images already done" in resumed.stderr
    assert images(tmp_path / "out") == uninterrupted
    assert not list((tmp_path / "out" / "images").glob(".*"))
