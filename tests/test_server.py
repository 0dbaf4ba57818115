"""The ML backend protocol through HTTP, with the bodies Label Studio 1.23 sends."""

from __future__ import annotations

import base64
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from label_studio_sdk.label_interface import LabelInterface

from tests.conftest import assert_nearly_equal, image_size

FIXTURES = Path(__file__).parent / "fixtures"
RECT_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image" model_score_threshold="0.0001">'
    '<Label value="Person" predicted_values="person"/><Label value="Bus" predicted_values="bus"/>'
    "</RectangleLabels></View>"
)


def label_studio_request(name: str) -> dict:
    return json.loads((FIXTURES / "label-studio-requests" / f"{name}.json").read_text())["body"]


def predict(client, config: str, *images, status: int = 200) -> dict:
    tasks = [{"id": i + 1, "data": {"image": str(image)}} for i, image in enumerate(images)]
    response = client.post("/predict", json={"tasks": tasks, "label_config": config, "project": "1.17"})
    assert response.status_code == status, response.text
    return response.json()


def assert_valid(config: str, prediction: dict) -> None:
    errors = LabelInterface(config).validate_prediction(prediction, return_errors=True)
    assert errors == [], errors[:5]


# -- health, setup, metrics, webhook -------------------------------------------------------------


def test_health_loads_nothing(client):
    for path in ("/", "/health"):
        body = client.get(path).json()
        assert body["status"] == "UP"
        assert body["loaded_models"] == {}


def test_setup_answers_the_model_version_predict_uses(client, bus_image):
    setup = label_studio_request("setup")
    version = client.post("/setup", json=setup).json()["model_version"]
    body = predict(client, setup["schema"], bus_image)
    assert body["model_version"] == version
    assert body["results"][0]["model_version"] == version
    # A changed config is another model version, so Label Studio predicts its tasks again.
    other = client.post("/setup", json={**setup, "schema": RECT_CONFIG}).json()["model_version"]
    assert other != version
    assert client.get("/health").json()["loaded_models"] == {"yolov8m.pt": "detect"}


def test_webhook_acknowledges_label_studio_events(client):
    for event in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED"):
        response = client.post("/webhook", json=label_studio_request(f"webhook_{event}"))
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "ok"
    # Training fetches the annotations from Label Studio: without its address the button says so (503:
    # this server is not set up for it; neither the caller's fault nor Label Studio's answer).
    training = client.post("/webhook", json=label_studio_request("webhook_START_TRAINING"))
    assert training.status_code == 503 and "LABEL_STUDIO_URL" in training.json()["error"]
    unknown = client.post("/webhook", json={"action": "SOMETHING_NEW", "project": {"id": 1}})
    assert unknown.status_code == 200
    assert unknown.json()["status"] == "ignored" and "SOMETHING_NEW" in unknown.json()["message"]


