"""The learning loop: versions and their atomic pointer, jobs across processes, the pipeline from
Label Studio annotations (a stand-in Label Studio serving generated shapes images) to a promoted model."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import cv2
import numpy as np
import pytest

from tests.conftest import PROJECT_ROOT, SHAPES_MODEL, RecordingReporter, rectangle_annotation
from tests.local_http import LocalHTTPServer
from tools.shapes import draw_shapes_image
from training.jobs import JobFiles, LocalProcessRunner, count_event, try_lock
from training.versions import ServedVersions, VersionStore
from training_pipeline import TaskErrors

TOKEN = "0123456789abcdef0123456789abcdef01234567"
PROJECT = "3"
JOB_ENTRY = [sys.executable, str(PROJECT_ROOT / "training_pipeline.py")]


def label_config(**attrs: str) -> str:
    extra = " ".join(f'{k}="{v}"' for k, v in attrs.items())
    return (
        '<View><Image name="image" value="$image"/>'
        f'<RectangleLabels name="label" toName="image" model_path="shapes-yolov8n.pt" {extra}>'
        '<Label value="circle"/><Label value="square"/><Label value="triangle"/>'
        "</RectangleLabels></View>"
    )


def shapes_tasks(count: int, width: int = 160, height: int = 128) -> tuple[list[dict], dict[str, bytes]]:
    """`count` annotated tasks with generated images, one task with only a skipped annotation, one
    with none; the images by upload path."""
    rng = np.random.default_rng(7)
    tasks, files = [], {}
    for task_id in range(1, count + 3):
        image, shapes = draw_shapes_image(rng, width, height, n_shapes=2)
        path = f"/data/upload/{PROJECT}/{task_id:08x}-shapes.jpg"
        files[path] = cv2.imencode(".jpg", image)[1].tobytes()
        result = [rectangle_annotation(name, box, width, height) for name, box in shapes]
        if task_id <= count:
            annotations = [
                {
                    "id": 100 + task_id,
                    "result": [],
                    "was_cancelled": False,
                    "updated_at": "2026-01-01T00:00:00Z",
                },
                {
                    "id": 200 + task_id,
                    "result": result,
                    "was_cancelled": False,
                    "updated_at": "2026-02-01T00:00:00Z",
                },
            ]
        elif task_id == count + 1:
            annotations = [{"id": 300, "result": result, "was_cancelled": True, "updated_at": "2026-03-01"}]
        else:
            annotations = []
        tasks.append({"id": task_id, "data": {"image": path}, "annotations": annotations})
    return tasks, files


class TasksLabelStudio(LocalHTTPServer):
    """Answers the SDK's task list (legacy token) and serves the uploaded images."""

    def __init__(self, tasks: list[dict], files: dict[str, bytes], config: str = ""):
        stand_in = self
        self.tasks, self.files, self.config = tasks, files, config
        self.task_queries: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.headers.get("Authorization") != f"Token {TOKEN}":
                    return self._send(401, b"{}")
                parsed = urlparse(self.path)
                if parsed.path == "/api/tasks/":
                    query = parse_qs(parsed.query)
                    stand_in.task_queries.append(query)
                    page = int(query.get("page", ["1"])[0])
                    tasks = stand_in.tasks if page == 1 else []
                    return self._send(
                        200, json.dumps({"tasks": tasks, "total": len(stand_in.tasks)}).encode()
                    )
                if parsed.path == f"/api/projects/{PROJECT}/":
                    return self._send(
                        200, json.dumps({"id": int(PROJECT), "label_config": stand_in.config}).encode()
                    )
                if parsed.path in stand_in.files:
                    return self._send(200, stand_in.files[parsed.path], "image/jpeg")
                return self._send(404, b"{}")

            def _send(self, status: int, body: bytes, content_type: str = "application/json"):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._listen(Handler)


