"""Jobs over HTTP: `POST /jobs`, `GET /jobs`, `GET /jobs/{id}`, `DELETE /jobs/{id}`, and what starts a
prediction job by itself: a /predict over its time budget (`BudgetedPredict`) and, with
PRELABEL_NEW_TASKS, Label Studio's TASKS_CREATED webhook (`PredictionJobs.new_tasks`).

The jobs themselves run elsewhere (`backend.jobs`: local processes, or RQ workers with REDIS_URL).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator

from core.errors import BackendError, BadRequestError, ConfigConflictError, LabelStudioAccessError
from core.settings import Settings
from media.label_studio_client import LabelStudioClient, project_id
from model import PredictionRun, TaskOutcome, YOLOBackend, project_key
from training.jobs import KINDS, Job, LocalProcessRunner

FIRST_CHUNK_TASKS = 8  # a budgeted /predict checks its time after each chunk: the first this small,
MAX_CHUNK_TASKS = 256  # the next ones sized to take about an eighth of the budget each


class JobRequest(BaseModel):
    """`POST /jobs`: a prediction job over a project's tasks, or what Start Training does."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["predict", "train"]
    project: int | str = Field(description="Label Studio's project id.")
    tasks: Literal["all"] | list[PositiveInt] = Field(default="all", description='"all" or task ids.')
    control: str | None = Field(default=None, min_length=1, description="train: the control to train.")
    label_config: str | None = Field(default=None, min_length=1, description="Else the project's own.")

    @field_validator("project")
    @classmethod
    def _project_id(cls, project: int | str) -> str:
        try:
            return str(project_id(project))
        except BackendError as error:
            raise ValueError(error.message) from None

    @field_validator("tasks")
    @classmethod
    def _some_tasks(cls, tasks: Any) -> Any:
        if isinstance(tasks, list) and not tasks:
            raise ValueError('give at least one task id, or "all"')
        return tasks


