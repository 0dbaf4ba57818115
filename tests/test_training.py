"""The learning loop: versions and their atomic pointer, jobs across processes, the pipeline from
Label Studio annotations (a stand-in Label Studio serving generated shapes images) to a promoted model."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlparse

import cv2
import numpy as np
import pytest

from tests.conftest import PROJECT_ROOT, SHAPES_MODEL, RecordingReporter, rectangle_annotation
from tests.label_studio_stand_in import LEGACY_KEY, StandInLabelStudio
from tests.local_http import LocalHTTPServer
from tools.shapes import draw_shapes_image
from training.jobs import JobFiles, LocalProcessRunner, count_event, try_lock
from training.versions import ServedVersions, VersionStore
from training_pipeline import TaskErrors

TOKEN = LEGACY_KEY
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


def label_studio(tasks: list[dict], files: dict[str, bytes], config: str = "") -> StandInLabelStudio:
    """The shared stand-in Label Studio with this project's tasks and uploaded images."""
    return StandInLabelStudio(tasks=tasks, media=files, project=PROJECT, label_config=config)


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


# The pointer switch in a process of its own, killed (SIGKILL) while it writes the new pointer: json.dump
# is the step that writes it, so a kill there comes after any truncation and before any rename.
KILLED_WHILE_PROMOTING = """
import json, os, signal, sys
sys.path.insert(0, os.environ["PROJECT_ROOT"])
from training.versions import VersionStore
json.dump = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
VersionStore(sys.argv[1]).promote(sys.argv[2], "label", sys.argv[3])
"""


