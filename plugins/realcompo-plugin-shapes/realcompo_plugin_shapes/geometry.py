"""Shape geometry shared by the renderer and the evaluator.

Every shape is defined by a signed distance function in *extent units*: coordinates `(u, v)`
relative to the centre of the shape's tight box, divided by its extent (the larger side of that
box), y pointing down. Negative inside. Triangles point up and stars have a tip up; nothing is
rotated, which keeps shapes learnable by tiny models and classifiable by template matching.
"""

from __future__ import annotations

import math

import numpy as np

STAR_OUTER = 1.0 / (2.0 * math.sin(math.radians(72)))  # star width is exactly 1 extent
STAR_INNER = 0.47 * STAR_OUTER
STAR_HEIGHT = STAR_OUTER * (1.0 + math.cos(math.radians(36)))  # ≈ 0.951
STAR_CENTRE_DY = STAR_OUTER - STAR_HEIGHT / 2.0  # star centre lies below its box centre

BOX_ASPECT: dict[str, tuple[float, float]] = {
    # (width, height) of the tight box in extent units.
    "circle": (1.0, 1.0),
    "square": (1.0, 1.0),
    "triangle": (1.0, 1.0),
    "star": (1.0, STAR_HEIGHT),
}

_TRI_NORM = math.sqrt(1.25)
_SECTOR = 2.0 * math.pi / 5.0
# Star edge from the tip T = (R, 0) to the inner vertex I at 36°, in the folded sector frame.
_T = np.array([STAR_OUTER, 0.0])
_I = np.array([STAR_INNER * math.cos(_SECTOR / 2), STAR_INNER * math.sin(_SECTOR / 2)])
_edge = _I - _T
_STAR_N = np.array([_edge[1], -_edge[0]]) / np.linalg.norm(_edge)
if _STAR_N @ (-_T) > 0:  # make the normal point away from the centre
    _STAR_N = -_STAR_N
# Python floats, so that float32 inputs stay float32 (NumPy scalars would promote to float64).
_NX, _NY, _TX, _TY = (float(x) for x in (*_STAR_N, *_T))


def shape_sdf(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (extent units, negative inside) of `shape` at box-centred coordinates."""
    if shape == "circle":
        return np.sqrt(u * u + v * v) - 0.5
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.5
    if shape == "triangle":
        # Apex (0, -0.5), base corners (±0.5, 0.5); the max of the three edge half-planes.
        side = (np.abs(u) - 0.5 * (v + 0.5)) / _TRI_NORM
        return np.maximum(side, v - 0.5)
    if shape == "star":
        y = v - STAR_CENTRE_DY
        rho = np.sqrt(u * u + y * y)
        phi = np.mod(np.arctan2(u, -y), _SECTOR)  # 0 at the top tip, clockwise
        phi = np.minimum(phi, _SECTOR - phi)  # fold onto the half-sector [0, 36°]
        qx, qy = rho * np.cos(phi), rho * np.sin(phi)
        return (qx - _TX) * _NX + (qy - _TY) * _NY
    raise ValueError(f"unknown shape {shape!r}; known shapes: circle, square, triangle, star")


def shape_keypoints(shape: str) -> np.ndarray:
    """(K, 2) keypoints in extent units: the shape's centre, then its vertices.

    Circles have no vertices; they get their four compass points (top, right, bottom, left).
    """
    if shape == "circle":
        return np.array([[0, 0], [0, -0.5], [0.5, 0], [0, 0.5], [-0.5, 0]], dtype=np.float64)
    if shape == "square":
        return np.array([[0, 0], [-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]], dtype=np.float64)
    if shape == "triangle":
        return np.array([[0, 1 / 6], [0, -0.5], [0.5, 0.5], [-0.5, 0.5]], dtype=np.float64)
    if shape == "star":
        angles = np.arange(5) * _SECTOR
        tips = np.stack([STAR_OUTER * np.sin(angles), STAR_CENTRE_DY - STAR_OUTER * np.cos(angles)], 1)
        return np.concatenate([[[0.0, STAR_CENTRE_DY]], tips]).astype(np.float64)
    raise ValueError(f"unknown shape {shape!r}")


MAX_KEYPOINTS = 6
