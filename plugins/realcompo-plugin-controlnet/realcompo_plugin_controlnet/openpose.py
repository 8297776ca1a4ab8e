"""Our own OpenPose renderer: layout keypoints → the skeleton image OpenPose ControlNets were trained on.

The picture follows the OpenPose body convention (COCO-18 keypoints, `realcompo_sdk.layout.COCO18_KEYPOINTS`):
on a black canvas, each of the 17 limbs is a filled ellipse along the segment between its two
joints, in its standard colour dimmed to 60 %, then each joint is a filled disc in its full colour.
Sizes are OpenPose's at a 512-pixel short side (limb half-width 4 px, joint radius 4 px) and scale
with the image's short side, as an annotator that detects at 512 and resizes to the output would
(never below 1 px, so tiny test images still show the skeleton).

Only visible keypoints are drawn; a limb is drawn when both its ends are. A missing neck is put
halfway between the shoulders (OpenPose derives the neck that way) when both are visible.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from PIL import Image, ImageDraw

from realcompo_sdk.layout import COCO18_KEYPOINTS, Keypoint, Layout

# Colour of keypoint i (and of limb i), RGB, in COCO-18 order: a hue wheel from red through green
# and blue to magenta in steps of 85.
COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip

# The 17 limbs OpenPose draws, as pairs of keypoint names; limb i is drawn in COLORS[i].
LIMBS: tuple[tuple[str, str], ...] = (
    ("neck", "right_shoulder"), ("neck", "left_shoulder"),
    ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"),
    ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
    ("neck", "right_hip"), ("right_hip", "right_knee"), ("right_knee", "right_ankle"),
    ("neck", "left_hip"), ("left_hip", "left_knee"), ("left_knee", "left_ankle"),
    ("neck", "nose"), ("nose", "right_eye"), ("right_eye", "right_ear"),
    ("nose", "left_eye"), ("left_eye", "left_ear"),
)  # fmt: skip

LIMB_DIM = 0.6  # limbs are drawn at 60 % of their colour, joints at full colour
REFERENCE_SIZE = 512  # sizes below are OpenPose's at this short side
LIMB_HALF_WIDTH = 4.0
JOINT_RADIUS = 4.0


def keypoint_color(name: str) -> tuple[int, int, int]:
    return COLORS[COCO18_KEYPOINTS.index(name)]


def limb_color(index: int) -> tuple[int, int, int]:
    r, g, b = COLORS[index]
    return (int(r * LIMB_DIM), int(g * LIMB_DIM), int(b * LIMB_DIM))


def person_points(keypoints: Sequence[Keypoint], height: int, width: int) -> dict[str, tuple[float, float]]:
    """Pixel positions (x, y) of the visible keypoints, with the neck derived when missing."""
    points = {k.name: (k.x * width, k.y * height) for k in keypoints if k.visible}
    if "neck" not in points and "right_shoulder" in points and "left_shoulder" in points:
        (xr, yr), (xl, yl) = points["right_shoulder"], points["left_shoulder"]
        points["neck"] = ((xr + xl) / 2, (yr + yl) / 2)
    return points


def _limb_polygon(a: tuple[float, float], b: tuple[float, float], half_width: float) -> list[tuple[float, float]]:
    """A filled ellipse with its long axis from a to b (semi-axes: half the length, half_width)."""
    (x0, y0), (x1, y1) = a, b
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    semi_major = math.hypot(x1 - x0, y1 - y0) / 2
    angle = math.atan2(y1 - y0, x1 - x0)
    ca, sa = math.cos(angle), math.sin(angle)
    points = []
    for step in range(36):
        t = 2 * math.pi * step / 36
        u, v = semi_major * math.cos(t), half_width * math.sin(t)
        points.append((cx + u * ca - v * sa, cy + u * sa + v * ca))
    return points


def draw_person(draw: ImageDraw.ImageDraw, points: dict[str, tuple[float, float]], scale: float = 1.0) -> None:
    """Limbs first (dimmed), then joints (full colour), as OpenPose draws one person."""
    half_width = max(LIMB_HALF_WIDTH * scale, 1.0)
    radius = max(JOINT_RADIUS * scale, 1.0)
    for i, (start, end) in enumerate(LIMBS):
        if start in points and end in points:
            draw.polygon(_limb_polygon(points[start], points[end], half_width), fill=limb_color(i))
    for name in COCO18_KEYPOINTS:
        if name in points:
            x, y = points[name]
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=keypoint_color(name))


def render_openpose(people: Layout | Iterable[Sequence[Keypoint]], height: int, width: int) -> Image.Image:
    """An RGB OpenPose image of `height` x `width` pixels: one skeleton per person.

    `people` is a layout (its keypoint objects are drawn, in order; other objects are not people
    and are skipped) or an iterable of keypoint lists.
    """
    if isinstance(people, Layout):
        people = [o.keypoints for o in people.objects if o.keypoints is not None]
    image = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    scale = min(height, width) / REFERENCE_SIZE
    for keypoints in people:
        draw_person(draw, person_points(keypoints, height, width), scale)
    return image

