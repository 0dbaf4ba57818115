"""The try-it page's HTTP side: the page behind basic auth, the upload route and its limits."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tools.shapes import draw_shapes_image

SHAPES_CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image" '
    'model_path="shapes-yolov8n.pt" model_score_threshold="0.25"><Label value="circle"/>'
    '<Label value="square"/><Label value="triangle"/><Label value="Dog"/></RectangleLabels></View>'
)
AUTH = ("annotator", "ui-secret-9f3a")


@pytest.fixture(scope="module")
def shapes_png() -> bytes:
    image, truth = draw_shapes_image(np.random.default_rng(1234), n_shapes=3)
    assert len(truth) == 3
    return cv2.imencode(".png", image)[1].tobytes()


def upload(client, png: bytes, config: str = SHAPES_CONFIG, **kwargs):
    files = {"file": ("my shapes.png", png, "image/png")}
    return client.post("/ui/predict", data={"label_config": config}, files=files, **kwargs)


def test_upload_predicts_like_predict_and_reports_unmatched_labels(client, shapes_png):
    response = upload(client, shapes_png)
    assert response.status_code == 200, response.text
    body = response.json()
    labels = sorted(r["value"]["rectanglelabels"][0] for r in body["result"])
    assert len(labels) >= 2 and set(labels) <= {"circle", "square", "triangle"}
    assert body["model_version"].startswith("yolo-")
    assert body["task_error"] is None and body["control_errors"] == {}
    warning = body["label_warnings"]["label"]
    assert (
        "Dog" in warning and "circle, square, triangle" in warning and "circle" not in warning.split("(")[0]
    )


def test_upload_temp_file_is_removed_and_not_under_model_root(client, shapes_png, model_root, monkeypatch):
    seen: list[Path] = []
    backend = client.app.state.backend
    original = backend.media.decode_image

    def spy(path: Path, name: str):
        seen.append(path)
        assert path.is_file() and not path.resolve().is_relative_to(model_root.resolve())
        return original(path, name)

    monkeypatch.setattr(backend.media, "decode_image", spy)
    assert upload(client, shapes_png).status_code == 200
    assert len(seen) == 1 and not seen[0].exists() and not seen[0].parent.exists()


def test_upload_url_cannot_be_named_from_predict(client, shapes_png):
    """The in-process upload URL scheme resolves nothing in a /predict body."""
    task = {"id": 1, "data": {"image": "upload:0123456789abcdef/my_shapes.png"}}
    response = client.post("/predict", json={"tasks": [task], "label_config": SHAPES_CONFIG})
    assert response.status_code == 200
    assert "not supported" in response.json()["results"][0]["error"]


def test_upload_over_image_limit_is_413(make_client, shapes_png):
    client = make_client(max_image_bytes=len(shapes_png) - 1)
    response = upload(client, shapes_png)
    assert response.status_code == 413
    assert "MAX_IMAGE_BYTES" in response.json()["error"]
    assert upload(make_client(max_image_bytes=len(shapes_png)), shapes_png).status_code == 200


def test_upload_bad_config_is_422(client, shapes_png):
    response = upload(client, shapes_png, config="<View><Image name='image' value='$image'/>")
    assert response.status_code == 422
    assert "label_config is not a valid labeling config" in response.json()["error"]


def test_upload_that_is_no_image_is_a_task_error(client):
    response = upload(client, b"not an image at all")
    assert response.status_code == 200
    assert "the uploaded image is not an image that can be decoded" in response.json()["task_error"]


def test_ui_routes_need_basic_auth(make_client, shapes_png):
    client = make_client(basic_auth_user=AUTH[0], basic_auth_pass=AUTH[1])
    for method, path in [("get", "/ui"), ("get", "/ui/static/ui.js"), ("get", "/ui/models")]:
        assert getattr(client, method)(path).status_code == 401, path
        assert getattr(client, method)(path, auth=AUTH).status_code == 200, path
    assert upload(client, shapes_png).status_code == 401
    assert upload(client, shapes_png, auth=AUTH).status_code == 200
    assert client.get("/ui/static/other.js", auth=AUTH).status_code == 404
    assert client.get("/", auth=AUTH).json()["status"] == "UP"  # GET / stays Label Studio's health check


def test_models_lists_weight_files_in_model_root(client, model_root):
    body = client.get("/ui/models").json()
    names = [f["name"] for f in body["files"]]
    assert "shapes-yolov8n.pt" in names and "yolov8n-cls.pt" in names
    assert "model_root" not in body  # issue 24 item 5: no server path in an answer
    assert str(model_root.resolve()) not in json.dumps(body)


VIDEO_CONFIG = (
    '<View><Video name="video" value="$video" frameRate="10"/><Labels name="labels" toName="video">'
    '<Label value="circle"/><Label value="square"/></Labels>'
    '<VideoRectangle name="box" toName="video" model_path="shapes-yolov8n.pt"/></View>'
)


@pytest.fixture(scope="module")
def shapes_mp4(tmp_path_factory) -> bytes:
    from tools.shapes import draw_scene

    path = tmp_path_factory.mktemp("ui-video") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (224, 160))
    for i in range(8):
        shapes = [("circle", (20.0 + 6 * i, 30.0, 76.0 + 6 * i, 86.0), (40, 200, 40))]
        writer.write(draw_scene(224, 160, shapes))
    writer.release()
    return path.read_bytes()


def test_video_upload_gets_tracks_and_the_video_limit(make_client, shapes_mp4):
    files = {"file": ("clip.mp4", shapes_mp4, "video/mp4")}
    client = make_client(max_image_bytes=10)  # a video is held to MAX_VIDEO_BYTES, not MAX_IMAGE_BYTES
    response = client.post("/ui/predict", data={"label_config": VIDEO_CONFIG}, files=files)
    assert response.status_code == 200, response.text
    tracks = [r for r in response.json()["result"] if r["type"] == "videorectangle"]
    assert tracks and tracks[0]["value"]["labels"] == ["circle"] and tracks[0]["value"]["framesCount"] == 8

    client = make_client(max_video_bytes=len(shapes_mp4) - 1)
    response = client.post("/ui/predict", data={"label_config": VIDEO_CONFIG}, files=files)
    assert response.status_code == 413 and "MAX_VIDEO_BYTES" in response.json()["error"]


def test_models_show_trained_versions_with_their_metrics(make_client, tmp_path):
    version = tmp_path / "trained" / "7" / "label" / "v1-20260101T000000"
    version.mkdir(parents=True)
    (version / "best.pt").write_bytes(b"weights")
    (version / "metrics.json").write_text('{"map50_95": 0.81}')
    (tmp_path / "notes.txt").write_text("not a model")
    files = make_client(model_root=tmp_path).get("/ui/models").json()["files"]
    assert files == [
        {
            "name": "trained/7/label/v1-20260101T000000/best.pt",
            "bytes": 7,
            "modified": files[0]["modified"],
            "metrics": {"map50_95": 0.81},
        }
    ]


def test_missing_model_file_is_reported(client, shapes_png):
    missing = SHAPES_CONFIG.replace("shapes-yolov8n.pt", "missing-model.pt")
    response = upload(client, shapes_png, config=missing)
    assert response.status_code == 422 and "missing-model.pt" in response.json()["error"]
    both = SHAPES_CONFIG.replace(
        "</View>",
        '<PolygonLabels name="poly" toName="image" model_path="missing-model.pt">'
        '<Label value="circle"/></PolygonLabels></View>',
    )
    body = upload(client, shapes_png, config=both).json()
    assert "missing-model.pt" in body["control_errors"]["poly"]
    assert body["result"] == [] and "<poly>" in body["task_error"]  # no partial prediction (issue 9)


def test_the_page_has_an_icon_and_favicon_ico_is_not_a_404(client):
    """Browsers log a 404 for /favicon.ico as an error: the page names its own icon, which is served,
    and the default path answers 204 for any other page."""
    page = client.get("/ui").text
    assert '<link rel="icon" href="/ui/static/favicon.svg"' in page
    icon = client.get("/ui/static/favicon.svg")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert client.get("/favicon.ico").status_code == 204
