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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from control_models.labeling_plan import PlanCache, check_label_config_size, config_hash
from core.errors import (
    ModelError,
)
from core.settings import Settings
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
from training.jobs import JobRunner
from training.runners import job_runner
from training.trigger import TrainingTrigger
from training.versions import ServedVersions, VersionStore

logger = logging.getLogger(__name__)


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
        self.versions.sweep()  # versions half-written by a training job that was killed
        self.served = ServedVersions(self.versions)
        # Training runs in its own process (training_pipeline.py), never in this one's threads.
        # Jobs run in their own processes or on RQ workers (REDIS_URL), never in this one's threads.
        self.jobs = jobs or job_runner(settings)
        self.plans = PlanCache(settings)
        self.credentials = LabelStudioCredentials(settings)
        self.media = MediaLoader(settings, self.label_studio_auth)
        self.bindings = ServedControls(settings, self.served, self.registry)
        self.prefetcher = ImagePrefetcher(settings, self.media)
        self.images = ImagePipeline(self.prefetcher)
        self.videos = VideoPipeline(settings, self.media)
        self.int8 = Int8Exporter(settings, self.registry, self.served, self.prefetcher)
        self.training = TrainingTrigger(settings, self.jobs, self.plans, self.label_studio_auth)

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
        or a rollback Label Studio's Retrieve Predictions predicts every task again, once; and the task
        score mode (`yolo-1a2b3c4d-uncertainty`), so a switch of mode does the same.
        """
        check_label_config_size(label_config, self.settings.max_label_config_bytes)
        version = f"{self.settings.model_version}-{config_hash(label_config)}"
        version += self.plans.score_mode_suffix(label_config)
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
        checked, project = _with_project(tasks, project)
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
        """Label Studio's events (START_TRAINING, annotation counts): `TrainingTrigger` starts the jobs."""
        return self.training.on_event(event, data)

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


__all__ = ["Int8Export", "PredictionRun", "TaskOutcome", "YOLOBackend", "project_key"]


def _with_project(tasks: Sequence[Mapping[str, Any]], project: Any) -> tuple[list[Mapping[str, Any]], Any]:
    """Tasks that each carry their project id (the request's is the fallback; copies: the caller's stay
    as they are), and the request's project (else the first task's)."""
    checked = [
        {**task, "project": project_key(project)} if task.get("project") is None else task for task in tasks
    ]
    return checked, project if project is not None else (checked[0].get("project") if checked else None)
