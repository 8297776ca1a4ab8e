"""On-disk cache of planned layouts, so a rerun costs nothing and replays the same layout.

An entry is one JSON file named by the SHA-256 of what determines the answer: the provider, the
model, the prompt, the options that change the reply (never secrets, never timeouts) and the
planner version (bumped whenever the prompt design changes). Files are written atomically
(temporary file, then rename), so a crash never leaves half an entry. A corrupt or unreadable
entry is ignored with a warning and planned again; the cache never makes planning fail.

Where: the ``cache_dir`` option, else ``$REALCOMPO_CACHE_DIR/plans``, else
``$XDG_CACHE_HOME/realcompo/plans``, else ``~/.cache/realcompo/plans``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..layout import Layout

CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """The plans folder: ``$REALCOMPO_CACHE_DIR/plans`` or the user cache folder's ``realcompo/plans``."""
    root = os.environ.get("REALCOMPO_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "plans"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "realcompo" / "plans"


def cache_key(*, provider: str, model: str, prompt: str, options: dict[str, Any], planner_version: str) -> str:
    """SHA-256 (hex) of the canonical JSON of everything that determines the layout.

    `options` must already be free of secrets and of settings that do not change the reply.
    """
    fields = {"provider": provider, "model": model, "prompt": prompt, "options": options,
              "planner_version": planner_version}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class PlanCache:
    """Layouts stored as ``<directory>/<key[:2]>/<key>.json``."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory is not None else default_cache_dir()

    def path_for(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> Layout | None:
        """The cached layout, or None on a miss or a corrupt entry (with a warning)."""
        path = self.path_for(key)
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            warnings.warn(f"layout cache entry {path} is corrupt (not UTF-8 text); ignoring it and planning again",
                          stacklevel=2)
            return None
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            warnings.warn(f"layout cache entry {path} cannot be read ({exc}); ignoring it and planning again",
                          stacklevel=2)
            return None
        try:
            entry = json.loads(text)
            if not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT or entry.get("key") != key:
                raise ValueError("not a layout cache entry of this format")
            return Layout.model_validate(entry["layout"])
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            warnings.warn(f"layout cache entry {path} is corrupt ({reason}); ignoring it and planning again",
                          stacklevel=2)
            return None

    def put(self, key: str, layout: Layout, *, meta: dict[str, Any] | None = None) -> Path | None:
        """Store `layout` atomically; returns the path, or None (with a warning) if it cannot be written."""
        path = self.path_for(key)
        entry = {
            "format": CACHE_FORMAT,
            "key": key,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "meta": meta or {},
            "layout": layout.model_dump(mode="json", exclude_none=True),
        }
        try:
            atomic_write_text(path, json.dumps(entry, indent=2, ensure_ascii=False) + "\n")
        except OSError as exc:
            warnings.warn(f"cannot write layout cache entry {path} ({exc}); the layout is not cached",
                          stacklevel=2)
            return None
        return path


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
