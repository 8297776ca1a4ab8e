"""The Shapes world for RealCompo: procedural scenes, a caption grammar, an exact evaluator, and
tiny trained model folders (`weights/shapes-sd`, a Stable Diffusion pipeline; `weights/shapes-controlnet`,
a segmentation ControlNet on it; `weights/shapes-gligen`, a GLIGEN pipeline, when shipped).

Importing this package imports numpy only; the training scripts import torch and diffusers.
"""

from __future__ import annotations

from pathlib import Path

from .captions import CaptionError, CaptionSpec, ObjectSpec, format_caption, parse_caption, sample_spec
from .evaluate import (
    DetectedObject,
    PromptEvaluation,
    detect_objects,
    evaluate_image,
    realism_fd,
    realism_features,
    realism_score,
    summarize,
)
from .scenes import Scene, SceneBatch, SceneObject, generate_scenes, scenes_for_caption

__version__ = "0.1.0"

WEIGHTS_DIR = Path(__file__).parent / "weights"


def weights_path(name: str) -> Path:
    """Folder of a shipped model: `shapes-sd` (StableDiffusionPipeline), `shapes-controlnet`
    (ControlNetModel) or `shapes-gligen` (StableDiffusionGLIGENPipeline)."""
    folder = WEIGHTS_DIR / name
    if not ((folder / "model_index.json").exists() or (folder / "config.json").exists()):
        raise FileNotFoundError(
            f"no trained weights at {folder}; train them with "
            "`python -m realcompo_plugin_shapes.training.train_all --out DIR` and copy "
            f"DIR/{name} there"
        )
    return folder


__all__ = [
    "CaptionError",
    "CaptionSpec",
    "DetectedObject",
    "ObjectSpec",
    "PromptEvaluation",
    "Scene",
    "SceneBatch",
    "SceneObject",
    "WEIGHTS_DIR",
    "detect_objects",
    "evaluate_image",
    "format_caption",
    "generate_scenes",
    "parse_caption",
    "realism_fd",
    "realism_features",
    "realism_score",
    "sample_spec",
    "scenes_for_caption",
    "summarize",
    "weights_path",
]