def scraped(text: str) -> dict[tuple[str, tuple], float]:
    """Samples of a /metrics answer: (name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_requests_tasks_and_time_per_model(client, bus_image):
    predict(client, RECT_CONFIG, bus_image, bus_image)
    samples = scraped(client.get("/metrics").text)
    assert samples[("yolo_backend_requests_total", (("route", "/predict"), ("status", "200")))] == 1
    assert samples[("yolo_backend_tasks_total", ())] == 2
    assert samples[("yolo_backend_task_failures_total", ())] == 0
    assert samples[("yolo_backend_loaded_models", ())] == 1
    assert samples[("yolo_backend_predict_seconds_count", ())] == 1
    assert samples[("yolo_backend_inference_seconds_count", (("model", "yolov8m.pt"),))] == 1
    assert samples[("yolo_backend_inference_seconds_sum", (("model", "yolov8m.pt"),))] > 0


# -- predictions per control tag ----------------------------------------------------------------------


def test_real_label_studio_bodies_predict(client, bus_image, tmp_path):
    body = label_studio_request("predict_batch_2tasks")
    for task in body["tasks"]:
        task["data"]["image"] = str(bus_image)
    response = client.post("/predict", json=body)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 2
    for prediction in results:
        assert_valid(body["label_config"], prediction)


def test_the_backend_gets_each_task_as_label_studio_sent_it(client, bus_image, monkeypatch):
    """The `Task` model checks the shape only: every key and value reaches `YOLOBackend.predict` as sent,
    and no default (`"id": None`, `"project": None`) is added."""
    body = label_studio_request("predict_interactive")
    body["tasks"][0]["data"]["image"] = str(bus_image)
    body["tasks"].append({"data": {"image": str(bus_image)}})
    backend = client.app.state.backend
    received = []
    real_predict = backend.predict
    monkeypatch.setattr(
        backend, "predict", lambda tasks, *a, **k: received.extend(tasks) or real_predict(tasks, *a, **k)
    )
    assert client.post("/predict", json=body).status_code == 200
    assert received == body["tasks"]


def test_rectangles_in_percent_of_the_original_image(client, bus_image):
    body = predict(client, RECT_CONFIG, bus_image)
    (prediction,) = body["results"]
    regions = prediction["result"]
    assert regions, "a threshold of 0.0001 keeps some boxes even with random weights"
    width, height = image_size(bus_image)
    for region in regions:
        value = region["value"]
        assert region["original_width"] == width and region["original_height"] == height
        assert 0 <= value["x"] <= 100 and 0 <= value["y"] <= 100
        assert value["x"] + value["width"] <= 100 + 1e-6 and value["y"] + value["height"] <= 100 + 1e-6
        assert value["rectanglelabels"][0] in ("Person", "Bus")
    assert prediction["score"] == pytest.approx(np.mean([r["score"] for r in regions]))
    assert_valid(RECT_CONFIG, prediction)


SHAPE_LABELS = "".join(f'<Label value="{name}"/>' for name in ("circle", "square", "triangle"))
EVERY_TAG_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="box" toName="image" model_path="shapes-yolov8n.pt">'
    f"{SHAPE_LABELS}</RectangleLabels>"
    f'<RectangleLabels name="obb" toName="image" model_obb="true" model_path="known-obb.pt">{SHAPE_LABELS}'
    "</RectangleLabels>"
    f'<PolygonLabels name="poly" toName="image" model_path="known-seg.pt">{SHAPE_LABELS}</PolygonLabels>'
    f'<BrushLabels name="brush" toName="image" model_path="known-seg.pt">{SHAPE_LABELS}</BrushLabels>'
    '<KeyPointLabels name="kp" toName="image" model_path="known-pose.pt">'
    '<Label value="centre" predicted_values="person" model_index="0"/>'
    '<Label value="corner" predicted_values="person" model_index="1"/></KeyPointLabels>'
    '<Choices name="cls" toName="image" model_path="known-cls.pt">'
    '<Choice value="circle"/><Choice value="square"/><Choice value="triangle"/></Choices>'
    '<Taxonomy name="tax" toName="image" model_path="known-cls.pt"><Choice value="Shapes">'
    '<Choice value="circle"/><Choice value="square"/><Choice value="triangle"/></Choice></Taxonomy>'
    "</View>"
)
OBB_ANGLE = 0.25  # radians, clockwise on screen


def known_models(scene_of) -> dict:
    """Segment, OBB, pose and classify stand-ins whose output is the truth of the scene they are shown:
    a mask filling each shape's box, the box turned by OBB_ANGLE, keypoints at each box's centre and
    top-left corner, and the class of the scene's first shape."""
    from tests.known_models import (
        KnownOutputModel,
        classification_result,
        oriented_result,
        pose_result,
        segmentation_result,
    )
    from tools.shapes import CLASS_IDS, CLASS_NAMES

    names = dict(enumerate(CLASS_NAMES))

    def boxes(image):
        return [(CLASS_IDS[name], box) for name, box in scene_of(image)]

    def first_class(image):
        probs = [0.05] * len(names)
        probs[CLASS_IDS[scene_of(image)[0][0]]] = 0.9
        return probs

    return {
        "known-seg.pt": KnownOutputModel("segment", names, lambda i: segmentation_result(i, boxes(i), names)),
        "known-obb.pt": KnownOutputModel(
            "obb", names, lambda i: oriented_result(i, [(c, b, OBB_ANGLE) for c, b in boxes(i)], names)
        ),
        "known-pose.pt": KnownOutputModel(
            "pose", {0: "person"}, lambda i: pose_result(i, [(0, b) for _, b in boxes(i)], {0: "person"})
        ),
        "known-cls.pt": KnownOutputModel(
            "classify", names, lambda i: classification_result(i, first_class(i), names)
        ),
    }


