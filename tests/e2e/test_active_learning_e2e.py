"""Active learning through a real Label Studio: with `model_task_score="uncertainty"` the Data Manager's own
ordering by prediction score (descending) lists the task the model is least sure of first.

The shipped shapes detector sees two ordinary shapes images (it is sure of them) and one square with
strongly rounded corners, which it takes for a circle and for a square at about even odds. Label Studio
orders the tasks itself (`tasks:predictions_score` in a Data Manager view, as a user sorting the
"Prediction score" column makes); the test only reads the order back.

With E2E_SCREENSHOT_DIR set, the test also saves a screenshot of that Data Manager view (chromium and
playwright) as `data-manager-uncertainty.png` there (how docs/ got its picture).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import SHAPES_MODEL
from tools.shapes import draw_shapes_image, make_background

from .backend_server import BackendServer
from .label_studio import DEFAULT_PASSWORD, DEFAULT_USERNAME, LabelStudioServer
from .test_backend_e2e import connect, create_project, predictions_by_task

pytestmark = pytest.mark.e2e

CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image" model_path="shapes-yolov8n.pt" model_task_score="uncertainty">'
    '<Label value="circle"/><Label value="square"/><Label value="triangle"/></RectangleLabels></View>'
)


# Data Manager columns left out of the view (only for the picture: the order does not depend on them).
HIDDEN_COLUMNS = [
    f"tasks:{name}"
    for name in [
        "inner_id",
        "completed_at",
        "total_annotations",
        "cancelled_annotations",
        "annotators",
        "annotations_results",
        "annotations_ids",
        "predictions_results",
        "file_upload",
        "storage_filename",
        "created_at",
        "updated_at",
        "updated_by",
        "avg_lead_time",
        "draft_exists",
        "comment_count",
        "unresolved_comment_count",
    ]
]


def rounded_square(path: Path, radius: int = 22) -> Path:
    """An 80 px square whose corners are rounded off by `radius`: half circle, half square to the model."""
    image = make_background(np.random.default_rng(5), 320, 240)
    x1, y1, x2, y2, colour = 100, 60, 180, 140, (30, 30, 220)
    cv2.rectangle(image, (x1 + radius, y1), (x2 - radius, y2), colour, -1)
    cv2.rectangle(image, (x1, y1 + radius), (x2, y2 - radius), colour, -1)
    for cx, cy in ((x1 + radius, y1 + radius), (x2 - radius, y1 + radius), (x1 + radius, y2 - radius)):
        cv2.circle(image, (cx, cy), radius, colour, -1)
    cv2.circle(image, (x2 - radius, y2 - radius), radius, colour, -1)
    cv2.imwrite(str(path), image)
    return path


def shapes_image(path: Path, rng: np.random.Generator) -> Path:
    image, _ = draw_shapes_image(rng, 320, 240)
    cv2.imwrite(str(path), image)
    return path


def test_the_least_sure_task_comes_first_in_label_studios_order(
    label_studio: LabelStudioServer, yolo_backend: BackendServer, tmp_path: Path
) -> None:
    assert SHAPES_MODEL.is_file(), f"missing {SHAPES_MODEL}; run tools/train_shapes_model.py"
    rng = np.random.default_rng(4242)
    images = [
        shapes_image(tmp_path / "sure-1.png", rng),
        rounded_square(tmp_path / "unsure.png"),  # neither first nor last by id
        shapes_image(tmp_path / "sure-2.png", rng),
    ]
    api = label_studio.api
    project, tasks = create_project(api, "e2e active learning", CONFIG, images)
    model_version = connect(api, project, yolo_backend)
    assert model_version.endswith("-uncertainty")

    api.retrieve_predictions(project["id"])

    stored = predictions_by_task(api, project)
    scores = {}
    for task in tasks:
        [prediction] = stored[task["id"]]
        assert prediction["model_version"] == model_version
        assert all(0.0 <= region["score"] <= 1.0 for region in prediction["result"])
        scores[task["id"]] = prediction["score"]
    unsure = tasks[1]["id"]
    assert scores[unsure] > 0.9 and max(s for t, s in scores.items() if t != unsure) < 0.6, scores

    # Label Studio's own order: a Data Manager view sorted by prediction score, descending. Its
    # "Prediction score" averages the predictions of the project's chosen model version only (Settings ->
    # Annotation -> Live Predictions / Prelabeling); without one chosen, every score reads empty.
    api.update_project(project["id"], model_version=model_version)
    view = api.call(
        "POST",
        "/api/dm/views",
        json={
            "project": project["id"],
            "data": {
                "title": "Least sure first",
                "ordering": ["-tasks:predictions_score"],
                "hiddenColumns": {"explore": HIDDEN_COLUMNS, "labeling": HIDDEN_COLUMNS},
            },
        },
    )
    listed = api.call("GET", "/api/tasks", params={"project": project["id"], "view": view["id"]})
    order = [task["id"] for task in listed["tasks"]]
    assert order[0] == unsure, (order, scores)
    assert [round(task["predictions_score"], 6) for task in listed["tasks"]] == sorted(
        (round(s, 6) for s in scores.values()), reverse=True
    )

    folder = os.environ.get("E2E_SCREENSHOT_DIR")
    if folder:
        data_manager_screenshot(
            label_studio, project["id"], view["id"], Path(folder) / "data-manager-uncertainty.png"
        )


def data_manager_screenshot(
    label_studio: LabelStudioServer, project_id: int, view_id: int, path: Path
) -> None:
    """Log in as the harness's user in chromium and photograph the project's Data Manager tab `view_id`."""
    from playwright.sync_api import sync_playwright

    from tests.test_ui_browser import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 560})
            page.goto(f"{label_studio.url}/user/login/")
            page.fill('input[name="email"]', DEFAULT_USERNAME)
            page.fill('input[name="password"]', DEFAULT_PASSWORD)
            page.click('button[type="submit"]')
            page.wait_for_load_state("networkidle")
            page.goto(f"{label_studio.url}/projects/{project_id}/data?tab={view_id}")
            page.wait_for_selector("text=Prediction score", timeout=60_000)
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(1500)
            path.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(path))
        finally:
            browser.close()
