"""Control models on hand-made model outputs: label mapping, thresholds, region shapes. No model runs."""

from __future__ import annotations

import numpy as np
import pytest
from label_studio_sdk.label_interface import LabelInterface

from control_models.base import build_label_map
from control_models.brush_labels import BrushLabelsModel
from control_models.choices import ChoicesModel, TaxonomyModel
from control_models.keypoint_labels import KeyPointLabelsModel
from control_models.labeling_plan import PlanCache, build_plan, config_hash
from control_models.polygon_labels import PolygonLabelsModel
from control_models.rectangle_labels import RectangleLabelsModel
from control_models.rectangle_labels_obb import OrientedRectangleLabelsModel
from core.errors import LabelingConfigError
from inference.detections import BoxMask, Classification, Detections

COCO_LIKE = {0: "person", 1: "bicycle", 2: "car", 5: "bus", 7: "truck"}


def view(*tags: str, image: str = '<Image name="image" value="$image"/>') -> str:
    return f"<View>{image}{''.join(tags)}</View>"


def plan_of(config: str, settings):
    return build_plan(config, settings)


def only_control(config: str, settings):
    (control,) = plan_of(config, settings).controls
    return control


def assert_valid(config: str, regions: list[dict]) -> None:
    errors = LabelInterface(config).validate_prediction({"result": regions}, return_errors=True)
    assert errors == [], errors


# -- label mapping ------------------------------------------------------------------------------------


def test_label_map_by_value_lowercase_and_predicted_values():
    labels = {
        "person": {"value": "person"},
        "Car": {"value": "Car"},  # matches "car" ignoring case
        "Vehicle": {"value": "Vehicle", "predicted_values": "truck, bus"},
        "Dog": {"value": "Dog"},  # no such class: unmapped
    }
    assert build_label_map(labels, COCO_LIKE) == {0: "person", 2: "Car", 7: "Vehicle", 5: "Vehicle"}


def test_predicted_values_replace_the_label_value():
    labels = {"car": {"value": "car", "predicted_values": "truck"}}
    assert build_label_map(labels, COCO_LIKE) == {7: "car"}


def test_unmapped_control_is_logged_with_classes_and_fix(make_settings, caplog):
    control = only_control(
        view('<RectangleLabels name="r" toName="image"><Label value="Airplane"/></RectangleLabels>'),
        make_settings(),
    )
    with caplog.at_level("WARNING"):
        assert control.label_map(COCO_LIKE) == {}
    assert "Airplane" in caplog.text and "bicycle" in caplog.text
    assert "predicted_values" in caplog.text and "model_skip" in caplog.text


def test_label_map_is_built_once_per_model(make_settings, monkeypatch):
    control = only_control(
        view('<RectangleLabels name="r" toName="image"><Label value="car"/></RectangleLabels>'),
        make_settings(),
    )
    calls = []
    original = control._build_label_map
    monkeypatch.setattr(control, "_build_label_map", lambda names: calls.append(1) or original(names))
    for _ in range(3):
        assert control.label_map(COCO_LIKE) == {2: "car"}
    assert len(calls) == 1


# -- the plan -----------------------------------------------------------------------------------------


def test_plan_picks_a_control_model_per_tag(make_settings):
    config = view(
        '<RectangleLabels name="box" toName="image"><Label value="car"/></RectangleLabels>',
        '<RectangleLabels name="obb" toName="image" model_obb="true"><Label value="plane"/></RectangleLabels>',
        '<PolygonLabels name="poly" toName="image"><Label value="car"/></PolygonLabels>',
        '<BrushLabels name="brush" toName="image"><Label value="car"/></BrushLabels>',
        '<Choices name="cls" toName="image"><Choice value="cat"/></Choices>',
        '<Taxonomy name="tax" toName="image"><Choice value="Animal"><Choice value="cat"/></Choice></Taxonomy>',
        '<KeyPointLabels name="kp" toName="image"><Label value="nose" model_index="0"/></KeyPointLabels>',
        '<RectangleLabels name="skipped" toName="image" model_skip="true"><Label value="car"/></RectangleLabels>',
        '<TextArea name="note" toName="image"/>',
    )
    kinds = {c.from_name: type(c) for c in plan_of(config, make_settings()).controls}
    assert kinds == {
        "box": RectangleLabelsModel,
        "obb": OrientedRectangleLabelsModel,
        "poly": PolygonLabelsModel,
        "brush": BrushLabelsModel,
        "cls": ChoicesModel,
        "tax": TaxonomyModel,
        "kp": KeyPointLabelsModel,
    }