def percent_box(value: dict, width: int, height: int) -> list[float]:
    x, y = value["x"] * width / 100, value["y"] * height / 100
    return [x, y, x + value["width"] * width / 100, y + value["height"] * height / 100]


def rotated_corners(value: dict, width: int, height: int) -> list[list[float]]:
    """The four pixel corners of a Label Studio rectangle turned by `rotation` degrees about (x, y)."""
    x, y = value["x"] * width / 100, value["y"] * height / 100
    w, h = value["width"] * width / 100, value["height"] * height / 100
    cos, sin = np.cos(np.radians(value["rotation"])), np.sin(np.radians(value["rotation"]))
    return sorted(
        np.round(
            [
                (x + dx * cos - dy * sin, y + dx * sin + dy * cos)
                for dx, dy in [(0, 0), (w, 0), (w, h), (0, h)]
            ],
            1,
        ).tolist()
    )


def expected_corners(box, angle: float) -> list[list[float]]:
    x1, y1, x2, y2 = box
    half = np.array([[x1 - x2, y1 - y2], [x2 - x1, y1 - y2], [x2 - x1, y2 - y1], [x1 - x2, y2 - y1]]) / 2
    cos, sin = np.cos(angle), np.sin(angle)
    corners = half @ np.array([[cos, sin], [-sin, cos]]) + [(x1 + x2) / 2, (y1 + y2) / 2]
    return sorted(np.round(corners, 1).tolist())


def shapes_images(tmp_path: Path, count: int, seed: int) -> list[tuple[Path, list]]:
    """`count` shapes images (320x240) with their truth [(name, xyxy)], no two alike."""
    from tools.shapes import draw_shapes_image

    rng = np.random.default_rng(seed)
    drawn = []
    for i in range(count):
        image, shapes = draw_shapes_image(rng)
        path = tmp_path / f"shapes-{i}.png"
        cv2.imwrite(str(path), image)
        drawn.append((path, shapes))
    return drawn


def assert_boxes_match(found: list[tuple[str, list[float]]], shapes: list, where: str) -> None:
    """One found box per true shape, of its class, overlapping it by IoU >= 0.5."""
    assert len(found) == len(shapes), (where, found, shapes)
    for name, box in shapes:
        best = max((iou(box, b) for n, b in found if n == name), default=0.0)
        assert best >= 0.5, (where, name, box, found)


