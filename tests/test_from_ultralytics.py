"""Real Ultralytics `Results` built by hand -> `from_ultralytics` -> control regions, for every image tag.

The geometry is known: a 640x480 image (W x H), letterboxed to 640x640 for the model where a tag's
output lives at the inference size (masks). Each test checks the arrays `from_ultralytics` gives and the
Label Studio regions the control makes of them, so a mistake in either place fails here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from label_studio_sdk.converter.brush import decode_rle
from label_studio_sdk.label_interface import LabelInterface
from ultralytics.engine.results import Results

from control_models.labeling_plan import build_plan
from inference.detections import BoxMask, Classification, Detections, box_masks, from_ultralytics

W, H = 640, 480
PAD = (640 - H) // 2  # letterbox rows above the image at a 640x640 inference size
IMAGE = np.zeros((H, W, 3), dtype=np.uint8)
NAMES = {0: "car", 1: "person"}


def view(tag: str) -> str:
    return f'<View><Image name="image" value="$image"/>{tag}</View>'


def regions_of(config: str, settings, output, names=NAMES) -> list[dict]:
    controls = build_plan(config, settings).controls
    regions = [region for control in controls for region in control.regions(output, names)]
    errors = LabelInterface(config).validate_prediction({"result": regions}, return_errors=True)
    assert errors == [], errors
    return regions


def test_boxes_give_percent_rectangles(make_settings):
    boxes = torch.tensor([[64.0, 48.0, 320.0, 240.0, 0.9, 0.0], [0.0, 0.0, 64.0, 48.0, 0.2, 1.0]])
    output = from_ultralytics(Results(IMAGE, "a.jpg", NAMES, boxes=boxes))
    assert isinstance(output, Detections) and (output.image_width, output.image_height) == (W, H)
    np.testing.assert_allclose(output.xyxy, boxes[:, :4].numpy())
    np.testing.assert_allclose(output.scores, [0.9, 0.2], rtol=1e-6)
    assert output.class_ids.tolist() == [0, 1]
    config = view(
        '<RectangleLabels name="r" toName="image"><Label value="Car" predicted_values="car"/></RectangleLabels>'
    )
    (region,) = regions_of(config, make_settings(model_score_threshold=0.5), output)
    value = region["value"]
    assert (value["x"], value["y"], value["width"], value["height"]) == pytest.approx((10, 10, 40, 40))
    assert value["rectanglelabels"] == ["Car"] and region["score"] == pytest.approx(0.9)


def test_oriented_boxes_give_corners_and_rotation(make_settings):
    # A 200x100 box centred at (320, 240), turned 30 degrees clockwise on screen.
    angle = np.pi / 6
    obb = torch.tensor([[320.0, 240.0, 200.0, 100.0, angle, 0.8, 0.0]])
    output = from_ultralytics(Results(IMAGE, "a.jpg", {0: "plane"}, obb=obb))
    np.testing.assert_allclose(output.xywhr[0], [320, 240, 200, 100, angle], rtol=1e-5)
    config = view(
        '<RectangleLabels name="r" toName="image" model_obb="true"><Label value="plane"/></RectangleLabels>'
    )
    (region,) = regions_of(config, make_settings(), output, {0: "plane"})
    value = region["value"]
    assert value["rotation"] == pytest.approx(30, abs=1e-3)
    assert (value["width"], value["height"]) == pytest.approx((200 / W * 100, 100 / H * 100), rel=1e-4)
    # Label Studio rotates about (x, y): turning the box's corners back must give the model's corners.
    x, y = value["x"] / 100 * W, value["y"] / 100 * H
    w, h = value["width"] / 100 * W, value["height"] / 100 * H
    cos, sin = np.cos(angle), np.sin(angle)
    corners = [
        (x + dx * cos - dy * sin, y + dx * sin + dy * cos) for dx, dy in [(0, 0), (w, 0), (w, h), (0, h)]
    ]
    half = np.array([[-100, -50], [100, -50], [100, 50], [-100, 50]])
    expected = half @ np.array([[cos, sin], [-sin, cos]]) + [320, 240]
    assert sorted(np.round(corners, 2).tolist()) == sorted(np.round(expected, 2).tolist())


def letterboxed_masks() -> torch.Tensor:
    """One instance: the image's rectangle x 64..320, y 48..240, drawn at the 640x640 inference size."""
    masks = torch.zeros((1, 640, 640))
    masks[0, 48 + PAD : 240 + PAD, 64:320] = 1.0
    return masks


