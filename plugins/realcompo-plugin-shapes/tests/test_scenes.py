from __future__ import annotations

import time

import numpy as np
import pytest
from realcompo_plugin_shapes.scenes import generate_scenes, scenes_for_caption
from realcompo_plugin_shapes.world import IMAGE_SIZE, MIN_GAP_PX, RELATION_MARGIN, SIZE_EXTENT_PX


@pytest.fixture(scope="module")
def batch():
    return generate_scenes(400, seed=3)


def test_same_seed_gives_identical_scenes() -> None:
    a, b = generate_scenes(64, seed=11), generate_scenes(64, seed=11)
    assert a.captions == b.captions
    for name in ("images", "boxes", "masks", "keypoints", "n_objects", "shape_ids", "colour_ids"):
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name
    assert not np.array_equal(a.images, generate_scenes(64, seed=12).images)


def test_flat_style_keeps_layout_and_drops_texture() -> None:
    real, flat = generate_scenes(32, seed=5), generate_scenes(32, seed=5, style="flat")
    assert real.captions == flat.captions and np.array_equal(real.boxes, flat.boxes)
    assert not np.array_equal(real.images, flat.images)


def test_masks_match_boxes_and_lie_inside_the_image(batch) -> None:
    for scene in batch:
        assert scene.image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and scene.image.dtype == np.uint8
        assert len(scene.objects) == len(scene.spec.objects)
        for obj, spec in zip(scene.objects, scene.spec.objects):
            ys, xs = np.nonzero(obj.mask)
            box = (
                xs.min() / IMAGE_SIZE,
                ys.min() / IMAGE_SIZE,
                (xs.max() + 1) / IMAGE_SIZE,
                (ys.max() + 1) / IMAGE_SIZE,
            )
            assert np.allclose(box, obj.box, atol=1e-6)
            assert 0 <= obj.box[0] < obj.box[2] <= 1 and 0 <= obj.box[1] < obj.box[3] <= 1
            assert obj.phrase == spec.phrase and (obj.colour, obj.shape, obj.size) == (
                spec.colour,
                spec.shape,
                spec.size,
            )
            lo, hi = SIZE_EXTENT_PX[obj.size]
            extent = max(obj.box[2] - obj.box[0], obj.box[3] - obj.box[1]) * IMAGE_SIZE
            assert lo - 3 <= extent <= hi + 1
            cx, cy = obj.keypoints[0]  # the centre keypoint lies in the box
            assert obj.box[0] <= cx <= obj.box[2] and obj.box[1] <= cy <= obj.box[3]


def test_objects_never_touch(batch) -> None:
    for scene in batch:
        for i, a in enumerate(scene.objects):
            for b in scene.objects[i + 1 :]:
                gap_x = max(b.box[0] - a.box[2], a.box[0] - b.box[2]) * IMAGE_SIZE
                gap_y = max(b.box[1] - a.box[3], a.box[1] - b.box[3]) * IMAGE_SIZE
                assert max(gap_x, gap_y) >= MIN_GAP_PX
                assert not (a.mask & b.mask).any()


def test_relations_hold_with_a_clear_margin(batch) -> None:
    checked = 0
    for scene in batch:
        if scene.spec.form != "relation":
            continue
        a, b = scene.objects
        ax, ay = (a.box[0] + a.box[2]) / 2, (a.box[1] + a.box[3]) / 2
        bx, by = (b.box[0] + b.box[2]) / 2, (b.box[1] + b.box[3]) / 2
        main, other = {"left": (bx - ax, ay - by), "right": (ax - bx, ay - by),
                       "above": (by - ay, ax - bx), "below": (ay - by, ax - bx)}[scene.spec.relation]  # fmt: skip
        assert main >= RELATION_MARGIN - 1.5 / IMAGE_SIZE  # rasterised boxes move centres ≤ 1 px
        assert abs(other) < main
        checked += 1
    assert checked > 50


def test_counts_are_right(batch) -> None:
    for scene in batch:
        if scene.spec.form == "count":
            assert len(scene.objects) == scene.spec.count
            assert len({(o.colour, o.shape, o.size) for o in scene.objects}) == 1
            assert all(o.phrase == f"{o.colour} {o.shape}" for o in scene.objects)


def test_scenes_for_caption_respects_the_caption() -> None:
    batch = scenes_for_caption("four green stars on a black background", n=5, seed=0)
    for scene in batch:
        assert scene.background == "black"
        assert len(scene.objects) == 4 and {o.phrase for o in scene.objects} == {"green star"}


def test_generation_throughput_is_reported() -> None:
    t = time.perf_counter()
    generate_scenes(1000, seed=0, masks=False)
    rate = 1000 / (time.perf_counter() - t)
    print(f"\nscene generation: {rate:.0f} scenes/s on one core")
    assert rate > 0