def test_every_image_tag_gives_the_regions_its_model_found(make_settings, tmp_path):
    """Each image tag through /predict, on models whose output is known: the shapes detector for
    RectangleLabels, stand-ins giving the true shapes for the others. Every tag has regions, in the
    right task, where the shapes are."""
    from fastapi.testclient import TestClient
    from label_studio_sdk.converter.brush import decode_rle

    from model import YOLOBackend
    from server.app import create_app
    from tests.known_models import KnownOutputRegistry

    drawn = shapes_images(tmp_path, 2, seed=2024)
    scenes = {cv2.imread(str(path)).tobytes(): shapes for path, shapes in drawn}
    settings = make_settings()
    backend = YOLOBackend(
        settings, registry=KnownOutputRegistry(settings, known_models(lambda i: scenes[i.tobytes()]))
    )
    with TestClient(create_app(settings, backend)) as client:
        body = predict(client, EVERY_TAG_CONFIG, *(path for path, _ in drawn))
    assert "errors" not in body
    for task, (prediction, (path, shapes)) in enumerate(zip(body["results"], drawn, strict=True)):
        assert_valid(EVERY_TAG_CONFIG, prediction)
        width, height = image_size(path)
        regions: dict[str, list[dict]] = {}
        for region in prediction["result"]:
            if region["type"] not in ("choices", "taxonomy"):  # whole-image answers carry no size
                assert (region["original_width"], region["original_height"]) == (width, height)
            regions.setdefault(region["from_name"], []).append(region)
        assert sorted(regions) == ["box", "brush", "cls", "kp", "obb", "poly", "tax"], task
        names = [name for name, _ in shapes]

        boxes = [
            (r["value"]["rectanglelabels"][0], percent_box(r["value"], width, height)) for r in regions["box"]
        ]
        assert_boxes_match(boxes, shapes, f"task {task} box")

        oriented = sorted(
            (r["value"]["rectanglelabels"][0], rotated_corners(r["value"], width, height))
            for r in regions["obb"]
        )
        assert oriented == sorted((name, expected_corners(box, OBB_ANGLE)) for name, box in shapes), task

        polygons = []
        for region in regions["poly"]:
            points = np.array(region["value"]["points"]) * [width / 100, height / 100]
            polygons.append(
                (region["value"]["polygonlabels"][0], [*points.min(axis=0), *(points.max(axis=0) + 1)])
            )
        assert_boxes_match(polygons, shapes, f"task {task} poly")
        for (name, found), (true_name, box) in zip(sorted(polygons), sorted(shapes), strict=True):
            assert name == true_name and found == pytest.approx(list(box), abs=1.5), (task, found, box)

        assert sorted(r["value"]["brushlabels"][0] for r in regions["brush"]) == sorted(names)
        for region in regions["brush"]:
            painted = decode_rle(region["value"]["rle"]).reshape(height, width, 4)[..., 3] > 0
            ys, xs = np.nonzero(painted)
            box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            label = region["value"]["brushlabels"][0]
            assert any(n == label and box == pytest.approx(list(b), abs=1) for n, b in shapes), (task, box)

        points = sorted(
            (
                r["value"]["keypointlabels"][0],
                round(r["value"]["x"] * width / 100, 1),
                round(r["value"]["y"] * height / 100, 1),
            )
            for r in regions["kp"]
        )
        expected_points = sorted(
            [("centre", round((x1 + x2) / 2, 1), round((y1 + y2) / 2, 1)) for _, (x1, y1, x2, y2) in shapes]
            + [("corner", round(x1, 1), round(y1, 1)) for _, (x1, y1, _x2, _y2) in shapes]
        )
        assert points == expected_points, task

        (choice,) = regions["cls"]
        assert choice["value"]["choices"] == [names[0]] and choice["score"] == pytest.approx(0.9)
        (taxonomy,) = regions["tax"]
        assert taxonomy["value"]["taxonomy"] == [["Shapes", names[0]]]
    assert drawn[0][1] != drawn[1][1]  # two different scenes: a mix-up would show


DEFAULT_MODELS_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="box" toName="image"><Label value="person"/></RectangleLabels>'
    '<RectangleLabels name="obb" toName="image" model_obb="true"><Label value="plane"/></RectangleLabels>'
    '<PolygonLabels name="poly" toName="image"><Label value="person"/></PolygonLabels>'
    '<BrushLabels name="brush" toName="image"><Label value="person"/></BrushLabels>'
    '<Choices name="cls" toName="image"><Choice value="Bus" predicted_values="school bus"/></Choices>'
    '<Taxonomy name="tax" toName="image"><Choice value="Bus" predicted_values="school bus"/></Taxonomy>'
    '<KeyPointLabels name="kp" toName="image"><Label value="nose" predicted_values="person" model_index="0"/>'
    "</KeyPointLabels></View>"
)


