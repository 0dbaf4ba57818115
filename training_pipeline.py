"""One training job, end to end: Label Studio annotations -> dataset -> fine-tune -> evaluate -> promote.

Runs in its own process (`python training_pipeline.py <job state file>`, started by the job runner of
`training/jobs.py`), never in a web worker. It joins what lies in different layers: the control's
`TrainingSpec` (control models), Label Studio and media (the SDK, `MediaLoader` with the server's limits
and auth), and training (dataset, trainer, evaluation, versions). The served model changes only at the
very end, by one atomic pointer switch, and only when the new model is better (or promote="always").
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from control_models.labeling_plan import build_plan
from core.errors import BackendError, LabelingConfigError, TrainingDataError
from core.settings import Settings
from inference.model_registry import ModelRegistry
from media.label_studio_client import LabelStudioClient
from media.loader import MediaLoader, check_image_pixels, short_url
from training.jobs import JobReporter
from training.spec import IMAGE_TASKS
from training.trainer import TrainParams, fine_tune
from training.versions import DATASET, METRIC_LABELS, METRICS, WEIGHTS, VersionStore, write_json_atomic

logger = logging.getLogger("training_pipeline")

SEED = 0


# -- annotations from Label Studio ------------------------------------------------------------------------


def latest_annotation(annotations: list[dict]) -> dict | None:
    """The most recently updated annotation that is neither cancelled (skipped) nor a draft."""
    kept = [a for a in annotations or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if not kept:
        return None
    return max(kept, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))


def annotated_tasks(tasks: list[dict], from_names: str | Sequence[str]) -> list[tuple[dict, list[dict]]]:
    """(task, result items of the control(s) `from_names`) for each task whose latest annotation is usable.

    A task whose latest annotation has no region of this control still counts: it is an image with no
    object (a negative example), as Label Studio's annotator meant when submitting it empty.
    """
    names = {from_names} if isinstance(from_names, str) else set(from_names)
    picked = []
    for task in tasks:
        annotation = latest_annotation(task.get("annotations") or [])
        if annotation is None:
            continue
        regions = [r for r in annotation.get("result") or [] if r.get("from_name") in names]
        picked.append((task, regions))
    return picked


def fetch_tasks(url: str, api_key: str, project: str) -> list[dict]:
    """Every task of the project with its annotations, through the Label Studio SDK (paged)."""
    from label_studio_sdk.client import LabelStudio

    client = LabelStudio(base_url=url.rstrip("/"), api_key=api_key)
    pages = client.tasks.list(project=int(project), fields="all", only_annotated=True, page_size=100)
    tasks = []
    for task in pages:
        data = task.model_dump() if hasattr(task, "model_dump") else dict(task)
        tasks.append(
            {
                "id": data.get("id"),
                "data": data.get("data") or {},
                "annotations": [_plain(a) for a in data.get("annotations") or []],
            }
        )
    return tasks


def _plain(value: Any) -> Any:
    return value.model_dump() if hasattr(value, "model_dump") else value


# -- the job ----------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    version: str
    promoted: bool
    message: str


class TrainingRun:
    """Train one control of one project; `reporter` receives phases and epochs."""

    def __init__(self, settings: Settings, reporter: Any, tasks_source: Any = None):
        self.settings = settings
        self.reporter = reporter
        self.store = VersionStore(settings.model_root)
        self.registry = ModelRegistry(settings)
        self.auth = LabelStudioClient.from_settings(settings)
        self.media = MediaLoader(settings, lambda _project: self.auth)
        # Where tasks come from: Label Studio through the SDK, or a callable (tests, a tasks file).
        self.tasks_source = tasks_source or (
            lambda project: fetch_tasks(
                settings.label_studio_url, settings.label_studio_api_key.get_secret_value(), project
            )
        )

    def spec_for(self, label_config: str, control: str) -> Any:
        plan = build_plan(label_config, self.settings)
        for model in plan.controls:
            if model.from_name == control:
                spec = model.training_spec()
                if spec is None:
                    raise LabelingConfigError(f"control '{control}' ({model.control_tag}) cannot be trained")
                return spec
        raise LabelingConfigError(f"the labeling config has no control named '{control}' to train")

    def images(self, project: str, spec: Any, held: contextlib.ExitStack) -> list[Any]:
        from training.dataset import AnnotatedImage

        self.reporter.phase("fetching annotations")
        picked = annotated_tasks(self.tasks_source(project), spec.region_from_names)
        images = []
        for task, regions in picked:
            url = (task.get("data") or {}).get(spec.value_key)
            try:
                path = held.enter_context(
                    self.media.fetched(
                        url, task.get("id"), max_bytes=self.settings.max_image_bytes, project=project
                    )
                )
                name = f"'{short_url(str(url))}'"  # no presigned query string in the job's log
                check_image_pixels(path, self.settings.max_image_pixels, name=name)
                pixels = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if pixels is None:
                    raise BackendError(f"{name} is not an image that can be decoded")
            except BackendError as error:
                print(f"task {task.get('id')} left out: {error.message}", flush=True)
                continue
            height, width = pixels.shape[:2]
            images.append(AnnotatedImage(int(task["id"]), path, regions, width, height))
        print(f"{len(images)} annotated image(s) of {len(picked)} annotated task(s)", flush=True)
        return images

    def serving_model(self, project: str, spec: Any) -> tuple[Path, dict[str, str] | None, str]:
        """The weights served now, the class -> label map to evaluate them through, and their name."""
        version = self.store.served(project, spec.from_name)
        if version is not None and self.store.weights(project, spec.from_name, version).is_file():
            return self.store.weights(project, spec.from_name, version), None, version
        loaded = self.registry.get(spec.model_path)  # downloads official weights when allowed and online
        if spec.task != "detect" and loaded.task != spec.task:  # detect fine-tunes any model with boxes
            raise LabelingConfigError(
                f"model '{spec.model_path}' is a {loaded.task} model; {spec.tag} trains a {spec.task} model"
            )
        return self.registry.resolve(loaded.name), dict(spec.label_map), spec.model_path

    def run(self, project: str, control: str, label_config: str) -> Outcome:
        """One job: the control's spec says which kind of training it is."""
        spec = self.spec_for(label_config, control)
        if spec.kind == "timeline":
            return self.run_timeline(project, spec)
        if spec.task in IMAGE_TASKS:
            return self.train_on_images(project, spec)
        raise LabelingConfigError(f"{spec.tag} trains a {spec.task} model, which this backend cannot train")

    def train_on_images(self, project: str, spec: Any) -> Outcome:
        """Images and their regions -> YOLO dataset -> fine-tune -> evaluate both -> promote if better."""
        from training.dataset import write_dataset
        from training.evaluation import evaluate

        # Every image stays in the media cache (no eviction, in any process) until the job ends.
        with contextlib.ExitStack() as held:
            images = self.images(project, spec, held)
            serving_weights, serving_map, serving_name = self.serving_model(project, spec)
            version_dir = self.store.create_version(project, spec.from_name)
            self.reporter.job.version = version_dir.name
            try:
                self.reporter.phase("writing dataset")
                dataset = write_dataset(images, spec, version_dir / "dataset", seed=SEED)
                write_json_atomic(version_dir / DATASET, dataset.to_json())
                self.reporter.phase("training")
                params = TrainParams(
                    epochs=spec.epochs,
                    imgsz=spec.imgsz,
                    batch=spec.batch,
                    patience=spec.patience,
                    seed=SEED,
                    device=self.settings.device,
                )
                best = fine_tune(
                    serving_weights, dataset.train_data, version_dir / "run", params, self.reporter.epoch
                )
                shutil.copyfile(best, version_dir / WEIGHTS)
                self.reporter.phase("evaluating")
                before = evaluate(
                    serving_weights, dataset, spec, spec.imgsz, serving_map, self.settings.device
                )
                after = evaluate(version_dir / WEIGHTS, dataset, spec, spec.imgsz, None, self.settings.device)
            except BaseException:
                shutil.rmtree(version_dir, ignore_errors=True)  # nothing half-made stays behind
                raise
            finally:
                shutil.rmtree(
                    version_dir / "dataset", ignore_errors=True
                )  # copies of the images; summary kept
            promoted, message = decide(spec.promote, before.score, after.score, serving_name, before.metric)
            write_json_atomic(
                version_dir / METRICS,
                {
                    "task": spec.task,
                    "metric": before.metric,
                    "serving": {"model": serving_name, **before.to_json()},
                    "new": {"model": version_dir.name, **after.to_json()},
                    "promoted": promoted,
                    "decision": message,
                    "base_weights": serving_name,
                    "params": params.__dict__,
                    "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
            )
            if promoted:
                self.store.promote(project, spec.from_name, version_dir.name)  # the one atomic switch
            return Outcome(version_dir.name, promoted, message)

    def run_timeline(self, project: str, spec: Any) -> Outcome:
        """A trainable TimelineLabels: a sequence head on the classifier's frame features (training/timeline.py)."""
        from training.timeline import TimelineTraining

        self.reporter.phase("fetching annotations")
        picked = annotated_tasks(self.tasks_source(project), spec.from_name)

        def fetch(url: Any, task_id: int) -> Path:
            return self.media.local_path(
                url, task_id, max_bytes=self.settings.max_video_bytes, project=project
            )

        done = TimelineTraining(self.settings, self.registry, self.store, self.reporter, SEED).run(
            project, spec, picked, fetch
        )
        return Outcome(done.version, done.promoted, done.message)


@dataclass
class TaskErrors:
    task_id: int
    missed: int  # annotated regions the model did not find (IoU >= 0.5, same label)
    false: int  # regions the model found that no annotation has


@dataclass
class ProjectEvaluation:
    model: str
    evaluation: Any  # training.evaluation.Evaluation
    tasks: list[TaskErrors]


def evaluate_project(
    run: TrainingRun, project: str, control: str, label_config: str, model_path: str = ""
) -> ProjectEvaluation:
    """How good a model (the served one, or `model_path` in MODEL_ROOT) is on every annotated task."""

    spec = run.spec_for(label_config, control)
    if spec.kind == "timeline":  # its held-out scores are in each version's metrics.json
        raise TrainingDataError(
            f"evaluate scores image models; for the timeline head of '{control}' see `cli.py models` "
            "(per-label frame F1 of each version on its held-out videos, in metrics.json)"
        )
    with contextlib.ExitStack() as held:
        images = run.images(project, spec, held)
        return _evaluate_images(run, project, spec, images, model_path)


def _evaluate_images(
    run: TrainingRun, project: str, spec: Any, images: list[Any], model_path: str
) -> ProjectEvaluation:
    from training.dataset import write_dataset
    from training.evaluation import evaluate

    if model_path:
        weights, label_map, name = run.registry.resolve(model_path), dict(spec.label_map), model_path
        if not weights.is_file():
            raise BackendError(f"model file '{model_path}' not found in MODEL_ROOT")
    else:
        weights, label_map, name = run.serving_model(project, spec)
    with tempfile.TemporaryDirectory(prefix="evaluate-") as folder:
        run.reporter.phase("evaluating")
        dataset = write_dataset(
            images,
            spec,
            Path(folder) / "dataset",
            seed=SEED,
            val_fraction=1.0,
            min_images=1,
            require_every_label=False,
        )
        evaluation = evaluate(weights, dataset, spec, spec.imgsz, label_map, run.settings.device)
    return ProjectEvaluation(name, evaluation, task_errors(weights, images, spec, label_map, run.settings))


def task_errors(
    weights: Path, images: list[Any], spec: Any, label_map: dict | None, settings: Settings
) -> list[TaskErrors]:
    """Per task: annotated regions the model missed and regions it found that no annotation has (boxes
    matched at IoU 0.5, around the polygon or rotated box for segment and obb; classify: the top-1 choice)."""
    from ultralytics import YOLO

    from training.dataset import label_lines

    model = YOLO(str(weights))
    names = {int(k): str(v) for k, v in model.names.items()}
    to_label = {i: label_map.get(n) for i, n in names.items()} if label_map else dict(names)
    errors = []
    for image in images:
        lines = label_lines(image, spec)
        result = model.predict(str(image.image_path), imgsz=spec.imgsz, conf=0.25, verbose=False)[0]
        if spec.task == "classify":
            errors.append(choice_errors(image.task_id, lines, to_label.get(int(result.probs.top1)), spec))
            continue
        truth = [line_box(line, spec, image.width, image.height) for line in lines]
        boxes = result.boxes if result.boxes is not None else result.obb  # an OBB model has no .boxes
        found = [
            (to_label[int(c)], tuple(map(float, xyxy)))
            for c, xyxy in zip(boxes.cls.tolist(), boxes.xyxy.tolist(), strict=True)
            if to_label.get(int(c)) in spec.labels
        ]
        matched = match_boxes(truth, found)
        errors.append(TaskErrors(image.task_id, len(truth) - matched, len(found) - matched))
    return errors


def choice_errors(task_id: int, lines: list[str], predicted: str | None, spec: Any) -> TaskErrors:
    """A classified image: the annotated choice missed, and a wrong choice found (a label of the control)."""
    truth = spec.labels[int(lines[0])] if lines else None
    found = predicted if predicted in spec.labels else None
    return TaskErrors(
        task_id, int(truth is not None and found != truth), int(found is not None and found != truth)
    )


def line_box(line: str, spec: Any, width: int, height: int) -> tuple[str, tuple[float, ...]]:
    """(label, pixel xyxy) of one YOLO label line: its box (detect, pose), or the box around its points."""
    cls, *numbers = (float(v) for v in line.split())
    if spec.task in ("detect", "pose"):  # pose: the keypoints follow the box
        cx, cy, w, h = numbers[:4]
        xyxy = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    else:
        xs, ys = numbers[0::2], numbers[1::2]
        xyxy = (min(xs), min(ys), max(xs), max(ys))
    return spec.labels[int(cls)], (xyxy[0] * width, xyxy[1] * height, xyxy[2] * width, xyxy[3] * height)


def match_boxes(
    truth: list[tuple[str, tuple]], found: list[tuple[str, tuple]], threshold: float = 0.5
) -> int:
    """Greedy one-to-one matches of equal label and IoU >= threshold."""
    used: set[int] = set()
    matched = 0
    for label, box in truth:
        best, best_iou = None, threshold
        for index, (other_label, other) in enumerate(found):
            if index not in used and other_label == label and (iou := box_iou(box, other)) >= best_iou:
                best, best_iou = index, iou
        if best is not None:
            used.add(best)
            matched += 1
    return matched


def box_iou(a: tuple, b: tuple) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def decide(
    promote: str, serving: float, new: float, serving_name: str, metric: str = "map50_95"
) -> tuple[bool, str]:
    """Promote when the new model is better on the main metric (mAP50-95; classify: top-1 accuracy), or
    always when the control asks for it."""
    figures = f"{METRIC_LABELS.get(metric, metric)} {new:.4f} (new) vs {serving:.4f} ({serving_name})"
    if promote == "always":
        return True, f'promoted (model_train_promote="always"): {figures}'
    if new > serving:
        return True, f"promoted: better, {figures}"
    return False, f"kept, not promoted: not better than the served model, {figures}"


def run_job(state_file: Path, settings: Settings | None = None) -> int:
    """The job process: read the job, train, report; exit status 0 when the job succeeded."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    reporter = JobReporter(state_file)
    job = reporter.job
    try:
        with_nice()
        settings = settings or Settings()
        run = TrainingRun(settings, reporter)
        outcome = run.run(job.project, job.control, job.params.get("label_config", ""))
    except BackendError as error:
        reporter.fail(error.message)
        return 1
    except Exception as error:
        traceback.print_exc()
        reporter.fail(f"{type(error).__name__}: {error}")
        return 1
    reporter.finish(outcome.message, outcome.version, outcome.promoted)
    return 0


def with_nice() -> None:
    """Below the web workers' priority: inference keeps its share of the cores while a job trains."""
    with contextlib.suppress(OSError):
        os.nice(5)


if __name__ == "__main__":
    os.environ.setdefault("ULTRALYTICS_SAFE_LOAD", "true")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    sys.exit(run_job(Path(sys.argv[1])))
