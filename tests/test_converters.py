"""Unit tests for converters/: hand-made arrays in, Label Studio geometry and regions out."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle
from label_studio_sdk.converter.utils import convert_annotation_to_yolo_obb, convert_yolo_obb_to_annotation
from label_studio_sdk.label_interface import LabelInterface

from converters import geometry, image_regions, regions
from converters.geometry import (
    label_studio_rect_corners,
    obb_to_label_studio,
    polygon_to_percent,
    xyxy_to_percent,
)
from converters.image_regions import (
    brush_region,
    choices_region,
    keypoint_region,
    oriented_rectangle_region,
    polygon_region,
    prediction_score,
    rectangle_region,
    taxonomy_region,
)

W, H = 640, 480  # non-square on purpose: swapping width and height must break something
OBB_ANGLES_DEG = [0, 30, 90, 135, 200, -30]


def obb_corners(cx: float, cy: float, w: float, h: float, angle: float) -> np.ndarray:
    """(4, 2) corners of an Ultralytics xywhr box, same formula as ultralytics.utils.ops.xywhr2xyxyxyxy."""
    along_w = np.array([np.cos(angle), np.sin(angle)]) * w / 2
    along_h = np.array([-np.sin(angle), np.cos(angle)]) * h / 2
    center = np.array([cx, cy])
    return np.stack(
        [
            center + along_w + along_h,
            center + along_w - along_h,
            center - along_w - along_h,
            center - along_w + along_h,
        ]
    )


def assert_same_corner_set(actual: np.ndarray, expected: np.ndarray, atol: float = 1e-3) -> None:
    distances = np.linalg.norm(actual[:, None, :] - expected[None, :, :], axis=-1)
    nearest = distances.argmin(axis=1)
    assert sorted(nearest.tolist()) == [0, 1, 2, 3], f"corners do not pair up:\n{actual}\nvs\n{expected}"
    assert distances.min(axis=1).max() < atol, f"corners differ:\n{actual}\nvs\n{expected}"


def assert_json_plain(obj: object) -> None:
    """Only JSON-native types: numpy scalars would break (or silently change) the HTTP response."""
    if isinstance(obj, dict):
        assert all(type(key) is str for key in obj)
        for item in obj.values():
            assert_json_plain(item)
    elif isinstance(obj, list):
        for item in obj:
            assert_json_plain(item)
    else:
        assert type(obj) in (str, int, float, bool) or obj is None, f"{obj!r} is {type(obj)}"


# --- geometry ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [geometry, image_regions, regions])
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0


def test_xyxy_to_percent_uses_width_for_x_and_height_for_y():
    boxes = np.array([[64, 48, 320, 240], [0, 0, 100, 100]])
    np.testing.assert_allclose(
        xyxy_to_percent(boxes, W, H),
        [[10, 10, 40, 40], [0, 0, 100 / 640 * 100, 100 / 480 * 100]],
    )


def test_xyxy_to_percent_clips_to_the_image():
    boxes = np.array([[-50, -20, 700, 500], [600, 400, 700, 500], [700, 10, 800, 20]])
    np.testing.assert_allclose(
        xyxy_to_percent(boxes, W, H),
        [
            [0, 0, 100, 100],
            [93.75, 400 / 480 * 100, 6.25, 80 / 480 * 100],
            [100, 10 / 480 * 100, 0, 10 / 480 * 100],
        ],
    )


def test_empty_geometry_inputs():
    assert xyxy_to_percent(np.empty((0, 4)), W, H).shape == (0, 4)
    assert obb_to_label_studio(np.empty((0, 5)), W, H).shape == (0, 5)
    assert polygon_to_percent(np.empty((0, 2)), W, H) == []


def test_zero_image_size_is_rejected():
    with pytest.raises(ValueError, match="image size"):
        xyxy_to_percent(np.array([[0, 0, 1, 1]]), 0, H)


def test_polygon_to_percent_clips_and_returns_plain_floats():
    points = polygon_to_percent(np.array([[64, 48], [700, 48], [64, -5]]), W, H)
    assert points == [[10.0, 10.0], [100.0, 10.0], [10.0, 0.0]]
    assert_json_plain(points)


def test_obb_axis_aligned_box_keeps_its_top_left_corner():
    (x, y, width, height, rotation), *_ = obb_to_label_studio(np.array([[320, 240, 128, 96, 0.0]]), W, H)
    np.testing.assert_allclose([x, y, width, height, rotation], [256 / 640 * 100, 192 / 480 * 100, 20, 20, 0])


@pytest.mark.parametrize("angle_deg", OBB_ANGLES_DEG)
def test_obb_round_trip_gives_back_the_obb_corners(angle_deg):
    angle = np.radians(angle_deg)
    boxes = np.array([[320, 240, 200, 60, angle], [100, 400, 30, 90, angle], [600, 50, 75.5, 20.25, angle]])
    converted = obb_to_label_studio(boxes, W, H)
    assert converted.shape == (3, 5)
    for box, (x, y, width, height, rotation) in zip(boxes, converted, strict=True):
        assert 0 <= rotation < 360
        corners = label_studio_rect_corners(x, y, width, height, rotation, W, H)
        assert_same_corner_set(corners, obb_corners(*box))


def test_reference_obb_corners_match_ultralytics():
    from ultralytics.utils import ops  # pinned in requirements.txt: a missing one must fail, not skip

    boxes = np.array([[320, 240, 200, 60, np.radians(a)] for a in OBB_ANGLES_DEG])
    np.testing.assert_allclose(ops.xywhr2xyxyxyxy(boxes), np.stack([obb_corners(*box) for box in boxes]))


@pytest.mark.parametrize("rotation", [0, 30, 90, 135, 200, 359])
def test_rect_corners_match_label_studio_sdk(rotation):
    label = {"x": 20, "y": 30, "width": 25, "height": 10, "rotation": rotation}
    label.update(original_width=W, original_height=H)
    expected = np.array(convert_annotation_to_yolo_obb(label, normalize=False))
    np.testing.assert_allclose(label_studio_rect_corners(20, 30, 25, 10, rotation, W, H), expected, atol=1e-9)


@pytest.mark.parametrize("angle_deg", [0, 30, 89])
def test_obb_is_the_same_rectangle_as_the_official_backend_draws(angle_deg):
    # The official example converts xyxyxyxy with the SDK; that swaps w/h and shifts the angle by -90°,
    # but must describe the same rectangle on screen.
    box = np.array([320, 240, 200, 60, np.radians(angle_deg)])
    official = convert_yolo_obb_to_annotation(obb_corners(*box).ravel().tolist(), W, H)
    official_corners = label_studio_rect_corners(
        official["x"], official["y"], official["width"], official["height"], official["rotation"], W, H
    )
    ours = label_studio_rect_corners(*obb_to_label_studio(box[None], W, H)[0], W, H)
    assert_same_corner_set(ours, official_corners)


def test_obb_tiny_negative_angle_stays_below_360():
    rotation = obb_to_label_studio(np.array([[320, 240, 10, 10, -1e-17]]), W, H)[0, 4]
    assert 0 <= rotation < 360


# --- regions ----------------------------------------------------------------------------------------


def test_rectangle_region_fields():
    region = rectangle_region(
        from_name="label",
        to_name="image",
        label="car",
        xyxy=np.array([64, 48, 320, 240]),
        score=np.float32(0.9),
        image_width=W,
        image_height=H,
    )
    assert region["type"] == "rectanglelabels"
    assert region["value"] == {
        "x": 10.0,
        "y": 10.0,
        "width": 40.0,
        "height": 40.0,
        "rotation": 0,
        "rectanglelabels": ["car"],
    }
    assert (region["original_width"], region["original_height"], region["image_rotation"]) == (W, H, 0)
    assert region["score"] == pytest.approx(0.9)
    assert isinstance(region["id"], str) and 0 < len(region["id"]) <= 16
    assert_json_plain(region)


def test_region_ids_are_random_unless_given():
    kwargs = dict(from_name="label", to_name="image", label="car", xyxy=np.array([0, 0, 10, 10]), score=0.5)
    first = rectangle_region(**kwargs, image_width=W, image_height=H)
    second = rectangle_region(**kwargs, image_width=W, image_height=H)
    given = rectangle_region(**kwargs, image_width=W, image_height=H, region_id="box-1")
    assert first["id"] != second["id"]
    assert given["id"] == "box-1"


def test_oriented_rectangle_region_carries_rotation():
    region = oriented_rectangle_region(
        from_name="label",
        to_name="image",
        label="ship",
        xywhr=np.array([320, 240, 200, 60, np.radians(30)]),
        score=0.8,
        image_width=W,
        image_height=H,
    )
    value = region["value"]
    assert region["type"] == "rectanglelabels"
    assert value["rotation"] == pytest.approx(30)
    assert value["rectanglelabels"] == ["ship"]
    corners = label_studio_rect_corners(
        value["x"], value["y"], value["width"], value["height"], value["rotation"], W, H
    )
    assert_same_corner_set(corners, obb_corners(320, 240, 200, 60, np.radians(30)))
    assert_json_plain(region)


@pytest.mark.parametrize("n_points", [0, 1, 2])
def test_polygon_with_fewer_than_three_points_is_none(n_points):
    points = np.array([[10, 10], [20, 10]])[:n_points].reshape(-1, 2)
    region = polygon_region(
        from_name="label",
        to_name="image",
        label="cat",
        points=points,
        score=0.5,
        image_width=W,
        image_height=H,
    )
    assert region is None


def test_polygon_region_fields():
    region = polygon_region(
        from_name="label",
        to_name="image",
        label="cat",
        points=np.array([[0, 0], [64, 0], [64, 960]]),
        score=0.5,
        image_width=W,
        image_height=H,
    )
    assert region is not None
    assert region["type"] == "polygonlabels"
    assert region["value"] == {
        "points": [[0.0, 0.0], [10.0, 0.0], [10.0, 100.0]],
        "closed": True,
        "polygonlabels": ["cat"],
    }
    assert_json_plain(region)


def test_brush_rle_decodes_to_the_same_mask():
    rng = np.random.default_rng(0)
    mask = rng.random((37, 53)) > 0.6  # non-square and odd so a transposed decode cannot pass
    mask[5:20, 10:40] = True
    region = brush_region(from_name="brush", to_name="image", label="cat", mask=mask, score=0.7)
    assert region is not None
    assert region["type"] == "brushlabels"
    assert (region["original_width"], region["original_height"]) == (53, 37)
    assert region["value"]["format"] == "rle" and region["value"]["brushlabels"] == ["cat"]
    decoded = decode_rle(region["value"]["rle"]).reshape(37, 53, 4)
    # The editor draws the alpha channel: foreground must be 255, not 1.
    np.testing.assert_array_equal(decoded[:, :, 3], np.where(mask, 255, 0))
    np.testing.assert_array_equal(decoded[:, :, 0], decoded[:, :, 3])
    assert_json_plain(region)


def test_brush_accepts_uint8_masks_like_bool_masks():
    mask = np.zeros((8, 9), dtype=np.uint8)
    mask[2:5, 3:7] = 1
    from_uint8 = brush_region(from_name="b", to_name="image", label="cat", mask=mask, score=0.7)
    from_bool = brush_region(from_name="b", to_name="image", label="cat", mask=mask.astype(bool), score=0.7)
    assert from_uint8 is not None and from_bool is not None
    assert from_uint8["value"]["rle"] == from_bool["value"]["rle"]


def test_empty_or_malformed_brush_mask():
    empty = np.zeros((4, 5), dtype=bool)
    assert brush_region(from_name="b", to_name="image", label="cat", mask=empty, score=0.7) is None
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        brush_region(from_name="b", to_name="image", label="cat", mask=np.ones((2, 4, 5), bool), score=0.7)


def test_keypoint_region_links_to_its_parent_box():
    box = rectangle_region(
        from_name="box",
        to_name="image",
        label="person",
        xyxy=np.array([200, 100, 400, 400]),
        score=0.9,
        image_width=W,
        image_height=H,
    )
    point = keypoint_region(
        from_name="kp",
        to_name="image",
        label="nose",
        x=320,
        y=120,
        score=0.6,
        image_width=W,
        image_height=H,
        point_size=0.5,
        parent_id=box["id"],
    )
    assert point["type"] == "keypointlabels"
    assert point["parentID"] == box["id"]
    assert point["value"] == {"x": 50.0, "y": 25.0, "width": 0.5, "keypointlabels": ["nose"]}
    assert_json_plain(point)


def test_keypoint_without_parent_has_no_parent_key_and_is_clipped():
    point = keypoint_region(
        from_name="kp",
        to_name="image",
        label="nose",
        x=-3,
        y=500,
        score=0.6,
        image_width=W,
        image_height=H,
        point_size=1,
    )
    assert "parentID" not in point
    assert (point["value"]["x"], point["value"]["y"]) == (0.0, 100.0)


def test_classification_regions():
    choices = choices_region(from_name="cls", to_name="image", choices=("cat",), score=np.float64(0.9))
    taxonomy = taxonomy_region(from_name="tax", to_name="image", paths=[("Animal", "Cat")], score=0.8)
    assert (choices["type"], choices["value"]) == ("choices", {"choices": ["cat"]})
    assert (taxonomy["type"], taxonomy["value"]) == ("taxonomy", {"taxonomy": [["Animal", "Cat"]]})
    for region in (choices, taxonomy):
        assert "original_width" not in region
        assert_json_plain(region)


def test_prediction_score():
    assert prediction_score([]) == 0.0
    assert prediction_score([{"score": 0.5}, {"score": 1.0}]) == pytest.approx(0.75)
    assert prediction_score([{"score": 0.5}, {"id": "no-score"}]) == pytest.approx(0.5)


# --- Label Studio's own validation ------------------------------------------------------------------

IMAGE = '<Image name="image" value="$image"/>'
CONFIGS = {
    "rectangle": f'<View>{IMAGE}<RectangleLabels name="label" toName="image"><Label value="car"/>'
    "</RectangleLabels></View>",
    "polygon": f'<View>{IMAGE}<PolygonLabels name="label" toName="image"><Label value="cat"/>'
    "</PolygonLabels></View>",
    "brush": f'<View>{IMAGE}<BrushLabels name="label" toName="image"><Label value="cat"/>'
    "</BrushLabels></View>",
    "keypoint": f'<View>{IMAGE}<RectangleLabels name="box" toName="image"><Label value="person"/>'
    '</RectangleLabels><KeyPointLabels name="kp" toName="image"><Label value="nose"/>'
    "</KeyPointLabels></View>",
    "choices": f'<View>{IMAGE}<Choices name="label" toName="image"><Choice value="cat"/>'
    '<Choice value="dog"/></Choices></View>',
    "taxonomy": f'<View>{IMAGE}<Taxonomy name="label" toName="image"><Choice value="Animal">'
    '<Choice value="Cat"/></Choice></Taxonomy></View>',
}


def _regions_for(kind: str) -> list[dict]:
    common = dict(to_name="image", score=0.9)
    size = dict(image_width=W, image_height=H)
    if kind == "rectangle":
        return [
            rectangle_region(
                from_name="label", label="car", xyxy=np.array([10, 20, 300, 400]), **common, **size
            ),
            oriented_rectangle_region(
                from_name="label", label="car", xywhr=np.array([320, 240, 100, 40, 0.5]), **common, **size
            ),
        ]
    if kind == "polygon":
        points = np.array([[10, 10], [200, 30], [100, 300]])
        return [polygon_region(from_name="label", label="cat", points=points, **common, **size)]
    if kind == "brush":
        mask = np.zeros((H, W), dtype=bool)
        mask[100:200, 150:300] = True
        return [brush_region(from_name="label", label="cat", mask=mask, **common)]
    if kind == "keypoint":
        box = rectangle_region(
            from_name="box", label="person", xyxy=np.array([200, 100, 400, 400]), **common, **size
        )
        point = keypoint_region(
            from_name="kp", label="nose", x=300, y=150, point_size=0.5, parent_id=box["id"], **common, **size
        )
        return [box, point]
    if kind == "choices":
        return [choices_region(from_name="label", choices=["cat"], **common)]
    if kind == "taxonomy":
        return [taxonomy_region(from_name="label", paths=[["Animal", "Cat"]], **common)]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_regions_pass_label_studio_validation(kind):
    regions = _regions_for(kind)
    prediction = {"result": regions, "score": prediction_score(regions)}
    assert LabelInterface(CONFIGS[kind]).validate_prediction(prediction, return_errors=True) == []


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_label_studio_validation_rejects_an_unknown_label(kind):
    # Guards the test above against a validator that accepts anything.
    regions = _regions_for(kind)
    value = regions[-1]["value"]
    label_key = next(key for key in value if key in {regions[-1]["type"], "choices", "taxonomy"})
    value[label_key] = [["Plant"]] if kind == "taxonomy" else ["not-a-label"]
    assert LabelInterface(CONFIGS[kind]).validate_prediction({"result": regions}, return_errors=True) != []


@pytest.mark.parametrize("angle_degrees", [0, 20, 45, 80])
def test_obb_crossing_the_image_edge_keeps_a_pivot_inside(angle_degrees):
    """Label Studio rejects a pivot outside the image; another corner of the same box serves instead."""
    width, height = 640, 480
    box = np.array([[630.0, 470.0, 120.0, 60.0, np.radians(angle_degrees)]])
    x, y, w, h, rotation = obb_to_label_studio(box, width, height)[0]
    assert 0 <= x <= 100 and 0 <= y <= 100
    corners = label_studio_rect_corners(x, y, w, h, rotation, width, height)
    expected = obb_corners(*box[0])
    assert sorted(map(tuple, corners.round(3))) == sorted(map(tuple, expected.round(3)))


def test_obb_with_no_corner_in_the_image_is_dropped():
    box = np.array([900.0, 900.0, 50.0, 50.0, 0.3])
    region = oriented_rectangle_region(
        from_name="r", to_name="image", label="ship", xywhr=box, score=0.9, image_width=640, image_height=480
    )
    assert region is None
