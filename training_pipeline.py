"""The training job's process: `python training_pipeline.py <job state file>`, started by `training/jobs.py`.

It joins what lies in different layers and nothing more: the control's `TrainingSpec` (control models),
Label Studio (`media/label_studio_client.py`, tasks page by page) and media (`MediaLoader` with the
server's limits and auth), and the job of the control's kind (`training/image_job.py`,
`training/timeline.py`, on the one skeleton of `training/skeleton.py`). The served model changes only at
the very end, by one compare-and-swap of the pointer, and only when the new model is better (or
promote="always") and nobody switched the served version meanwhile.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from control_models.labeling_plan import build_plan
from core.errors import LabelingConfigError, TrainingDataError
from core.settings import Settings
from inference.model_registry import ModelRegistry
from media.label_studio_client import LabelStudioClient
from media.loader import MediaLoader
from training.annotations import annotated_tasks, latest_annotation
from training.evaluation import Evaluation, TaskErrors, choice_errors
from training.image_job import ImageTraining, decide, score_project
from training.jobs import JobReporter, as_job_process, run_reported
from training.skeleton import Outcome
from training.spec import IMAGE_TASKS, TrainingSpec
from training.timeline import TimelineTraining
from training.versions import VersionStore

__all__ = ["TrainingRun", "annotated_tasks", "choice_errors", "decide", "latest_annotation", "run_job"]

logger = logging.getLogger("training_pipeline")

TasksSource = Callable[[str], Iterable[dict]]  # project -> its annotated tasks, page by page


class TrainingRun:
    """Train (or score) one control of one project; `reporter` receives phases and epochs."""

    def __init__(self, settings: Settings, reporter: Any, tasks_source: TasksSource | None = None):
        self.settings = settings
        self.reporter = reporter
        self.store = VersionStore(settings.model_root)
        self.registry = ModelRegistry(settings)
        self.auth = LabelStudioClient.from_settings(settings)  # one client: media and annotations
        self.media = MediaLoader(settings, lambda _project: self.auth)
        # Where tasks come from: Label Studio, page by page, or a callable (tests, a tasks file).
        self.tasks_source = tasks_source or (
            lambda project: self._label_studio().tasks(project, annotated_only=True)
        )

    def _label_studio(self) -> LabelStudioClient:
        if self.auth is None:
            raise LabelingConfigError("training needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY")
        return self.auth

    def spec_for(self, label_config: str, control: str) -> TrainingSpec:
        plan = build_plan(label_config, self.settings)
        for model in plan.controls:
            if model.from_name == control:
                spec = model.training_spec()
                if spec is None:
                    raise LabelingConfigError(f"control '{control}' ({model.control_tag}) cannot be trained")
                return spec
        raise LabelingConfigError(f"the labeling config has no control named '{control}' to train")

    def picked(self, project: str, spec: TrainingSpec) -> Iterable[tuple[dict, list[dict]]]:
        return annotated_tasks(self.tasks_source(project), spec.region_from_names)

    def run(self, project: str, control: str, label_config: str) -> Outcome:
        """One job: the control's spec says which kind of training it is."""
        spec = self.spec_for(label_config, control)
        parts = (self.settings, self.registry, self.store, self.reporter, self.media)
        if spec.kind == "timeline":
            job: Any = TimelineTraining(*parts, log=_log)
        elif spec.task in IMAGE_TASKS:
            job = ImageTraining(*parts, log=_log)
        else:
            raise LabelingConfigError(
                f"{spec.tag} trains a {spec.task} model, which this backend cannot train"
            )
        return job.run(project, spec, self.picked(project, spec))


@dataclass
class ProjectEvaluation:
    model: str
    evaluation: Evaluation
    tasks: list[TaskErrors]


def evaluate_project(
    run: TrainingRun, project: str, control: str, label_config: str, model_path: str = ""
) -> ProjectEvaluation:
    """How good a model (the served one, or `model_path` in MODEL_ROOT) is on every annotated task,
    scored by the job's own evaluation (`training/evaluation.py`), worst tasks included."""
    spec = run.spec_for(label_config, control)
    if spec.kind == "timeline":  # its held-out scores are in each version's metrics.json
        raise TrainingDataError(
            f"evaluate scores image models; for the timeline head of '{control}' see `cli.py models` "
            "(per-label frame F1 of each version on its held-out videos, in metrics.json)"
        )
    run.reporter.phase("evaluating")
    name, evaluation = score_project(
        run.settings, run.store, run.registry, run.media, project, spec, run.picked(project, spec), model_path
    )
    return ProjectEvaluation(name, evaluation, evaluation.tasks)


def _log(text: str) -> None:
    print(text, flush=True)  # the job's log file: GET /jobs/{id} shows its tail


def run_job(state_file: Path, settings: Settings | None = None) -> int:
    """The job process: read the job, train, report; exit status 0 when the job succeeded."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    reporter = JobReporter(state_file)
    return train_reported(reporter, lambda: as_job_process(settings or Settings()))


def train_reported(reporter: Any, settings: Callable[[], Settings]) -> int:
    """Train the reporter's job; its outcome or its failure go to the reporter."""
    job = reporter.job

    def train() -> None:
        outcome = TrainingRun(settings(), reporter).run(
            job.project, job.control, job.params.get("label_config", "")
        )
        reporter.finish(outcome.message, outcome.version, outcome.promoted)

    return run_reported(reporter, train)


if __name__ == "__main__":
    os.environ.setdefault("ULTRALYTICS_SAFE_LOAD", "true")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    sys.exit(run_job(Path(sys.argv[1])))
