"""The layout model: validation errors that name object and field, JSON schema, regions."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest
from pydantic import ValidationError

from realcompo_sdk import L2IAdapter
from realcompo_sdk.errors import LayoutError
from realcompo_sdk.layout import (
    COCO18_KEYPOINTS,
    RLE,
    Box,
    Keypoint,
    Layout,
    LayoutObject,
    Mask,
    Point,
    load_layout,
)

BOX = {"x0": 0.1, "y0": 0.1, "x1": 0.4, "y1": 0.5}


def layout_with(second: dict[str, Any]) -> dict[str, Any]:
    """A two-object layout whose valid first object is 'a cat' and whose second is `second`."""
    return {"prompt": "a cat and a dog", "objects": [{"phrase": "a cat", "box": BOX}, second]}


def error_text(data: Any) -> str:
    with pytest.raises(LayoutError) as info:
        load_layout(data)
    return str(info.value)


# --- validation errors name the object and the field ------------------------------------------


def test_box_coordinate_above_one_names_object_and_coordinate() -> None:
    text = error_text(layout_with({"phrase": "a dog", "box": {"x0": 0.5, "y0": 0, "x1": 1.5, "y1": 0.5}}))
    assert "objects[1] ('a dog').box.x1" in text
    assert "less than or equal to 1" in text


def test_box_coordinate_below_zero_names_object_and_coordinate() -> None:
    text = error_text(layout_with({"phrase": "a dog", "box": {"x0": 0.5, "y0": -0.1, "x1": 0.9, "y1": 0.5}}))
    assert "objects[1] ('a dog').box.y0" in text
    assert "greater than or equal to 0" in text


@pytest.mark.parametrize(
    "box",
    [
        {"x0": 0.5, "y0": 0.1, "x1": 0.4, "y1": 0.5},  # inverted in x
        {"x0": 0.1, "y0": 0.5, "x1": 0.4, "y1": 0.2},  # inverted in y
        {"x0": 0.3, "y0": 0.1, "x1": 0.3, "y1": 0.5},  # zero width
    ],
    ids=["inverted-x", "inverted-y", "zero-width"],
)
def test_empty_or_inverted_box_is_rejected_with_its_coordinates(box: dict[str, float]) -> None:
    text = error_text(layout_with({"phrase": "a dog", "box": box}))
    assert "objects[1] ('a dog').box:" in text
    assert "empty or inverted" in text
    assert f"x0={box['x0']}" in text


def test_mask_with_ragged_rows_reports_the_bad_row() -> None:
    text = error_text(layout_with({"phrase": "a dog", "mask": {"rows": [[0, 1, 1], [1, 0]]}}))
    assert "objects[1] ('a dog').mask:" in text
    assert "wrong shape: row 1 has 2 values, row 0 has 3" in text


def test_rle_counts_not_covering_the_mask_are_rejected() -> None:
    text = error_text(layout_with({"phrase": "a dog", "mask": {"rle": {"size": [2, 3], "counts": [2, 1, 1]}}}))
    assert "objects[1] ('a dog').mask.rle:" in text
    assert "RLE counts sum to 4 but size 2x3 needs 6" in text


def test_rle_negative_count_is_rejected() -> None:
    with pytest.raises(ValidationError, match="non-negative"):
        RLE(size=(1, 2), counts=[3, -1])


def test_rle_non_positive_size_is_rejected() -> None:
    with pytest.raises(ValidationError, match="RLE size must be positive"):
        RLE(size=(0, 2), counts=[])


def test_mask_with_no_pixel_set_is_rejected() -> None:
    text = error_text(layout_with({"phrase": "a dog", "mask": {"rows": [[0, 0], [0, 0]]}}))
    assert "objects[1] ('a dog').mask: mask is empty (no pixel set)" in text


def test_mask_with_no_rows_is_rejected() -> None:
    text = error_text(layout_with({"phrase": "a dog", "mask": {"rows": []}}))
    assert "objects[1] ('a dog').mask: mask rows are empty" in text


def test_mask_values_other_than_zero_and_one_are_rejected() -> None:
    text = error_text(layout_with({"phrase": "a dog", "mask": {"rows": [[0, 2]]}}))
    assert "objects[1] ('a dog').mask: mask row 0 holds values other than 0 and 1" in text


@pytest.mark.parametrize("given", [{}, {"rows": [[1]], "rle": {"size": [1, 1], "counts": [0, 1]}}], ids=["none", "both"])
def test_mask_needs_exactly_one_of_rows_or_rle(given: dict[str, Any]) -> None:
    text = error_text(layout_with({"phrase": "a dog", "mask": given}))
    assert "objects[1] ('a dog').mask: a mask needs exactly one of 'rows' or 'rle'" in text


def test_unknown_keypoint_name_is_rejected_and_known_names_listed() -> None:
    keypoints = [{"name": "nose", "x": 0.5, "y": 0.2}, {"name": "tail", "x": 0.5, "y": 0.8}]
    text = error_text(layout_with({"phrase": "a dog", "keypoints": keypoints}))
    assert "objects[1] ('a dog').keypoints[1].name: unknown keypoint name 'tail'" in text
    assert ", ".join(COCO18_KEYPOINTS) in text


def test_keypoints_with_none_visible_are_rejected() -> None:
    keypoints = [{"name": "nose", "x": 0.5, "y": 0.2, "visible": False}]
    text = error_text(layout_with({"phrase": "a dog", "keypoints": keypoints}))
    assert "objects[1] ('a dog'): object 'a dog' has no visible keypoint" in text


def test_repeated_keypoint_name_is_rejected() -> None:
    keypoints = [{"name": "nose", "x": 0.5, "y": 0.2}, {"name": "nose", "x": 0.6, "y": 0.2}]
    text = error_text(layout_with({"phrase": "a dog", "keypoints": keypoints}))
    assert "object 'a dog' repeats a keypoint name" in text


@pytest.mark.parametrize("phrase", ["", "   ", "\t\n"])
def test_empty_phrase_is_rejected(phrase: str) -> None:
    text = error_text(layout_with({"phrase": phrase, "box": BOX}))
    assert "objects[1]" in text
    assert ".phrase: phrase is empty" in text


def test_phrase_whitespace_is_normalised() -> None:
    assert LayoutObject(phrase="  a   red\tcat ", box=Box(**BOX)).phrase == "a red cat"


def test_object_without_region_is_rejected() -> None:
    text = error_text(layout_with({"phrase": "a dog"}))
    assert "objects[1] ('a dog'): object 'a dog' needs exactly one region (box, mask, keypoints, point, scribble), got none" in text


def test_object_with_two_regions_is_rejected_naming_both() -> None:
    text = error_text(layout_with({"phrase": "a dog", "box": BOX, "mask": {"rows": [[1]]}}))
    assert "objects[1] ('a dog'): object 'a dog' needs exactly one region" in text
    assert "['box', 'mask']" in text


def test_empty_objects_list_is_rejected() -> None:
    text = error_text({"prompt": "a cat", "objects": []})
    assert "objects: List should have at least 1 item" in text


def test_empty_prompt_is_rejected() -> None:
    text = error_text({"prompt": "  ", "objects": [{"phrase": "a cat", "box": BOX}]})
    assert "prompt: prompt is empty" in text


def test_unknown_field_is_rejected() -> None:
    text = error_text(layout_with({"phrase": "a dog", "box": BOX, "colour": "brown"}))
    assert "objects[1] ('a dog').colour: Extra inputs are not permitted" in text


def test_every_error_is_listed_on_its_own_line() -> None:
    data = {
        "prompt": "a cat and a dog",
        "objects": [{"phrase": "a cat", "box": {**BOX, "x1": 2}}, {"phrase": "a dog"}],
    }
    lines = error_text(data).splitlines()
    assert lines[0] == "invalid layout:"
    assert any(line.startswith("  objects[0] ('a cat').box.x1:") for line in lines)
    assert any(line.startswith("  objects[1] ('a dog'):") for line in lines)


def test_load_layout_from_json_names_object_and_field() -> None:
    text = error_text(json.dumps(layout_with({"phrase": "a dog", "box": {"x0": 0.5, "y0": 0, "x1": 0.4, "y1": 0.5}})))
    assert "objects[1] ('a dog').box: box is empty or inverted" in text


def test_load_layout_from_json_bytes_names_object_and_field() -> None:
    text = error_text(json.dumps(layout_with({"phrase": "a dog"})).encode())
    assert "objects[1] ('a dog'):" in text


def test_load_layout_rejects_malformed_json() -> None:
    text = error_text('{"prompt": "a cat", "objects": [')
    assert text.startswith("invalid layout:")
    assert "<root>" in text


def test_layout_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        load_layout({"prompt": "a cat", "objects": []})


# --- valid layouts, schema, immutability -------------------------------------------------------


def test_load_layout_accepts_json_and_dict_alike() -> None:
    data = layout_with({"phrase": "a dog", "mask": {"rows": [[0, 1], [1, 1]]}})
    from_dict = load_layout(data)
    assert load_layout(json.dumps(data)) == from_dict
    assert [o.kind for o in from_dict.objects] == ["box", "mask"]
    assert from_dict.kinds == {"box", "mask"}


def test_layout_round_trips_through_json() -> None:
    layout = load_layout(layout_with({"phrase": "a man", "keypoints": [{"name": "nose", "x": 0.5, "y": 0.2}]}))
    assert load_layout(layout.model_dump_json()) == layout


def test_json_schema_is_json_and_describes_objects() -> None:
    schema = json.loads(json.dumps(Layout.model_json_schema()))
    assert "objects" in schema["properties"]
    assert "prompt" in schema["required"]
    assert "objects" in schema["required"]
    assert schema["properties"]["objects"]["minItems"] == 1
    defs = schema["$defs"]
    assert {"Box", "Mask", "Keypoint", "LayoutObject"} <= set(defs)
    assert defs["Box"]["properties"]["x0"]["maximum"] == 1.0


def test_layout_is_frozen() -> None:
    layout = Layout.from_boxes("a cat", [("a cat", (0.1, 0.1, 0.5, 0.5))])
    with pytest.raises(ValidationError, match="frozen"):
        layout.prompt = "a dog"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        layout.objects[0].box.x0 = 0.0  # type: ignore[misc, union-attr]


def test_from_boxes_accepts_dict_and_list() -> None:
    from_list = Layout.from_boxes("a cat and a dog", [("a cat", (0, 0, 0.5, 1)), ("a dog", (0.5, 0, 1, 1))])
    from_dict = Layout.from_boxes("a cat and a dog", {"a cat": (0, 0, 0.5, 1), "a dog": (0.5, 0, 1, 1)})
    assert from_list == from_dict
    assert from_list.objects[1].box == Box(x0=0.5, y0=0, x1=1, y1=1)


def test_box_from_xywh_and_area() -> None:
    box = Box.from_xywh(0.1, 0.2, 0.5, 0.25)
    assert box.as_tuple() == pytest.approx((0.1, 0.2, 0.6, 0.45))
    assert box.area == pytest.approx(0.125)


# --- masks ------------------------------------------------------------------------------------


def test_rle_decodes_column_major_to_the_same_rows() -> None:
    rows = [[0, 1, 1], [0, 0, 1]]
    # column-major: col 0 = 0,0; col 1 = 1,0; col 2 = 1,1 -> runs 0x2, 1x1, 0x1, 1x2
    from_rle = Mask(rle=RLE(size=(2, 3), counts=[2, 1, 1, 2]))
    assert from_rle.to_rows() == rows
    assert from_rle.shape == (2, 3)
    assert from_rle.bounding_box() == Mask(rows=rows).bounding_box()


def test_rle_starting_with_a_set_pixel_uses_a_zero_first_run() -> None:
    assert Mask(rle=RLE(size=(2, 2), counts=[0, 1, 3])).to_rows() == [[1, 0], [0, 0]]


def test_mask_from_array_thresholds_bools_and_numbers() -> None:
    np = pytest.importorskip("numpy")
    assert Mask.from_array(np.array([[False, True], [True, False]])).rows == [[0, 1], [1, 0]]
    assert Mask.from_array([[0.0, 0.7], [0, 3]]).rows == [[0, 1], [0, 1]]


def test_mask_from_array_rejects_non_2d_input() -> None:
    with pytest.raises(ValueError, match=r"2-D \(H, W\), got shape \(2, 2, 1\)"):
        Mask.from_array([[[1], [0]], [[0], [1]]])


def test_mask_bounding_box_covers_set_pixels() -> None:
    rows = [[0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    obj = LayoutObject(phrase="a cat", mask=Mask(rows=rows))
    assert obj.bounding_box() == Box(x0=0.25, y0=0.25, x1=0.75, y1=0.75)


def test_mask_bounding_box_of_full_mask_is_the_image() -> None:
    assert Mask(rows=[[1, 1], [1, 1]]).bounding_box() == Box(x0=0, y0=0, x1=1, y1=1)


# --- keypoints and bounding boxes -------------------------------------------------------------


def person(*points: tuple[str, float, float, bool]) -> LayoutObject:
    return LayoutObject(phrase="a man", keypoints=[Keypoint(name=n, x=x, y=y, visible=v) for n, x, y, v in points])


def test_keypoint_bounding_box_pads_visible_points_and_ignores_hidden_ones() -> None:
    obj = person(("nose", 0.5, 0.4, True), ("neck", 0.6, 0.7, True), ("left_wrist", 0.0, 0.0, False))
    assert obj.bounding_box().as_tuple() == pytest.approx((0.45, 0.35, 0.65, 0.75))
    assert obj.bounding_box(keypoint_padding=0.1).as_tuple() == pytest.approx((0.4, 0.3, 0.7, 0.8))


def test_keypoint_bounding_box_is_clipped_to_the_image() -> None:
    obj = person(("nose", 0.02, 0.5, True), ("left_ankle", 0.5, 0.99, True))
    assert obj.bounding_box().as_tuple() == pytest.approx((0.0, 0.45, 0.55, 1.0))


def test_point_region_has_kind_point_and_a_padded_box() -> None:
    obj = LayoutObject(phrase="a cat", point=Point(x=0.3, y=0.6))
    assert obj.kind == "point"
    assert obj.bounding_box().as_tuple() == pytest.approx((0.25, 0.55, 0.35, 0.65))


def test_scribble_region_box_covers_its_points_padded() -> None:
    obj = LayoutObject(phrase="a cat", scribble=[Point(x=0.2, y=0.5), Point(x=0.6, y=0.4), Point(x=0.5, y=0.9)])
    assert obj.kind == "scribble"
    assert obj.bounding_box(keypoint_padding=0.1).as_tuple() == pytest.approx((0.1, 0.3, 0.7, 1.0))


def test_scribble_needs_two_points_and_names_the_object() -> None:
    text = error_text(layout_with({"phrase": "a dog", "scribble": [{"x": 0.5, "y": 0.5}]}))
    assert "objects[1] ('a dog').scribble" in text and "at least 2" in text


def test_point_out_of_range_names_object_and_coordinate() -> None:
    text = error_text(layout_with({"phrase": "a dog", "point": {"x": 1.5, "y": 0.5}}))
    assert "objects[1] ('a dog').point.x" in text


def test_point_and_box_together_are_two_regions() -> None:
    text = error_text(layout_with({"phrase": "a dog", "box": BOX, "point": {"x": 0.5, "y": 0.5}}))
    assert "got ['box', 'point']" in text


def test_box_only_adapter_refuses_a_point_object_naming_it() -> None:
    layout = Layout(prompt="a cat and a dog", objects=[
        LayoutObject(phrase="a cat", box=Box(**BOX)), LayoutObject(phrase="a dog", point=Point(x=0.5, y=0.5))])
    with pytest.raises(LayoutError, match=r"object 1 \('a dog'\): its region is point"):
        BoxOnlyAdapter().check_layout(layout)


def test_box_object_bounding_box_is_its_box() -> None:
    box = Box(**BOX)
    assert LayoutObject(phrase="a cat", box=box).bounding_box() == box


def test_describe_error_location_names_index_and_phrase() -> None:
    layout = Layout.from_boxes("a cat and a dog", [("a cat", (0, 0, 0.5, 1)), ("a dog", (0.5, 0, 1, 1))])
    assert layout.describe_error_location(1) == "object 1 ('a dog')"


# --- L2IAdapter.check_layout ------------------------------------------------------------------


class BoxOnlyAdapter(L2IAdapter):
    """The smallest concrete L2I adapter: only `check_layout` is exercised."""

    id = "box-only"
    accepted_kinds: ClassVar[frozenset] = frozenset({"box", "mask"})
    max_objects: ClassVar[int | None] = 2

    latent_spec = device = None  # type: ignore[assignment]

    def make_scheduler(self, name: str | None = None) -> Any: ...
    def prepare(self, request: Any) -> Any: ...
    def predict_noise(self, *args: Any, **kwargs: Any) -> Any: ...
    def attention_probs(self, *args: Any, **kwargs: Any) -> Any: ...
    def attention_resolutions(self, height: int, width: int) -> list[int]: return []
    def phrase_token_positions(self, *args: Any, **kwargs: Any) -> Any: ...


def test_check_layout_accepts_a_suitable_layout() -> None:
    layout = Layout(prompt="a cat and a dog", objects=[
        LayoutObject(phrase="a cat", box=Box(**BOX)),
        LayoutObject(phrase="a dog", mask=Mask(rows=[[1]])),
    ])
    BoxOnlyAdapter().check_layout(layout)


def test_check_layout_rejects_a_region_kind_and_lists_accepted_kinds() -> None:
    layout = Layout(prompt="a cat and a man", objects=[
        LayoutObject(phrase="a cat", box=Box(**BOX)),
        person(("nose", 0.5, 0.5, True)),
    ])
    with pytest.raises(LayoutError) as info:
        BoxOnlyAdapter().check_layout(layout)
    text = str(info.value)
    assert "adapter 'box-only' cannot use object 1 ('a man')" in text
    assert "its region is keypoints" in text
    assert "accepts box, mask" in text


def test_check_layout_rejects_too_many_objects() -> None:
    layout = Layout.from_boxes("a cat, a dog and a bird", [
        ("a cat", (0, 0, 0.3, 1)), ("a dog", (0.3, 0, 0.6, 1)), ("a bird", (0.6, 0, 1, 1)),
    ])
    with pytest.raises(LayoutError, match="adapter 'box-only' takes at most 2 objects; the layout has 3"):
        BoxOnlyAdapter().check_layout(layout)



def test_single_keypoint_without_padding_still_has_a_box():
    from realcompo_sdk.layout import Keypoint, LayoutObject

    obj = LayoutObject(phrase="nose", keypoints=[Keypoint(name="nose", x=0.5, y=0.5)])
    box = obj.bounding_box(keypoint_padding=0)
    assert box.x0 < 0.5 < box.x1 and box.y0 < 0.5 < box.y1 and box.area < 1e-5
