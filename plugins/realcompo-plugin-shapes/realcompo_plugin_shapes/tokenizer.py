"""The Shapes world's CLIP-format tokenizer (loads with `transformers.CLIPTokenizer`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from .world import vocabulary

MODEL_MAX_LENGTH = 32
"""The longest caption of the grammar ("a big yellow star, a big purple triangle, a big orange
square and a big green circle on a beige background") is 25 tokens with the start and end
tokens; 32 leaves room and keeps the text encoder's attention small (SD uses 77)."""


def _tokenizer_files() -> ModuleType:
    try:
        from realcompo_sdk.testing import tokenizer_files

        return tokenizer_files
    except ImportError:
        # realcompo_sdk's package __init__ needs pydantic and pluggy, which a bare training
        # machine may lack; tokenizer_files itself is standard-library only, so load it alone.
        spec = importlib.util.find_spec("realcompo_sdk")
        if spec is None or not spec.submodule_search_locations:
            raise
        path = Path(next(iter(spec.submodule_search_locations))) / "testing" / "tokenizer_files.py"
        file_spec = importlib.util.spec_from_file_location("_realcompo_tokenizer_files", path)
        assert file_spec is not None and file_spec.loader is not None
        module = importlib.util.module_from_spec(file_spec)
        file_spec.loader.exec_module(module)
        return module


def write_tokenizer(folder: str | Path) -> Path:
    """Write the tokenizer files into `folder`: every grammar word becomes a single token."""
    return _tokenizer_files().write_clip_tokenizer(folder, vocabulary(), model_max_length=MODEL_MAX_LENGTH)
