"""Prediction jobs through a real Label Studio 1.23, a real redis-server and real `./worker.sh` workers:
two replicas of the backend (`./start.sh`) share one Redis; jobs run only on workers.

What a team sees: a job stays queued while no worker runs; a worker runs it with progress; cancel through
the other replica; a second job predicts only the rest; a worker SIGKILLed mid-job (the job is retried
by the other worker, no task gets two predictions); a Retrieve Predictions over PREDICT_TIME_BUDGET hands
its rest to a job; TASKS_CREATED pre-labels new tasks with PRELABEL_NEW_TASKS; and without Redis a job
is a local process of the backend.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest
import requests

from server.jobs import FIRST_CHUNK_TASKS
from tests.conftest import SHAPES_MODEL
from tools.shapes import draw_shapes_image

from .backend_server import PROJECT_ROOT, BackendServer
from .label_studio import LabelStudioServer, stop_process_group
from .test_backend_e2e import create_project, predictions_by_task

pytestmark = pytest.mark.e2e

CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image" model_path="shapes-yolov8n.pt" model_score_threshold="0.05">'
    '<Label value="circle"/><Label value="square"/><Label value="triangle"/></RectangleLabels></View>'
)


class WorkerProcess:
    """`./worker.sh` in its own process group, its output in a file."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.env, self.log_path = env, log_path
        self.process: subprocess.Popen | None = None
        self.horses: set[int] = set()

    def start(self) -> WorkerProcess:
        self.process = subprocess.Popen(
            [str(PROJECT_ROOT / "worker.sh")],
            cwd=PROJECT_ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_ready(self, timeout: float = 120) -> WorkerProcess:
        """Until the worker listens on the queue (after `worker.preload`'s imports)."""
        deadline = time.monotonic() + timeout
        while b"Listening on" not in self.log_path.read_bytes():
            assert self.process.poll() is None, self.log_path.read_text()[-2000:]
            assert time.monotonic() < deadline, f"worker not ready in {timeout} s"
            time.sleep(0.1)
        return self

    def horse_pids(self) -> set[int]:
        """RQ's work horses of this worker (each calls setsid: not in the worker's process group)."""
        with contextlib.suppress(psutil.NoSuchProcess):
            self.horses |= {child.pid for child in psutil.Process(self.process.pid).children(recursive=True)}
        return {pid for pid in self.horses if psutil.pid_exists(pid)}

    def stop(self) -> None:
        if self.process is None:
            return
        horses = self.horse_pids()
        stop_process_group(self.process, grace_seconds=20)
        for pid in horses:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""


class Stack:
    """Two replicas of the backend and any number of workers, on one Redis and one MODEL_ROOT."""

    def __init__(self, replicas: list[BackendServer], worker_env: dict[str, str], folder: Path):
        self.a, self.b = replicas
        self.worker_env, self.folder = worker_env, folder
        self.workers: list[WorkerProcess] = []

    def worker(self, **env: str) -> WorkerProcess:
        log = self.folder / f"worker-{len(self.workers)}.log"
        worker = WorkerProcess({**self.worker_env, **env}, log).start()
        self.workers.append(worker)
        return worker

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers.clear()


@pytest.fixture(scope="module")
def stack(
    label_studio: LabelStudioServer, redis_server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("jobs-stack")
    root = folder / "models"
    root.mkdir()
    shutil.copy(SHAPES_MODEL, root / SHAPES_MODEL.name)
    redis_server.flush()
    common = {
        "REDIS_URL": redis_server.url,
        "MODEL_ROOT": str(root),
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.personal_access_token,
        "ALLOW_CUSTOM_MODEL_PATH": "true",
        "ALLOW_MODEL_DOWNLOAD": "false",
        "MEDIA_CACHE_DIR": str(folder / "media-cache"),
        "WORKERS": "1",
        "THREADS": "4",
    }
    replicas = [
        BackendServer(folder / "replica-a.log", {**common, "PRELABEL_NEW_TASKS": "true"}),
        BackendServer(folder / "replica-b.log", {**common, "PREDICT_TIME_BUDGET": "0.001"}),
    ]
    started: list[BackendServer] = []
    try:
        for replica in replicas:
            started.append(replica.start())
        worker_env = {
            **replicas[0].environment(),
            "WORKER_HEARTBEAT_SECONDS": "1",
            "WORKER_MAINTENANCE_SECONDS": "5",
            "INFERENCE_BATCH_SIZE": "4",
        }
        stack = Stack(replicas, worker_env, folder)
        yield stack
    finally:
        with contextlib.suppress(NameError):
            stack.stop_workers()
        for replica in started:
            replica.stop()


def shapes_images(folder: Path, count: int, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image, _ = draw_shapes_image(rng, 64, 48, n_shapes=1)
        paths.append(folder / f"s{seed}-{i}.png")
        cv2.imwrite(str(paths[-1]), image)
    return paths


def many_tasks_project(api, title: str, images: list[Path]) -> tuple[dict, list[dict]]:
    """A project of `images` imported 50 at a time (Label Studio takes at most 100 files a request)."""
    project = api.create_project(title, CONFIG)
    for start in range(0, len(images), 50):
        api.import_files(project["id"], images[start : start + 50])
    tasks = api.list_tasks(project["id"], all_fields=False)
    assert len(tasks) == len(images)
    return project, tasks


def post_job(replica: BackendServer, **body) -> dict:
    response = requests.post(f"{replica.url}/jobs", json=body, timeout=30)
    assert response.status_code == 202, response.text
    return response.json()


def job(replica: BackendServer, job_id: str) -> dict:
    response = requests.get(f"{replica.url}/jobs/{job_id}", timeout=30)
    response.raise_for_status()
    return response.json()


def wait_for(what: str, check: Callable[[], dict | None], timeout: float, stack: Stack | None = None) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    logs = "\n".join(w.log() for w in stack.workers) if stack else ""
    pytest.fail(f"timed out waiting for {what}\n{logs}")


def finished(replica: BackendServer, job_id: str) -> Callable[[], dict | None]:
    def check() -> dict | None:
        current = job(replica, job_id)
        return current if current["state"] in ("succeeded", "failed", "cancelled") else None

    return check


def one_prediction_each(api, project: dict, tasks: list[dict], version: str) -> dict[int, list[dict]]:
    by_task = predictions_by_task(api, project)
    assert sorted(by_task) == sorted(t["id"] for t in tasks), "a task without its prediction"
    assert all(len(predictions) == 1 for predictions in by_task.values()), "a task predicted twice"
    assert {p["model_version"] for ps in by_task.values() for p in ps} == {version}
    return by_task


def test_a_job_waits_for_a_worker_is_cancelled_elsewhere_and_a_second_job_predicts_only_the_rest(
    label_studio: LabelStudioServer, stack: Stack, tmp_path: Path
) -> None:
    api = label_studio.api
    project, tasks = create_project(api, "jobs on workers", CONFIG, shapes_images(tmp_path, 12, seed=1))
    version = stack.a.setup(CONFIG)

    queued = post_job(stack.a, kind="predict", project=project["id"], tasks="all")
    assert queued["state"] == "queued" and queued["kind"] == "predict"
    time.sleep(2)  # no worker yet: nothing runs it, on either replica
    assert job(stack.b, queued["id"])["state"] == "queued"
    listed = requests.get(
        f"{stack.b.url}/jobs", params={"project": project["id"], "kind": "predict"}, timeout=30
    )
    assert [j["id"] for j in listed.json()["jobs"]] == [queued["id"]]
    cancelled = requests.delete(f"{stack.b.url}/jobs/{queued['id']}", timeout=30).json()
    assert cancelled["state"] == "cancelled"

    first = post_job(stack.b, kind="predict", project=project["id"], tasks=[t["id"] for t in tasks[:5]])
    stack.worker()
    done = wait_for("the first job", finished(stack.a, first["id"]), 120, stack)
    assert done["state"] == "succeeded", done
    assert done["progress"] == {"done": 5, "total": 5, "failed": 0, "skipped": 0}
    assert done["model_version"] == version
    one_prediction_each(api, project, tasks[:5], version)
    assert job(stack.a, queued["id"])["started_at"] is None  # the cancelled job never ran

    second = post_job(stack.a, kind="predict", project=project["id"])
    done = wait_for("the second job", finished(stack.b, second["id"]), 120, stack)
    assert done["state"] == "succeeded", done
    assert done["progress"] == {"done": 7, "total": 12, "failed": 0, "skipped": 5}
    by_task = one_prediction_each(api, project, tasks, version)
    assert any(p["result"] for ps in by_task.values() for p in ps)  # the shapes model found shapes
    stack.stop_workers()


@pytest.mark.slow  # RQ keeps a dead worker's job 60 s past its last heartbeat before it is abandoned
def test_a_worker_sigkilled_mid_job_leaves_no_job_running_and_no_task_predicted_twice(
    label_studio: LabelStudioServer, stack: Stack, tmp_path: Path
) -> None:
    api = label_studio.api
    project, tasks = many_tasks_project(api, "killed worker", shapes_images(tmp_path, 40, seed=2))
    version = stack.a.setup(CONFIG)
    doomed = stack.worker(PREDICTION_JOB_BATCH="4")
    started = post_job(stack.a, kind="predict", project=project["id"])

    def mid_job() -> dict | None:
        current = job(stack.b, started["id"])
        return current if current["state"] == "running" and current["progress"]["done"] >= 8 else None

    seen = wait_for("the job to be under way", mid_job, 180, stack)
    horses = doomed.horse_pids()
    assert horses, "the worker runs the job in a work horse"
    os.kill(doomed.process.pid, signal.SIGKILL)  # the worker only: its horse is in a session of its own
    doomed.process.wait()
    # The orphaned horse notices (its parent changed) and stops within a lease renewal (15 s).
    wait_for("the orphaned horse to stop", lambda: not doomed.horse_pids() or None, 30)
    assert job(stack.a, started["id"])["progress"]["done"] < len(tasks)

    stack.worker()
    done = wait_for("the job to be retried and finish", finished(stack.b, started["id"]), 300, stack)
    assert done["state"] == "succeeded", done
    assert done["progress"]["skipped"] >= seen["progress"]["done"]  # what the first attempt stored
    assert done["progress"]["done"] + done["progress"]["skipped"] == len(tasks)
    one_prediction_each(api, project, tasks, version)
    stack.stop_workers()


def test_retrieve_predictions_over_the_time_budget_hands_the_rest_to_a_job(
    label_studio: LabelStudioServer, stack: Stack, tmp_path: Path
) -> None:
    api = label_studio.api
    count = FIRST_CHUNK_TASKS + 4
    project, tasks = many_tasks_project(api, "budget", shapes_images(tmp_path, count, seed=3))
    ml = api.connect_ml_backend(project["id"], stack.b.url, title="YOLO")  # PREDICT_TIME_BUDGET tiny
    stack.worker()
    api.retrieve_predictions(project["id"])
    # Label Studio stored what the request predicted; the rest comes from the job it started.
    assert len(predictions_by_task(api, project)) == FIRST_CHUNK_TASKS

    def all_stored() -> dict | None:
        jobs = requests.get(f"{stack.a.url}/jobs", params={"project": project["id"]}, timeout=30).json()[
            "jobs"
        ]
        return jobs[0] if jobs and jobs[0]["state"] == "succeeded" else None

    handed = wait_for("the hand-off job", all_stored, 120, stack)
    assert handed["trigger"] == "PREDICT_TIME_BUDGET" and handed["progress"]["done"] == 4
    one_prediction_each(api, project, tasks, ml["model_version"])
    stack.stop_workers()


def test_new_tasks_are_prelabelled_when_prelabel_new_tasks_is_on(
    label_studio: LabelStudioServer, stack: Stack, tmp_path: Path
) -> None:
    api = label_studio.api
    project, _ = create_project(api, "prelabel", CONFIG, shapes_images(tmp_path / "old", 1, seed=4))
    ml = api.connect_ml_backend(project["id"], stack.a.url, title="YOLO")  # PRELABEL_NEW_TASKS=true
    stack.worker()
    api.import_files(project["id"], shapes_images(tmp_path / "new", 3, seed=5))  # TASKS_CREATED
    new_ids = sorted(t["id"] for t in api.list_tasks(project["id"]))[1:]

    def prelabelled() -> dict | None:
        return predictions_by_task(api, project) if len(predictions_by_task(api, project)) == 3 else None

    by_task = wait_for("the new tasks' predictions", prelabelled, 120, stack)
    assert sorted(by_task) == new_ids  # the old task was not part of it
    assert {p["model_version"] for ps in by_task.values() for p in ps} == {ml["model_version"]}
    (created,) = requests.get(f"{stack.b.url}/jobs", params={"project": project["id"]}, timeout=30).json()[
        "jobs"
    ]
    assert created["trigger"] == "TASKS_CREATED"
    stack.stop_workers()


def test_without_redis_a_prediction_job_is_a_local_process_of_the_backend(
    label_studio: LabelStudioServer, yolo_backend: BackendServer, model_root: Path, tmp_path: Path
) -> None:
    api = label_studio.api
    project, tasks = create_project(api, "local job", CONFIG, shapes_images(tmp_path, 6, seed=6))
    version = yolo_backend.setup(CONFIG)
    started = post_job(yolo_backend, kind="predict", project=project["id"])
    done = wait_for("the local job", finished(yolo_backend, started["id"]), 120)
    assert done["state"] == "succeeded" and done["progress"]["done"] == 6, done
    one_prediction_each(api, project, tasks, version)
    assert (
        requests.delete(f"{yolo_backend.url}/jobs/{started['id']}", timeout=30).json()["state"] == "succeeded"
    )
    assert (model_root / "jobs" / f"{started['id']}.json").exists()