def test_a_kill_while_writing_the_pointer_keeps_the_served_version(own_model_root) -> None:
    store = VersionStore(own_model_root)
    old, new = complete_version(store), complete_version(store)
    store.promote(PROJECT, "label", old)
    readers = ServedVersions(VersionStore(own_model_root))
    assert readers.served(PROJECT, "label") == old

    command = [sys.executable, "-c", KILLED_WHILE_PROMOTING, str(own_model_root), PROJECT, new]
    killed = subprocess.run(command, env={**os.environ, "PROJECT_ROOT": str(PROJECT_ROOT)}, timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert store.served(PROJECT, "label") == old and readers.served(PROJECT, "label") == old
    # What the kill left (a temporary file) neither shows as a version nor stops the next switch.
    assert [v.name for v in store.versions(PROJECT, "label")] == [old, new]
    store.promote(PROJECT, "label", new)
    assert readers.served(PROJECT, "label") == new


# -- jobs -----------------------------------------------------------------------------------------------


def sleeper_runner(jobs_dir: Path, **limits) -> LocalProcessRunner:
    return LocalProcessRunner(jobs_dir, [sys.executable, "-c", "import time; time.sleep(60)"], **limits)


# A job that says it runs (as training_pipeline.py does when it starts fetching), then trains for a minute.
RUNNING_JOB = (
    f"import sys, time; sys.path.insert(0, {str(PROJECT_ROOT)!r}); from training.jobs import JobReporter; "
    "JobReporter(sys.argv[1]).phase('training'); time.sleep(60)"
)


def running_runner(jobs_dir: Path, **limits) -> LocalProcessRunner:
    return LocalProcessRunner(jobs_dir, [sys.executable, "-c", RUNNING_JOB], **limits)


def wait_until(condition, timeout: float = 20.0, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not reached in {timeout} s")


def kill_jobs(runner: LocalProcessRunner) -> None:
    for job in runner.files.all():
        if job.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(job.pid, signal.SIGKILL)


# A job process that reports `training` (the runner then shows it `running`), tells the test so over a
# socket, and holds its lock until the test closes that socket, or it is killed. No sleeping anywhere.
HELD_JOB = """
import os, socket, sys
sys.path.insert(0, os.environ["PROJECT_ROOT"])
from training.jobs import JobReporter
reporter = JobReporter(sys.argv[1])
reporter.phase("training")
line = socket.create_connection(("127.0.0.1", int(os.environ["HELD_JOB_PORT"])))
line.sendall(reporter.job.id.encode() + b"\\n")
line.recv(1)  # b"" once the test closes its end (or ends): the job then ends too
"""


def wait_for_exit(pid: int, timeout: float = 10.0) -> None:
    """Return when process `pid` has ended (a pidfd becomes readable), at most `timeout` s."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # already ended and reaped
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
        assert ready, f"process {pid} still runs after {timeout} s"
    finally:
        os.close(pidfd)


class HeldJobs:
    """Runners whose jobs are `HELD_JOB` processes; `close()` lets every job go and kills any left."""

    def __init__(self, jobs_dir: Path):
        self.jobs_dir = jobs_dir
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(60)  # only a guard: accept() returns as soon as a job dials in
        self.lines: dict[str, socket.socket] = {}
        self.runners: list[LocalProcessRunner] = []

    def runner(self, jobs_dir: Path | None = None) -> LocalProcessRunner:
        env = {"HELD_JOB_PORT": str(self.listener.getsockname()[1]), "PROJECT_ROOT": str(PROJECT_ROOT)}
        command = [sys.executable, "-c", HELD_JOB]
        self.runners.append(LocalProcessRunner(jobs_dir or self.jobs_dir, command, env=env))
        return self.runners[-1]

    def running(self, runner: LocalProcessRunner, job_id: str):
        """The job, as `runner` reports it, once its process has said it trains."""
        while job_id not in self.lines:
            try:
                line, _ = self.listener.accept()
            except TimeoutError:
                raise AssertionError(f"job {job_id} never started: {runner.get(job_id).log_tail}") from None
            self.lines[line.makefile().readline().strip()] = line
        return runner.get(job_id)

    def close(self) -> None:
        for line in self.lines.values():
            line.close()
        self.listener.close()
        pids = {job.pid for runner in self.runners for job in runner.list() if job.pid}
        for pid in pids:  # a job that never dialled in (the test failed first) ends here
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in pids:
            wait_for_exit(pid)


@pytest.fixture
def held_jobs(tmp_path: Path):
    jobs = HeldJobs(tmp_path / "jobs")
    yield jobs
    jobs.close()


def test_two_triggers_at_once_run_one_job_and_a_killed_job_is_reported(held_jobs: HeldJobs) -> None:
    runners = [sleeper_runner(held_jobs.jobs_dir), sleeper_runner(held_jobs.jobs_dir)]  # two workers
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
    try:
        # The second trigger folds into the job that has not started fetching yet.
        assert sorted(a.status for a in answers) == ["already_queued", "started"]
        assert answers[0].job.id == answers[1].job.id
        job = runners[1].get(answers[0].job.id)
        assert job.state == "queued" and job.pid
        lock = JobFiles(held_jobs.jobs_dir).lock_path(PROJECT, "label")
        wait_until(lambda: try_lock(lock) is None, what="the job holds its control's lock")
        other = runners[0].submit(PROJECT, "other", "START_TRAINING", {})  # per control; waits for the slot
        assert other.status == "queued"

        os.kill(job.pid, signal.SIGKILL)
        failed = wait_until(lambda: (j := runners[1].get(job.id)).state == "failed" and j, what="failed")
        assert "killed" in failed.error
        # The freed slot goes to the waiting job of the other control, with no request needed.
        wait_until(lambda: try_lock(JobFiles(held_jobs.jobs_dir).lock_path(PROJECT, "other")) is None)
        assert runners[0].submit(PROJECT, "label", "START_TRAINING", {}).status == "queued"
    finally:
        kill_jobs(runners[0])


def test_a_trigger_while_the_controls_job_runs_is_queued_once_and_runs_next(tmp_path: Path) -> None:
    """Issue 18: a press while the job runs (or its process is still exiting) is never refused; it queues
    one follow-up, later presses fold into it, and it starts by itself when the running job ends."""
    runner = running_runner(tmp_path / "jobs")
    try:
        first = runner.submit(PROJECT, "label", "START_TRAINING", {}).job
        wait_until(lambda: runner.get(first.id).state == "running", what="the first job runs")
        follow_up = runner.submit(PROJECT, "label", "START_TRAINING", {})
        assert follow_up.status == "queued" and follow_up.job.id != first.id
        for _ in range(3):
            again = runner.submit(PROJECT, "label", "ANNOTATION_CREATED", {})
            assert (again.status, again.job.id) == ("already_queued", follow_up.job.id)
        time.sleep(1)
        assert JobFiles(tmp_path / "jobs").load(follow_up.job.id).state == "queued"  # the control's lock
        os.kill(runner.get(first.id).pid, signal.SIGKILL)
        # Read from the state file alone: the queued job starts without any call into the runner.
        files = JobFiles(tmp_path / "jobs")
        wait_until(lambda: files.load(follow_up.job.id).state == "running", what="the follow-up runs")
        assert runner.get(first.id).state == "failed"
    finally:
        kill_jobs(runner)


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


def test_unknown_or_hostile_job_ids_are_404(held_jobs: HeldJobs) -> None:
    from training.jobs import JobNotFoundError

    runner = held_jobs.runner()
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


@pytest.fixture(scope="module")
def untrained_shapes_model(tmp_path_factory) -> Path:
    """A detector with the shapes model's classes and random weights: it finds none of the shapes."""
    folder = tmp_path_factory.mktemp("untrained")
    return build_base("yolov8n.yaml", {0: "circle", 1: "square", 2: "triangle"}, folder / "untrained.pt")


def fine_tuning_gives(monkeypatch, weights: Path) -> None:
    """Fine-tuning (the one slow step) stands in: it yields `weights`. The evaluations of the served
    and the new model on the held-out images, and the decision on their figures, are the real ones."""
    from training import image_job

    def fine_tune(base, data, run_dir: Path, params, on_epoch) -> Path:
        (run_dir / "weights").mkdir(parents=True)
        return Path(shutil.copyfile(weights, run_dir / "weights" / "best.pt"))

    monkeypatch.setattr(image_job, "fine_tune", fine_tune)


def serve_version(root: Path, weights: Path) -> str:
    """A complete version holding `weights`, served."""
    store = VersionStore(root)
    folder = store.create_version(PROJECT, "label")
    shutil.copyfile(weights, folder / "best.pt")
    (folder / "metrics.json").write_text("{}")
    store.promote(PROJECT, "label", folder.name)
    return folder.name


def train_on_shapes(make_settings, root: Path, config: str):
    from training_pipeline import TrainingRun

    tasks, files = shapes_tasks(6)
    with label_studio(tasks, files) as stand_in:
        settings = make_settings(model_root=root, label_studio_url=stand_in.url, label_studio_api_key=TOKEN)
        return TrainingRun(settings, RecordingReporter(PROJECT, "label")).run(PROJECT, "label", config)


@pytest.mark.parametrize(
    ("served", "new", "promoted"),
    [("shapes", "untrained", False), ("shapes", "shapes", False), ("untrained", "shapes", True)],
)
def test_a_version_is_promoted_only_when_it_is_better(
    make_settings, own_model_root, monkeypatch, untrained_shapes_model, served, new, promoted
) -> None:
    """The shapes detector against a random-weights one with the same classes, each as the served
    model (configured, or a trained version) and as the new one: real evaluations decide."""
    weights = {"shapes": SHAPES_MODEL, "untrained": untrained_shapes_model}
    serving_name = (
        "shapes-yolov8n.pt" if served == "shapes" else serve_version(own_model_root, weights[served])
    )
    fine_tuning_gives(monkeypatch, weights[new])
    outcome = train_on_shapes(make_settings, own_model_root, label_config(model_train_imgsz="160"))

    store = VersionStore(own_model_root)
    metrics = json.loads((store.control_dir(PROJECT, "label") / outcome.version / "metrics.json").read_text())
    figures = {side: metrics[side]["map50_95"] for side in ("serving", "new")}
    if served == new:  # the same weights on the same images: the same figure, which is not better
        assert figures["new"] == figures["serving"] > 0.3, figures
    else:  # the shapes detector finds the shapes; the untrained one finds none
        shapes, untrained = ("serving", "new") if served == "shapes" else ("new", "serving")
        assert figures[shapes] > 0.3 and figures[untrained] < 0.05, figures
    compared = f"mAP50-95 {figures['new']:.4f} (new) vs {figures['serving']:.4f} ({serving_name})"
    decision = "promoted: better" if promoted else "kept, not promoted: not better than the served model"
    # The decision exactly; what follows it ("; no held-out example of ...") is the split's note.
    assert (outcome.promoted, outcome.message.split("; ")[0], metrics["promoted"]) == (
        promoted,
        f"{decision}, {compared}",
        promoted,
    )
    before = None if served == "shapes" else serving_name  # the configured model, or the served version
    assert store.served(PROJECT, "label") == (outcome.version if promoted else before)


def test_promote_always_takes_a_worse_model(
    make_settings, own_model_root, monkeypatch, untrained_shapes_model
) -> None:
    fine_tuning_gives(monkeypatch, untrained_shapes_model)
    config = label_config(model_train_imgsz="160", model_train_promote="always")
    outcome = train_on_shapes(make_settings, own_model_root, config)
    metrics = VersionStore(own_model_root).versions(PROJECT, "label")[0].metrics
    assert metrics["new"]["map50_95"] < metrics["serving"]["map50_95"]
    assert outcome.promoted and outcome.message.startswith('promoted (model_train_promote="always"): ')
    assert VersionStore(own_model_root).served(PROJECT, "label") == outcome.version


def test_too_little_data_fails_and_changes_nothing(make_settings, own_model_root) -> None:
    from training.spec import TrainingSpec  # noqa: F401  (the contract's module, real or stand-in)
    from training_pipeline import TrainingRun

    store = VersionStore(own_model_root)
    old = complete_version(store)
    store.promote(PROJECT, "label", old)
    tasks, files = shapes_tasks(2)
    with label_studio(tasks, files) as stand_in:
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
    with label_studio(tasks, files, config) as stand_in:
        backend = backend_for(make_settings, own_model_root, stand_in.url)
        before = backend.setup(config, project=f"{PROJECT}.1700000000")
        answer = backend.fit("START_TRAINING", project_body(config))
        assert answer["jobs"][0]["submission"] == "started"
        again = backend.fit("START_TRAINING", project_body(config))
        assert again["jobs"][0]["submission"] in ("already_queued", "queued")  # folded, or one follow-up
        job = wait_for(backend, answer["jobs"][0]["id"], lambda j: j.state in ("succeeded", "failed"))
        assert job.state == "succeeded", (job.error, job.log_tail)
        assert job.promoted and job.epoch == job.epochs == 1
        assert stand_in.task_queries()[0]["project"] == PROJECT

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


@contextlib.contextmanager
def killed_training_job(make_settings, root: Path, until):
    """A training job (promote="always") on a control that serves `old`, its process SIGKILLed once
    `until(job)` holds: yields (backend, its tasks, config, old, model version before, the failed job)."""
    config = label_config(
        model_train_epochs="200", model_train_imgsz="64", model_train_batch="4", model_train_promote="always"
    )
    tasks, files = shapes_tasks(8)
    store = VersionStore(root)
    old = complete_version(store)
    store.promote(PROJECT, "label", old)
    with label_studio(tasks, files, config) as stand_in:
        backend = backend_for(make_settings, root, stand_in.url)
        before = backend.setup(config, project=PROJECT)
        job_id = backend.fit("START_TRAINING", project_body(config))["jobs"][0]["id"]
        job = wait_for(backend, job_id, lambda j: until(j) or (j.state != "running" and j.state != "queued"))
        try:
            assert job.state == "running", (job.error, job.log_tail)
        finally:
            os.kill(job.pid, signal.SIGKILL)
            wait_for_exit(job.pid)
        killed = backend.jobs.get(job_id)
        assert killed.state == "failed" and "killed" in killed.error
        try:
            yield backend, tasks, config, old, before, killed
        finally:
            backend.close()


@pytest.mark.slow
def test_a_job_killed_mid_training_changes_nothing(make_settings, own_model_root) -> None:
    with killed_training_job(make_settings, own_model_root, lambda j: j.epoch >= 1) as killed:
        backend, tasks, config, old, before, job = killed
        assert job.phase == "training" and job.version
        assert VersionStore(own_model_root).served(PROJECT, "label") == old
        assert backend.setup(config, project=PROJECT) == before
        run = backend.predict([{"id": 1, "data": tasks[0]["data"]}], config, project=PROJECT)
        assert run.model_version == before
        again = backend.jobs.submit(PROJECT, "label", "cli", {})  # the kill freed the control's lock
        os.kill(again.job.pid, signal.SIGKILL)
        wait_for_exit(again.job.pid)
        assert again.status == "started"


@pytest.mark.slow
def test_a_job_killed_mid_training_leaves_no_image_copies_nor_a_partial_version(
    make_settings, own_model_root
) -> None:
    with killed_training_job(make_settings, own_model_root, lambda j: j.phase == "training") as killed:
        old = killed[3]
        store = VersionStore(own_model_root)
        # A SIGKILLed job cleans nothing itself: the next job or the server's start sweeps what it left.
        from model import YOLOBackend

        YOLOBackend(killed[0].settings).close()
        leftovers = sorted(
            str(path.relative_to(own_model_root))
            for path in store.control_dir(PROJECT, "label").rglob("*")
            if path.suffix in (".jpg", ".png") or path.parent == store.control_dir(PROJECT, "label")
        )
        expected = [f"trained/{PROJECT}/label/{name}" for name in (old, "served.json", "served.lock")]
        assert leftovers == sorted(expected)
        assert [v.name for v in store.versions(PROJECT, "label")] == [old]


def test_jobs_routes_are_protected_and_answer(make_client, own_model_root, held_jobs: HeldJobs) -> None:
    import base64

    client = make_client(model_root=own_model_root, basic_auth_user="u", basic_auth_pass="p")
    assert client.get("/jobs").status_code == 401
    headers = {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}
    runner = held_jobs.runner(own_model_root / "jobs")
    job = held_jobs.running(
        runner, runner.submit(PROJECT, "label", "cli", {"label_config": "<View/>"}).job.id
    )
    listed = client.get("/jobs", headers=headers).json()["jobs"]
    assert [j["id"] for j in listed] == [job.id] and "params" not in listed[0]
    shown = client.get(f"/jobs/{job.id}", headers=headers).json()
    assert (shown["state"], shown["phase"], shown["pid"]) == ("running", "training", job.pid)
    assert client.get("/jobs/nope", headers=headers).status_code == 404
    assert client.get("/jobs", params={"project": "99"}, headers=headers).json()["jobs"] == []


def test_start_training_without_label_studio_access_is_a_clear_error(make_settings, own_model_root) -> None:
    from core.errors import ServerConfigurationError
    from model import YOLOBackend

    backend = YOLOBackend(make_settings(model_root=own_model_root))
    with pytest.raises(ServerConfigurationError, match="LABEL_STUDIO_URL"):
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
    with label_studio(tasks, files, config) as stand_in:
        settings = make_settings(model_root=own_model_root)
        code = cli.main(
            ["evaluate", "--project", PROJECT, "--ls-url", stand_in.url, "--ls-api-key", TOKEN], settings
        )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "label: shapes-yolov8n.pt" in out and "mAP50-95" in out
    assert "most missed regions" in out and "most false regions" in out


def test_every_nth_annotation_starts_a_job_when_model_train_every_is_set(
    make_settings, own_model_root, held_jobs: HeldJobs
) -> None:
    from model import YOLOBackend

    every_two = label_config(model_train_every="2")
    with label_studio([], {}, label_config()) as stand_in:
        settings = make_settings(
            model_root=own_model_root, label_studio_url=stand_in.url, label_studio_api_key=TOKEN
        )
        backend = YOLOBackend(settings, jobs=sleeper_runner(own_model_root / "jobs"))
        event = {"project": {"id": int(PROJECT), "label_config": label_config()}}
        answers = [backend.fit("ANNOTATION_CREATED", event)["jobs"] for _ in range(3)]
        assert answers == [[], [], []]  # off by default
        # The body's config alone does not start a job: Label Studio's copy does not ask for it.
        body_only = {"project": {"id": int(PROJECT), "label_config": every_two}}
        assert [backend.fit("ANNOTATION_CREATED", body_only)["jobs"] for _ in range(4)] == [[]] * 4
        stand_in.label_config = every_two
        answers = [
            backend.fit(action, body_only)["jobs"] for action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
        ]
        assert answers[0] == [] and answers[1][0]["submission"] == "started"
        assert answers[1][0]["trigger"] == "ANNOTATION_UPDATED"
        kill_jobs(backend.jobs)
        backend.close()


# -- issue 24: the webhook cannot choose how a project trains, nor how many jobs run ---------------------


def trusting_backend(make_settings, root: Path, url: str, runner: LocalProcessRunner):
    from model import YOLOBackend

    settings = make_settings(model_root=root, label_studio_url=url, label_studio_api_key=TOKEN)
    return YOLOBackend(settings, jobs=runner)


def test_a_job_trains_on_the_projects_own_config_not_the_webhooks(make_settings, own_model_root) -> None:
    """Item 1: a START_TRAINING body carrying promote="always" and one epoch trains as the project says."""
    own = label_config(model_train_epochs="20", model_train_promote="better")
    poisoned = label_config(model_train_epochs="1", model_train_promote="always")
    runner = sleeper_runner(own_model_root / "jobs")
    with label_studio([], {}, own) as stand_in:
        backend = trusting_backend(make_settings, own_model_root, stand_in.url, runner)
        try:
            answer = backend.fit("START_TRAINING", project_body(poisoned))
            [started] = answer["jobs"]
            assert runner.files.load(started["id"]).params["label_config"] == own
            [spec] = backend.training.specs(runner.files.load(started["id"]).params["label_config"])
            assert (spec.epochs, spec.promote) == (20, "better")
            # A body naming a control the project does not have trains nothing of it either.
            other = poisoned.replace('name="label"', 'name="evil"')
            answer = backend.fit("START_TRAINING", project_body(other))
            assert [job["control"] for job in answer["jobs"]] == ["label"]
        finally:
            kill_jobs(runner)
            backend.close()


def test_project_ids_are_one_integer_for_locks_paths_and_jobs(make_settings, own_model_root) -> None:
    """Item 2: 3, "03", "003", "3.1700000000" are one project: one job, one lock; "x3" is a 400."""
    from core.errors import BadRequestError

    runner = sleeper_runner(own_model_root / "jobs")
    with label_studio([], {}, label_config()) as stand_in:
        backend = trusting_backend(make_settings, own_model_root, stand_in.url, runner)
        try:
            ids = set()
            for spelling in (3, "03", "003", "3.1700000000", " 3"):
                body = {
                    "action": "START_TRAINING",
                    "project": {"id": spelling, "label_config": label_config()},
                }
                [job] = backend.fit("START_TRAINING", body)["jobs"]
                assert job["project"] == PROJECT
                ids.add(job["id"])
            assert len(ids) == 1
            assert sorted(p.name for p in (own_model_root / "jobs" / "locks").glob("*.lock")) == [
                f"{PROJECT}__label.lock"
            ]
            for bad in ("x3", "-3", "0", "../3", True):
                body = {"action": "START_TRAINING", "project": {"id": bad, "label_config": label_config()}}
                with pytest.raises(BadRequestError, match="project id"):
                    backend.fit("START_TRAINING", body)
        finally:
            kill_jobs(runner)
            backend.close()


class AnyProjectLabelStudio(LocalHTTPServer):
    """Answers every project's config (the same one), as a Label Studio with many projects would."""

    def __init__(self, config: str):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                match = re.fullmatch(r"/api/projects/(\d+)/", urlparse(self.path).path)
                ok = match and self.headers.get("Authorization") == f"Token {TOKEN}"
                body = json.dumps({"id": int(match[1]), "label_config": config}).encode() if ok else b"{}"
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._listen(Handler)


def test_thirty_webhook_posts_run_at_most_max_jobs_and_queue_or_refuse_the_rest(
    make_settings, own_model_root
) -> None:
    """Item 2, through HTTP with real job processes: 30 START_TRAINING posts for 30 projects run
    TRAINING_MAX_JOBS (2) at once, TRAINING_MAX_QUEUED (5) wait, the rest get 429; as jobs end, the
    waiting ones start by themselves, never more than 2 at once."""
    from fastapi.testclient import TestClient

    from server.app import create_app

    runner = running_runner(own_model_root / "jobs", max_running=2, max_queued=5)
    with AnyProjectLabelStudio(label_config()) as stand_in:
        backend = trusting_backend(make_settings, own_model_root, stand_in.url, runner)
        try:
            with TestClient(create_app(backend.settings, backend)) as client:
                statuses = []
                for project in range(1, 31):
                    body = {"action": "START_TRAINING", "project": {"id": project, "label_config": "<View/>"}}
                    statuses.append(client.post("/webhook", json=body).status_code)
                    if project == 2:  # both slots taken before the rest arrive
                        wait_until(lambda: sum(j.state == "running" for j in runner.list()) == 2)
                refused = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 99}})
            assert statuses == [200] * 7 + [429] * 23
            assert "TRAINING_MAX_QUEUED" in refused.json()["error"]
            jobs = runner.list()
            assert len(jobs) == 7
            assert sorted(j.state for j in jobs) == ["queued"] * 5 + ["running"] * 2
            files = JobFiles(own_model_root / "jobs")  # state files only: no call into the runner
            for expected in (2, 2, 1):  # end the running ones: the waiting ones take the slots by themselves
                for job in runner.list():
                    if job.state == "running":
                        os.kill(job.pid, signal.SIGKILL)
                time.sleep(0.5)
                wait_until(lambda n=expected: sum(j.state == "running" for j in files.all()) >= n, timeout=30)
                time.sleep(0.5)
                assert sum(j.state == "running" for j in runner.list()) == expected  # never more than 2
            assert sum(j.state == "failed" for j in runner.list()) == 6
        finally:
            kill_jobs(runner)
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
    with label_studio(tasks, files) as stand_in:
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


