"""The job engine without Label Studio: the RQ runner on a real redis-server, the local runner's waiting
and cancel, the /predict time budget, and POST /jobs' answers to bad bodies.

Label Studio's side (workers predicting and storing, cancel through another web process, a SIGKILLed
worker, TASKS_CREATED) is in tests/e2e/test_prediction_jobs_e2e.py.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from model import PredictionRun, TaskOutcome
from server.jobs import FIRST_CHUNK_TASKS, BudgetedPredict
from training.jobs import Job, JobFiles, JobReporter
from training.rq_runner import QUEUE_NAME, RQRunner


def test_without_a_worker_a_job_stays_queued_and_another_runner_sees_and_cancels_it(redis_url: str) -> None:
    from rq import Worker

    web_a, web_b = RQRunner(redis_url), RQRunner(redis_url)
    submission = web_a.submit("7", "", "api", {"task_ids": [1, 2]}, env={"SECRET": "x"}, kind="predict")
    assert submission.status == "started" and submission.job.state == "queued"
    time.sleep(0.5)
    seen = web_b.get(submission.job.id)
    assert (seen.state, seen.kind, seen.project) == ("queued", "predict", "7")
    assert [job.id for job in web_b.list("7", "predict")] == [submission.job.id]
    assert web_b.list("7", "train") == [] and web_b.list("8") == []
    assert b"SECRET" not in b"".join(web_a.redis.dump(key) or b"" for key in web_a.redis.keys("*"))

    assert web_b.cancel(submission.job.id).state == "cancelled"
    # A worker that comes now finds nothing to run: the cancelled job never starts.
    assert Worker([QUEUE_NAME], connection=web_a.redis).work(burst=True) is False
    after = web_a.get(submission.job.id)
    assert after.state == "cancelled" and after.started_at is None
    assert web_a.get(submission.job.id).public()["progress"] == {
        "done": 0,
        "total": 0,
        "failed": 0,
        "skipped": 0,
    }


def test_one_training_job_per_control_across_web_processes(redis_url: str) -> None:
    web_a, web_b = RQRunner(redis_url), RQRunner(redis_url)
    first = web_a.submit("7", "label", "START_TRAINING", {"label_config": "<View/>"})
    second = web_b.submit("7", "label", "ANNOTATION_CREATED", {"label_config": "<View/>"})
    assert first.status == "started" and second.status == "already_running"
    assert second.job.id == first.job.id
    other_control = web_b.submit("7", "box", "START_TRAINING", {})
    assert other_control.status == "started" and other_control.job.id != first.job.id

    assert web_b.cancel(first.job.id).state == "cancelled"
    again = web_a.submit("7", "label", "START_TRAINING", {})
    assert again.status == "started" and again.job.id != first.job.id
    jobs = web_b.list("7", "train")
    assert {job.id: job.state for job in jobs} == {
        again.job.id: "queued",
        other_control.job.id: "queued",
        first.job.id: "cancelled",
    }


def test_a_worker_runs_both_kinds_and_a_failed_job_says_why_and_frees_its_lock(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """worker.run_job in a real RQ work horse; without Label Studio both kinds fail, saying so."""
    from rq import Worker

    for name in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    web = RQRunner(redis_url)
    predict = web.submit("7", "", "api", {"label_config": "<View/>"}, kind="predict").job
    train = web.submit("7", "label", "START_TRAINING", {"label_config": "<View/>"}).job
    assert Worker([QUEUE_NAME], connection=web.redis).work(burst=True) is True
    predicted, trained = web.get(predict.id), web.get(train.id)
    assert predicted.state == "failed" and "LABEL_STUDIO_API_KEY" in predicted.error, predicted
    assert trained.state == "failed" and "labeling config" in trained.error, trained
    again = web.submit("7", "label", "START_TRAINING", {"label_config": "<View/>"})
    assert again.status == "started"  # the failed job's lock went with it


def test_a_worker_imports_what_jobs_run_before_it_forks_their_work_horses() -> None:
    """worker.preload in a fresh interpreter: torch, Ultralytics and the backend are imported (each horse
    starts with them), and neither CUDA nor torch's OpenMP threads were started (a fork cannot inherit
    them)."""
    import subprocess
    import sys

    probe = (
        "import sys, worker; worker.preload(); import torch; "
        "print(sorted(m for m in ('torch', 'torchvision', 'ultralytics', 'model', 'training_pipeline') "
        "if m in sys.modules), "
        "torch.cuda.is_initialized(), __import__('os').environ['PYTORCH_NVML_BASED_CUDA_CHECK'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTORCH_NVML_BASED_CUDA_CHECK"}
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == (
        "['model', 'torch', 'torchvision', 'training_pipeline', 'ultralytics'] False 1"
    )


@pytest.mark.parametrize("kind", ["predict", "train"])
def test_a_local_job_process_runs_below_the_web_servers_priority_with_its_own_torch_threads(
    kind: str, make_settings, tmp_path: Path
) -> None:
    """JOB_NICE and JOB_TORCH_THREADS reach the job's real process (it then fails: no Label Studio)."""
    import os

    from training.runners import job_runner
    from training.trigger import settings_environment

    settings = make_settings(model_root=tmp_path, job_nice=3, job_torch_threads=1)
    env = {**settings_environment(settings), "LABEL_STUDIO_URL": "", "LABEL_STUDIO_API_KEY": ""}
    runner = job_runner(settings)
    control = "label" if kind == "train" else ""
    job = runner.submit("7", control, "api", {"label_config": "<View/>"}, kind=kind, env=env).job
    deadline = time.monotonic() + 120
    while (job := runner.get(job.id)).state in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    assert job.state == "failed", job
    expected_nice = max(os.nice(0), 3)  # JOB_NICE is the job's niceness (at least the parent's)
    assert any(f"job process: nice {expected_nice}, 1 torch thread(s)" in line for line in job.log_tail), job


