"""Our OpenPose renderer and segmentation-map painter, pixel by pixel."""

from __future__ import annotations

import numpy as np
import pytest
from realcompo_plugin_controlnet import openpose, segmentation
from realcompo_plugin_controlnet.poses import STANDING, standing_person

from realcompo_sdk.errors import LayoutError
from realcompo_sdk.layout import COCO18_KEYPOINTS, Box, Keypoint, Layout, LayoutObject, Mask


def _px(image, x: float, y: float) -> tuple[int, int, int]:
    """Pixel at normalised (x, y)."""
    w, h = image.size
    return tuple(int(v) for v in np.asarray(image)[min(int(y * h), h - 1), min(int(x * w), w - 1)])


# ---- OpenPose ------------------------------------------------------------------------------
def test_palette_and_skeleton_are_openpose_coco18():
    assert len(openpose.COLORS) == 18 and len(set(openpose.COLORS)) == 18
    assert len(openpose.LIMBS) == 17
    assert all(a in COCO18_KEYPOINTS and b in COCO18_KEYPOINTS for a, b in openpose.LIMBS)
    # every keypoint is reached by a limb; the neck is the hub of the body
    assert {n for limb in openpose.LIMBS for n in limb} == set(COCO18_KEYPOINTS)
    assert sum("neck" in limb for limb in openpose.LIMBS) == 5
    assert openpose.keypoint_color("nose") == (255, 0, 0) and openpose.keypoint_color("left_ear") == (255, 0, 85)
    assert openpose.limb_color(openpose.LIMBS.index(("neck", "nose"))) == (0, 0, 153)  # blue at 60 %


def test_joints_in_full_colour_limbs_dimmed_background_black():
    people = [standing_person(0.0, 0.0, 1.0, 1.0)]
    image = openpose.render_openpose(people, 512, 512)
    assert image.mode == "RGB" and image.size == (512, 512)
    for name, (x, y) in STANDING.items():
        if name not in {"right_eye", "left_eye", "right_ear", "left_ear", "nose"}:  # face points overlap
            assert _px(image, x, y) == openpose.keypoint_color(name), name
    # midpoint of the right thigh (right_hip → right_knee): that limb's colour at 60 %
    (xa, ya), (xb, yb) = STANDING["right_hip"], STANDING["right_knee"]
    limb = openpose.LIMBS.index(("right_hip", "right_knee"))
    assert _px(image, (xa + xb) / 2, (ya + yb) / 2) == openpose.limb_color(limb)
    assert _px(image, 0.02, 0.98) == (0, 0, 0) and _px(image, 0.95, 0.05) == (0, 0, 0)


def test_sizes_follow_openpose_at_512_and_scale_with_the_short_side():
    people = [[Keypoint(name="nose", x=0.5, y=0.5)]]
    for size, inside, outside in ((512, 3, 6), (1024, 7, 10)):
        array = np.asarray(openpose.render_openpose(people, size, size))
        c = size // 2
        assert tuple(array[c, c + inside]) == (255, 0, 0)
        assert tuple(array[c, c + outside]) == (0, 0, 0)


def test_invisible_keypoints_and_their_limbs_are_not_drawn():
    image = openpose.render_openpose([standing_person(0, 0, 1, 1, hidden={"left_knee"})], 256, 256)
    x, y = STANDING["left_knee"]
    assert _px(image, x, y) == (0, 0, 0)
    (xa, ya), (xb, yb) = STANDING["left_hip"], STANDING["left_knee"]
    assert _px(image, (xa + xb) / 2, (ya + yb) / 2) == (0, 0, 0)


def test_missing_neck_is_derived_from_the_shoulders():
    kps = [k for k in standing_person(0, 0, 1, 1) if k.name != "neck"]
    points = openpose.person_points(kps, 100, 200)
    assert points["neck"] == pytest.approx((100.0, 22.0))
    image = openpose.render_openpose([kps], 512, 512)
    assert _px(image, *STANDING["neck"]) == openpose.keypoint_color("neck")


def test_layout_people_are_drawn_other_objects_skipped_and_size_is_height_by_width():
    layout = Layout(prompt="a man and a dog", objects=[
        LayoutObject(phrase="man", keypoints=standing_person(0.0, 0.0, 0.5, 1.0)),
        LayoutObject(phrase="dog", box=Box(x0=0.5, y0=0.5, x1=1.0, y1=1.0)),
    ])
    image = openpose.render_openpose(layout, 64, 128)
    assert image.size == (128, 64)
    array = np.asarray(image)
    assert array[:, :64].any() and not array[:, 70:].any()


def test_standing_person_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown keypoint"):
        standing_person(0, 0, 1, 1, hidden={"tail"})


# ---- segmentation --------------------------------------------------------------------------
def test_ade20k_palette_has_150_classes():
    assert len(segmentation.ADE20K_COLORS) == 150
    assert segmentation.ADE20K_COLORS["wall"] == (120, 120, 120)
    assert segmentation.ADE20K_COLORS["person"] == (150, 5, 61)
    assert segmentation.ADE20K_COLORS["flag"] == (92, 0, 255)
    assert not set(segmentation.FALLBACK_COLORS) & set(segmentation.ADE20K_COLORS.values())
    assert len(set(segmentation.FALLBACK_COLORS)) == segmentation.MAX_OBJECTS


