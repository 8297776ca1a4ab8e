"""The layout picture: every region kind is drawn in its object's colour."""

from __future__ import annotations

from realcompo_sdk.images import PALETTE, layout_overlay
from realcompo_sdk.layout import Box, Keypoint, Layout, LayoutObject, Point


def colour_at(image, x: float, y: float) -> tuple[int, int, int]:
    return image.getpixel((round(x * (image.width - 1)), round(y * (image.height - 1))))


def test_boxes_points_scribbles_and_keypoints_are_drawn_in_their_colours() -> None:
    layout = Layout(prompt="a cat, a dog, a kite and a man", objects=[
        LayoutObject(phrase="a cat", box=Box(x0=0.1, y0=0.5, x1=0.4, y1=0.9)),
        LayoutObject(phrase="a dog", point=Point(x=0.7, y=0.7)),
        LayoutObject(phrase="a kite", scribble=[Point(x=0.55, y=0.1), Point(x=0.95, y=0.1)]),
        LayoutObject(phrase="a man", keypoints=[Keypoint(name="nose", x=0.2, y=0.2)]),
    ])  # fmt: skip
    image = layout_overlay(layout, size=400)
    assert image.size == (400, 400)
    assert colour_at(image, 0.25, 0.9) == PALETTE[0]  # the box's bottom edge
    assert colour_at(image, 0.7, 0.7) == PALETTE[1]  # the point
    assert colour_at(image, 0.75, 0.1) == PALETTE[2]  # the middle of the scribble stroke
    assert colour_at(image, 0.2, 0.2) == PALETTE[3]  # the keypoint
    assert colour_at(image, 0.25, 0.7) == (245, 245, 245)  # inside the box: background