def test_each_tag_without_model_path_loads_its_default_model(client, bus_image):
    body = predict(client, DEFAULT_MODELS_CONFIG, bus_image)
    assert "errors" not in body
    assert_valid(DEFAULT_MODELS_CONFIG, body["results"][0])
    assert client.get("/health").json()["loaded_models"] == {
        "yolov8m.pt": "detect",
        "yolov8n-obb.pt": "obb",
        "yolov8n-seg.pt": "segment",
        "yolov8n-cls.pt": "classify",
        "yolov8n-pose.pt": "pose",
    }


def test_choices_and_taxonomy_from_a_classifier_built_to_tell_dark_from_bright(
    make_client, model_root, tmp_path
):
    from tests.known_models import build_two_class_classifier

    if not (model_root / "light-cls.pt").exists():
        build_two_class_classifier(model_root / "light-cls.pt", 20, 235, (240, 320))
    paths = []
    for name, level in (("dark", 20), ("bright", 235), ("dark-again", 20)):
        paths.append(tmp_path / f"{name}.png")
        cv2.imwrite(str(paths[-1]), np.full((240, 320, 3), level, np.uint8))
    config = (
        '<View><Image name="image" value="$image"/>'
        '<Choices name="cls" toName="image" model_path="light-cls.pt">'
        '<Choice value="Dark" predicted_values="dark"/><Choice value="Bright" predicted_values="bright"/></Choices>'
        '<Taxonomy name="tax" toName="image" model_path="light-cls.pt"><Choice value="Light">'
        '<Choice value="Dark" predicted_values="dark"/><Choice value="Bright" predicted_values="bright"/></Choice>'
        "</Taxonomy></View>"
    )
    body = predict(make_client(inference_batch_size=2), config, *paths)
    found = []
    for prediction in body["results"]:
        assert_valid(config, prediction)
        by_name = {r["from_name"]: r["value"] for r in prediction["result"]}
        found.append((by_name["cls"]["choices"], by_name["tax"]["taxonomy"]))
    assert found == [
        (["Dark"], [["Light", "Dark"]]),
        (["Bright"], [["Light", "Bright"]]),
        (["Dark"], [["Light", "Dark"]]),
    ]


def test_two_images_each_with_its_own_control(client, bus_image, zidane_image):
    config = (
        '<View><Image name="front" value="$front"/><Image name="back" value="$back"/>'
        '<RectangleLabels name="front_boxes" toName="front" model_score_threshold="0.0001"><Label value="person"/></RectangleLabels>'
        '<Choices name="back_class" toName="back" model_score_threshold="0.0"><Choice value="Jersey" predicted_values="T-shirt"/>'
        '<Choice value="Bus" predicted_values="school bus"/></Choices></View>'
    )
    task = {"id": 1, "data": {"front": str(bus_image), "back": str(zidane_image)}}
    body = client.post("/predict", json={"tasks": [task], "label_config": config}).json()
    regions = body["results"][0]["result"]
    assert {r["to_name"] for r in regions if r["from_name"] == "front_boxes"} == {"front"}
    assert [r["to_name"] for r in regions if r["from_name"] == "back_class"] == ["back"]
    width, height = image_size(bus_image)
    assert {(r["original_width"], r["original_height"]) for r in regions if r["to_name"] == "front"} == {
        (width, height)
    }
    assert_valid(config, body["results"][0])


# -- a model that really detects: the shapes model ---------------------------------------------------


def iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_tasks_get_their_own_shapes_across_chunks(make_client, tmp_path):
    """Five different images in chunks of two (INFERENCE_BATCH_SIZE=2, so three model calls and the next
    chunk prefetched meanwhile): each task's boxes are its own image's shapes, checked against the truth."""
    config = (
        '<View><Image name="image" value="$image"/>'
        '<RectangleLabels name="label" toName="image" model_path="shapes-yolov8n.pt">'
        '<Label value="Circle" predicted_values="circle"/><Label value="Square" predicted_values="square"/>'
        '<Label value="Triangle" predicted_values="triangle"/></RectangleLabels></View>'
    )
    drawn = shapes_images(tmp_path, 5, seed=2024)
    assert len({len(shapes) for _, shapes in drawn}) >= 2  # counts differ too, not only positions
    client = make_client(inference_batch_size=2)
    body = predict(client, config, *(path for path, _ in drawn))
    for task, (prediction, (path, shapes)) in enumerate(zip(body["results"], drawn, strict=True)):
        assert_valid(config, prediction)
        width, height = image_size(path)
        found = [
            (r["value"]["rectanglelabels"][0].lower(), percent_box(r["value"], width, height))
            for r in prediction["result"]
        ]
        assert_boxes_match(found, shapes, f"task {task + 1}")


# -- failures -------------------------------------------------------------------------------------------


def test_a_broken_task_does_not_spoil_the_others(client, bus_image, tmp_path):
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("this is text")
    body = predict(client, RECT_CONFIG, bus_image, tmp_path / "missing.jpg", not_an_image, bus_image)
    ok, missing, broken, ok_again = body["results"]
    assert ok["result"] and ok_again["result"]
    # No "result" key: Label Studio skips these entries and stores nothing for those tasks.
    assert "result" not in missing and "does not exist" in missing["error"]
    assert "result" not in broken and "not an image that can be decoded" in broken["error"]
    assert (missing["task"], broken["task"]) == (2, 3)


