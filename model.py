"""The YOLO backend: `setup`, `predict`, `fit`, in the shape label-studio-ml users know.

One /predict goes: labeling config -> plan of control models (cached) -> the trained versions this
project serves bound to their controls -> controls grouped per model call, models loaded -> images
(`prediction/images.py`: fetched a chunk ahead of batched inference) and videos
(`prediction/videos.py`: streamed a batch of frames at a time) -> pure converters (`control.regions`)
-> one prediction per task, in task order.

A task whose media fails gets `{"error": ...}` without a `result` key: Label Studio skips such an
entry (it logs it and stores nothing), so the task is predicted again on the next retrieve instead
of keeping an empty prediction. The same holds when some control of the config cannot run (its model
is missing or of the wrong kind): no task gets a prediction without that control's regions.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from control_models.labeling_plan import PlanCache, check_label_config_size, config_hash
from core.errors import (
    BackendError,
    BadRequestError,
    LabelingConfigError,
    ModelError,
    ServerConfigurationError,
)
from core.settings import PROJECT_ROOT, Settings
from core.tasks import project_key
from inference.detections import MaskBudget
from inference.model_registry import ModelRegistry
from media.credentials import LabelStudioCredentials
from media.label_studio_client import LabelStudioClient
from media.loader import MediaLoader
from media.prefetch import ImagePrefetcher
from prediction.groups import group_by_model, load_models, require_data_keys
from prediction.images import ImagePipeline
from prediction.int8 import Int8Export, Int8Exporter
from prediction.run import PredictionRun, TaskOutcome
from prediction.served import ServedControls
from prediction.videos import VideoPipeline
from training.jobs import JobRunner, LocalProcessRunner, count_event
from training.versions import ServedVersions, VersionStore

logger = logging.getLogger(__name__)

ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")


class YOLOBackend:
    """The label-studio-ml verbs of one server process; each step is a collaborator built here."""

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry | None = None,
        jobs: JobRunner | None = None,
    ):
        self.settings = settings
        self.registry = registry or ModelRegistry(settings)
        self.versions = VersionStore(settings.model_root)
        self.served = ServedVersions(self.versions)
        # Training runs in its own process (training_pipeline.py), never in this one's threads.
        self.jobs = jobs or LocalProcessRunner(
            settings.model_root / "jobs",
            [sys.executable, str(PROJECT_ROOT / "training_pipeline.py")],
            keep_finished=settings.training_jobs_kept,
        )
        self.plans = PlanCache(settings)
        self.credentials = LabelStudioCredentials(settings)
        self.media = MediaLoader(settings, self.label_studio_auth)
        self.bindings = ServedControls(settings, self.served, self.registry)
        self.prefetcher = ImagePrefetcher(settings, self.media)
        self.images = ImagePipeline(self.prefetcher)
        self.videos = VideoPipeline(settings, self.media)
        self.int8 = Int8Exporter(settings, self.registry, self.served, self.prefetcher)

    # -- label-studio-ml verbs ------------------------------------------------------------------------

    def setup(
        self,
        label_config: str,
        hostname: str | None = None,
        access_token: str | None = None,
        project: Any = None,
    ) -> str:
        """Remember how this project reaches Label Studio; answer the model version. Never loads a model."""
        check_label_config_size(label_config, self.settings.max_label_config_bytes)
        self.credentials.remember(project, hostname, access_token)
        return self.model_version(label_config, project)

    def model_version(self, label_config: str, project: Any = None) -> str:
        """Equal in /setup and /predict for the same config and project: Label Studio compares them.

        Names the trained versions this project serves (`yolo-1a2b3c4d-label.v3`), so after a promotion
        or a rollback Label Studio's Retrieve Predictions predicts every task again, once.
        """
        check_label_config_size(label_config, self.settings.max_label_config_bytes)
        version = f"{self.settings.model_version}-{config_hash(label_config)}"
        key = project_key(project)
        if key:
            for control in self.versions.controls(key):
                served = self.served.served(key, control)
                if served:
                    version += f"-{control}.{served.split('-', 1)[0]}"
        return version

    def predict(
        self,
        tasks: Sequence[Mapping[str, Any]],
        label_config: str,
        project: Any = None,
        uploads: Mapping[str, Path] | None = None,
        missing_key_fails_request: bool = True,
        plans: PlanCache | None = None,
    ) -> PredictionRun:
        """One prediction per task; `project` is Label Studio's project id ("7.1700000000" or 7).

        `tasks` have the `core.tasks.Task` shape, checked where they come in (/predict's body, cli.py).

        A data key that no task of the call has is a config/data mismatch worth a 4xx for /predict
        (`missing_key_fails_request`); a caller that predicts a project in small batches (cli.py) turns
        it off, so such a task gets its own error and the other tasks go on.

        `uploads` maps task media URLs to files already on this machine for this call only (the try-it
        page's uploads): only an in-process caller can pass it, so no /predict body can name such a file.
        `plans` replaces the backend's plan cache (the try-it page's own examples, see server/ui_examples.py).
        """
        uploads = uploads or {}
        plan = (plans or self.plans).get(label_config)
        # Tasks carry their project id; the request's is the fallback (copies: the caller's stay as they are).
        checked = [
            {**task, "project": project_key(project)} if task.get("project") is None else task
            for task in tasks
        ]
        project = project if project is not None else (checked[0].get("project") if checked else None)
        run = PredictionRun(
            model_version=self.model_version(label_config, project),
            tasks=[TaskOutcome(task_id=task.get("id")) for task in checked],
            control_errors={},
            mask_budget=MaskBudget(self.settings.max_mask_bytes),
        )
        controls = self.bindings.controls(plan, project)
        image_controls = [c for c in controls if "Image" in c.object_tags]
        video_controls = [c for c in controls if "Video" in c.object_tags]
        if missing_key_fails_request:
            require_data_keys(checked, image_controls + video_controls)
        image_groups, video_groups = group_by_model(image_controls), group_by_model(video_controls)
        image_models = load_models(self.registry, image_groups, run)
        video_models = load_models(self.registry, video_groups, run)
        if run.control_errors:
            if len(run.control_errors) == len(plan.controls):
                raise ModelError("; ".join(f"{name}: {msg}" for name, msg in run.control_errors.items()))
            run.refuse_every_task()
            return run
        self.images.predict(checked, image_models, run, uploads)
        self.videos.predict(checked, video_models, run, uploads)
        return run

    def fit(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        """Label Studio's events: START_TRAINING starts a training job per trainable control; annotation
        events count towards `model_train_every`. Answers at once: the jobs run in their own processes."""
        known = {
            "ANNOTATION_CREATED",
            "ANNOTATION_UPDATED",
            "ANNOTATIONS_DELETED",
            "START_TRAINING",
            "TASKS_CREATED",
            "TASKS_DELETED",
            "PROJECT_UPDATED",
        }
        if event not in known:
            logger.info("Webhook event %s ignored", event)
            return {"status": "ignored", "message": f"event '{event}' is not one this backend handles"}
        logger.info("Webhook event %s received", event)
        if event == "START_TRAINING":
            return self.start_training(data.get("project") or {}, trigger=event)
        if event in ANNOTATION_EVENTS:
            return self._count_annotation(event, data.get("project") or {})
        return {"status": "ok", "event": event}

    def start_training(
        self, project: dict[str, Any], trigger: str, controls: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """One job per trainable control (or those named); a control whose job runs says so."""
        key, label_config = _project_of(project)
        specs = self.training_specs(label_config, controls)
        jobs = []
        for spec in specs:
            submission = self.jobs.submit(
                key, spec.from_name, trigger, {"label_config": label_config}, env=self._job_env(key)
            )
            jobs.append({**submission.job.public(), "submission": submission.status})
        return {"status": "ok", "event": trigger, "jobs": jobs}

    def training_specs(self, label_config: str, controls: Sequence[str] | None = None) -> list[Any]:
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

    def _count_annotation(self, event: str, project: dict[str, Any]) -> dict[str, Any]:
        """Every `model_train_every` new or updated annotations start a job (counted across workers)."""
        try:
            key, label_config = _project_of(project)
            specs = [s for s in self.training_specs(label_config) if s.train_every > 0]
        except BackendError:
            return {"status": "ok", "event": event}
        started = []
        for spec in specs:
            if count_event(self.settings.model_root / "jobs", key, spec.from_name, spec.train_every):
                submission = self.jobs.submit(
                    key, spec.from_name, event, {"label_config": label_config}, env=self._job_env(key)
                )
                started.append({**submission.job.public(), "submission": submission.status})
        return {"status": "ok", "event": event, "jobs": started}

    def _job_env(self, project: str) -> dict[str, str]:
        """The job process reaches Label Studio as this process does (environment, else /setup's)."""
        auth = self.label_studio_auth(project)
        if auth is None or not auth.configured:
            raise ServerConfigurationError(
                "training needs Label Studio's address and an API key, and this backend has neither: set "
                "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY on the backend (the job fetches the annotations itself)"
            )
        return {
            **settings_environment(self.settings),
            "LABEL_STUDIO_URL": auth.base_url,
            "LABEL_STUDIO_API_KEY": auth.api_key,
        }

    # -- INT8 exports, Label Studio access ------------------------------------------------------------

    def export_int8(
        self, label_config: str, tasks: Sequence[dict], folder: Path, **options: Any
    ) -> list[Int8Export]:
        """The checked INT8 export of each image control's model, calibrated on the project's own images
        (`Int8Exporter.export`, options `project`, `controls`, `limit`): what `model_format="openvino-int8"`
        serves from then on."""
        return self.int8.export(self.plans.get(label_config), tasks, folder, **options)

    def label_studio_auth(self, project: Any = None) -> LabelStudioClient | None:
        """Environment first (LABEL_STUDIO_URL/API_KEY); else what this project's own /setup brought."""
        return self.credentials.for_project(project)

    def close(self) -> None:
        self.prefetcher.close()


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


def _project_of(project: dict[str, Any]) -> tuple[str, str]:
    """(project id, labeling config) from the project object of a webhook body."""
    key = project_key(project.get("id")) if isinstance(project, dict) else None
    label_config = project.get("label_config") if isinstance(project, dict) else None
    if not key or not isinstance(label_config, str) or not label_config.strip():
        raise BadRequestError("the webhook body has no project with an id and a label_config")
    return key, label_config


__all__ = ["Int8Export", "PredictionRun", "TaskOutcome", "YOLOBackend", "project_key"]
