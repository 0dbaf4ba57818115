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
    # Training fetches the annotations from Label Studio: without its address the button says so.
    training = client.post("/webhook", json=label_studio_request("webhook_START_TRAINING"))
    assert training.status_code == 502 and "LABEL_STUDIO_URL" in training.json()["error"]
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


ALL_TAGS_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="box" toName="image" model_score_threshold="0.0001">'
    '<Label value="person"/><Label value="Bus" predicted_values="bus"/></RectangleLabels>'
    '<RectangleLabels name="obb" toName="image" model_obb="true" model_score_threshold="0.0001">'
    '<Label value="plane"/><Label value="ship"/><Label value="large vehicle"/></RectangleLabels>'
    '<PolygonLabels name="poly" toName="image" model_score_threshold="0.0001"><Label value="person"/>'
    '<Label value="bus"/></PolygonLabels>'
    '<BrushLabels name="brush" toName="image" model_score_threshold="0.0001"><Label value="person"/>'
    '<Label value="bus"/></BrushLabels>'
    '<Choices name="cls" toName="image" choice="multiple" model_score_threshold="0.0">'
    '<Choice value="Bus" predicted_values="school bus,minibus,trolleybus"/><Choice value="Jersey" predicted_values="T-shirt"/></Choices>'
    '<Taxonomy name="tax" toName="image" model_score_threshold="0.0"><Choice value="Vehicle">'
    '<Choice value="School bus" predicted_values="school bus"/></Choice></Taxonomy>'
    '<KeyPointLabels name="kp" toName="image" model_score_threshold="0.0001" model_point_threshold="0.0">'
    '<Label value="nose" predicted_values="person" model_index="0"/>'
    '<Label value="left_eye" predicted_values="person" model_index="1"/></KeyPointLabels>'
    "</View>"
)


def test_every_image_tag_in_one_config(client, bus_image, zidane_image):
    body = predict(client, ALL_TAGS_CONFIG, bus_image, zidane_image)
    assert "errors" not in body
    loaded = client.get("/health").json()["loaded_models"]
    assert loaded == {
        "yolov8m.pt": "detect",
        "yolov8n-obb.pt": "obb",
        "yolov8n-seg.pt": "segment",
        "yolov8n-cls.pt": "classify",
        "yolov8n-pose.pt": "pose",
    }
    for prediction in body["results"]:
        types = {region["from_name"]: region["type"] for region in prediction["result"]}
        # Random weights: boxes, classes and keypoints always appear at such thresholds; masks and
        # oriented boxes (random ones are often larger than the image) may not, so they are only
        # validated when they do.
        for name, kind in {
            "box": "rectanglelabels",
            "cls": "choices",
            "tax": "taxonomy",
            "kp": "keypointlabels",
        }.items():
            assert types.get(name) == kind, (name, sorted(types))
        for region in prediction["result"]:
            if region["type"] == "brushlabels":
                assert region["value"]["format"] == "rle" and region["value"]["rle"]
            if region["type"] == "polygonlabels":
                assert len(region["value"]["points"]) >= 3
        assert_valid(ALL_TAGS_CONFIG, prediction)


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


def test_shapes_are_found_where_they_are(client, tmp_path):
    from tools.shapes import draw_shapes_image

    config = (
        '<View><Image name="image" value="$image"/>'
        '<RectangleLabels name="label" toName="image" model_path="shapes-yolov8n.pt">'
        '<Label value="Circle" predicted_values="circle"/><Label value="Square" predicted_values="square"/>'
        '<Label value="Triangle" predicted_values="triangle"/></RectangleLabels></View>'
    )
    rng = np.random.default_rng(2024)
    paths, truths = [], []
    for i in range(6):
        image, shapes = draw_shapes_image(rng)
        path = tmp_path / f"shapes-{i}.png"
        cv2.imwrite(str(path), image)
        paths.append(path)
        truths.append((image.shape[1], image.shape[0], shapes))
    body = predict(client, config, *paths)
    for prediction, (width, height, shapes) in zip(body["results"], truths, strict=True):
        assert_valid(config, prediction)
        found = [
            (
                r["value"]["rectanglelabels"][0].lower(),
                [
                    r["value"]["x"] * width / 100,
                    r["value"]["y"] * height / 100,
                    (r["value"]["x"] + r["value"]["width"]) * width / 100,
                    (r["value"]["y"] + r["value"]["height"]) * height / 100,
                ],
            )
            for r in prediction["result"]
        ]
        assert len(found) == len(shapes), (found, shapes)
        for name, box in shapes:
            best = max((iou(box, b) for n, b in found if n == name), default=0.0)
            assert best >= 0.5, (name, box, found)


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