def test_masks_are_scaled_back_to_the_original_image_inside_their_boxes():
    (mask,) = box_masks(letterboxed_masks(), np.array([[60.5, 44.2, 330.0, 250.9]]), (H, W))
    assert (
        (mask.x, mask.y) == (60, 44) and mask.mask.shape == (251 - 44, 330 - 60) and mask.mask.dtype == bool
    )
    expected = np.zeros((H, W), dtype=bool)
    expected[48:240, 64:320] = True
    assert (mask.full(W, H) != expected).sum() <= 2 * (256 + 192)  # at most the border pixels differ


def test_box_masks_sample_as_ultralytics_scale_masks():
    """Same pixels as scaling the whole stack with Ultralytics (which costs N x H x W float32)."""
    from ultralytics.utils.ops import scale_masks

    rng = np.random.default_rng(3)
    data = torch.from_numpy(rng.random((2, 640, 640), dtype=np.float32))
    boxes = np.array([[0.0, 0.0, 640.0, 480.0], [101.3, 7.8, 400.1, 333.3]], dtype=np.float32)
    whole = scale_masks(data[None], (H, W))[0].numpy() > 0.5
    for mask, full in zip(box_masks(data, boxes, (H, W)), whole, strict=True):
        h, w = mask.mask.shape
        inside = full[mask.y : mask.y + h, mask.x : mask.x + w]
        assert (mask.mask != inside).mean() < 0.002  # interpolation rounding at the 0.5 threshold only


def test_segmentation_gives_polygons_and_brush_masks(make_settings):
    boxes = torch.tensor([[64.0, 48.0, 320.0, 240.0, 0.9, 0.0]])
    result = Results(IMAGE, "a.jpg", NAMES, boxes=boxes, masks=letterboxed_masks())
    output = from_ultralytics(result, with_masks=True)
    (polygon,) = output.polygons
    assert polygon[:, 0].min() == pytest.approx(64, abs=2) and polygon[:, 0].max() == pytest.approx(
        320, abs=2
    )
    assert polygon[:, 1].min() == pytest.approx(48, abs=2) and polygon[:, 1].max() == pytest.approx(
        240, abs=2
    )
    config = view(
        '<PolygonLabels name="p" toName="image"><Label value="car"/></PolygonLabels>'
        '<BrushLabels name="b" toName="image"><Label value="car"/></BrushLabels>'
    )
    regions = regions_of(config, make_settings(), output)
    (poly_region,) = [r for r in regions if r["type"] == "polygonlabels"]
    (brush_region,) = [r for r in regions if r["type"] == "brushlabels"]
    points = np.array(poly_region["value"]["points"])
    assert points.min(axis=0) == pytest.approx([10, 10], abs=0.5)
    assert points.max(axis=0) == pytest.approx([50, 50], abs=0.5)
    rgba = decode_rle(brush_region["value"]["rle"]).reshape(H, W, 4)
    painted = rgba[..., 3] > 0
    expected = np.zeros((H, W), dtype=bool)
    expected[48:240, 64:320] = True
    assert (painted != expected).sum() <= 2 * (256 + 192)


