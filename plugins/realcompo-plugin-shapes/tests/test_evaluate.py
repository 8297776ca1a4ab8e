from __future__ import annotations

import numpy as np
import pytest
from realcompo_plugin_shapes.evaluate import (
    box_iou,
    connected_components,
    detect_objects,
    evaluate_image,
    relation_holds,
    summarize,
)
from realcompo_plugin_shapes.scenes import generate_scenes, scenes_for_caption


@pytest.fixture(scope="module")
def clean():
    return generate_scenes(300, seed=2024)


def test_evaluator_is_at_least_99_percent_exact_on_clean_scenes(clean) -> None:
    evaluations = []
    for scene in clean:
        ev = evaluate_image(scene.image, scene.caption, planned=[o.box for o in scene.objects])
        found = sorted((d.colour, d.shape, d.size) for d in ev.detected)
        truth = sorted((o.colour, o.shape, o.size) for o in scene.objects)
        evaluations.append((ev, found == truth))
    summary = summarize(ev for ev, _ in evaluations)
    detection_accuracy = np.mean([ok for _, ok in evaluations])
    print(f"\nclean scenes: detection {detection_accuracy:.3f}, {summary}")
    assert detection_accuracy >= 0.99
    assert summary["success"] >= 0.99 and summary["exact"] >= 0.99
    assert summary["relation_ok"] >= 0.99 and summary["count_ok"] >= 0.99
    assert summary["mean_iou"] >= 0.9


def test_detected_boxes_match_ground_truth(clean) -> None:
    ious = []
    for scene in list(clean)[:100]:
        found = detect_objects(scene.image)
        for obj in scene.objects:
            same = [d for d in found if (d.colour, d.shape) == (obj.colour, obj.shape)]
            ious.append(max(box_iou(obj.box, d.box) for d in same))
    assert np.mean(ious) > 0.9 and np.min(ious) > 0.6


def test_accepts_pil_images_and_other_sizes() -> None:
    from PIL import Image

    scene = scenes_for_caption("a big red circle to the left of a big blue square", seed=1)[0]
    pil = Image.fromarray(scene.image)
    assert [d.phrase for d in detect_objects(pil)] == [d.phrase for d in detect_objects(scene.image)]
    big = pil.resize((128, 128), Image.NEAREST)
    assert sorted(d.phrase for d in detect_objects(big)) == ["big blue square", "big red circle"]


def test_a_plain_background_has_no_objects() -> None:
    for colour in [(128, 128, 128), (232, 232, 228), (28, 28, 30), (222, 206, 172)]:
        assert detect_objects(np.full((64, 64, 3), colour, dtype=np.uint8)) == []


def test_wrong_captions_fail() -> None:
    scene = scenes_for_caption("a red circle to the left of a blue square", seed=4)[0]
    assert evaluate_image(scene.image, scene.caption).success
    swapped = evaluate_image(scene.image, "a red circle to the right of a blue square")
    assert swapped.binding_ok and swapped.relation_ok is False and not swapped.success
    wrong_colour = evaluate_image(scene.image, "a green circle to the left of a blue square")
    assert wrong_colour.binding == 0.5 and not wrong_colour.success
    count = evaluate_image(scene.image, "two red circles")
    assert count.count_ok is False and count.detected_count == 1


def test_planned_boxes_accept_pairs_and_layouts() -> None:
    scene = scenes_for_caption("a small green triangle and a big purple star", seed=9)[0]
    pairs = [(o.phrase, o.box) for o in scene.objects]
    by_pairs = evaluate_image(scene.image, scene.caption, planned=pairs)
    assert by_pairs.mean_iou is not None and by_pairs.mean_iou > 0.8
    moved = [(p, (0.0, 0.0, 0.1, 0.1)) for p, _ in pairs]
    assert evaluate_image(scene.image, scene.caption, planned=moved).mean_iou < 0.1
    layout_mod = pytest.importorskip("realcompo_sdk.layout")
    layout = layout_mod.Layout(
        prompt=scene.caption,
        objects=[
            layout_mod.LayoutObject(phrase=p, box=layout_mod.Box(x0=b[0], y0=b[1], x1=b[2], y1=b[3])) for p, b in pairs
        ],
    )
    assert evaluate_image(scene.image, scene.caption, planned=layout).ious == by_pairs.ious


def test_relation_needs_the_dominant_axis() -> None:
    assert relation_holds((0.2, 0.5), (0.6, 0.5), "left")
    assert not relation_holds((0.2, 0.5), (0.6, 0.5), "right")
    assert not relation_holds((0.4, 0.1), (0.5, 0.9), "left")  # mostly above, barely left
    assert relation_holds((0.4, 0.1), (0.5, 0.9), "above")


def test_connected_components_separate_diagonal_neighbours_only_when_asked() -> None:
    m = np.zeros((5, 5), dtype=bool)
    m[0, 0] = m[1, 1] = m[4, 4] = True
    assert connected_components(m)[1] == 2
    assert connected_components(m, diagonal=False)[1] == 3