def test_plan_defaults_and_attributes(make_settings):
    settings = make_settings(model_score_threshold=0.4)
    default = only_control(
        view('<RectangleLabels name="r" toName="image"><Label value="car"/></RectangleLabels>'), settings
    )
    assert (default.model_path, default.score_threshold, default.value_key) == ("yolov8m.pt", 0.4, "image")
    custom = only_control(
        view(
            '<PolygonLabels name="p" toName="img" model_path="sub/seg.pt" model_score_threshold="0.8">'
            '<Label value="car"/></PolygonLabels>',
            image='<Image name="img" value="$photo"/>',
        ),
        settings,
    )
    assert (custom.model_path, custom.score_threshold, custom.value_key, custom.to_name) == (
        "sub/seg.pt",
        0.8,
        "photo",
        "img",
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("<View><Image", "not a valid labeling config"),
        ("", "label_config is empty"),
        (view('<TextArea name="t" toName="image"/>'), "no control tag this backend can predict"),
        (
            view(
                '<RectangleLabels name="r" toName="image" model_score_threshold="high"><Label value="a"/></RectangleLabels>'
            ),
            'model_score_threshold="high"',
        ),
        (
            view('<KeyPointLabels name="kp" toName="image"><Label value="nose"/></KeyPointLabels>'),
            "model_index",
        ),
    ],
)
def test_bad_configs_say_what_is_wrong(make_settings, config, message):
    with pytest.raises(LabelingConfigError, match=message):
        build_plan(config, make_settings())


def test_model_path_needs_allow_custom_model_path(make_settings):
    config = view(
        '<RectangleLabels name="r" toName="image" model_path="x.pt"><Label value="a"/></RectangleLabels>'
    )
    with pytest.raises(LabelingConfigError, match="ALLOW_CUSTOM_MODEL_PATH"):
        build_plan(config, make_settings(allow_custom_model_path=False))


def test_plan_cache_parses_each_config_once(make_settings, monkeypatch):
    import control_models.labeling_plan as labeling_plan

    calls = []
    original = labeling_plan.build_plan
    monkeypatch.setattr(labeling_plan, "build_plan", lambda *a: calls.append(1) or original(*a))
    cache = PlanCache(make_settings())
    config = view('<RectangleLabels name="r" toName="image"><Label value="car"/></RectangleLabels>')
    assert cache.get(config) is cache.get(config)
    assert len(calls) == 1


def test_config_hash_ignores_white_space():
    assert config_hash("<View>\n  <Image/></View>") == config_hash("<View> <Image/></View>")
    assert config_hash("<View><Image/></View>") != config_hash("<View><Text/></View>")


# -- regions from hand-made outputs ------------------------------------------------------------------


def detections(**arrays) -> Detections:
    defaults = {
        "image_width": 640,
        "image_height": 480,
        "xyxy": np.array([[64, 48, 320, 240], [0, 0, 10, 10], [100, 100, 200, 200]], dtype=np.float32),
        "scores": np.array([0.9, 0.3, 0.8], dtype=np.float32),
        "class_ids": np.array([2, 2, 3]),
    }
    defaults.update(arrays)
    return Detections(**defaults)


def test_rectangles_keep_mapped_classes_over_threshold(make_settings):
    config = view(
        '<RectangleLabels name="r" toName="image"><Label value="Car" predicted_values="car"/></RectangleLabels>'
    )
    control = only_control(config, make_settings(model_score_threshold=0.5))
    regions = control.regions(detections(), {2: "car", 3: "motorcycle"})
    assert len(regions) == 1  # 0.3 is under the threshold, class 3 is not mapped
    value = regions[0]["value"]
    assert value["rectanglelabels"] == ["Car"]
    assert (value["x"], value["y"], value["width"], value["height"]) == pytest.approx((10, 10, 40, 40))
    assert regions[0]["score"] == pytest.approx(0.9)
    assert_valid(config, regions)


def test_oriented_rectangles_carry_rotation(make_settings):
    config = view(
        '<RectangleLabels name="r" toName="image" model_obb="true"><Label value="plane"/></RectangleLabels>'
    )
    control = only_control(config, make_settings())
    output = detections(
        xyxy=np.array([[0, 0, 1, 1]], dtype=np.float32),
        scores=np.array([0.9], dtype=np.float32),
        class_ids=np.array([0]),
        xywhr=np.array([[320, 240, 100, 50, np.pi / 6]], dtype=np.float32),
    )
    (region,) = control.regions(output, {0: "plane"})
    assert region["value"]["rotation"] == pytest.approx(30, abs=1e-3)
    assert_valid(config, [region])