@pytest.mark.parametrize("phrase,cls", [
    ("person", "person"), ("a tall woman", "person"), ("two dogs", "animal"), ("red car", "car"),
    ("palm tree", "palm tree"), ("traffic light", "traffic light"), ("old trees", "tree"), ("couch", "sofa"),
    ("porcupine", None),
])
def test_phrases_map_to_ade20k_classes(phrase, cls):
    assert segmentation.ade20k_class(phrase) == cls


def test_explicit_classes_win_and_are_validated():
    assert segmentation.ade20k_class("corgi", {"Corgi": "toy"}) == "toy"
    with pytest.raises(LayoutError, match="not an ADE20K class"):
        segmentation.ade20k_class("corgi", {"corgi": "doggo"})


def _mask(x0, y0, x1, y1, size=8):
    return Mask(rows=[[int(x0 <= x < x1 and y0 <= y < y1) for x in range(size)] for y in range(size)])


def test_segmentation_map_paints_masks_in_class_colours():
    layout = Layout(prompt="a person, a porcupine and another porcupine on grass", objects=[
        LayoutObject(phrase="grass", mask=_mask(0, 4, 8, 8)),
        LayoutObject(phrase="person", mask=_mask(0, 0, 2, 6)),  # on top of the grass where they overlap
        LayoutObject(phrase="porcupine", mask=_mask(4, 0, 6, 2)),
        LayoutObject(phrase="porcupine", mask=_mask(6, 0, 8, 2)),
        LayoutObject(phrase="man", keypoints=standing_person(0.0, 0.0, 1.0, 1.0)),  # neither mask nor box: skipped
    ])
    image = segmentation.render_segmentation(layout, 64, 32)
    assert image.size == (32, 64)
    assert _px(image, 0.1, 0.6) == segmentation.ADE20K_COLORS["person"]
    assert _px(image, 0.6, 0.9) == segmentation.ADE20K_COLORS["grass"]
    assert _px(image, 0.6, 0.1) == segmentation.FALLBACK_COLORS[0] == _px(image, 0.9, 0.1)
    assert _px(image, 0.4, 0.2) == (0, 0, 0)
    assert _px(image, 0.4, 0.4) == (0, 0, 0)  # the skeleton's torso: not painted


def test_boxes_are_painted_as_the_pixels_whose_centres_they_cover():
    layout = Layout(prompt="a ball in a box", objects=[
        LayoutObject(phrase="box", mask=_mask(0, 0, 8, 8)),
        LayoutObject(phrase="ball", box=Box(x0=0.25, y0=0.5, x1=0.5, y1=0.75)),  # on top of the mask
    ])
    array = np.asarray(segmentation.render_segmentation(layout, 16, 16))
    ball = np.all(array == segmentation.ADE20K_COLORS["ball"], axis=-1)
    assert np.array_equal(np.argwhere(ball).min(0), [8, 4]) and np.array_equal(np.argwhere(ball).max(0), [11, 7])
    assert ball.sum() == 16
    assert np.all(array[~ball] == segmentation.ADE20K_COLORS["box"])
    # a box narrower than a pixel still paints the pixel whose centre it covers, and nothing else
    thin = Layout(prompt="a pole", objects=[LayoutObject(phrase="pole", box=Box(x0=0.52, y0=0.0, x1=0.56, y1=1.0))])
    column = np.asarray(segmentation.render_segmentation(thin, 10, 10)).any(axis=-1)
    assert column[:, 5].all() and column.sum() == 10


def test_mask_edges_resize_with_nearest_neighbour():
    layout = Layout(prompt="a tree", objects=[LayoutObject(phrase="tree", mask=_mask(0, 0, 4, 8))])
    array = np.asarray(segmentation.render_segmentation(layout, 32, 32))
    assert set(map(tuple, array.reshape(-1, 3))) == {(0, 0, 0), segmentation.ADE20K_COLORS["tree"]}
    assert array[:, :16].all() and not array[:, 16:].any()


def test_a_palette_wins_and_matches_trailing_words_and_plurals():
    palette = {"Red Circle": (200, 30, 30), "person": (1, 2, 3)}
    keys = segmentation.phrase_keys("two big red circles")
    assert keys[0] == "two big red circles" and "two big red circle" in keys[:3] and keys[-1] == "circle"
    assert keys.index("red circle") < keys.index("circle")
    assert segmentation.palette_color("big red circle", palette) == (200, 30, 30)
    assert segmentation.palette_color("two red circles", palette) == (200, 30, 30)
    assert segmentation.palette_color("blue circle", palette) is None
    layout = Layout(prompt="a man and two red circles", objects=[
        LayoutObject(phrase="man", box=Box(x0=0, y0=0, x1=0.5, y1=1)),  # palette 'person'? no: 'man' is not a key
        LayoutObject(phrase="red circles", box=Box(x0=0.5, y0=0, x1=1, y1=1)),
    ])
    colors = segmentation.object_colors(layout, classes={"man": "wall"}, palette=palette)
    assert colors == [segmentation.ADE20K_COLORS["wall"], (200, 30, 30)]
    image = segmentation.render_segmentation(layout, 8, 8, palette=palette)
    assert _px(image, 0.9, 0.5) == (200, 30, 30) and _px(image, 0.1, 0.5) == segmentation.ADE20K_COLORS["person"]


@pytest.mark.parametrize("rgb,message", [((0, 0, 0), "black"), ((1, 2), "three integers"), ((0, 300, 0), "three integers")])
def test_bad_palette_colours_are_refused(rgb, message):
    with pytest.raises(LayoutError, match=message):
        segmentation.check_palette({"ball": rgb})
