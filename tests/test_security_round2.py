"""Security review, round 2 (issue 24): what anyone reaching the port could do to the host and to the
served model through the training, job and upload routes. Each test names its item and fails on the
code before. Items 1 and 2 (the project's own config, job admission) are in test_training.py and the
e2e suite (tests/e2e/test_training_e2e.py)."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import SHAPES_MODEL

CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image" model_path="{path}" {attrs}>'
    '<Label value="circle"/></RectangleLabels></View>'
)


def config(path: str = "shapes-yolov8n.pt", **attrs: str) -> str:
    return CONFIG.format(path=path, attrs=" ".join(f'{k}="{v}"' for k, v in attrs.items()))


@pytest.fixture(scope="module")
def small_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("media") / "small.png"
    cv2.imwrite(str(path), np.full((64, 96, 3), 90, np.uint8))
    return path


@pytest.fixture
def own_root(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    (root / SHAPES_MODEL.name).write_bytes(SHAPES_MODEL.read_bytes())
    return root


def predict(client, label_config: str, image: str):
    task = {"id": 1, "data": {"image": image}}
    return client.post("/predict", json={"tasks": [task], "label_config": label_config})


# -- item 4: training attributes have upper bounds ---------------------------------------------------------


@pytest.mark.parametrize(
    ("attribute", "value", "allowed"),
    [
        ("model_train_epochs", "99999999999999999999", "from 1 to 1000"),
        ("model_train_imgsz", "100000", "from 32 to 2048"),
        ("model_train_patience", "100000", "from 1 to 300"),
        ("model_train_batch", "100000", "from 1 to 256"),
        ("model_train_every", "0x10", "from 1 to 100000"),
    ],
)
def test_item_4_training_attributes_out_of_range_are_a_422_naming_them(
    make_client, own_root, small_png, attribute, value, allowed
):
    client = make_client(model_root=own_root, allow_custom_model_path=True)
    response = predict(client, config(**{attribute: value}), str(small_png))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert f'{attribute}="{value}"' in error and allowed in error


def test_item_4_classifier_sizes_are_bounded_too():
    from control_models.attributes import parse_positive_int
    from core.errors import LabelingConfigError

    for name, too_big in (
        ("model_classifier_epochs", "5001"),
        ("model_classifier_sequence_size", "100000"),
        ("model_classifier_hidden_size", "100000"),
        ("model_classifier_num_layers", "9"),
    ):
        with pytest.raises(
            LabelingConfigError, match=f'{name}="{too_big}"; it must be a whole number from 1 to'
        ):
            parse_positive_int({name: too_big}, name, 1, "timeline")
        assert parse_positive_int({name: "8"}, name, 1, "timeline") == 8


# -- item 6: a model_path must name a model; other files under MODEL_ROOT are a 422 like missing ones -------


def test_item_6_non_weight_files_under_model_root_are_a_422_whether_they_exist_or_not(
    make_client, own_root, small_png
):
    (own_root / "jobs").mkdir()
    (own_root / "jobs" / "20260101-3-label.json").write_text('{"id": "x"}')
    (own_root / "served.json").write_text('{"version": "v1"}')
    client = make_client(model_root=own_root, allow_custom_model_path=True)
    answers = {}
    for path in ("jobs/20260101-3-label.json", "jobs/missing.json", "served.json", "nothing.json", "x.log"):
        response = predict(client, config(path=path), str(small_png))
        assert response.status_code == 422, (path, response.text)
        answers[path] = response.json()["error"].replace(path, "<path>")
    assert len(set(answers.values())) == 1, answers  # existence is not told
    assert "is not a model" in answers["served.json"]
    assert predict(client, config(), str(small_png)).status_code == 200


def test_item_6_an_object_without_names_is_a_load_error_not_a_500(make_settings, own_root, monkeypatch):
    from core.errors import ModelLoadError
    from inference.model_registry import ModelRegistry

    class NotAModel:
        task = "detect"

        @property
        def names(self):
            raise TypeError("'dict' object is not callable")

    registry = ModelRegistry(make_settings(model_root=own_root))
    monkeypatch.setattr(registry, "_yolo", lambda *args: NotAModel())
    with pytest.raises(ModelLoadError, match="could not be loaded as an Ultralytics YOLO model"):
        registry.get(SHAPES_MODEL.name)


# -- item 8: headers, and no state change from another site's page ------------------------------------------


def test_item_8_every_answer_forbids_framing_and_sniffing(make_client):
    client = make_client(basic_auth_user="u", basic_auth_pass="p")
    for response in (client.get("/health"), client.get("/ui"), client.get("/ui", auth=("u", "p"))):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, 403),
        ({"Sec-Fetch-Site": "same-site", "Origin": "https://other.testserver"}, 403),
        ({"Origin": "https://evil.example"}, 403),  # a browser without Sec-Fetch-Site
        ({"Origin": "null"}, 403),  # a sandboxed frame, a file:// page
        ({"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver"}, 200),  # the try-it page
        ({"Origin": "http://testserver"}, 200),
        ({}, 200),  # Label Studio, curl, scripts
    ],
)
def test_item_8_state_changing_posts_from_another_sites_page_are_refused(make_client, headers, status):
    client = make_client(basic_auth_user="u", basic_auth_pass="p")
    body = {"action": "PROJECT_UPDATED", "project": {"id": 1}}
    response = client.post("/webhook", json=body, headers=headers, auth=("u", "p"))
    assert response.status_code == status, response.text
    if status == 403:
        assert "another site" in response.json()["error"]
    assert client.get("/health", headers=headers, auth=("u", "p")).status_code == 200  # reads are fine


# -- item 5: answers show paths relative to MODEL_ROOT ------------------------------------------------------


def test_item_5_job_logs_and_errors_show_paths_relative_to_model_root(make_client, own_root):
    from training.jobs import Job, JobFiles

    files = JobFiles(own_root / "jobs")
    version = own_root / "trained" / "1" / "label" / "v1-20260101T000000"
    files.save(Job(id="j1", project="1", control="label", state="failed", error=f"no file {version}/best.pt"))
    files.log_path("j1").write_text(
        f"Scanning {version}/dataset/labels/train... 8 images\n"
        f'  File "{sys.prefix}/lib/python3.11/site-packages/ultralytics/engine/trainer.py", line 1\n'
    )
    client = make_client(model_root=own_root)
    for answer in (client.get("/jobs/j1").json(), client.get("/jobs").json()["jobs"][0]):
        text = repr(answer)
        assert str(own_root) not in text and sys.prefix not in text, text
    job = client.get("/jobs/j1").json()
    assert (
        job["log_tail"][0] == "Scanning trained/1/label/v1-20260101T000000/dataset/labels/train... 8 images"
    )
    assert job["error"] == "no file trained/1/label/v1-20260101T000000/best.pt"


# -- item 7: uploads are refused before they are read, and only a few are read at once ----------------------


class LiveServer:
    """The app served by uvicorn on a free port in this process (real sockets: declared lengths, slow bodies)."""

    def __init__(self, app):
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)


def multipart_head(port: int, length: int) -> bytes:
    return (
        f"POST /ui/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def status_of(connection: socket.socket) -> int:
    return int(connection.recv(4096).split(b" ", 2)[1])


def test_item_7_a_declared_oversize_upload_is_refused_before_its_body_is_sent(make_settings, own_root):
    from server.app import create_app

    with LiveServer(create_app(make_settings(model_root=own_root))) as server:
        connection = server.connect()
        connection.sendall(multipart_head(server.port, 500 * 1024**2))  # declares 500 MB, sends nothing
        started = time.monotonic()
        assert status_of(connection) == 413
        assert time.monotonic() - started < 3
        connection.close()


def test_item_7_only_a_few_uploads_are_read_at_once(make_settings, own_root, small_png):
    from server.app import create_app

    settings = make_settings(model_root=own_root, max_concurrent_uploads=2)
    with LiveServer(create_app(settings)) as server:
        slow = []
        for _ in range(2):  # two uploads whose bodies are still arriving
            connection = server.connect()
            connection.sendall(multipart_head(server.port, 10 * 1024**2) + b"--XyZ\r\n")
            slow.append(connection)
        time.sleep(0.5)
        third = server.connect()
        third.sendall(multipart_head(server.port, 10 * 1024**2))
        assert status_of(third) == 429
        for connection in slow:
            connection.close()
        time.sleep(0.5)  # their reads end with the disconnect: the slots are free again
        fourth = server.connect()
        fourth.sendall(multipart_head(server.port, 10 * 1024**2))
        fourth.settimeout(2)
        with pytest.raises(TimeoutError):  # read now (waits for the body), not refused
            fourth.recv(4096)
        fourth.close()
