"""MODEL_FORMAT=openvino-int8: a calibrated export made once beside the .pt, checked, then served."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from core.errors import LabelingConfigError, ModelLoadError
from inference import int8_export
from inference.int8_export import Int8Check, export_dir
from inference.model_registry import ModelRegistry
from tools.shapes import draw_shapes_image, to_yolo_labels

SHAPES = Path(__file__).resolve().parent.parent / "models" / "shapes-yolov8n.pt"
CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image" '
    'model_path="shapes-yolov8n.pt" {extra}><Label value="circle"/><Label value="square"/>'
    '<Label value="triangle"/></RectangleLabels></View>'
)


def shapes_folder(folder: Path, count: int, labelled: bool, seed: int = 3) -> Path:
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    for number in range(count):
        image, boxes = draw_shapes_image(rng)
        cv2.imwrite(str(folder / "images" / f"{number:03d}.jpg"), image)
        if labelled:
            lines = to_yolo_labels(boxes, image.shape[1], image.shape[0])
            (folder / "labels" / f"{number:03d}.txt").write_text("\n".join(lines))
    return folder


def test_without_calibration_images_int8_is_refused_with_what_to_do(make_settings, own_model_root, tmp_path):
    registry = ModelRegistry(make_settings(model_root=own_model_root))
    with pytest.raises(ModelLoadError, match="INT8_CALIBRATION_DIR"):
        registry.get("shapes-yolov8n.pt", model_format="openvino-int8")
    few = shapes_folder(tmp_path / "few", 3, labelled=False)
    registry = ModelRegistry(make_settings(model_root=own_model_root, int8_calibration_dir=few))
    with pytest.raises(ModelLoadError, match="has 3 images"):
        registry.get("shapes-yolov8n.pt", model_format="openvino-int8")
    assert list(own_model_root.iterdir()) == [own_model_root / "shapes-yolov8n.pt"]


def test_an_export_that_loses_accuracy_is_refused_and_not_kept(
    make_settings, own_model_root, tmp_path, monkeypatch
):
    def lossy_export(weights, imgsz, work, data):
        exported = work / "shapes-yolov8n_int8_openvino_model"
        exported.mkdir()
        (exported / "model.xml").write_text("<net/>")
        return exported, Int8Check("mAP50-95 vs labels", 0.90, 0.85, 2, 8, 1.0)

    monkeypatch.setattr(int8_export, "_export_and_check", lossy_export)
    folder = shapes_folder(tmp_path / "calibration", 10, labelled=True)
    registry = ModelRegistry(make_settings(model_root=own_model_root, int8_calibration_dir=folder))
    with pytest.raises(ModelLoadError, match=r"loses 5\.0 points of mAP50-95 vs labels.*0\.900 -> 0\.850"):
        registry.get("shapes-yolov8n.pt", model_format="openvino-int8")
    assert list(own_model_root.iterdir()) == [
        own_model_root / "shapes-yolov8n.pt"
    ]  # no export, no temp folder


def test_an_unknown_model_format_is_a_config_error(make_client):
    client = make_client()
    response = client.post(
        "/predict",
        json={
            "tasks": [{"id": 1, "data": {"image": "x.jpg"}}],
            "label_config": CONFIG.format(extra='model_format="onnx"'),
        },
    )
    assert response.status_code in (400, 422), response.text
    assert "model_format" in response.text


@pytest.mark.slow
def test_int8_export_is_made_once_checked_and_served_like_the_pt(
    make_client, make_settings, own_model_root, tmp_path
):
    folder = shapes_folder(tmp_path / "calibration", 20, labelled=True)
    scenes = shapes_folder(tmp_path / "scenes", 3, labelled=False, seed=11)
    tasks = [
        {"id": i, "data": {"image": str(p)}} for i, p in enumerate(sorted((scenes / "images").iterdir()))
    ]
    client = make_client(model_root=own_model_root, int8_calibration_dir=folder, model_score_threshold=0.5)
    answers = {}
    for model_format in ("pt", "openvino-int8"):
        config = CONFIG.format(extra=f'model_format="{model_format}"')
        response = client.post("/predict", json={"tasks": tasks, "label_config": config})
        assert response.status_code == 200, response.text
        answers[model_format] = response.json()["results"]
    target = export_dir(own_model_root / "shapes-yolov8n.pt")
    assert sorted(p.name for p in own_model_root.iterdir()) == sorted([target.name, "shapes-yolov8n.pt"])
    check = Int8Check(**json.loads((target / "int8_check.json").read_text()))
    assert check.metric == "mAP50-95 vs labels" and check.drop_points <= 1.0
    for pt, int8 in zip(answers["pt"], answers["openvino-int8"], strict=True):
        pt_boxes = sorted(
            (r["value"]["rectanglelabels"][0], r["value"]["x"], r["value"]["y"]) for r in pt["result"]
        )
        int8_boxes = sorted(
            (r["value"]["rectanglelabels"][0], r["value"]["x"], r["value"]["y"]) for r in int8["result"]
        )
        assert [b[0] for b in int8_boxes] == [b[0] for b in pt_boxes]
        assert np.allclose([b[1:] for b in int8_boxes], [b[1:] for b in pt_boxes], atol=2.0)  # percent
    # A fresh process (registry) serves the cached export: no second export.
    stamp = (target / "int8_check.json").stat().st_mtime_ns
    again = ModelRegistry(make_settings(model_root=own_model_root))  # no calibration folder needed now
    assert again.get("shapes-yolov8n.pt", model_format="openvino-int8").name.endswith("(openvino-int8)")
    assert (target / "int8_check.json").stat().st_mtime_ns == stamp
    # MODEL_FORMAT=auto (the default) serves that checked export by itself, with the same regions.
    assert again.get("shapes-yolov8n.pt", model_format="auto").name.endswith("(openvino-int8)")
    response = client.post("/predict", json={"tasks": tasks, "label_config": CONFIG.format(extra="")})
    served = [[r["value"] for r in task["result"]] for task in response.json()["results"]]
    assert served == [[r["value"] for r in task["result"]] for task in answers["openvino-int8"]]


def test_auto_serves_a_checked_export_only_when_one_exists_and_never_makes_one(
    make_client, make_settings, own_model_root, tmp_path
):
    weights = own_model_root / "shapes-yolov8n.pt"
    registry = ModelRegistry(make_settings(model_root=own_model_root))
    assert registry.auto_format("shapes-yolov8n.pt") == "pt"
    scenes = shapes_folder(tmp_path / "scenes", 1, labelled=False)
    task = {"id": 1, "data": {"image": str(next((scenes / "images").iterdir()))}}
    client = make_client(model_root=own_model_root)
    response = client.post("/predict", json={"tasks": [task], "label_config": CONFIG.format(extra="")})
    assert response.status_code == 200, response.text
    assert list(own_model_root.iterdir()) == [
        weights
    ]  # served the .pt; nothing exported on the request's path
    # An export that passed its check (its check file) is what auto serves; one without it is not.
    target = export_dir(weights)
    target.mkdir()
    assert registry.auto_format("shapes-yolov8n.pt") == "pt"
    (target / "int8_check.json").write_text("{}")
    assert registry.auto_format("shapes-yolov8n.pt") == "openvino-int8"
    # New weights under the same name (a promotion writes a new file): their own export, none yet.
    weights.write_bytes(weights.read_bytes() + b"\0")
    assert registry.auto_format("shapes-yolov8n.pt") == "pt"
    # On a GPU the .pt is served (FP16), whatever exists.
    shutil.copy(SHAPES, weights)
    assert (
        ModelRegistry(make_settings(model_root=own_model_root, device="0")).auto_format("shapes-yolov8n.pt")
        == "pt"
    )
    assert registry.auto_format("shapes-yolov8n.pt") == "openvino-int8"


def test_control_attribute_model_format_is_parsed_once(make_settings):
    from control_models.labeling_plan import PlanCache

    plan = PlanCache(make_settings(model_format="openvino-int8")).get(CONFIG.format(extra=""))
    assert [c.model_format for c in plan.controls] == ["openvino-int8"]
    plan = PlanCache(make_settings()).get(CONFIG.format(extra='model_format="openvino-int8"'))
    assert [c.model_format for c in plan.controls] == ["openvino-int8"]
    assert [c.model_format for c in PlanCache(make_settings()).get(CONFIG.format(extra="")).controls] == [
        "auto"
    ]
    with pytest.raises(LabelingConfigError, match="model_format"):
        PlanCache(make_settings()).get(CONFIG.format(extra='model_format="fp8"'))


@pytest.mark.slow
@pytest.mark.parametrize("family", ["yolo11n", "yolo26n"])
def test_int8_export_of_yolo11_and_yolo26_is_checked_against_the_pt_and_serves_the_same_boxes(
    make_client, own_model_root, tmp_path, family
):
    """A detector of the family whose output is known (tests/known_models.py: a 64 px square per 32 px
    cell; YOLO26 NMS-free), exported on unlabelled images: the check compares INT8 with the .pt's own
    boxes, and /predict gives the same squares in both formats."""
    from tests.known_models import build_constant_detect_model

    build_constant_detect_model(own_model_root / "known.pt", {0: "thing"}, 1, f"{family}.yaml", imgsz=256)
    folder = shapes_folder(tmp_path / "calibration", 10, labelled=False)
    image = tmp_path / "grey.png"
    cv2.imwrite(str(image), np.full((256, 256, 3), 127, np.uint8))  # square: the export's fixed input
    client = make_client(model_root=own_model_root, int8_calibration_dir=folder, model_score_threshold=0.5)
    boxes = {}
    for model_format in ("pt", "openvino-int8"):
        config = (
            '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image" '
            f'model_path="known.pt" model_format="{model_format}"><Label value="thing"/></RectangleLabels></View>'
        )
        response = client.post(
            "/predict", json={"tasks": [{"id": 1, "data": {"image": str(image)}}], "label_config": config}
        )
        assert response.status_code == 200, response.text
        regions = response.json()["results"][0]["result"]
        boxes[model_format] = sorted(
            tuple(round(r["value"][k], 1) for k in ("x", "y", "width", "height")) for r in regions
        )
    assert len(boxes["pt"]) == 64 and boxes["openvino-int8"] == boxes["pt"]
    folder = export_dir(own_model_root / "known.pt")
    check = Int8Check(**json.loads((folder / "int8_check.json").read_text()))
    metadata = yaml.safe_load((folder / "metadata.yaml").read_text())
    assert metadata["end2end"] is (family == "yolo26n")  # YOLO26's INT8 copy is NMS-free too
    assert check.metric == "mAP50-95 vs the .pt's boxes" and check.drop_points <= 1.0