class PredictionJobs:
    """Starts prediction (and training) jobs for the routes; Label Studio access as /predict has it."""

    def __init__(self, backend: YOLOBackend, settings: Settings):
        self.backend = backend
        self.settings = settings

    def predict(
        self, project: str, task_ids: Sequence[int] | None, label_config: str | None, trigger: str
    ) -> dict[str, Any]:
        if label_config is not None:
            self._same_as_the_projects(project, label_config)
        params = {"label_config": label_config or "", "task_ids": list(task_ids) if task_ids else None}
        submission = self.backend.jobs.submit(
            project, "", trigger, params, env=self._env(project), kind="predict"
        )
        return {**submission.job.public(), "submission": submission.status}

    def train(self, project: str, control: str | None, label_config: str | None) -> dict[str, Any]:
        """What Start Training does: always on the project's own config, read from Label Studio."""
        if label_config is not None:
            raise BadRequestError(
                "label_config: a training job trains on the project's own config in Label Studio; leave it out"
            )
        started = self.backend.training.start(project, "api", [control] if control else None)
        return {**started["jobs"][0], "jobs": started["jobs"]}

    def _same_as_the_projects(self, project: str, label_config: str) -> None:
        """A body's config may only repeat the project's (where Label Studio's copy can be read)."""
        auth = self.backend.label_studio_auth(project)
        if auth is None or not auth.configured:
            return  # no Label Studio to ask: the body's config is all there is (a tasks-only set-up)
        if self._client(project).label_config(project).strip() != label_config.strip():
            raise ConfigConflictError(
                "label_config: differs from the project's own config in Label Studio; leave it out (the job "
                "reads the project's) or send the project's"
            )

    def new_tasks(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """TASKS_CREATED: the new tasks become a prediction job (PRELABEL_NEW_TASKS=true)."""
        project = body.get("project") if isinstance(body.get("project"), dict) else {}
        key = project_key(project.get("id"))
        ids = [t.get("id") for t in body.get("tasks") or [] if isinstance(t, dict)]
        ids = [i for i in ids if isinstance(i, int) and not isinstance(i, bool) and i > 0]
        if not key or not ids:
            raise BadRequestError("the TASKS_CREATED body has no project id or no task ids")
        label_config = project.get("label_config") if isinstance(project.get("label_config"), str) else None
        job = self.predict(key, ids, label_config, trigger="TASKS_CREATED")
        return {"status": "ok", "event": "TASKS_CREATED", "jobs": [job]}

    def _env(self, project: str) -> dict[str, str]:
        """A local job process gets Label Studio's address and key through its environment; RQ workers
        read their own (nothing secret goes into Redis)."""
        if not isinstance(self.backend.jobs, LocalProcessRunner):
            return {}
        return self.backend.training.job_env(project)

    def _client(self, project: str) -> LabelStudioClient:
        auth = self.backend.label_studio_auth(project)
        if auth is None or not auth.configured:
            raise LabelStudioAccessError(
                "reading the project's labeling config needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY "
                'on the backend; or send "label_config" in the body'
            )
        return LabelStudioClient(auth.base_url, auth.api_key)


class BudgetedPredict:
    """A /predict that answers within PREDICT_TIME_BUDGET: it predicts chunk by chunk while the time
    allows, and hands the tasks left to a prediction job (each gets `{"task", "error"}` saying so, so Label
    Studio stores nothing for them now and the job stores their predictions)."""

    def __init__(
        self,
        backend: YOLOBackend,
        budget_s: float,
        hand_off: Callable[[str, list[int], str], dict[str, Any]],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.backend = backend
        self.budget_s = budget_s
        self.hand_off = hand_off  # (project, task ids, label config) -> the job
        self.clock = clock

    def __call__(self, tasks: list[dict], label_config: str, project: Any = None) -> PredictionRun:
        key = project_key(project) or project_key(tasks[0].get("project") if tasks else None)
        if not self.budget_s or key is None or len(tasks) <= FIRST_CHUNK_TASKS:
            return self.backend.predict(tasks, label_config, project=project)
        started, done, runs, chunk = self.clock(), 0, [], FIRST_CHUNK_TASKS
        while done < len(tasks):
            runs.append(
                self.backend.predict(
                    tasks[done : done + chunk],
                    label_config,
                    project=project,
                    missing_key_fails_request=not done,
                )
            )
            done += len(runs[-1].tasks)
            elapsed = self.clock() - started
            per_task = elapsed / done
            chunk = int(min(MAX_CHUNK_TASKS, max(FIRST_CHUNK_TASKS, self.budget_s / 8 / max(per_task, 1e-6))))
            if elapsed + 1.5 * min(chunk, len(tasks) - done) * per_task > self.budget_s:
                break
        run = _merged(runs)
        if done < len(tasks):
            self._hand_off(key, tasks[done:], label_config, run)
        return run

    def _hand_off(self, key: str, rest: list[dict], label_config: str, run: PredictionRun) -> None:
        ids = [task.get("id") for task in rest]
        try:
            job = self.hand_off(key, [i for i in ids if isinstance(i, int)], label_config)
            error = (
                f"predicted in the background by job {job['id']} (this request ran out of its "
                "PREDICT_TIME_BUDGET); its prediction appears when the job stores it"
            )
        except BackendError as problem:
            error = (
                "not predicted: this request ran out of its PREDICT_TIME_BUDGET and no prediction job "
                f"could take the rest ({problem.message}); retrieve predictions again for it"
            )
        run.tasks.extend(TaskOutcome(task_id=task_id, error=error) for task_id in ids)


def _merged(runs: list[PredictionRun]) -> PredictionRun:
    run = runs[0]
    for other in runs[1:]:
        run.tasks.extend(other.tasks)
        run.control_errors.update(other.control_errors)
        run.label_warnings.update(other.label_warnings)
        for name, seconds in other.inference_seconds.items():
            run.inference_seconds[name] = run.inference_seconds.get(name, 0.0) + seconds
    return run


def install_job_routes(app: FastAPI, jobs: PredictionJobs, redact: Callable[[Any], Any]) -> None:
    """POST /jobs, GET /jobs, GET and DELETE /jobs/{id}; answers name files relative to MODEL_ROOT."""
    backend = jobs.backend

    @app.post("/jobs", status_code=202)
    def start_job(body: JobRequest) -> dict[str, Any]:
        if body.kind == "train":
            if body.tasks != "all":
                raise BadRequestError(
                    'tasks: a training job trains on the annotated tasks; leave out "tasks"'
                )
            return redact(jobs.train(str(body.project), body.control, body.label_config))
        if body.control is not None:
            raise BadRequestError("control: a prediction job predicts every control of the labeling config")
        task_ids = None if body.tasks == "all" else body.tasks
        return redact(jobs.predict(str(body.project), task_ids, body.label_config, trigger="api"))

    @app.get("/jobs")
    def list_jobs(project: str | None = None, kind: str | None = Query(default=None)) -> Any:
        if kind is not None and kind not in KINDS:
            return JSONResponse(
                {"error": f"kind: must be one of {', '.join(KINDS)}, not '{kind}'"}, status_code=422
            )
        return {"jobs": [redact(job.public()) for job in backend.jobs.list(project_key(project), kind)]}

    @app.get("/jobs/{job_id}")
    def get_job(job_id: str) -> dict[str, Any]:
        return redact(backend.jobs.get(job_id).public())

    @app.delete("/jobs/{job_id}")
    def cancel_job(job_id: str) -> dict[str, Any]:
        job: Job = backend.jobs.cancel(job_id)
        return redact(job.public())
