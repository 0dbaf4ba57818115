"""What starts training jobs: Label Studio's webhook events and `cli.py train`.

A job trains with the project's OWN labeling config, read from Label Studio with the backend's key,
never with the copy a webhook body carries: whoever can reach `/webhook` could otherwise post the
project's id with `model_train_promote="always" model_train_epochs="1"` and replace the served model
with a worse one. The webhook's copy only finds the controls whose annotation events are counted
(`model_train_every`); whether and how they train is read from Label Studio's copy again.

Project ids are made one integer (`7`, `"07"`, `"7.1700000000"` are project 7) before any lock, path or
job is named after them. Admission (how many jobs run and wait) is the job runner's (`training/jobs.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pydantic import SecretStr

from core.errors import (
    BackendError,
    BadRequestError,
    LabelingConfigError,
    LabelStudioAccessError,
    ServerConfigurationError,
)
from core.settings import Settings
from media.label_studio_client import LabelStudioClient, project_id
from training.jobs import JobRunner, count_event
from training.spec import TrainingSpec

logger = logging.getLogger(__name__)

ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
KNOWN_EVENTS = (
    *ANNOTATION_EVENTS,
    "ANNOTATIONS_DELETED",
    "START_TRAINING",
    "TASKS_CREATED",
    "TASKS_DELETED",
    "PROJECT_UPDATED",
)


class PlanSource(Protocol):
    """The plan cache of the control models (`control_models.labeling_plan.PlanCache`)."""

    def get(self, label_config: str) -> Any: ...


class LabelStudioAccess(Protocol):
    base_url: str

    @property
    def api_key(self) -> str: ...

    @property
    def configured(self) -> bool: ...


class TrainingTrigger:
    """Turns events into jobs: one per trainable control, on the project's own config."""

    def __init__(
        self,
        settings: Settings,
        jobs: JobRunner,
        plans: PlanSource,
        access_of: Callable[[str], LabelStudioAccess | None],
    ):
        self.settings = settings
        self.jobs = jobs
        self.plans = plans
        self.access_of = access_of  # project id -> Label Studio URL and key (environment, else /setup's)

    def on_event(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        """Label Studio's webhook events: START_TRAINING starts a job per trainable control; annotation
        events count towards `model_train_every`. Answers at once: the jobs run in their own processes."""
        if event not in KNOWN_EVENTS:
            logger.info("Webhook event %s ignored", event)
            return {"status": "ignored", "message": f"event '{event}' is not one this backend handles"}
        logger.info("Webhook event %s received", event)
        project = data.get("project") if isinstance(data.get("project"), dict) else {}
        if event == "START_TRAINING":
            return self.start(webhook_project_id(project), trigger=event)
        if event in ANNOTATION_EVENTS:
            return self.count_annotation(event, project)
        return {"status": "ok", "event": event}

    def start(self, project: Any, trigger: str, controls: Sequence[str] | None = None) -> dict[str, Any]:
        """One job per trainable control of the project's config in Label Studio (or those named).

        A control whose job runs gets one follow-up job queued; a control whose job waits already is
        answered with that job. Refused (429) only when every control found the host's queue full.
        """
        key = str(project_id_or_400(project))
        env = self.job_env(key)
        label_config = self.project_config(key, env)
        jobs, refused = [], []
        for spec in self.specs(label_config, controls):
            try:
                submission = self.jobs.submit(
                    key, spec.from_name, trigger, {"label_config": label_config}, env=env
                )
            except BackendError as error:
                if error.status_code != 429:
                    raise
                refused.append(error)
                jobs.append(
                    {
                        "project": key,
                        "control": spec.from_name,
                        "submission": "refused",
                        "error": error.message,
                    }
                )
                continue
            jobs.append({**submission.job.public(), "submission": submission.status})
        if refused and len(refused) == len(jobs):
            raise refused[0]
        return {"status": "ok", "event": trigger, "jobs": jobs}

    def specs(self, label_config: str, controls: Sequence[str] | None = None) -> list[TrainingSpec]:
        """The TrainingSpec of each trainable control of the config (or of the controls named)."""
        plan = self.plans.get(label_config)
        specs = []
        for control in plan.controls:
            spec = control.training_spec()
            if spec is not None and (not controls or control.from_name in controls):
                specs.append(spec)
        if controls and {s.from_name for s in specs} != set(controls):
            missing = sorted(set(controls) - {s.from_name for s in specs})
            raise LabelingConfigError(
                f"no trainable control named {', '.join(missing)} in the labeling config"
            )
        if not specs:
            raise LabelingConfigError("the labeling config has no control this backend can train")
        return specs

    def count_annotation(self, event: str, project: dict[str, Any]) -> dict[str, Any]:
        """Every `model_train_every` new or updated annotations start a job (counted across workers).

        The body's config only says which controls count; the job starts when Label Studio's own copy
        of the config asks for it too.
        """
        try:
            key = str(webhook_project_id(project))
            body_config = project.get("label_config")
            counted = [
                s
                for s in self.specs(body_config if isinstance(body_config, str) else "")
                if s.train_every > 0
            ]
        except BackendError:
            return {"status": "ok", "event": event}
        reached = [
            spec.from_name
            for spec in counted
            if count_event(self.settings.model_root / "jobs", key, spec.from_name, spec.train_every)
        ]
        if not reached:
            return {"status": "ok", "event": event, "jobs": []}
        env = self.job_env(key)
        label_config = self.project_config(key, env)
        own = {s.from_name for s in self.specs(label_config) if s.train_every > 0}
        names = [name for name in reached if name in own]
        if not names:
            return {"status": "ok", "event": event, "jobs": []}
        try:
            return self.start(key, event, names)
        except BackendError as error:  # a full queue: this event starts nothing, the next one may
            logger.warning("Annotation event of project %s started no job: %s", key, error.message)
            return {"status": "ok", "event": event, "jobs": [], "error": error.message}

    def project_config(self, project: str, env: dict[str, str]) -> str:
        """The project's labeling config as Label Studio stores it, read with the backend's key."""
        client = LabelStudioClient(env["LABEL_STUDIO_URL"], env["LABEL_STUDIO_API_KEY"])
        label_config = client.label_config(project)
        if not label_config.strip():
            raise LabelingConfigError(f"project {project} has no labeling config in Label Studio")
        return label_config

    def job_env(self, project: str) -> dict[str, str]:
        """The job process reaches Label Studio as this process does (environment, else /setup's)."""
        access = self.access_of(project)
        if access is None or not access.configured:
            raise ServerConfigurationError(
                "training needs Label Studio's address and an API key, and this backend has neither: set "
                "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY on the backend (the job reads the project's config "
                "and annotations itself)"
            )
        return {
            **settings_environment(self.settings),
            "LABEL_STUDIO_URL": access.base_url,
            "LABEL_STUDIO_API_KEY": access.api_key,
        }


def project_id_or_400(project: Any) -> int:
    """Label Studio's project id as one integer; anything else is the caller's mistake (400)."""
    try:
        return project_id(project)
    except LabelStudioAccessError as error:
        raise BadRequestError(error.message) from None


def webhook_project_id(project: dict[str, Any]) -> int:
    if not isinstance(project, dict) or project.get("id") is None:
        raise BadRequestError("the webhook body has no project with an id")
    return project_id_or_400(project["id"])


def settings_environment(settings: Settings) -> dict[str, str]:
    """The settings as environment variables: a job process builds the same `Settings()` as this one."""
    environment = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        environment[name.upper()] = str(value)
    return environment


def host_training_slots(device: str) -> int:
    """TRAINING_MAX_JOBS=0: one job per CUDA GPU that DEVICE selects (all visible ones when unset), else 1."""
    from inference.model_registry import uses_cuda

    if not uses_cuda(device):
        return 1
    named = [part for part in device.replace("cuda:", "").split(",") if part.strip()]
    if named:
        return len(named)
    import torch

    return max(1, torch.cuda.device_count())
