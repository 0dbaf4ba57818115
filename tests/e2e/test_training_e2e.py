"""The user's training path through a real Label Studio: annotate, Start Training, wait for the job,
a new model_version, Retrieve Predictions stores the new model's regions (once)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests

from tests.conftest import SHAPES_MODEL, rectangle_annotation

from .backend_server import BackendServer
from .label_studio import LabelStudioServer
from .test_backend_e2e import create_project, predictions_by_task

pytestmark = pytest.mark.e2e

CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image" model_path="shapes-yolov8n.pt" model_score_threshold="0.05" '
    'model_train_epochs="2" model_train_imgsz="96" model_train_batch="4" model_train_promote="always">'
    '<Label value="circle"/><Label value="square"/><Label value="triangle"/></RectangleLabels></View>'
)


@pytest.fixture
def training_backend(label_studio: LabelStudioServer, tmp_path: Path):
    """Our backend (start.sh) with its own MODEL_ROOT, so trained versions stay in this test."""
    root = tmp_path / "models"
    root.mkdir()
    shutil.copy(SHAPES_MODEL, root / SHAPES_MODEL.name)
    env = {
        "MODEL_ROOT": str(root),
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.personal_access_token,
        "ALLOW_CUSTOM_MODEL_PATH": "true",
        "ALLOW_MODEL_DOWNLOAD": "false",
        "MEDIA_CACHE_DIR": str(tmp_path / "media-cache"),
        "WORKERS": "2",
        "THREADS": "2",
    }
    server = BackendServer(tmp_path / "backend.log", env)
    server.start()
    try:
        yield server, root
    finally:
        server.stop()


def test_start_training_serves_a_new_version_that_retrieve_predictions_uses(
    label_studio: LabelStudioServer, training_backend, tmp_path: Path
) -> None:
    from ultralytics import YOLO

    from tools.shapes import draw_shapes_image

    backend, model_root = training_backend
    api = label_studio.api
    rng = np.random.default_rng(11)
    images, truths = [], []
    for i in range(8):
        image, shapes = draw_shapes_image(rng, 160, 128, n_shapes=2)
        path = tmp_path / f"shape-{i}.png"
        cv2.imwrite(str(path), image)
        images.append(path)
        truths.append(shapes)
    project, tasks = create_project(api, "e2e training", CONFIG, images)
    for task, shapes in zip(tasks, truths, strict=True):
        api.create_annotation(task["id"], [rectangle_annotation(name, box, 160, 128) for name, box in shapes])
    ml = api.connect_ml_backend(project["id"], backend.url, title="YOLO")
    before = ml["model_version"]
    api.retrieve_predictions(project["id"])
    assert {p["model_version"] for p in api.list_predictions(project_id=project["id"])} == {before}

    api.train_ml_backend(ml["id"])  # "Start Training": only a START_TRAINING webhook
    deadline, jobs = time.time() + 300, []
    while time.time() < deadline:
        jobs = requests.get(f"{backend.url}/jobs", params={"project": project["id"]}, timeout=10).json()[
            "jobs"
        ]
        if jobs and all(job["state"] in ("succeeded", "failed") for job in jobs):
            break
        time.sleep(1)
    assert len(jobs) == 1, jobs
    [job] = jobs
    assert job["state"] == "succeeded" and job["promoted"], (job["error"], job["log_tail"][-15:])

    setup = requests.post(
        f"{backend.url}/setup",
        json={"project": f"{project['id']}.0", "schema": CONFIG, "hostname": "", "access_token": ""},
        timeout=10,
    ).json()["model_version"]
    assert setup != before and job["version"].split("-")[0] in setup

    api.retrieve_predictions(project["id"])
    stored = predictions_by_task(api, project)
    weights = model_root / "trained" / str(project["id"]) / "label" / job["version"] / "best.pt"
    trained = YOLO(str(weights))
    for task, image in zip(tasks, images, strict=True):
        versions = sorted(p["model_version"] for p in stored[task["id"]])
        assert versions == sorted([before, setup]), versions  # one new prediction per task, no duplicate
        [new] = [p for p in stored[task["id"]] if p["model_version"] == setup]
        expected = trained.predict(str(image), conf=0.05, verbose=False)[0]
        labels = sorted(trained.names[int(c)] for c in expected.boxes.cls.tolist())
        assert sorted(r["value"]["rectanglelabels"][0] for r in new["result"]) == labels

    api.retrieve_predictions(project["id"])  # nothing new: every task has this version's prediction
    assert len(api.list_predictions(project_id=project["id"])) == 2 * len(tasks)


def test_a_poisoned_webhook_does_not_change_how_the_job_trains_or_promotes(
    label_studio: LabelStudioServer, training_backend, tmp_path: Path
) -> None:
    """Issue 24 item 1: anyone can post START_TRAINING with the project's id and a config of their own
    (promote "always", one epoch). The job trains on the config Label Studio holds for the project, read
    with the backend's key: its epochs, and a promotion only when better. Item 2: "007" is project 7."""
    import json

    from tools.shapes import draw_shapes_image

    backend, model_root = training_backend
    own = CONFIG.replace('model_train_promote="always"', 'model_train_promote="better"')
    poisoned = CONFIG.replace('model_train_epochs="2"', 'model_train_epochs="1"')
    api = label_studio.api
    rng = np.random.default_rng(5)
    images, truths = [], []
    for i in range(6):
        image, shapes = draw_shapes_image(rng, 160, 128, n_shapes=2)
        path = tmp_path / f"poison-{i}.png"
        cv2.imwrite(str(path), image)
        images.append(path)
        truths.append(shapes)
    project, tasks = create_project(api, "e2e poisoned webhook", own, images)
    for task, shapes in zip(tasks, truths, strict=True):
        api.create_annotation(task["id"], [rectangle_annotation(name, box, 160, 128) for name, box in shapes])

    def post(project_id) -> requests.Response:
        body = {"action": "START_TRAINING", "project": {"id": project_id, "label_config": poisoned}}
        return requests.post(f"{backend.url}/webhook", json=body, timeout=30)

    first = post(project["id"])
    assert first.status_code == 200, first.text
    [job] = first.json()["jobs"]
    stored = json.loads((model_root / "jobs" / f"{job['id']}.json").read_text())
    assert stored["params"]["label_config"] == own  # Label Studio's copy, not the body's
    again = post(f"00{project['id']}")  # one project, one queue: folded into the waiting job or queued once
    assert again.status_code == 200 and again.json()["jobs"][0]["project"] == str(project["id"])

    deadline = time.time() + 300
    while time.time() < deadline:
        job = requests.get(f"{backend.url}/jobs/{job['id']}", timeout=10).json()
        if job["state"] in ("succeeded", "failed"):
            break
        time.sleep(1)
    assert job["state"] == "succeeded", (job["error"], job["log_tail"][-15:])
    assert job["epochs"] == 2  # the project's model_train_epochs, not the body's "1"
    metrics = json.loads(
        (model_root / "trained" / str(project["id"]) / "label" / job["version"] / "metrics.json").read_text()
    )
    assert "always" not in metrics["decision"]
    key = metrics["metric"]
    assert metrics["promoted"] == (metrics["new"][key] > metrics["serving"][key])
    for other in requests.get(f"{backend.url}/jobs", params={"project": project["id"]}, timeout=10).json()[
        "jobs"
    ]:
        if other["state"] in ("queued", "running"):  # the folded/queued follow-up: not needed here
            deadline = time.time() + 300
            while time.time() < deadline and other["state"] in ("queued", "running"):
                time.sleep(1)
                other = requests.get(f"{backend.url}/jobs/{other['id']}", timeout=10).json()
