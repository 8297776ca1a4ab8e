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


def test_influence_grid_label_column_fits_long_adapter_ids() -> None:
    import numpy as np
    import torch

    from realcompo_sdk.images import influence_grid

    names = ["shapes-sd", "a-very-long-adapter-id-from-a-plugin"]
    influence = [torch.full((2, 1, 1, 4, 4), 0.5) for _ in range(3)]  # (K, batch, 1, h, w) per step
    grid = np.asarray(influence_grid(influence, names, columns=3, cell=32))
    cells_x = grid.shape[1] - 3 * 32
    assert cells_x > 110  # wider than the default column, so the long id is not cut
    row = grid[16 + 32 + 10 : 16 + 32 + 22, :cells_x]  # the long id's text band
    dark_columns = np.flatnonzero((row < 128).any(axis=(0, 2)))
    assert dark_columns.max() > 110  # the text really runs past where the old column ended
