"""Ready-made poses for keypoint layouts: place a person by giving a box.

    from realcompo_plugin_controlnet.poses import standing_person
    man = LayoutObject(phrase="man", keypoints=standing_person(0.05, 0.1, 0.45, 0.95))
"""

from __future__ import annotations

from collections.abc import Iterable

from realcompo_sdk.layout import COCO18_KEYPOINTS, Keypoint

# A person standing and facing the viewer, arms slightly apart, in the unit square (their right
# side is on the image's left, as OpenPose labels it).
STANDING: dict[str, tuple[float, float]] = {
    "nose": (0.5, 0.1), "neck": (0.5, 0.22),
    "right_shoulder": (0.35, 0.22), "right_elbow": (0.3, 0.4), "right_wrist": (0.28, 0.55),
    "left_shoulder": (0.65, 0.22), "left_elbow": (0.7, 0.4), "left_wrist": (0.72, 0.55),
    "right_hip": (0.42, 0.55), "right_knee": (0.42, 0.75), "right_ankle": (0.42, 0.95),
    "left_hip": (0.58, 0.55), "left_knee": (0.58, 0.75), "left_ankle": (0.58, 0.95),
    "right_eye": (0.47, 0.08), "left_eye": (0.53, 0.08), "right_ear": (0.44, 0.1), "left_ear": (0.56, 0.1),
}  # fmt: skip
assert set(STANDING) == set(COCO18_KEYPOINTS)


def standing_person(x0: float, y0: float, x1: float, y1: float, *, hidden: Iterable[str] = (),
                    pose: dict[str, tuple[float, float]] | None = None) -> list[Keypoint]:
    """The keypoints of `pose` (default: `STANDING`) scaled into the box (x0, y0)-(x1, y1).

    Keypoints named in `hidden` are marked invisible (not drawn, not in the balancer's region).
    """
    hidden = set(hidden)
    unknown = hidden - set(COCO18_KEYPOINTS)
    if unknown:
        raise ValueError(f"unknown keypoint names {sorted(unknown)}; known names: {', '.join(COCO18_KEYPOINTS)}")
    return [Keypoint(name=name, x=x0 + (x1 - x0) * x, y=y0 + (y1 - y0) * y, visible=name not in hidden)
            for name, (x, y) in (pose or STANDING).items()]