def test_keypoints_follow_model_index(make_settings):
    boxes = torch.tensor([[64.0, 48.0, 320.0, 240.0, 0.9, 0.0]])
    keypoints = torch.zeros((1, 17, 3))
    keypoints[0, 0] = torch.tensor([320.0, 240.0, 0.95])  # nose
    keypoints[0, 2] = torch.tensor([64.0, 48.0, 0.9])  # right eye
    output = from_ultralytics(Results(IMAGE, "a.jpg", {0: "person"}, boxes=boxes, keypoints=keypoints))
    assert output.keypoints.shape == (1, 17, 3)
    config = view(
        '<RectangleLabels name="box" toName="image" model_skip="true">'
        '<Label value="Person" predicted_values="person"/></RectangleLabels>'
        '<KeyPointLabels name="kp" toName="image" model_point_threshold="0.5">'
        '<Label value="right_eye" predicted_values="person" model_index="2"/>'
        '<Label value="nose" predicted_values="person" model_index="0"/></KeyPointLabels>'
    )
    regions = regions_of(config, make_settings(), output, {0: "person"})
    (box,) = [r for r in regions if r["type"] == "rectanglelabels"]
    points = {r["value"]["keypointlabels"][0]: r for r in regions if r["type"] == "keypointlabels"}
    assert set(points) == {"nose", "right_eye"}
    assert (points["nose"]["value"]["x"], points["nose"]["value"]["y"]) == pytest.approx((50, 50))
    assert (points["right_eye"]["value"]["x"], points["right_eye"]["value"]["y"]) == pytest.approx((10, 10))
    assert all(p["parentID"] == box["id"] for p in points.values())


CHOICE_NAMES = {0: "tabby", 1: "tiger_cat", 2: "school_bus", 3: "minibus"}
CHOICES = (
    '<Choice value="Cat" predicted_values="tabby,tiger_cat"/>'
    '<Choice value="Bus" predicted_values="school_bus,minibus"/>'
)


def classified(probs: list[float]) -> Classification:
    output = from_ultralytics(Results(IMAGE, "a.jpg", CHOICE_NAMES, probs=torch.tensor(probs)))
    assert isinstance(output, Classification) and (output.image_width, output.image_height) == (W, H)
    np.testing.assert_allclose(output.probs, probs, rtol=1e-6)
    return output


def test_single_and_multiple_choices(make_settings):
    output = classified([0.1, 0.6, 0.7, 0.05])
    settings = make_settings(model_score_threshold=0.5)
    (single,) = regions_of(
        view(f'<Choices name="c" toName="image">{CHOICES}</Choices>'), settings, output, CHOICE_NAMES
    )
    assert single["value"]["choices"] == ["Bus"] and single["score"] == pytest.approx(0.7)
    multiple_config = view(f'<Choices name="c" toName="image" choice="multiple">{CHOICES}</Choices>')
    (multiple,) = regions_of(multiple_config, settings, output, CHOICE_NAMES)
    assert sorted(multiple["value"]["choices"]) == ["Bus", "Cat"]


def test_taxonomy_gives_paths(make_settings):
    output = classified([0.05, 0.9, 0.03, 0.02])
    config = view(
        '<Taxonomy name="t" toName="image"><Choice value="Animal"><Choice value="Cat" predicted_values="tabby,tiger_cat"/>'
        '</Choice><Choice value="Vehicle"><Choice value="Bus" predicted_values="school_bus,minibus"/></Choice></Taxonomy>'
    )
    (region,) = regions_of(config, make_settings(), output, CHOICE_NAMES)
    assert region["value"]["taxonomy"] == [["Animal", "Cat"]]


def test_detections_are_filtered_by_a_mask_or_indices_with_every_field():
    polygons = [np.full((3, 2), i, dtype=np.float32) for i in range(3)]
    detections = Detections(
        image_width=W,
        image_height=H,
        xyxy=np.arange(12, dtype=np.float32).reshape(3, 4),
        scores=np.array([0.9, 0.2, 0.7], dtype=np.float32),
        class_ids=np.array([0, 1, 2]),
        polygons=polygons,
        masks=[BoxMask(0, 0, np.full((2, 2), i == 1)) for i in range(3)],
        keypoints=np.arange(3 * 2 * 3, dtype=np.float32).reshape(3, 2, 3),
    )
    kept = detections[detections.scores > 0.5]
    assert len(kept) == 2 and kept.class_ids.tolist() == [0, 2]
    assert [p[0, 0] for p in kept.polygons] == [0, 2]
    assert not any(m.mask.any() for m in kept.masks) and kept.keypoints[1, 0, 0] == 12
    assert detections[np.array([2, 0])].xyxy[:, 0].tolist() == [8, 0]
    assert (
        len(detections[np.zeros(3, dtype=bool)]) == 0 and detections[np.zeros(3, dtype=bool)].polygons == []
    )