def test_polygons_and_brush_from_one_segmentation_output(make_settings):
    config = view(
        '<PolygonLabels name="p" toName="image"><Label value="car"/></PolygonLabels>',
        '<BrushLabels name="b" toName="image"><Label value="car"/></BrushLabels>',
    )
    polygon_control, brush_control = plan_of(config, make_settings()).controls
    masks = [BoxMask(64, 48, np.ones((192, 256), dtype=bool))] + [BoxMask(0, 0, np.zeros((1, 1), bool))] * 2
    output = detections(
        polygons=[np.array([[64, 48], [320, 48], [320, 240], [64, 240]], dtype=np.float32)] * 3,
        masks=masks,
    )
    polygons = polygon_control.regions(output, {2: "car"})
    brushes = brush_control.regions(output, {2: "car"})
    assert len(polygons) == 1 and len(brushes) == 1
    assert polygons[0]["value"]["points"][0] == pytest.approx([10, 10])
    assert brushes[0]["value"]["format"] == "rle"
    assert_valid(config, polygons + brushes)


def test_choices_single_and_multiple(make_settings):
    probs = np.array([0.1, 0.6, 0.7, 0.05], dtype=np.float32)
    names = {0: "tabby", 1: "tiger_cat", 2: "school_bus", 3: "minibus"}
    output = Classification(640, 480, probs)
    choices = '<Choice value="Cat" predicted_values="tabby,tiger_cat"/><Choice value="Bus" predicted_values="school_bus,minibus"/>'
    single = view(f'<Choices name="c" toName="image">{choices}</Choices>')
    multiple = view(f'<Choices name="c" toName="image" choice="multiple">{choices}</Choices>')
    settings = make_settings(model_score_threshold=0.5)
    (region,) = only_control(single, settings).regions(output, names)
    assert region["value"]["choices"] == ["Bus"] and region["score"] == pytest.approx(0.7)
    (region_multi,) = only_control(multiple, settings).regions(output, names)
    assert region_multi["value"]["choices"] == ["Bus", "Cat"]
    assert_valid(single, [region])
    assert_valid(multiple, [region_multi])
    low = Classification(640, 480, np.array([0.1, 0.2, 0.3, 0.1], dtype=np.float32))
    assert only_control(single, settings).regions(low, names) == []


def test_taxonomy_gives_the_path_from_the_root(make_settings):
    config = view(
        '<Taxonomy name="t" toName="image"><Choice value="Animal"><Choice value="Cat" predicted_values="tabby"/>'
        '</Choice><Choice value="Vehicle"/></Taxonomy>'
    )
    control = only_control(config, make_settings())
    (region,) = control.regions(
        Classification(10, 10, np.array([0.9, 0.1], dtype=np.float32)), {0: "tabby", 1: "x"}
    )
    assert region["value"]["taxonomy"] == [["Animal", "Cat"]]
    assert_valid(config, [region])


def test_keypoints_map_indices_and_link_to_boxes(make_settings):
    config = view(
        '<RectangleLabels name="box" toName="image" model_skip="true"><Label value="Person" predicted_values="person"/></RectangleLabels>',
        '<KeyPointLabels name="kp" toName="image" model_point_threshold="0.5" model_point_size="0.8">'
        '<Label value="nose" predicted_values="person" model_index="0"/>'
        '<Label value="left_eye" predicted_values="person" model_index="1"/></KeyPointLabels>',
    )
    control = only_control(config, make_settings())
    keypoints = np.zeros((3, 17, 3), dtype=np.float32)
    keypoints[0, 0] = [320, 240, 0.9]  # nose, visible
    keypoints[0, 1] = [330, 230, 0.2]  # left eye, under model_point_threshold
    output = detections(class_ids=np.array([0, 0, 0]), keypoints=keypoints)
    regions = control.regions(output, {0: "person"})
    boxes = [r for r in regions if r["type"] == "rectanglelabels"]
    points = [r for r in regions if r["type"] == "keypointlabels"]
    assert len(boxes) == 2  # detections 0 and 2 are over the 0.5 score threshold
    assert boxes[0]["from_name"] == "box" and boxes[0]["value"]["rectanglelabels"] == ["Person"]
    nose = [p for p in points if p["value"]["keypointlabels"] == ["nose"] and p["parentID"] == boxes[0]["id"]]
    assert len(nose) == 1
    assert (nose[0]["value"]["x"], nose[0]["value"]["y"], nose[0]["value"]["width"]) == pytest.approx(
        (50, 50, 0.8)
    )
    assert not [
        p for p in points if p["value"]["keypointlabels"] == ["left_eye"] and p["parentID"] == boxes[0]["id"]
    ]
    assert_valid(config, regions)
