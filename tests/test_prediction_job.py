"""A prediction job in-process against the stand-in Label Studio (tests/label_studio_stand_in.py):
every task stored once, failures counted per task, and Label Studio's calls made while the model
predicts (the next batch fetched before the last one is stored). The job through workers and the real
Label Studio is in tests/e2e/test_prediction_jobs_e2e.py."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from media.label_studio_client import LabelStudioClient
from model import YOLOBackend
from prediction_job import PredictionJob
from tests.label_studio_stand_in import LEGACY_KEY, StandInLabelStudio
from tools.shapes import draw_shapes_image

PROJECT = 7
CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image" model_path="shapes-yolov8n.pt" model_score_threshold="0.05">'
    '<Label value="circle"/><Label value="square"/><Label value="triangle"/></RectangleLabels></View>'
)


class RecordingReporter:
    """What a job reports, kept in memory (the file and RQ reporters are tested with the runners)."""

    class job:  # the reporter's `job`, whose model_version the job sets
        model_version = ""

    def __init__(self, cancel_after_reports: int | None = None):
        self.reports: list[tuple[int, int, int, int]] = []
        self.outcome = ""
        self.cancel_after_reports = cancel_after_reports

    def phase(self, name: str) -> None:
        pass

    def progress(self, done: int, total: int, failed: int, skipped: int, errors: list[str]) -> None:
        self.reports.append((done, total, failed, skipped))

    def cancel_requested(self) -> bool:
        return self.cancel_after_reports is not None and len(self.reports) > self.cancel_after_reports

    def finish(self, message: str) -> None:
        self.outcome = f"finished: {message}"

    def cancelled(self, message: str) -> None:
        self.outcome = message


@pytest.fixture
def project(tmp_path: Path):
    """Ten tasks with images uploaded to the stand-in, task 4's image missing."""
    rng = np.random.default_rng(7)
    media, tasks = {}, []
    for task_id in range(1, 11):
        path = f"/data/upload/{PROJECT}/{task_id}.png"
        if task_id != 4:
            image, _ = draw_shapes_image(rng, 160, 120, n_shapes=2)
            media[path] = tmp_path / f"{task_id}.png"
            cv2.imwrite(str(media[path]), image)
        tasks.append({"id": task_id, "project": PROJECT, "data": {"image": path}})
    with StandInLabelStudio(
        tasks=tasks, media=media, project=PROJECT, label_config=CONFIG, refresh_token=""
    ) as stand_in:
        yield stand_in


def run_job(make_settings, own_model_root, stand_in, reporter, batch_tasks=3):
    settings = make_settings(
        model_root=own_model_root, label_studio_url=stand_in.url, label_studio_api_key=LEGACY_KEY
    )
    backend = YOLOBackend(settings)
    try:
        client = LabelStudioClient(stand_in.url, LEGACY_KEY)
        return PredictionJob(backend, client, reporter, batch_tasks).run(str(PROJECT)), backend
    finally:
        backend.close()


def test_a_job_stores_each_task_once_counts_failures_and_fetches_the_next_batch_before_storing(
    make_settings, own_model_root, project
) -> None:
    project.refuse_upload_for = {8}  # the batch of tasks 8-10 is refused as a whole
    version = YOLOBackend(make_settings(model_root=own_model_root)).model_version(CONFIG, str(PROJECT))
    project.predictions.append({"id": 1, "task": 2, "model_version": version, "result": []})

    reporter = RecordingReporter()
    counts, _ = run_job(make_settings, own_model_root, project, reporter)

    assert (counts.total, counts.done, counts.failed, counts.skipped) == (10, 5, 4, 1)
    assert sorted(p["task"] for p in project.predictions) == [1, 2, 3, 5, 6, 7]  # each once
    assert all(p["model_version"] == version for p in project.predictions)
    assert any(e.startswith("task 4: ") for e in counts.errors)
    assert any(e.startswith("task 8: upload failed") for e in counts.errors)
    assert reporter.reports[-1] == (5, 10, 4, 1) and reporter.outcome.startswith("finished: 5 of 10")
    # Batches [1, 3, 4] [5, 6, 7] [8, 9, 10] (2 was done): each batch's tasks were fetched again
    # before the batch ahead of it was stored, i.e. while the model predicted.
    order = []
    for _method, path, query, _body in project.calls:
        if path == "/api/tasks/" and "selectedItems" in query.get("query", ""):
            order.append("fetch")
        elif path.endswith("/import/predictions"):
            order.append("store")
    assert project.task_queries()[0].get("include") == "id"  # the listing of all: ids only
    assert order[:1] == ["fetch"] and order.count("store") == 3
    assert order[1:] == ["fetch", "store", "fetch", "store", "store"], order


def test_a_cancelled_job_stops_after_the_batch_in_flight_and_keeps_what_it_stored(
    make_settings, own_model_root, project
) -> None:
    reporter = RecordingReporter(cancel_after_reports=1)  # the first report, then one batch's
    counts, _ = run_job(make_settings, own_model_root, project, reporter)
    assert reporter.outcome.startswith("cancelled: 3 of 10 task(s) predicted"), counts.errors
    assert sorted(p["task"] for p in project.predictions) == [1, 2, 3]
    assert counts.done == 3


def test_a_short_page_is_the_last_one_asked_for(project) -> None:
    client = LabelStudioClient(project.url, LEGACY_KEY)
    assert [t["id"] for t in client.tasks(PROJECT, ids=[2, 3])] == [2, 3]
    assert len(project.task_queries()) == 1  # no request for a page 2 that would answer 404
