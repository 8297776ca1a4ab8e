from __future__ import annotations

import numpy as np
import pytest
from realcompo_plugin_shapes.evaluate import realism_fd, realism_features, realism_score
from realcompo_plugin_shapes.scenes import generate_scenes


def _blur(image: np.ndarray) -> np.ndarray:
    # Separable [1, 2, 1]/4 kernel applied twice: roughly a Gaussian of sigma 1.
    x = image.astype(np.float32) / 255.0
    k = np.array([1, 4, 6, 4, 1], dtype=np.float32) / 16
    p = np.pad(x, ((2, 2), (2, 2), (0, 0)), mode="edge")
    x = sum(k[i] * p[i : i + 64, 2:-2] for i in range(5))
    p = np.pad(x, ((0, 0), (2, 2), (0, 0)), mode="edge")
    return sum(k[i] * p[:, i : i + 64] for i in range(5))


@pytest.fixture(scope="module")
def variants():
    real = generate_scenes(48, seed=77)
    flat = generate_scenes(48, seed=77, style="flat")
    rng = np.random.default_rng(0)
    return {
        "real": list(real.images),
        "blurred": [_blur(im) for im in real.images],
        "noised": [np.clip(im / 255.0 + rng.normal(0, 0.08, im.shape), 0, 1) for im in real.images],
        "flat": list(flat.images),
    }


def test_real_scenes_score_higher_than_degraded_ones(variants) -> None:
    scores = {name: float(np.mean([realism_score(im) for im in ims])) for name, ims in variants.items()}
    print(f"\nrealism scores: {scores}")
    for degraded in ("blurred", "noised", "flat"):
        assert scores["real"] > 2 * scores[degraded], degraded


def test_real_scenes_have_the_smallest_frechet_distance(variants) -> None:
    fd = {name: realism_fd(ims) for name, ims in variants.items()}
    print(f"\nrealism FD: {fd}")
    for degraded in ("blurred", "noised", "flat"):
        assert fd["real"] * 5 < fd[degraded], degraded


def test_features_are_finite_on_real_scenes(variants) -> None:
    feats = np.stack([realism_features(im) for im in variants["real"][:16]])
    assert np.isfinite(feats).all()