@pytest.mark.slow
def test_cli_train_runs_the_job_and_reports_its_outcome(
    make_settings, own_model_root, monkeypatch, capsys
) -> None:
    import cli

    config = label_config(
        model_train_epochs="1", model_train_imgsz="64", model_train_batch="4", model_train_promote="always"
    )
    tasks, files = shapes_tasks(6)
    with label_studio(tasks, files, config) as stand_in:
        settings = make_settings(model_root=own_model_root)
        code = cli.main(
            ["train", "--project", PROJECT, "--ls-url", stand_in.url, "--ls-api-key", TOKEN], settings
        )
    captured = capsys.readouterr()
    assert code == 0, captured
    store = VersionStore(own_model_root)
    [version] = store.versions(PROJECT, "label")
    assert version.served and store.served(PROJECT, "label") == version.name
    figures = f"mAP50-95 {version.metrics['new']['map50_95']:.4f} (new) vs "
    decision = f'promoted (model_train_promote="always"): {figures}'
    assert version.metrics["decision"].startswith(decision), version.metrics["decision"]
    assert f"label: {version.name}: {version.metrics['decision']}\n" in captured.out  # the whole line
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
    with label_studio(tasks, files) as stand_in:
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
    from tests import training_projects as projects
    from training.evaluation import Evaluation
    from training_pipeline import TrainingRun

    def evaluate(model_path, dataset, spec, imgsz, class_names_to_labels=None, device=""):
        top1 = new if "trained" in Path(model_path).parts else serving
        return Evaluation(None, None, 0.5, 0.5, {}, metric="top1_accuracy", top1_accuracy=top1)

    monkeypatch.setattr(sys.modules["training.image_job"], "evaluate", evaluate)
    monkeypatch.setattr(
        sys.modules["training.image_job"],
        "fine_tune",
        lambda base, data, run_dir, params, on_epoch: Path(base),
    )
    build_base("yolov8n-cls.yaml", {0: "circle", 1: "square", 2: "triangle"}, own_model_root / "base.pt")
    tasks, files = project_tasks("choices", 6)
    with label_studio(tasks, files) as stand_in:
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
    with label_studio(tasks, files) as stand_in:
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
