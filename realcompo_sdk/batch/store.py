"""The output folder of a batch run: images written atomically, one manifest line per outcome.

An item is done when the manifest holds an "ok" line for its key *and* its image exists. The
manifest is appended only after the image is in place, so a crash between the two leaves an
image without a line: the rerun makes that image again (same seed, same batch, same pixels) and
replaces it atomically. Either way every image ends up present exactly once, never half-written.

`manifest.jsonl` is JSON Lines rather than Parquet: appending one line is atomic enough to
survive a kill between images, it needs no extra dependency, and `pandas.read_json(...,
lines=True)` or pyarrow read it when a table is wanted.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from ..errors import RealCompoError
from ..images import write_atomic

MANIFEST = "manifest.jsonl"
IMAGES = "images"
# Testing only: "POINT:N" kills this process with SIGKILL at the N-th time (1-based) it reaches
# POINT: "part" (image bytes written to the temporary file, not yet renamed), "image" (image in
# place, manifest line not written), "line" (manifest line written).
FAULT_ENV = "REALCOMPO_BATCH_FAULT"


class OutputStore:
    """The run's single writer of `root`: a lock refuses a second run on the same folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise RealCompoError(f"-o {self.root}: is a file; give a folder for the images and manifest")
        try:
            (self.root / IMAGES).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RealCompoError(f"-o {self.root}: cannot create the output folder ({exc.strerror})") from None
        self._lock = _lock(self.root / ".lock")
        # We hold the lock, so no live writer owns a temporary file here: a killed run's are debris.
        for part in (self.root / IMAGES).glob(".*.part"):
            part.unlink(missing_ok=True)
        self.manifest = self.root / MANIFEST
        self._faults = _parse_fault(os.environ.get(FAULT_ENV))
        self._seen: dict[str, int] = {}

    def close(self) -> None:
        self._lock.close()  # releases the lock

    def done_keys(self, records: list[dict[str, Any]] | None = None) -> set[str]:
        """Keys with an "ok" manifest line whose image exists (from `records` when already read)."""
        done = set()
        for record in self.records() if records is None else records:
            if record.get("status") == "ok" and record.get("file") and (self.root / record["file"]).is_file():
                done.add(record["key"])
        return done

    def records(self) -> list[dict[str, Any]]:
        """Every complete manifest line (a line cut by a kill is ignored)."""
        if not self.manifest.exists():
            return []
        out = []
        for line in self.manifest.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def write_image(self, filename: str, png: bytes) -> Path:
        def save(f: Any) -> None:
            f.write(png)
            f.flush()
            self._fault("part")

        path = write_atomic(self.root / IMAGES / filename, save)
        self._fault("image")
        return path

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True) + "\n"
        # A line cut short by an earlier kill would glue onto this one: start on a fresh line.
        prefix = ""
        if self.manifest.exists() and self.manifest.stat().st_size:
            with open(self.manifest, "rb") as f:
                f.seek(-1, os.SEEK_END)
                prefix = "" if f.read(1) == b"\n" else "\n"
        with open(self.manifest, "a", encoding="utf-8") as f:
            f.write(prefix + line)
            f.flush()
            os.fsync(f.fileno())
        self._fault("line")

    def _fault(self, point: str) -> None:
        if point not in self._faults:
            return
        self._seen[point] = self._seen.get(point, 0) + 1
        if self._seen[point] == self._faults[point]:
            os.kill(os.getpid(), signal.SIGKILL)


def _lock(path: Path) -> Any:
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; one run per folder is then up to the user
        return open(path, "a")  # noqa: SIM115
    handle = open(path, "a")  # noqa: SIM115 - held open for the whole run
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise RealCompoError(f"{path.parent}: another `realcompo batch` is writing to this folder; wait for it "
                             "or give another -o") from None
    return handle


def _parse_fault(text: str | None) -> dict[str, int]:
    if not text:
        return {}
    point, _, count = text.partition(":")
    return {point: int(count or 1)}
