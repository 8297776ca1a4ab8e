"""InstanceDiffusion grounding inputs: sampling, RLE, layout mapping, profiles, errors, JSON import."""

from __future__ import annotations

import json
import random
import warnings
from collections import Counter

import numpy as np
import pytest
import torch
from realcompo_plugin_instancediffusion.inputs import (
    MAX_INSTANCES,
    N_POLYGON,
    N_SCRIBBLE,
    PROFILES,
    SEG_SIZE,
    InstDiffInputs,
    _norm_keys,
    convert_points,
    decode_coco_rle,
    layout_to_instdiff,
    mask_contour_points,
    official_json_to_layout,
    reorder_scribbles,
    sample_random_points_from_mask,
    sample_sparse_points_from_mask,
)

from realcompo_sdk.errors import LayoutError
from realcompo_sdk.layout import RLE, Box, Keypoint, Layout, LayoutObject, Mask, Point

# ------------------------------------------------------------------------------------ helpers


def rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def disc(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)


def norms(points: np.ndarray) -> np.ndarray:
    return np.array([np.linalg.norm(p) for p in points])


def as_multiset(points: np.ndarray) -> list[tuple[float, float]]:
    return sorted(map(tuple, np.asarray(points, dtype=np.float64).tolist()))


def expected_interior(mask: np.ndarray, k: int) -> np.ndarray:
    """The spec, written plainly: foreground sorted by distance to its centroid (stable), k equal
    segments, each segment's middle pixel, as (x, y)."""
    fg = [tuple(p) for p in np.argwhere(mask == 1)]
    centre = np.mean(np.array(fg), axis=0)
    ranked = sorted(fg, key=lambda p: np.linalg.norm(np.array(p) - centre))
    per = len(ranked) // k
    return np.array([(ranked[i * per + per // 2][1], ranked[i * per + per // 2][0]) for i in range(k)], dtype=float)


def check_sparse_points(mask: np.ndarray, k: int = N_POLYGON) -> np.ndarray:
    """Assert the polygon points follow the spec exactly (as multisets) and are sorted; return them."""
    pts = sample_sparse_points_from_mask(mask, k, np.random.default_rng(0))
    assert pts.shape == (k, 2) and pts.dtype == np.float64
    contour = mask_contour_points(mask)
    boundary = contour[[int(i) for i in np.linspace(0, len(contour) - 1, k // 2)]]
    # interior points first, then boundary points, stably sorted by distance to the origin
    candidates = [tuple(p) for p in np.concatenate([expected_interior(mask, k - k // 2), boundary]).tolist()]
    expected = sorted(candidates, key=lambda p: np.linalg.norm(np.array(p)))
    np.testing.assert_array_equal(pts, np.array(expected))
    return pts


def obj_box(phrase: str, box: tuple[float, float, float, float]) -> LayoutObject:
    return LayoutObject(phrase=phrase, box=Box(x0=box[0], y0=box[1], x1=box[2], y1=box[3]))


def obj_mask(phrase: str, mask: np.ndarray) -> LayoutObject:
    return LayoutObject(phrase=phrase, mask=Mask.from_array(mask))


def obj_point(phrase: str, x: float, y: float) -> LayoutObject:
    return LayoutObject(phrase=phrase, point=Point(x=x, y=y))


def obj_scribble(phrase: str, pts: list[tuple[float, float]]) -> LayoutObject:
    return LayoutObject(phrase=phrase, scribble=[Point(x=x, y=y) for x, y in pts])


def layout(*objects: LayoutObject) -> Layout:
    return Layout(prompt="a scene", objects=list(objects))


def encode_rle_string(counts: list[int]) -> str:
    """Reference encoder of COCO's compressed counts, written from the format description."""
    out = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        while True:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
            if not more:
                break
    return "".join(out)


def column_major_counts(mask: np.ndarray) -> list[int]:
    flat = mask.T.reshape(-1).tolist()
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return counts


# ------------------------------------------------------------------------------- constants


def test_constants() -> None:
    assert (MAX_INSTANCES, SEG_SIZE, N_SCRIBBLE, N_POLYGON) == (30, 512, 20, 256)
    assert PROFILES == ("box", "mask", "point", "scribble")


# ------------------------------------------------------------------------------------- RLE


def test_decode_uncompressed_rle_is_column_major() -> None:
    m = decode_coco_rle({"size": [2, 5], "counts": [3, 2, 1, 4]})
    assert m.dtype == np.uint8
    np.testing.assert_array_equal(m, [[0, 0, 1, 1, 1], [0, 1, 0, 1, 1]])
    # a leading 0-run of length 0 means the first pixel is set
    np.testing.assert_array_equal(decode_coco_rle({"size": [1, 3], "counts": [0, 2, 1]}), [[1, 1, 0]])


@pytest.mark.parametrize(
    ("string", "size", "counts"),
    [
        ("3212", [2, 5], [3, 2, 1, 4]),  # one character per count, 4th count stored as 4 - 2
        ("152L", [3, 3], [1, 5, 2, 1]),  # negative difference 1 - 5 = -4: sign bit 0x10
        ("X1h0", [8, 8], [40, 24]),  # counts over 31 take two 5-bit groups
    ],
)
def test_decode_compressed_rle_hand_made(string: str, size: list[int], counts: list[int]) -> None:
    expected = decode_coco_rle({"size": size, "counts": counts})
    np.testing.assert_array_equal(decode_coco_rle({"size": size, "counts": string}), expected)
    np.testing.assert_array_equal(decode_coco_rle({"size": size, "counts": string.encode()}), expected)


def test_decode_compressed_rle_round_trip_random_masks() -> None:
    rng = np.random.default_rng(5)
    for _ in range(20):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        mask = (rng.random((h, w)) > rng.random()).astype(np.uint8)
        counts = column_major_counts(mask)
        string = encode_rle_string(counts)
        np.testing.assert_array_equal(decode_coco_rle({"size": [h, w], "counts": string}), mask)
        np.testing.assert_array_equal(decode_coco_rle({"size": [h, w], "counts": counts}), mask)


def test_decode_rle_errors() -> None:
    with pytest.raises(ValueError, match="sum to 9"):
        decode_coco_rle({"size": [2, 5], "counts": [3, 2, 4]})
    with pytest.raises(ValueError, match="ends in the middle"):
        decode_coco_rle({"size": [64, 1], "counts": "X"})
    with pytest.raises(ValueError, match="size"):
        decode_coco_rle({"counts": [1]})


# ------------------------------------------------------------------------- polygon sampling


def test_contour_of_one_pixel_runs_through_its_padded_neighbours() -> None:
    mask = np.zeros((4, 5), dtype=np.uint8)
    mask[1, 2] = 1  # padded position (row 2, col 3)
    contour = mask_contour_points(mask)
    assert set(map(tuple, contour.tolist())) == {(3.0, 1.0), (4.0, 2.0), (3.0, 3.0), (2.0, 2.0)}
    np.testing.assert_array_equal(contour[0], contour[-1])  # closed


def test_sparse_points_rectangle() -> None:
    mask = rect(24, 32, 5, 17, 3, 23)  # rows 5..16, cols 3..22
    pts = check_sparse_points(mask)
    # boundary points lie on the ring of background pixels around the box, +1 padding offset
    contour = mask_contour_points(mask)
    xs, ys = contour[:, 0], contour[:, 1]
    on_ring = ((xs == 3) | (xs == 24)) & (ys >= 6) & (ys <= 17) | ((ys == 5) | (ys == 18)) & (xs >= 4) & (xs <= 23)
    assert on_ring.all()
    inside = [mask[int(y), int(x)] == 1 for x, y in pts]
    assert sum(inside) >= N_POLYGON // 2


def test_sparse_points_disc_and_symmetric_ties() -> None:
    check_sparse_points(disc(40, 40, 19.5, 19.5, 14))
    # a mask symmetric about its diagonal has mirror pixels at mathematically equal distances
    # from the centroid; the keys must be exactly the official per-point np.linalg.norm
    rng = np.random.default_rng(1)
    r = rng.random((50, 50)) > 0.5
    mask = (r | r.T).astype(np.uint8)
    fg = np.argwhere(mask == 1)
    diffs = fg - fg.mean(axis=0)
    np.testing.assert_array_equal(_norm_keys(diffs), np.array([np.linalg.norm(d) for d in diffs]))
    check_sparse_points(mask)


def test_sparse_points_two_components() -> None:
    mask = np.maximum(disc(40, 60, 10, 10, 6), disc(40, 60, 28, 45, 8))
    pts = check_sparse_points(mask)
    contour = mask_contour_points(mask)
    boundary = contour[[int(i) for i in np.linspace(0, len(contour) - 1, N_POLYGON // 2)]]
    assert (boundary[:, 0] < 25).any() and (boundary[:, 0] > 30).any()  # both components sampled
    assert len(pts) == N_POLYGON


def test_sparse_points_border_touching_mask_keeps_offset_and_clamps() -> None:
    mask = rect(16, 20, 0, 8, 4, 20)  # touches the top and right edges; exactly 128 pixels
    pts = check_sparse_points(mask)
    assert pts[:, 0].max() == 21.0  # width + 1: the padding offset is kept
    normalised = convert_points(pts, 20, 16)
    assert normalised.max() == 1.0 and (normalised[:, 0] == 1.0).any()
    assert normalised.min() >= 0.0


def test_sparse_points_small_mask_draws_from_rng() -> None:
    mask = disc(12, 12, 6, 6, 2.5)  # 21 pixels < 128 interior points
    n = int(mask.sum())
    assert n < N_POLYGON // 2
    a = sample_sparse_points_from_mask(mask, N_POLYGON, np.random.default_rng(3))
    b = sample_sparse_points_from_mask(mask, N_POLYGON, np.random.default_rng(3))
    c = sample_sparse_points_from_mask(mask, N_POLYGON, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    contour = mask_contour_points(mask)
    boundary = contour[[int(i) for i in np.linspace(0, len(contour) - 1, N_POLYGON // 2)]]
    interior = Counter(map(tuple, a.tolist())) - Counter(map(tuple, boundary.tolist()))
    assert sum(interior.values()) == N_POLYGON // 2  # the rest: 128 draws of mask pixels
    assert all(mask[int(y), int(x)] == 1 for x, y in interior)
    assert len(interior) > 10  # with replacement, spread over the pixels
    # with a random.Random, the draws are exactly the official `random.choice(foreground)` ones
    fg = np.argwhere(mask == 1)
    ref_rng = random.Random(11)
    expected_inside = [(float(p[1]), float(p[0])) for p in (fg[ref_rng.randrange(n)] for _ in range(N_POLYGON // 2))]
    got = sample_sparse_points_from_mask(mask, N_POLYGON, random.Random(11))
    assert as_multiset(got) == as_multiset(np.concatenate([np.array(expected_inside), boundary]))


def test_sparse_points_empty_mask_is_zeros() -> None:
    np.testing.assert_array_equal(sample_sparse_points_from_mask(np.zeros((5, 5))), np.zeros((N_POLYGON, 2)))


def test_sparse_points_accepts_official_hwc_bool_mask() -> None:
    mask = disc(30, 30, 14, 15, 9)
    np.testing.assert_array_equal(
        sample_sparse_points_from_mask(mask.astype(bool)[:, :, None]), sample_sparse_points_from_mask(mask)
    )


# --------------------------------------------------------------------- random points, scribbles


def test_random_points_from_mask() -> None:
    mask = rect(10, 12, 2, 8, 3, 9)  # 36 pixels ≥ 20: without replacement
    pts = sample_random_points_from_mask(mask, N_SCRIBBLE, np.random.default_rng(0))
    assert pts.shape == (N_SCRIBBLE, 2)
    assert all(mask[int(y), int(x)] == 1 for x, y in pts)
    assert len(set(map(tuple, pts.tolist()))) == N_SCRIBBLE
    assert np.all(np.diff(norms(pts)) >= 0)
    # the legacy RandomState reproduces the official np.random.choice draws
    fg = np.argwhere(mask)
    idx = np.random.RandomState(3).choice(len(fg), N_SCRIBBLE, replace=False)
    expected = sorted([fg[i] for i in idx], key=lambda p: np.linalg.norm(p))
    got = sample_random_points_from_mask(mask, N_SCRIBBLE, np.random.RandomState(3))
    np.testing.assert_array_equal(got, np.array([(p[1], p[0]) for p in expected], dtype=float))
    # fewer pixels than points: with replacement
    few = rect(10, 12, 2, 4, 3, 5)
    pts = sample_random_points_from_mask(few, N_SCRIBBLE, np.random.default_rng(0))
    assert len(set(map(tuple, pts.tolist()))) <= 4 and all(few[int(y), int(x)] for x, y in pts)
    np.testing.assert_array_equal(sample_random_points_from_mask(np.zeros((4, 4))), np.zeros((N_SCRIBBLE, 2)))


def test_reorder_scribbles_resamples_with_replacement() -> None:
    pts = np.array([[10.0, 10.0], [1.0, 1.0], [5.0, 0.0], [0.0, 2.0], [30.0, 3.0]])
    out = reorder_scribbles(pts, N_SCRIBBLE)
    # sorted by distance: (1,1) (0,2) (5,0) (10,10) (30,3); n=5 < 20: index (i·5)//20 → 4 copies each
    expected = np.repeat(np.array([[1, 1], [0, 2], [5, 0], [10, 10], [30, 3]], dtype=float), 4, axis=0)
    np.testing.assert_array_equal(out, expected)


def test_reorder_scribbles_downsamples_and_keeps_ties_in_input_order() -> None:
    pts = np.array([[float(i), 0.0] for i in range(45)])[::-1]
    out = reorder_scribbles(pts, N_SCRIBBLE)  # n=45 ≥ 20: every (45 // 20) = 2nd point
    np.testing.assert_array_equal(out[:, 0], np.arange(0, 40, 2, dtype=float))
    ties = np.array([[4.0, 3.0], [3.0, 4.0], [0.0, 5.0], [5.0, 0.0]])  # all at distance 5
    out = reorder_scribbles(ties, 4)
    np.testing.assert_array_equal(out, ties)
    np.testing.assert_array_equal(reorder_scribbles(np.zeros((0, 2))), np.zeros((N_SCRIBBLE, 2)))


def test_convert_points_clamps_only_above() -> None:
    out = convert_points(np.array([[10.0, 5.0], [30.0, 25.0]]), 20, 10)
    np.testing.assert_array_equal(out, [[0.5, 0.5], [1.0, 1.0]])


# --------------------------------------------------------------------- InstDiffInputs basics


def test_null_inputs() -> None:
    null = InstDiffInputs.null()
    assert null.phrases == [] and null.profile in PROFILES
    for name, shape in [
        ("boxes", (30, 4)),
        ("masks", (30,)),
        ("points", (30, 2)),
        ("scribbles", (30, 40)),
        ("polygons", (30, 512)),
        ("segs", (30, 512, 512)),
    ]:
        value = getattr(null, name)
        assert value.shape == shape and value.dtype == np.float32 and not value.any()
    tensors = null.to_torch("cpu", torch.float64)
    assert set(tensors) == {"boxes", "masks", "points", "scribbles", "polygons", "segs"}
    assert tensors["segs"].shape == (1, 30, 512, 512) and tensors["boxes"].dtype == torch.float64
    assert all(not t.any() for t in tensors.values())


def test_inputs_reject_wrong_shapes() -> None:
    with pytest.raises(ValueError, match="boxes"):
        InstDiffInputs(phrases=["a"], profile="box", boxes=np.zeros((29, 4)))
    with pytest.raises(ValueError, match="profile"):
        InstDiffInputs(phrases=[], profile="depth")


# ------------------------------------------------------------------------- layout → inputs


def test_box_profile() -> None:
    lay = layout(obj_box("a cat", (0.1, 0.2, 0.5, 0.6)), obj_box("a dog", (0.5, 0.25, 0.9, 0.75)))
    out = layout_to_instdiff(lay, width=512, height=512, seed=0)
    assert out.profile == "box" and out.phrases == ["a cat", "a dog"]
    np.testing.assert_array_equal(out.masks[:3], [1, 1, 0])
    np.testing.assert_allclose(out.boxes[:2], [[0.1, 0.2, 0.5, 0.6], [0.5, 0.25, 0.9, 0.75]])
    np.testing.assert_allclose(out.points[:2], [[0.3, 0.4], [0.7, 0.5]])  # box centres
    assert not out.boxes[2:].any() and not out.scribbles.any() and not out.polygons.any() and not out.segs.any()
    tensors = out.to_torch("cpu")
    assert tensors["boxes"].shape == (1, 30, 4) and tensors["boxes"].dtype == torch.float32
    np.testing.assert_array_equal(tensors["masks"][0].numpy(), out.masks)


def test_mask_profile_rows_and_rle_agree() -> None:
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[3:15, 2:14] = 1  # 144 pixels ≥ 128: the polygon points are deterministic
    mask[1, 15] = 1
    from_rows = layout(obj_mask("a vase", mask))
    rle = RLE(size=(16, 16), counts=column_major_counts(mask))
    from_rle = layout(LayoutObject(phrase="a vase", mask=Mask(rle=rle)))
    a = layout_to_instdiff(from_rows, width=512, height=512, seed=1)
    b = layout_to_instdiff(from_rle, width=512, height=512, seed=1)
    assert a.profile == "mask"
    for name in ("boxes", "points", "scribbles", "polygons", "segs"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_allclose(a.boxes[0], [2 / 16, 1 / 16, 16 / 16, 15 / 16])  # pixel edges
    np.testing.assert_allclose(a.points[0], [0.5625, 0.5])
    # polygons: the sampled points on the mask's own grid, normalised by its own size, clamped
    expected = convert_points(check_sparse_points(mask), 16, 16).reshape(-1).astype(np.float32)
    np.testing.assert_array_equal(a.polygons[0], expected)
    assert a.polygons[0].max() == 1.0  # the isolated pixel touches the right edge
    # segs: nearest 16 → 512 repeats every pixel 32×32 times
    np.testing.assert_array_equal(a.segs[0], np.kron(mask, np.ones((32, 32))).astype(np.float32))
    assert not a.segs[1:].any()
    # scribbles: 20 distinct mask pixels, normalised by the mask size, sorted by distance
    scribble = a.scribbles[0].reshape(-1, 2).astype(np.float64) * 16
    assert all(mask[int(round(y)), int(round(x))] for x, y in scribble)
    assert len({tuple(p) for p in scribble.tolist()}) == N_SCRIBBLE
    assert a.has_modality[0].all()


def test_mask_profile_bilinear_segs_are_soft() -> None:
    mask = disc(64, 64, 31.5, 31.5, 20)
    near = layout_to_instdiff(layout(obj_mask("a ball", mask)), width=512, height=512, seed=0)
    soft = layout_to_instdiff(layout(obj_mask("a ball", mask)), width=512, height=512, seed=0, seg_resize="bilinear")
    assert set(np.unique(near.segs[0]).tolist()) == {0.0, 1.0}
    values = soft.segs[0]
    assert values.min() >= 0 and values.max() <= 1 and ((values > 0.01) & (values < 0.99)).any()
    assert soft.segs[0][256, 256] == 1.0 and soft.segs[0][0, 0] == 0.0
    assert np.abs(values - near.segs[0]).mean() < 0.02
    np.testing.assert_array_equal(near.polygons, soft.polygons)
    with pytest.raises(ValueError, match="seg_resize"):
        layout_to_instdiff(layout(obj_mask("a ball", mask)), width=512, height=512, seed=0, seg_resize="cubic")


def test_point_profile() -> None:
    lay = layout(obj_point("a tower", 0.55, 0.23), obj_point("a tree", 0.16, 0.75))
    out = layout_to_instdiff(lay, width=768, height=512, seed=0)
    assert out.profile == "point"
    np.testing.assert_allclose(out.points[:2], [[0.55, 0.23], [0.16, 0.75]])
    assert not out.boxes.any()  # the official point profile drops boxes; none are invented
    np.testing.assert_array_equal(out.masks[:3], [1, 1, 0])


def test_scribble_profile_sorts_in_pixel_space() -> None:
    # normalised, (0.2, 0.1) is nearer the origin than (0.1, 0.9); in 1000×100 pixels
    # (100, 90) is nearer than (200, 10): the official order is the pixel one
    stroke = [(0.2, 0.1), (0.1, 0.9), (0.4, 0.5)]
    out = layout_to_instdiff(layout(obj_scribble("a snake", stroke)), width=1000, height=100, seed=0)
    assert out.profile == "scribble"
    pts = out.scribbles[0].reshape(-1, 2)
    expected_px = reorder_scribbles(np.array(stroke) * [1000, 100], N_SCRIBBLE)
    np.testing.assert_array_equal(pts, convert_points(expected_px, 1000, 100).astype(np.float32))
    np.testing.assert_allclose(pts[0], [0.1, 0.9])
    np.testing.assert_allclose(out.boxes[0], [0.1, 0.1, 0.4, 0.9])  # the stroke's extent
    np.testing.assert_allclose(out.points[0], [0.25, 0.5])
    assert not out.polygons.any() and not out.segs.any()


def test_scribble_pixel_ties_survive_the_normalised_round_trip() -> None:
    # (1, 21) and (21, 1) px are at equal distances; x/1000·1000 is not exact for x = 21, which
    # would break the tie the other way without snapping back to whole pixels
    stroke = [(1 / 1000, 21 / 600), (21 / 1000, 1 / 600)]
    out = layout_to_instdiff(layout(obj_scribble("a line", stroke)), width=1000, height=600, seed=0)
    pts = out.scribbles[0].reshape(-1, 2)
    expected = convert_points(reorder_scribbles(np.array([[1.0, 21.0], [21.0, 1.0]])), 1000, 600)
    np.testing.assert_array_equal(pts, expected.astype(np.float32))
    np.testing.assert_allclose(pts[0], [0.001, 0.035])


@pytest.mark.parametrize(
    ("objects", "profile"),
    [
        ([obj_box("a", (0, 0, 0.5, 0.5))], "box"),
        ([obj_point("a", 0.5, 0.5)], "point"),
        ([obj_scribble("a", [(0.1, 0.1), (0.2, 0.3)])], "scribble"),
        ([obj_mask("a", rect(4, 4, 0, 2, 0, 2))], "mask"),
    ],
)
def test_auto_profile(objects: list[LayoutObject], profile: str) -> None:
    assert layout_to_instdiff(layout(*objects), width=64, height=64, seed=0).profile == profile


# ------------------------------------------------------------------------------------ errors


def test_more_than_30_objects_is_an_error() -> None:
    lay = layout(*[obj_box(f"thing {i}", (0.0, 0.0, 0.5, 0.5)) for i in range(31)])
    with pytest.raises(LayoutError, match="at most 30 objects; the layout has 31.*silently.*Merge or drop"):
        layout_to_instdiff(lay, width=512, height=512, seed=0)
    ok = layout(*[obj_box(f"thing {i}", (0.0, 0.0, 0.5, 0.5)) for i in range(30)])
    assert layout_to_instdiff(ok, width=512, height=512, seed=0).masks.sum() == 30


def test_keypoints_are_rejected_naming_the_object() -> None:
    person = LayoutObject(phrase="a person", keypoints=[Keypoint(name="nose", x=0.5, y=0.3)])
    lay = layout(obj_box("a dog", (0.1, 0.1, 0.3, 0.3)), person)
    with pytest.raises(LayoutError, match=r"object 1 \('a person'\): keypoints .* 'point'"):
        layout_to_instdiff(lay, width=512, height=512, seed=0, per_instance_modalities=True)


def test_mixed_kinds_error_names_the_first_offending_object() -> None:
    lay = layout(obj_mask("a vase", rect(8, 8, 1, 5, 1, 5)), obj_box("a dog", (0.5, 0.5, 0.9, 0.9)))
    with pytest.raises(LayoutError) as info:
        layout_to_instdiff(lay, width=512, height=512, seed=0)
    message = str(info.value)
    assert message.startswith("object 1 ('a dog'): has a box region")
    assert "'mask'" in message and "mask region" in message and "per_instance_modalities=True" in message


def test_explicit_profile_that_does_not_fit() -> None:
    lay = layout(obj_box("a cat", (0.1, 0.1, 0.4, 0.4)), obj_point("a bird", 0.7, 0.2))
    with pytest.raises(LayoutError, match=r"object 1 \('a bird'\): has a point region.*'box' \(requested"):
        layout_to_instdiff(lay, width=512, height=512, seed=0, profile="box")
    with pytest.raises(LayoutError, match=r"object 0 \('a cat'\).*profile=\"auto\""):
        layout_to_instdiff(lay, width=512, height=512, seed=0, profile="point")
    with pytest.raises(ValueError, match="unknown profile"):
        layout_to_instdiff(lay, width=512, height=512, seed=0, profile="depth")


# ------------------------------------------------------------------- per-instance modalities


def test_per_instance_modalities_fill_what_each_object_has() -> None:
    mask = rect(16, 16, 2, 10, 4, 12)
    lay = layout(obj_box("a table", (0.0, 0.5, 1.0, 1.0)), obj_point("a bird", 0.8, 0.1), obj_mask("a vase", mask))
    out = layout_to_instdiff(lay, width=512, height=512, seed=0, per_instance_modalities=True)
    assert out.profile == "mask" and out.per_instance_modalities
    np.testing.assert_allclose(out.boxes[0], [0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(out.points[1], [0.8, 0.1])
    np.testing.assert_allclose(out.boxes[1], [0.75, 0.05, 0.85, 0.15])  # the core's padded point box
    np.testing.assert_allclose(out.boxes[2], [4 / 16, 2 / 16, 12 / 16, 10 / 16])
    assert not out.polygons[:2].any() and out.polygons[2].any()  # zero-coordinate rule for the others
    assert not out.segs[:2].any() and out.segs[2].any()
    np.testing.assert_array_equal(
        out.has_modality[:4],
        [[1, 1, 0, 0], [0, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]],  # box, point, scribble, mask
    )


def test_per_instance_with_a_scribble_uses_the_scribble_profile() -> None:
    lay = layout(obj_box("a table", (0.0, 0.5, 1.0, 1.0)), obj_scribble("a rope", [(0.1, 0.2), (0.6, 0.3)]))
    out = layout_to_instdiff(lay, width=512, height=512, seed=0, per_instance_modalities=True)
    assert out.profile == "scribble"
    assert not out.scribbles[0].any() and out.scribbles[1].any()
    only_points = layout(obj_point("a", 0.2, 0.2), obj_point("b", 0.6, 0.6))
    assert layout_to_instdiff(only_points, width=64, height=64, seed=0, per_instance_modalities=True).profile == "point"


# -------------------------------------------------------------------------------- randomness


def test_same_seed_same_arrays_and_global_rng_untouched() -> None:
    small = disc(16, 16, 8, 8, 3)  # 29 pixels: the polygon interior points are random draws
    lay = layout(obj_mask("a coin", small), obj_mask("a ring", disc(16, 16, 4, 11, 2.2)))
    random.seed(1234)
    np.random.seed(1234)
    py_state, np_state = random.getstate(), np.random.get_state()
    a = layout_to_instdiff(lay, width=256, height=256, seed=7)
    b = layout_to_instdiff(lay, width=256, height=256, seed=7)
    c = layout_to_instdiff(lay, width=256, height=256, seed=8)
    assert random.getstate() == py_state
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:]
    for name in ("boxes", "masks", "points", "scribbles", "polygons", "segs"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.polygons, c.polygons) and not np.array_equal(a.scribbles, c.scribbles)
    np.testing.assert_array_equal(a.segs, c.segs)  # the deterministic parts do not depend on the seed


# ---------------------------------------------------------------------------- official JSON


def official_json() -> dict:
    mask = rect(512, 768, 100, 300, 200, 400)
    return {
        "caption": "a dog and a cat in a garden",
        "width": 768,
        "height": 512,
        "annos": [
            {
                "bbox": [190, 95, 220, 210],
                "mask": {"size": [512, 768], "counts": encode_rle_string(column_major_counts(mask))},
                "category_name": "dog",
                "caption": "a brown dog",
            },
            {"bbox": [0, 358, 900, 153], "mask": [], "category_name": "", "caption": "a lawn"},
            {"category_name": "tower", "caption": "a clock tower", "point": [384.0, 128.0]},
            {
                "bbox": [10, 10, 50, 50],
                "scribble": [[20, 30], [40, 35], [55, 50]],
                "category_name": "cat",
                "caption": "",
            },
            {"bbox": [0, 512, 0, 0], "mask": [], "category_name": "", "caption": "an oil painting"},
        ],
    }


def test_official_json_import(tmp_path) -> None:
    path = tmp_path / "demo.json"
    path.write_text(json.dumps(official_json()))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lay, extras = official_json_to_layout(path)
    assert any("annotation 4 ('an oil painting')" in str(w.message) for w in caught)
    assert lay.prompt == "a dog and a cat in a garden"
    assert [o.phrase for o in lay.objects] == ["a brown dog", "a lawn", "a clock tower", "cat"]
    assert [o.kind for o in lay.objects] == extras["kinds"] == ["mask", "box", "point", "scribble"]
    assert extras["anno_index"] == [0, 1, 2, 3] and extras["skipped"][0][0] == 4
    assert (extras["width"], extras["height"]) == (768, 512)
    assert extras["boxes"][0] == [190, 95, 220, 210] and extras["points"][2] == [384.0, 128.0]
    assert extras["scribbles"][3] == [[20, 30], [40, 35], [55, 50]]
    mask = np.array(lay.objects[0].mask.to_rows())
    np.testing.assert_array_equal(mask, rect(512, 768, 100, 300, 200, 400))
    box = lay.objects[1].box
    assert (box.x0, box.y0, box.x1, box.y1) == (0.0, 358 / 512, 1.0, (358 + 153) / 512)  # clipped to the image
    assert (lay.objects[2].point.x, lay.objects[2].point.y) == (0.5, 0.25)
    assert (lay.objects[3].scribble[0].x, lay.objects[3].scribble[0].y) == (20 / 768, 30 / 512)
    # the same from JSON text and from the dict
    for source in (path.read_text(), official_json()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            again, _ = official_json_to_layout(source)
        assert again == lay

    out = layout_to_instdiff(lay, width=768, height=512, seed=0, per_instance_modalities=True)
    assert out.profile == "scribble"
    np.testing.assert_allclose(out.boxes[0], [200 / 768, 100 / 512, 400 / 768, 300 / 512])
    np.testing.assert_allclose(out.points[2], [0.5, 0.25])
    # the scribble keeps its pixels exactly: x/768·768 round trip, then the official order
    expected = convert_points(reorder_scribbles(np.array([[20, 30], [40, 35], [55, 50]], float)), 768, 512)
    np.testing.assert_array_equal(out.scribbles[3].reshape(-1, 2), expected.astype(np.float32))
    assert out.segs[0].sum() > 0 and not out.segs[1:].any()


def test_official_json_errors() -> None:
    with pytest.raises(LayoutError, match="lacks annos"):
        official_json_to_layout({"caption": "x", "width": 10, "height": 10})
    bad = {
        "caption": "x",
        "width": 4,
        "height": 4,
        "annos": [{"caption": "a", "mask": {"size": [4, 4], "counts": [3]}}],
    }
    with pytest.raises(LayoutError, match=r"annotation 0 \('a'\): invalid mask"):
        official_json_to_layout(bad)
    nothing = {"caption": "x", "width": 4, "height": 4, "annos": [{"caption": "a", "bbox": [0, 0, 0, 0]}]}
    with pytest.raises(LayoutError, match="no annotation with a usable region"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        official_json_to_layout(nothing)