def _reporter(jobs_dir: Path, job_id: str) -> JobReporter:
    files = JobFiles(jobs_dir)
    files.save(Job(id=job_id, project="7", control="", kind="predict"))
    return JobReporter(files.state_path(job_id))


def test_local_prediction_jobs_of_a_project_wait_for_each_other_and_a_waiting_one_can_be_cancelled(
    tmp_path: Path,
) -> None:
    first, second = _reporter(tmp_path, "job-a"), _reporter(tmp_path, "job-b")
    outcome: list[bool] = []
    with first.admitted("predict-7", slots=2) as admitted:
        assert admitted
        waiter = threading.Thread(
            target=lambda: outcome.append(second.admitted("predict-7", slots=2).__enter__())
        )
        waiter.start()
        time.sleep(1.5)
        assert outcome == [] and JobFiles(tmp_path).load("job-b").phase == "waiting"
        JobFiles(tmp_path).cancel_path("job-b").touch()
        waiter.join(timeout=10)
    assert outcome == [False]


def test_jobs_max_running_bounds_local_jobs_of_different_projects(tmp_path: Path) -> None:
    first, second = _reporter(tmp_path, "job-a"), _reporter(tmp_path, "job-b")
    second.job.project = "8"
    entered = threading.Event()

    def run_second() -> None:
        with second.admitted("predict-8", slots=1) as admitted:
            assert admitted
            entered.set()

    with first.admitted("predict-7", slots=1):
        waiter = threading.Thread(target=run_second)
        waiter.start()
        assert not entered.wait(1.5)  # one running place (JOBS_MAX_RUNNING=1): the other project waits
    assert entered.wait(5)
    waiter.join()


class _CountingBackend:
    """Predicts every task (no model): what BudgetedPredict needs to see of YOLOBackend."""

    def __init__(self, clock: list[float], seconds_per_call: float):
        self.clock, self.seconds_per_call, self.calls = clock, seconds_per_call, []

    def predict(self, tasks, label_config, project=None, missing_key_fails_request=True) -> PredictionRun:
        self.calls.append((len(tasks), missing_key_fails_request))
        self.clock[0] += self.seconds_per_call
        return PredictionRun("v1", [TaskOutcome(task_id=t["id"], regions=[{}]) for t in tasks], {})


def test_a_predict_over_its_time_budget_answers_what_it_did_and_hands_the_rest_to_a_job() -> None:
    clock = [0.0]
    backend = _CountingBackend(clock, seconds_per_call=30.0)
    handed: list[tuple] = []
    budgeted = BudgetedPredict(
        backend, 80.0, lambda *args: handed.append(args) or {"id": "job-1"}, clock=lambda: clock[0]
    )
    tasks = [{"id": i, "data": {}} for i in range(1, 41)]
    run = budgeted(tasks, "<View/>", project="7.123")
    # 30 s a chunk of 8: after two (60 s) a third would end past 80 s, so two chunks are answered now.
    assert backend.calls == [(FIRST_CHUNK_TASKS, True), (FIRST_CHUNK_TASKS, False)]
    results = run.results()
    rest = [t["id"] for t in tasks[2 * FIRST_CHUNK_TASKS :]]
    assert [r["task"] for r in results if "error" in r] == rest
    assert all("job-1" in r["error"] for r in results if "error" in r)
    assert sum("result" in r for r in results) == 2 * FIRST_CHUNK_TASKS
    assert handed == [("7", rest, "<View/>")]

    fast = _CountingBackend(clock, seconds_per_call=0.5)
    run = BudgetedPredict(fast, 80.0, lambda *args: pytest.fail("no hand-off"), clock=lambda: clock[0])(
        [{"id": i, "data": {}} for i in range(1, 1001)], "<View/>", "7"
    )
    # 0.5 s for 8 tasks: the next chunks take about an eighth of the 80 s budget (160 tasks), up to 256.
    assert len(run.tasks) == 1000 and fast.calls[1][0] == 160 and len(fast.calls) < 10
    small = _CountingBackend(clock, seconds_per_call=30.0)
    BudgetedPredict(small, 80.0, lambda *args: pytest.fail("no hand-off"))(tasks[:8], "<View/>", "7")
    assert small.calls == [(8, True)]  # one chunk or less: one call, as without a budget


def test_post_jobs_names_the_wrong_field(make_client) -> None:
    client = make_client()
    for body, field in [
        ({"project": 7}, "kind"),
        ({"kind": "predict", "project": "abc"}, "project"),
        ({"kind": "predict", "project": 7, "tasks": []}, "tasks"),
        ({"kind": "predict", "project": 7, "tasks": "some"}, "tasks"),
        ({"kind": "predict", "project": 7, "control": "label"}, "control"),
        ({"kind": "predict", "project": 7, "colour": 1}, "colour"),
    ]:
        response = client.post("/jobs", json=body)
        assert 400 <= response.status_code < 500, (body, response.text)
        assert field in response.json()["error"], (body, response.json())
    response = client.get("/jobs", params={"kind": "paint"})
    assert response.status_code == 422 and "kind" in response.json()["error"]
    assert client.delete("/jobs/nope").status_code == 404
    # A local prediction job needs Label Studio's address and key: this server is not set up for it (503).
    response = client.post("/jobs", json={"kind": "predict", "project": 7})
    assert response.status_code == 503 and "LABEL_STUDIO_API_KEY" in response.json()["error"]
    guarded = make_client(basic_auth_user="annotator", basic_auth_pass="secret")
    assert guarded.post("/jobs", json={"kind": "predict", "project": 7}).status_code == 401
    assert guarded.delete("/jobs/some-job").status_code == 401