@pytest.fixture
def own_model_root(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    shutil.copy(SHAPES_MODEL, root / SHAPES_MODEL.name)
    return root


def complete_version(store: VersionStore, control: str = "label") -> str:
    folder = store.create_version(PROJECT, control)
    shutil.copy(SHAPES_MODEL, folder / "best.pt")
    (folder / "metrics.json").write_text(json.dumps({"new": {"map50_95": 0.5}}))
    return folder.name


# -- versions -------------------------------------------------------------------------------------------


def test_versions_are_numbered_and_the_pointer_switches(own_model_root: Path) -> None:
    store = VersionStore(own_model_root)
    served = ServedVersions(VersionStore(own_model_root))  # as another worker would see it
    first, second = complete_version(store), complete_version(store)
    assert first.startswith("v1-") and second.startswith("v2-")
    assert served.served(PROJECT, "label") is None
    store.promote(PROJECT, "label", second)
    assert served.served(PROJECT, "label") == second
    assert served.model_path(PROJECT, "label") == f"trained/{PROJECT}/label/{second}/best.pt"
    store.promote(PROJECT, "label", first)  # rollback
    assert served.served(PROJECT, "label") == first
    assert [v.served for v in store.versions(PROJECT, "label")] == [True, False]


def test_incomplete_or_unknown_versions_are_never_served(own_model_root: Path) -> None:
    from core.errors import BadRequestError

    store = VersionStore(own_model_root)
    half = store.create_version(PROJECT, "label")  # a job killed before metrics.json
    shutil.copy(SHAPES_MODEL, half / "best.pt")
    with pytest.raises(BadRequestError, match="incomplete"):
        store.promote(PROJECT, "label", half.name)
    with pytest.raises(BadRequestError, match="no version"):
        store.promote(PROJECT, "label", "v9-20260101T000000")
    assert store.served(PROJECT, "label") is None


def test_a_crash_while_writing_the_pointer_keeps_the_served_version(own_model_root, monkeypatch) -> None:
    store = VersionStore(own_model_root)
    old, new = complete_version(store), complete_version(store)
    store.promote(PROJECT, "label", old)

    def crash(*args):
        raise KeyboardInterrupt  # stands for a kill between writing the temporary file and the rename

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        store.promote(PROJECT, "label", new)
    monkeypatch.undo()
    assert store.served(PROJECT, "label") == old
    assert not [p for p in store.control_dir(PROJECT, "label").iterdir() if p.name.endswith(".tmp")]


# -- jobs -----------------------------------------------------------------------------------------------


def sleeper_runner(jobs_dir: Path) -> LocalProcessRunner:
    return LocalProcessRunner(jobs_dir, [sys.executable, "-c", "import time; time.sleep(60)"])


def test_two_triggers_at_once_run_one_job_and_a_killed_job_is_reported(tmp_path: Path) -> None:
    runners = [sleeper_runner(tmp_path / "jobs"), sleeper_runner(tmp_path / "jobs")]  # two workers
    answers: list = [None, None]
    barrier = threading.Barrier(2)

    def trigger(index: int) -> None:
        barrier.wait()
        answers[index] = runners[index].submit(PROJECT, "label", "START_TRAINING", {})

    threads = [threading.Thread(target=trigger, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a.status for a in answers) == ["already_running", "started"]
    assert answers[0].job.id == answers[1].job.id
    job = runners[1].get(answers[0].job.id)
    assert job.state == "queued" and job.pid
    assert try_lock(JobFiles(tmp_path / "jobs").lock_path(PROJECT, "label")) is None  # the job holds it
    assert runners[0].submit(PROJECT, "other", "START_TRAINING", {}).status == "started"  # per control

    os.kill(job.pid, signal.SIGKILL)
    deadline = time.time() + 10
    while runners[1].get(job.id).state != "failed" and time.time() < deadline:
        time.sleep(0.1)
    failed = runners[1].get(job.id)
    assert failed.state == "failed" and "killed" in failed.error
    assert runners[0].submit(PROJECT, "label", "START_TRAINING", {}).status == "started"
    for listed in runners[0].list():
        if listed.state == "queued":
            os.kill(listed.pid, signal.SIGKILL)


def test_a_new_job_keeps_only_the_newest_finished_jobs_of_its_control(tmp_path: Path) -> None:
    """TRAINING_JOBS_KEPT: job states and logs under MODEL_ROOT/jobs no longer pile up for ever."""
    from training.jobs import Job

    files = JobFiles(tmp_path / "jobs")
    files.dir.mkdir()

    def finished(job_id: str, control: str = "label", state: str = "succeeded") -> str:
        created = float(job_id.rsplit("-", 1)[1])
        files.save(Job(id=job_id, project=PROJECT, control=control, state=state, created_at=created))
        files.log_path(job_id).write_text("log\n")
        return job_id

    for n in range(1, 6):  # old-5 is the newest
        finished(f"old-{n}")
    other = finished("other-1", control="other")
    runner = LocalProcessRunner(files.dir, [sys.executable, "-c", "pass"], keep_finished=3)
    new = runner.submit(PROJECT, "label", "START_TRAINING", {}).job
    kept = {job.id for job in files.all()}
    assert kept == {new.id, "old-5", "old-4", other}  # 2 finished + the new one make 3; other controls stay
    assert sorted(path.name for path in files.dir.glob("old-*")) == [
        "old-4.json",
        "old-4.log",
        "old-5.json",
        "old-5.log",
    ]


def test_unknown_or_hostile_job_ids_are_404(tmp_path: Path) -> None:
    from training.jobs import JobNotFoundError

    runner = sleeper_runner(tmp_path / "jobs")
    for job_id in ("nope", "../../etc/passwd", ""):
        with pytest.raises(JobNotFoundError):
            runner.get(job_id)


def test_every_nth_annotation_event_triggers(tmp_path: Path) -> None:
    fired = [count_event(tmp_path, PROJECT, "label", 3) for _ in range(7)]
    assert fired == [False, False, True, False, False, True, False]


# -- annotations ----------------------------------------------------------------------------------------


def test_latest_non_cancelled_annotation_per_task() -> None:
    from training_pipeline import annotated_tasks

    tasks, _ = shapes_tasks(3)
    picked = annotated_tasks(tasks, "label")
    assert [task["id"] for task, _ in picked] == [1, 2, 3]  # skipped-only and unannotated left out
    assert all(len(regions) == 2 for _, regions in picked)  # the later annotation, not the empty one


# -- the pipeline, in this process ----------------------------------------------------------------------


def fake_evaluations(monkeypatch, serving: float, new: float) -> None:
    import training_pipeline
    from training.evaluation import Evaluation

    def evaluate(model_path, dataset, spec, imgsz, class_names_to_labels=None, device=""):
        score = new if "trained" in Path(model_path).parts else serving
        return Evaluation(score, score, score, score, {})

    monkeypatch.setattr(sys.modules["training.evaluation"], "evaluate", evaluate)
    monkeypatch.setattr(
        training_pipeline, "fine_tune", lambda base, data, run_dir, params, on_epoch: Path(base)
    )


@pytest.mark.parametrize(
    ("serving", "new", "promoted"), [(0.5, 0.4, False), (0.5, 0.5, False), (0.4, 0.5, True)]
)
def test_a_version_is_promoted_only_when_it_is_better(
    make_settings, own_model_root, monkeypatch, serving, new, promoted
) -> None:
    from training_pipeline import TrainingRun

    fake_evaluations(monkeypatch, serving, new)
    tasks, files = shapes_tasks(6)
    with TasksLabelStudio(tasks, files) as stand_in:
        settings = make_settings(
            model_root=own_model_root, label_studio_url=stand_in.url, label_studio_api_key=TOKEN
        )
        outcome = TrainingRun(settings, RecordingReporter(PROJECT, "label")).run(
            PROJECT, "label", label_config()
        )
    store = VersionStore(own_model_root)
    assert outcome.promoted is promoted
    assert store.served(PROJECT, "label") == (outcome.version if promoted else None)
    metrics = json.loads((store.control_dir(PROJECT, "label") / outcome.version / "metrics.json").read_text())
    assert metrics["serving"]["map50_95"] == serving and metrics["new"]["map50_95"] == new
    assert metrics["promoted"] is promoted
    assert ("kept, not promoted" in outcome.message) is (not promoted)


def test_promote_always_takes_a_worse_model(make_settings, own_model_root, monkeypatch) -> None:
    from training_pipeline import TrainingRun

    fake_evaluations(monkeypatch, 0.9, 0.1)
    tasks, files = shapes_tasks(6)
    with TasksLabelStudio(tasks, files) as stand_in:
        settings = make_settings(
            model_root=own_model_root, label_studio_url=stand_in.url, label_studio_api_key=TOKEN
        )
        outcome = TrainingRun(settings, RecordingReporter(PROJECT, "label")).run(
            PROJECT, "label", label_config(model_train_promote="always")
        )
    assert outcome.promoted and "always" in outcome.message


def test_too_little_data_fails_and_changes_nothing(make_settings, own_model_root, monkeypatch) -> None:
    from training.spec import TrainingSpec  # noqa: F401  (the contract's module, real or stand-in)
    from training_pipeline import TrainingRun

    fake_evaluations(monkeypatch, 0.1, 0.9)
    store = VersionStore(own_model_root)
    old = complete_version(store)
    store.promote(PROJECT, "label", old)
    tasks, files = shapes_tasks(2)
    with TasksLabelStudio(tasks, files) as stand_in:
        settings = make_settings(
            model_root=own_model_root, label_studio_url=stand_in.url, label_studio_api_key=TOKEN
        )
        with pytest.raises(Exception, match="annotated") as raised:
            TrainingRun(settings, RecordingReporter(PROJECT, "label")).run(PROJECT, "label", label_config())
    assert getattr(raised.value, "status_code", None) == 422
    assert store.served(PROJECT, "label") == old
    assert [v.name for v in store.versions(PROJECT, "label")] == [old]  # the failed job's folder is gone


# -- jobs through the webhook, in their own processes ------------------------------------------------------


def backend_for(make_settings, root: Path, url: str):
    from model import YOLOBackend

    settings = make_settings(model_root=root, label_studio_url=url, label_studio_api_key=TOKEN)
    return YOLOBackend(settings, jobs=LocalProcessRunner(root / "jobs", JOB_ENTRY))


def wait_for(backend, job_id: str, until, timeout: float = 240.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = backend.jobs.get(job_id)
        if until(job):
            return job
        time.sleep(0.5)
    raise AssertionError(
        f"job {job_id} still {job.state}/{job.phase} after {timeout} s: {job.log_tail[-10:]}"
    )


def project_body(config: str) -> dict:
    return {"action": "START_TRAINING", "project": {"id": int(PROJECT), "label_config": config}}


@pytest.mark.slow
def test_start_training_runs_a_job_that_trains_evaluates_and_promotes(make_settings, own_model_root) -> None:
    config = label_config(
        model_train_epochs="1", model_train_imgsz="64", model_train_batch="4", model_train_promote="always"
    )
    tasks, files = shapes_tasks(8)
    with TasksLabelStudio(tasks, files) as stand_in:
        backend = backend_for(make_settings, own_model_root, stand_in.url)
        before = backend.setup(config, project=f"{PROJECT}.1700000000")
        answer = backend.fit("START_TRAINING", project_body(config))
        assert answer["jobs"][0]["submission"] == "started"
        again = backend.fit("START_TRAINING", project_body(config))
        assert again["jobs"][0]["submission"] == "already_running"
        assert again["jobs"][0]["id"] == answer["jobs"][0]["id"]
        job = wait_for(backend, answer["jobs"][0]["id"], lambda j: j.state in ("succeeded", "failed"))
        assert job.state == "succeeded", (job.error, job.log_tail)
        assert job.promoted and job.epoch == job.epochs == 1
        assert stand_in.task_queries[0]["project"] == [PROJECT]

        folder = VersionStore(own_model_root).control_dir(PROJECT, "label") / job.version
        assert (folder / "best.pt").is_file() and (folder / "run" / "results.csv").is_file()
        dataset = json.loads((folder / "dataset.json").read_text())
        assert sorted(dataset["train_task_ids"] + dataset["val_task_ids"]) == list(range(1, 9))
        assert not (folder / "dataset").exists()

        after = backend.setup(config, project=f"{PROJECT}.1700000000")
        assert after != before and job.version.split("-")[0] in after
        image = {"id": 1, "data": {"image": tasks[0]["data"]["image"]}, "project": int(PROJECT)}
        run = backend.predict([image], config, project=f"{PROJECT}.1700000000")
        assert run.model_version == after
        assert f"trained/{PROJECT}/label/{job.version}/best.pt" in backend.registry.loaded()
        backend.close()


@pytest.mark.slow
def test_a_job_killed_mid_training_changes_nothing(make_settings, own_model_root) -> None:
    config = label_config(
        model_train_epochs="200", model_train_imgsz="64", model_train_batch="4", model_train_promote="always"
    )
    tasks, files = shapes_tasks(8)
    store = VersionStore(own_model_root)
    old = complete_version(store)
    store.promote(PROJECT, "label", old)
    with TasksLabelStudio(tasks, files) as stand_in:
        backend = backend_for(make_settings, own_model_root, stand_in.url)
        before = backend.setup(config, project=PROJECT)
        job_id = backend.fit("START_TRAINING", project_body(config))["jobs"][0]["id"]
        job = wait_for(backend, job_id, lambda j: j.epoch >= 1 or j.state == "failed")
        assert job.state == "running", job.error
        os.kill(job.pid, signal.SIGKILL)
        killed = wait_for(backend, job_id, lambda j: j.state == "failed", timeout=10)
        assert "killed" in killed.error
        assert store.served(PROJECT, "label") == old
        assert backend.setup(config, project=PROJECT) == before
        run = backend.predict([{"id": 1, "data": tasks[0]["data"]}], config, project=PROJECT)
        assert run.model_version == before
        backend.close()


def test_jobs_routes_are_protected_and_answer(make_client, own_model_root) -> None:
    import base64

    client = make_client(model_root=own_model_root, basic_auth_user="u", basic_auth_pass="p")
    assert client.get("/jobs").status_code == 401
    headers = {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}
    runner = sleeper_runner(own_model_root / "jobs")
    job = runner.submit(PROJECT, "label", "cli", {"label_config": "<View/>"}).job
    try:
        listed = client.get("/jobs", headers=headers).json()["jobs"]
        assert [j["id"] for j in listed] == [job.id] and "params" not in listed[0]
        assert client.get(f"/jobs/{job.id}", headers=headers).json()["state"] == "queued"
        assert client.get("/jobs/nope", headers=headers).status_code == 404
        assert client.get("/jobs", params={"project": "99"}, headers=headers).json()["jobs"] == []
    finally:
        os.kill(job.pid, signal.SIGKILL)


def test_start_training_without_label_studio_access_is_a_clear_error(make_settings, own_model_root) -> None:
    from core.errors import LabelStudioAccessError
    from model import YOLOBackend

    backend = YOLOBackend(make_settings(model_root=own_model_root))
    with pytest.raises(LabelStudioAccessError, match="LABEL_STUDIO_URL"):
        backend.fit("START_TRAINING", project_body(label_config()))
    assert not JobFiles(own_model_root / "jobs").all()
    backend.close()


# -- cli.py train | evaluate | models --------------------------------------------------------------------


def test_cli_models_lists_versions_and_rolls_back(make_settings, own_model_root, capsys) -> None:
    import cli

    store = VersionStore(own_model_root)
    first, second = complete_version(store), complete_version(store)
    store.promote(PROJECT, "label", second)
    settings = make_settings(model_root=own_model_root)
    assert cli.main(["models", "--project", PROJECT], settings) == 0
    listing = capsys.readouterr().out
    assert f"serving: {second}" in listing and f"* {second}" in listing and f"  {first}" in listing
    assert cli.main(["models", "--project", PROJECT, "--use", first], settings) == 0
    assert store.served(PROJECT, "label") == first
    assert cli.main(["models", "--project", PROJECT, "--use", "v7-20260101T000000"], settings) == 2
    assert "no version" in capsys.readouterr().err
    assert cli.main(["models", "--project", PROJECT, "--use", "base"], settings) == 0
    assert store.served(PROJECT, "label") is None


@pytest.mark.slow
def test_cli_evaluate_prints_the_table_and_the_worst_tasks(make_settings, own_model_root, capsys) -> None:
    import cli

    config = label_config(model_train_imgsz="128")
    tasks, files = shapes_tasks(6)
    with TasksLabelStudio(tasks, files, config) as stand_in:
        settings = make_settings(model_root=own_model_root)
        code = cli.main(
            ["evaluate", "--project", PROJECT, "--ls-url", stand_in.url, "--ls-api-key", TOKEN], settings
        )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "label: shapes-yolov8n.pt" in out and "mAP50-95" in out
    assert "most missed regions" in out and "most false regions" in out


def test_every_nth_annotation_starts_a_job_when_model_train_every_is_set(
    make_settings, own_model_root
) -> None:
    from model import YOLOBackend

    settings = make_settings(
        model_root=own_model_root, label_studio_url="http://ls.invalid", label_studio_api_key=TOKEN
    )
    backend = YOLOBackend(settings, jobs=sleeper_runner(own_model_root / "jobs"))
    event = {"action": "ANNOTATION_CREATED", "project": {"id": int(PROJECT), "label_config": label_config()}}
    assert [backend.fit("ANNOTATION_CREATED", event)["jobs"] for _ in range(3)] == [
        [],
        [],
        [],
    ]  # off by default
    every_two = {"project": {"id": int(PROJECT), "label_config": label_config(model_train_every="2")}}
    answers = [
        backend.fit(action, every_two)["jobs"] for action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
    ]
    assert answers[0] == [] and answers[1][0]["submission"] == "started"
    assert answers[1][0]["trigger"] == "ANNOTATION_UPDATED"
    os.kill(backend.jobs.get(answers[1][0]["id"]).pid, signal.SIGKILL)
    backend.close()


def without_ids(regions: list[dict]) -> list[dict]:
    return [{k: v for k, v in region.items() if k != "id"} for region in regions]


def test_each_request_serves_the_pointed_version_and_unloads_the_replaced_one(
    make_settings, own_model_root
) -> None:
    from model import YOLOBackend

    store = VersionStore(own_model_root)
    first, second = complete_version(store), complete_version(store)
    tasks, files = shapes_tasks(1)
    with TasksLabelStudio(tasks, files) as stand_in:
        settings = make_settings(
            model_root=own_model_root, label_studio_url=stand_in.url, label_studio_api_key=TOKEN
        )
        backend = YOLOBackend(settings)
        config = label_config()
        task = [{"id": 1, "data": tasks[0]["data"]}]
        base = backend.predict(task, config, project=PROJECT)
        assert list(backend.registry.loaded()) == ["shapes-yolov8n.pt"]
        for version in (first, second, first):
            store.promote(PROJECT, "label", version)  # as another process would
            run = backend.predict(task, config, project=PROJECT)
            assert run.model_version == backend.setup(config, project=f"{PROJECT}.17") != base.model_version
            assert f"label.{version.split('-')[0]}" in run.model_version
            trained = [name for name in backend.registry.loaded() if name.startswith("trained/")]
            assert trained == [f"trained/{PROJECT}/label/{version}/best.pt"]
            # The versions are copies of the shapes model: the same regions, labels included.
            assert without_ids(run.results()[0]["result"]) == without_ids(base.results()[0]["result"])
        store.unserve(PROJECT, "label")
        assert backend.predict(task, config, project=PROJECT).model_version == base.model_version
        backend.close()


def test_cli_models_shows_each_kind_of_version_by_the_figure_it_was_promoted_on(
    make_settings, own_model_root, capsys
) -> None:
    import cli

    store = VersionStore(own_model_root)
    figures = {
        "label": {"metric": "map50_95", "new": {"map50_95": 0.61}, "serving": {"map50_95": 0.25}},
        "choice": {"metric": "top1_accuracy", "new": {"top1_accuracy": 0.875, "map50_95": None}},
        "timeline": {"kind": "timeline", "new": {"mean_f1": 0.93}, "serving": {"mean_f1": 0.5}},
    }
    for control, metrics in figures.items():
        folder = store.create_version(PROJECT, control)
        (folder / "metrics.json").write_text(json.dumps({**metrics, "decision": "promoted: better"}))
    assert cli.main(["models", "--project", PROJECT], make_settings(model_root=own_model_root)) == 0
    out = capsys.readouterr().out
    rows = [" ".join(line.split()[1:]) for line in out.splitlines() if re.match(r"[ *] v\d+-", line)]
    assert sorted(rows) == [
        "mAP50-95 0.6100 0.2500 promoted: better",
        "mean frame F1 0.9300 0.5000 promoted: better",
        "top-1 accuracy 0.8750 - promoted: better",
    ]


def test_worst_tasks_of_a_classifier_count_its_top_choice() -> None:
    from training.spec import TrainingSpec
    from training_pipeline import choice_errors

    spec = TrainingSpec("c", "Choices", "image", "classify", ("Cat", "Dog"), "m.pt")
    assert choice_errors(1, ["1"], "Dog", spec) == TaskErrors(1, 0, 0)
    assert choice_errors(2, ["1"], "Cat", spec) == TaskErrors(2, 1, 1)  # missed Dog, found a false Cat
    assert choice_errors(3, ["0"], "tabby", spec) == TaskErrors(3, 1, 0)  # a class no label stands for
    assert choice_errors(4, [], "Cat", spec) == TaskErrors(4, 0, 1)


def test_worst_tasks_of_a_pose_model_match_the_box_before_the_keypoints() -> None:
    from training.spec import TrainingSpec
    from training_pipeline import line_box

    spec = TrainingSpec("k", "KeyPointLabels", "image", "pose", ("person",), "m.pt")
    label, box = line_box("0 0.5 0.5 0.2 0.4 0.45 0.35 2 0.55 0.6 2", spec, 200, 100)
    assert label == "person" and box == pytest.approx((80.0, 30.0, 120.0, 70.0))


@pytest.mark.slow
def test_cli_train_runs_the_job_and_reports_its_outcome(
    make_settings, own_model_root, monkeypatch, capsys
) -> None:
    import cli

    config = label_config(model_train_epochs="1", model_train_imgsz="64", model_train_batch="4")
    tasks, files = shapes_tasks(6)
    with TasksLabelStudio(tasks, files, config) as stand_in:
        settings = make_settings(model_root=own_model_root)
        code = cli.main(
            ["train", "--project", PROJECT, "--ls-url", stand_in.url, "--ls-api-key", TOKEN], settings
        )
    captured = capsys.readouterr()
    assert code == 0, captured
    [version] = VersionStore(own_model_root).versions(PROJECT, "label")
    assert f"label: {version.name}: " in captured.out
    assert ("promoted" in captured.out) and version.metrics["decision"] in captured.out
    assert "1/1" in captured.err  # the tqdm bar over epochs


def test_log_tail_keeps_the_last_drawing_of_progress_bars_without_colours(tmp_path: Path) -> None:
    files = JobFiles(tmp_path)
    files.log_path("job-1").write_text("start\n\x1b[34m\x1b[1mtrain:\x1b[0m 1/4\r\x1b[K2/4\r4/4 done\nend\n")
    assert files.log_tail("job-1") == ["start", "4/4 done", "end"]


# -- every other trainable tag, through the real pipeline: dataset -> 1 epoch -> evaluate -> promote ------

KIND_MODELS = {  # project kind -> (architecture, class names of the served base model, trained task)
    "rectangle": ("yolov8n.yaml", {0: "circle", 1: "square", 2: "triangle"}, "detect"),
    "obb": ("yolov8n-obb.yaml", {0: "plane", 1: "BAR", 2: "plate"}, "obb"),
    "polygon": ("yolov8n-seg.yaml", {0: "person", 1: "Circle", 2: "square", 3: "triangle"}, "segment"),
    "brush": ("yolov8n-seg.yaml", {0: "circle", 1: "square", 2: "triangle"}, "segment"),
    "pose": ("yolov8n-pose.yaml", {0: "person"}, "pose"),
    "choices": ("yolov8n-cls.yaml", {0: "circle", 1: "dog", 2: "square", 3: "triangle"}, "classify"),
    "taxonomy": ("yolov8n-cls.yaml", {0: "circle", 1: "square", 2: "triangle"}, "classify"),
}


def build_base(architecture: str, names: dict[int, str], target: Path) -> Path:
    """A randomly initialised model whose head has one output per name (conftest's build_model keeps
    the architecture's own class count, which only fits when `names` has that many)."""
    from ultralytics import YOLO

    model = YOLO(architecture)
    model.model = type(model.model)({**model.model.yaml, "nc": len(names)}, verbose=False)
    model.model.names = names
    model.ckpt = {"train_args": {"imgsz": 224 if model.task == "classify" else 640, "task": model.task}}
    model.save(str(target))
    return target


def project_tasks(kind: str, count: int) -> tuple[list[dict], dict[str, bytes]]:
    """`count` tasks of a tests/training_projects.py project, each with one submitted annotation."""
    from tests import training_projects as projects

    tasks, files = [], {}
    for task_id, example in enumerate(projects.examples(kind, count), start=1):
        path = f"/data/upload/{PROJECT}/{task_id:08x}-{kind}.png"
        files[path] = cv2.imencode(".png", example.image)[1].tobytes()
        annotation = {"id": task_id, "result": example.regions, "was_cancelled": False, "updated_at": "2026"}
        tasks.append({"id": task_id, "data": {"image": path}, "annotations": [annotation]})
    return tasks, files


# YOLO26 (end-to-end head: one-to-many and one-to-one branches trained together) on every kind too.
KIND_ARCHITECTURES = [(kind, "yolov8n") for kind in KIND_MODELS] + [(kind, "yolo26n") for kind in KIND_MODELS]


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "family"), KIND_ARCHITECTURES)
def test_each_kind_trains_evaluates_promotes_and_is_served(
    make_settings, own_model_root, kind, family
) -> None:
    from ultralytics import YOLO

    from model import YOLOBackend
    from tests import training_projects as projects
    from training_pipeline import TrainingRun

    architecture, names, task = KIND_MODELS[kind]
    build_base(architecture.replace("yolov8n", family), names, own_model_root / "base.pt")
    config = projects.config(
        kind,
        model_path="base.pt",
        model_train_epochs="1",
        model_train_imgsz="64",
        model_train_batch="4",
        model_train_promote="always",
    )
    tasks, files = project_tasks(kind, 9)
    with TasksLabelStudio(tasks, files) as stand_in:
        settings = make_settings(
            model_root=own_model_root, label_studio_url=stand_in.url, label_studio_api_key=TOKEN
        )
        outcome = TrainingRun(settings, RecordingReporter(PROJECT, "label")).run(PROJECT, "label", config)
        store = VersionStore(own_model_root)
        assert outcome.promoted and store.served(PROJECT, "label") == outcome.version
        folder = store.control_dir(PROJECT, "label") / outcome.version
        metrics = json.loads((folder / "metrics.json").read_text())
        main = "top1_accuracy" if task == "classify" else "map50_95"
        assert metrics["task"] == task and metrics["metric"] == main
        for side in ("serving", "new"):
            assert isinstance(metrics[side][main], float)
            assert sum(row["support"] for row in metrics[side]["per_class"].values()) > 0
        dataset = json.loads((folder / "dataset.json").read_text())
        assert sorted(dataset["train_task_ids"] + dataset["val_task_ids"]) == list(range(1, 10))
        trained = YOLO(str(folder / "best.pt"))
        spec = TrainingRun(settings, RecordingReporter(PROJECT, "label")).spec_for(config, "label")
        assert trained.task == task and sorted(trained.names.values()) == sorted(spec.labels)
        if task == "pose":
            assert list(trained.model.kpt_shape) == [4, 3]  # keypoint i is the label with model_index i

        backend = YOLOBackend(settings)
        run = backend.predict([{"id": 1, "data": tasks[0]["data"]}], config, project=PROJECT)
        assert "label" not in run.control_errors, (
            run.control_errors
        )  # (pose: the box control has no model here)
        assert outcome.version.split("-")[0] in run.model_version
        backend.close()


@pytest.mark.parametrize(("serving", "new", "promoted"), [(0.6, 0.5, False), (0.5, 0.75, True)])
def test_a_classifier_is_promoted_on_top1_accuracy(
    make_settings, own_model_root, monkeypatch, serving, new, promoted
) -> None:
    import training_pipeline
    from tests import training_projects as projects
    from training.evaluation import Evaluation
    from training_pipeline import TrainingRun

    def evaluate(model_path, dataset, spec, imgsz, class_names_to_labels=None, device=""):
        top1 = new if "trained" in Path(model_path).parts else serving
        return Evaluation(None, None, 0.5, 0.5, {}, metric="top1_accuracy", top1_accuracy=top1)

    monkeypatch.setattr(sys.modules["training.evaluation"], "evaluate", evaluate)
    monkeypatch.setattr(
        training_pipeline, "fine_tune", lambda base, data, run_dir, params, on_epoch: Path(base)
    )
    build_base("yolov8n-cls.yaml", {0: "circle", 1: "square", 2: "triangle"}, own_model_root / "base.pt")
    tasks, files = project_tasks("choices", 6)
    with TasksLabelStudio(tasks, files) as stand_in:
        settings = make_settings(
            model_root=own_model_root, label_studio_url=stand_in.url, label_studio_api_key=TOKEN
        )
        outcome = TrainingRun(settings, RecordingReporter(PROJECT, "label")).run(
            PROJECT, "label", projects.config("choices", model_path="base.pt")
        )
    assert outcome.promoted is promoted and "top-1 accuracy" in outcome.message
    metrics = json.loads(
        (
            VersionStore(own_model_root).control_dir(PROJECT, "label") / outcome.version / "metrics.json"
        ).read_text()
    )
    assert metrics["metric"] == "top1_accuracy" and metrics["new"]["top1_accuracy"] == new


def test_a_base_model_of_the_wrong_kind_fails_before_training(make_settings, own_model_root) -> None:
    from core.errors import LabelingConfigError
    from tests import training_projects as projects
    from training_pipeline import TrainingRun

    tasks, files = project_tasks("polygon", 6)
    with TasksLabelStudio(tasks, files) as stand_in:
        settings = make_settings(
            model_root=own_model_root, label_studio_url=stand_in.url, label_studio_api_key=TOKEN
        )
        config = projects.config(
            "polygon", model_path="shapes-yolov8n.pt", model_train_epochs="1", model_train_imgsz="64"
        )
        with pytest.raises(
            LabelingConfigError, match=r"is a detect model; <PolygonLabels .*trains a segment"
        ):
            TrainingRun(settings, RecordingReporter(PROJECT, "label")).run(PROJECT, "label", config)
    assert VersionStore(own_model_root).versions(PROJECT, "label") == []