def test_a_decoder_crash_spoils_its_task_only(client, bus_image, zidane_image, monkeypatch):
    """A decoder that raises a plain RuntimeError (not one of ours) on one image: that task gets an error
    without a traceback, the others their predictions, and the request a 200."""
    import media.loader

    real_imread = media.loader.cv2.imread

    def crashing_imread(path, *args):
        if "zidane" in str(path):
            raise RuntimeError("decoder exploded at 0xdeadbeef")
        return real_imread(path, *args)

    monkeypatch.setattr(media.loader.cv2, "imread", crashing_imread)
    body = predict(client, RECT_CONFIG, bus_image, zidane_image, bus_image)
    ok, crashed, ok_again = body["results"]
    assert ok["result"] and ok_again["result"]
    assert "result" not in crashed and crashed["task"] == 2
    assert "RuntimeError" in crashed["error"] and "0xdeadbeef" not in crashed["error"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"label_config": RECT_CONFIG}, 422, "tasks"),
        ({"tasks": [{"id": 1, "data": {"image": "x"}}]}, 422, "label_config"),
        ({"tasks": [], "label_config": RECT_CONFIG}, 422, "tasks"),
        ({"tasks": [{"id": 1}], "label_config": RECT_CONFIG}, 422, "tasks.0.data: Field required"),
        (
            {
                "tasks": [{"id": 1, "data": {"image": "x"}}, {"id": 2.5, "data": {}}],
                "label_config": RECT_CONFIG,
            },
            422,
            "tasks.1.id",
        ),
        (
            {"tasks": [{"id": 1, "data": {"img": "x"}}], "label_config": RECT_CONFIG},
            422,
            "data field 'image'",
        ),
        (
            {"tasks": [{"id": 1, "data": {"image": "x"}}], "label_config": "<View"},
            422,
            "not a valid labeling config",
        ),
        (
            {
                "tasks": [{"id": 1, "data": {"text": "x"}}],
                "label_config": '<View><Text name="t" value="$text"/><TextArea name="a" toName="t"/></View>',
            },
            422,
            "no control tag",
        ),
    ],
)
def test_bad_requests_get_a_4xx_that_says_why(client, bus_image, body, status, message):
    response = client.post("/predict", json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert "Traceback" not in response.text
    assert predict(client, RECT_CONFIG, bus_image)["results"][0]["result"]  # still serving


def test_body_that_is_not_json(client):
    response = client.post("/predict", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "invalid request body" in response.json()["error"]


@pytest.mark.parametrize(
    ("model_path", "message"),
    [
        ("/etc/passwd", "absolute"),
        ("../outside.pt", "leaves MODEL_ROOT"),
        ("missing.pt", "not found in MODEL_ROOT"),
    ],
)
def test_refused_or_missing_model_paths(client, bus_image, model_path, message):
    config = RECT_CONFIG.replace('name="label"', f'name="label" model_path="{model_path}"')
    body = predict(client, config, bus_image, status=422)
    assert message in body["error"]
    assert client.get("/health").json()["model_errors"]
    assert predict(client, RECT_CONFIG, bus_image)["results"][0]["result"]


def test_model_of_the_wrong_task_for_the_tag(client, bus_image):
    config = RECT_CONFIG.replace('name="label"', 'name="label" model_path="yolov8n-cls.pt"')
    body = predict(client, config, bus_image, status=422)
    assert "is a classify model" in body["error"] and "RectangleLabels" in body["error"]


def test_a_failing_control_leaves_every_task_unpredicted(client, bus_image):
    """No partial prediction: Label Studio would keep it for good (issue 9, hole 9)."""
    config = RECT_CONFIG.replace(
        "</View>",
        '<PolygonLabels name="poly" toName="image" model_path="missing-seg.pt"><Label value="person"/></PolygonLabels></View>',
    )
    body = predict(client, config, bus_image)
    assert "result" not in body["results"][0] and "<poly>" in body["results"][0]["error"]
    assert "poly" in body["errors"] and "missing-seg.pt" in body["errors"]["poly"]


def test_custom_model_paths_off_by_default(make_client, bus_image):
    client = make_client(allow_custom_model_path=False)
    config = RECT_CONFIG.replace('name="label"', 'name="label" model_path="shapes-yolov8n.pt"')
    assert "ALLOW_CUSTOM_MODEL_PATH" in predict(client, config, bus_image, status=422)["error"]


# -- basic auth ------------------------------------------------------------------------------------------


def test_basic_auth(make_client):
    client = make_client(basic_auth_user="annotator", basic_auth_pass="s3cret")
    assert client.get("/health").status_code == 401
    assert client.get("/health").headers["WWW-Authenticate"] == "Basic"
    wrong = base64.b64encode(b"annotator:wrong").decode()
    assert client.get("/health", headers={"Authorization": f"Basic {wrong}"}).status_code == 401
    assert client.get("/health", headers={"Authorization": "Basic %%%"}).status_code == 401
    right = base64.b64encode(b"annotator:s3cret").decode()
    assert client.get("/health", headers={"Authorization": f"Basic {right}"}).json()["status"] == "UP"


# -- concurrency -----------------------------------------------------------------------------------------


def test_parallel_requests_get_their_own_answers(client, bus_image, zidane_image):
    """Ultralytics predictors are not thread-safe; the per-model lock must keep answers apart."""
    expected = {
        image: predict(client, RECT_CONFIG, image)["results"][0]["result"]
        for image in (bus_image, zidane_image)
    }
    barrier = threading.Barrier(6)

    def one(image):
        barrier.wait()
        return image, predict(client, RECT_CONFIG, image)["results"][0]["result"]

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(one, [bus_image, zidane_image] * 3))

    for image, regions in answers:
        assert_nearly_equal([r["value"] for r in regions], [r["value"] for r in expected[image]])
