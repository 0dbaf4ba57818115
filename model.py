"""The YOLO backend: `setup`, `predict`, `fit`, in the shape label-studio-ml users know.

One /predict goes: labeling config -> plan of control models (cached) -> media of each task, fetched
in parallel a chunk ahead of inference -> one batched model call per (model file, options) and chunk
-> pure converters (`control.regions`) -> one prediction per task, in task order.

A task whose media fails gets `{"error": ...}` without a `result` key: Label Studio skips such an
entry (it logs it and stores nothing), so the task is predicted again on the next retrieve instead
of keeping an empty prediction. The same holds when some control of the config cannot run (its model
is missing or of the wrong kind): no task gets a prediction without that control's regions.
"""

from __future__ import annotations

import logging
import random
import re
import shutil
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import SecretStr

from control_models import ControlModel
from control_models.labeling_plan import LabelingPlan, PlanCache, check_label_config_size, config_hash
from control_models.video_base import VideoControlModel
from converters.image_regions import prediction_score
from core.errors import (
    BackendError,
    BadRequestError,
    LabelingConfigError,
    LabelStudioAccessError,
    MediaError,
    ModelError,
    WrongModelKindError,
)
from core.settings import Settings
from inference.detections import MaskBudget, from_ultralytics
from inference.features import embedding_options, features_of
from inference.int8_export import MIN_CALIBRATION_IMAGES, Int8Check
from inference.model_registry import LoadedModel, ModelRegistry
from media.label_studio_api import LabelStudioAuth
from media.loader import MediaLoader, short_url
from media.video import Deadline, VideoReader
from training.jobs import JobRunner, count_event
from training.runners import job_runner
from training.versions import ServedVersions, VersionStore

logger = logging.getLogger(__name__)

_MAX_SETUP_PROJECTS = 256
ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
GroupKey = tuple[str, str, str, tuple]  # (model path, model format, data key, predict options)


@dataclass
class TaskOutcome:
    """What one task gets: regions, or the reason it has none."""

    task_id: Any
    regions: list[dict] = field(default_factory=list)
    error: str | None = None


@dataclass
class PredictionRun:
    """The outcome of one /predict: per task, plus the controls that could not run at all."""

    model_version: str
    tasks: list[TaskOutcome]
    control_errors: dict[str, str]
    # Per control: its labels that match no model class (Label Studio never shows these; the log and
    # the try-it page do).
    label_warnings: dict[str, str] = field(default_factory=dict)
    # Seconds spent inside each model's calls during this run (the /metrics histogram per model).
    inference_seconds: dict[str, float] = field(default_factory=dict)
    # Bytes of brush masks this run may still decode (MAX_MASK_BYTES); None: no limit.
    mask_budget: MaskBudget | None = None

    def refuse_every_task(self) -> None:
        """Some controls cannot run: no task gets a prediction, each gets an error naming them.

        Label Studio stores a prediction for good under its model_version and never asks again, so a
        prediction without the failed controls' regions would stay wrong after the model is fixed.
        """
        failed = "; ".join(f"<{name}>: {message}" for name, message in self.control_errors.items())
        error = (
            f"not predicted, because some controls of the labeling config cannot run ({failed}); fix their "
            'models, or add model_skip="true" to those controls, and the task is predicted at the next retrieve'
        )
        for outcome in self.tasks:
            outcome.regions = []
            outcome.error = outcome.error or error

    def failed_tasks(self) -> int:
        return sum(outcome.error is not None for outcome in self.tasks)

    def results(self) -> list[dict]:
        results = []
        for outcome in self.tasks:
            if outcome.error is not None:
                results.append({"task": outcome.task_id, "error": outcome.error})
            else:
                results.append(
                    {
                        "result": outcome.regions,
                        "score": prediction_score(outcome.regions),
                        "model_version": self.model_version,
                    }
                )
        return results


@dataclass
class Int8Export:
    """What `YOLOBackend.export_int8` did for one model: its checked export, or why there is none."""

    controls: list[str]
    model_path: str
    folder: Path | None = None
    check: Int8Check | None = None
    made_now: bool = False  # False: an export made before was found (no images were fetched)
    images: int = 0  # calibration images written (held-out ones included)
    skipped: list[str] = field(default_factory=list)  # tasks whose image could not be used, and why
    error: str | None = None


class YOLOBackend:
    """Owns the plan cache, the model registry and the media loader of one server process."""

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
        # Jobs run in their own processes or on RQ workers (REDIS_URL), never in this one's threads.
        self.jobs = jobs or job_runner(settings)
        self.plans = PlanCache(settings)
        self._env_auth = (
            LabelStudioAuth(settings.label_studio_url, settings.label_studio_api_key.get_secret_value())
            if settings.label_studio_url
            else None
        )
        # Credentials /setup brought, per Label Studio project (used when the environment has none).
        self._setup_auths: OrderedDict[str, LabelStudioAuth] = OrderedDict()
        self._setup_auths_lock = threading.Lock()
        self._trained_controls: OrderedDict[tuple, ControlModel] = OrderedDict()
        self._served_paths: dict[tuple[str, str], str | None] = {}
        self.media = MediaLoader(settings, self.label_studio_auth)
        self._downloads = ThreadPoolExecutor(settings.download_workers, thread_name_prefix="media")

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
        if hostname and access_token and not self.settings.label_studio_api_key.get_secret_value():
            with self._setup_auths_lock:
                key = project_key(project) or ""
                self._setup_auths.pop(key, None)
                self._setup_auths[key] = LabelStudioAuth(hostname, access_token)
                while len(self._setup_auths) > _MAX_SETUP_PROJECTS:
                    self._setup_auths.popitem(last=False)
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

    def served_model_paths(self, plan: LabelingPlan, project: Any) -> dict[str, str]:
        """from_name -> the trained weights this project serves for that control (stat per request)."""
        key = project_key(project)
        paths = {}
        for control in plan.controls:
            path = self.served.model_path(key, control.from_name) if key else None
            if path:
                paths[control.from_name] = path
            self._unload_replaced(key, control.from_name, path)
        return paths

    def _unload_replaced(self, project: str | None, control: str, path: str | None) -> None:
        """After a promotion or rollback, the version served before leaves this worker's memory."""
        if not project:
            return
        with self._setup_auths_lock:
            previous = self._served_paths.get((project, control))
            if previous == path:
                return
            self._served_paths[(project, control)] = path
        if previous:
            self.registry.unload(previous)

    def predict(
        self,
        tasks: Sequence[Mapping[str, Any]],
        label_config: str,
        project: Any = None,
        uploads: Mapping[str, Path] | None = None,
        missing_key_fails_request: bool = True,
    ) -> PredictionRun:
        """One prediction per task; `project` is Label Studio's project id ("7.1700000000" or 7).

        `tasks` have the `core.tasks.Task` shape, checked where they come in (/predict's body, cli.py).

        A data key that no task of the call has is a config/data mismatch worth a 4xx for /predict
        (`missing_key_fails_request`); a caller that predicts a project in small batches (cli.py) turns
        it off, so such a task gets its own error and the other tasks go on.

        `uploads` maps task media URLs to files already on this machine for this call only (the try-it
        page's uploads): only an in-process caller can pass it, so no /predict body can name such a file.
        """
        uploads = uploads or {}
        plan = self.plans.get(label_config)
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
        trained = self.served_model_paths(plan, project)
        controls = [
            self._trained_control(plan, c, trained[c.from_name]) if c.from_name in trained else c
            for c in plan.controls
        ]
        image_controls = [c for c in controls if "Image" in c.object_tags]
        video_controls = [c for c in controls if "Video" in c.object_tags]
        if missing_key_fails_request:
            _require_data_keys(checked, image_controls + video_controls)
        image_groups, video_groups = _group_by_model(image_controls), _group_by_model(video_controls)
        image_models = self._load_models(image_groups, run)
        video_models = self._load_models(video_groups, run)
        if run.control_errors:
            if len(run.control_errors) == len(plan.controls):
                raise ModelError("; ".join(f"{name}: {msg}" for name, msg in run.control_errors.items()))
            run.refuse_every_task()
            return run
        self._predict_images(checked, image_groups, image_models, run, uploads)
        self._predict_videos(checked, video_groups, video_models, run, uploads)
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
            raise LabelStudioAccessError(
                "training needs Label Studio's address and an API key: set LABEL_STUDIO_URL and "
                "LABEL_STUDIO_API_KEY on the backend (the job fetches the annotations itself)"
            )
        return {
            **settings_environment(self.settings),
            "LABEL_STUDIO_URL": auth.base_url,
            "LABEL_STUDIO_API_KEY": auth.api_key,
        }

    def _trained_control(self, plan: LabelingPlan, control: ControlModel, model_path: str) -> ControlModel:
        """The control bound to its trained weights; kept so its label map is built once per version."""
        key = (plan.config_hash, control.from_name, model_path)
        with self._setup_auths_lock:
            bound = self._trained_controls.get(key)
            if bound is None and control.training is not None and control.training.kind == "timeline":
                # A trained TimelineLabels head: the classifier stays (it gives the features the head reads).
                bound = control.with_head(self.settings.model_root / model_path)
                self._trained_controls[key] = bound
            if bound is None:
                # A trained model's classes are the labels themselves: predicted_values no longer apply.
                labels = {
                    label: {k: v for k, v in attrs.items() if k != "predicted_values"}
                    for label, attrs in control.labels.items()
                }
                bound = replace(control, model_path=model_path, labels=labels)
                self._trained_controls[key] = bound
                while len(self._trained_controls) > _MAX_SETUP_PROJECTS:
                    self._trained_controls.popitem(last=False)
        return bound

    # -- INT8 exports ---------------------------------------------------------------------------------

    def export_int8(
        self,
        label_config: str,
        tasks: Sequence[dict],
        folder: Path,
        project: Any = None,
        controls: Sequence[str] | None = None,
        limit: int = 64,
    ) -> list[Int8Export]:
        """The checked INT8 export of each image control's model (or the controls named), calibrated on
        the project's own images: what `model_format="openvino-int8"` serves from then on.

        Per model (the version this project serves, else the configured one): an export made before is
        kept as it is. Otherwise up to `limit` of the tasks' images, spread over the project, are fetched
        as /predict fetches them (`MediaLoader`: the same auth and limits) into `folder/<control>/`, and
        the export and accuracy check of a first `openvino-int8` request run on them, into the cache that
        request reads. Too few images: refused, nothing kept; never calibrated on anything else.
        """
        plan = self.plans.get(label_config)
        chosen = [c for c in plan.controls if not controls or c.from_name in controls]
        missing = sorted(set(controls or ()) - {c.from_name for c in chosen})
        if missing:
            raise LabelingConfigError(f"the labeling config has no control named {', '.join(missing)}")
        image_controls = [c for c in chosen if "Image" in c.object_tags]
        if not image_controls:
            raise LabelingConfigError(
                "INT8 exports are calibrated on images: the labeling config has no control on an <Image>"
                + (" among those named" if controls else "")
            )
        key = project_key(project)
        by_model: dict[str, list[ControlModel]] = defaultdict(list)
        for control in image_controls:
            served = self.served.model_path(key, control.from_name) if key else None
            by_model[served or control.model_path].append(control)
        return [
            self._export_int8(model_path, group, list(tasks), folder, limit)
            for model_path, group in by_model.items()
        ]

    def _export_int8(
        self, model_path: str, group: list[ControlModel], tasks: list[dict], folder: Path, limit: int
    ) -> Int8Export:
        outcome = Int8Export(controls=[c.from_name for c in group], model_path=model_path)
        images = folder / re.sub(r"[^\w.-]", "_", group[0].from_name)
        try:
            cached = self.registry.cached_int8_export(model_path)
            if cached is not None:
                outcome.folder, outcome.check = cached
                return outcome
            outcome.images = self._write_calibration_images(
                tasks, sorted({c.value_key for c in group}), images, limit, outcome.skipped
            )
            if outcome.images < MIN_CALIBRATION_IMAGES:
                raise MediaError(
                    f"{outcome.images} of {len(tasks)} task(s) gave an image for {', '.join(outcome.controls)}: "
                    f"an INT8 export needs at least {MIN_CALIBRATION_IMAGES} images like the ones you label "
                    "(import more into the project); it is never calibrated on random data"
                )
            outcome.folder, outcome.check = self.registry.export_int8(model_path, images)
            outcome.made_now = True
        except BackendError as error:
            outcome.error = error.message
        finally:
            shutil.rmtree(images, ignore_errors=True)  # the export keeps what it needs
        return outcome

    def _write_calibration_images(
        self, tasks: list[dict], value_keys: list[str], folder: Path, limit: int, skipped: list[str]
    ) -> int:
        """Write up to `limit` of the tasks' images into `folder` (PNG), in a fixed shuffle of the tasks
        (spread over the project, the same on every run); note the tasks left out in `skipped`."""
        import cv2

        folder.mkdir(parents=True, exist_ok=True)
        order = list(tasks)
        random.Random(0).shuffle(order)
        written = 0
        chunk_size = self.settings.download_workers * 2
        for chunk_start, chunk in self._prefetched_chunks(order, value_keys, chunk_size, {}):
            for key in value_keys:
                for position, image in enumerate(chunk[key]):
                    task_id = order[chunk_start + position].get("id")
                    if isinstance(image, BackendError):
                        skipped.append(f"task {task_id}: {image.message}")
                    elif written < limit:
                        cv2.imwrite(
                            str(folder / f"{written:05d}.png"), image, [cv2.IMWRITE_PNG_COMPRESSION, 1]
                        )
                        written += 1
            if written >= limit:
                break
        return written

    # -- Label Studio access --------------------------------------------------------------------------

    def label_studio_auth(self, project: Any = None) -> LabelStudioAuth | None:
        """Environment first (LABEL_STUDIO_URL/API_KEY); else what this project's own /setup brought.

        Never another project's: anyone who can reach /setup could otherwise point every project's media
        (and its key) at a host of their choosing.
        """
        if self._env_auth is not None and self._env_auth.configured:
            return self._env_auth
        with self._setup_auths_lock:
            auth = self._setup_auths.get(project_key(project) or "")
        return auth or self._env_auth

    # -- images ---------------------------------------------------------------------------------------

    def _predict_images(
        self,
        tasks: list[dict],
        groups: dict[GroupKey, list[ControlModel]],
        models: dict[GroupKey, LoadedModel],
        run: PredictionRun,
        uploads: Mapping[str, Path],
    ) -> None:
        if not models:
            return
        value_keys = sorted({key[2] for key in models})
        chunk_size = max(model.batch_size for model in models.values())
        for chunk_start, images in self._prefetched_chunks(tasks, value_keys, chunk_size, uploads):
            for key in value_keys:
                for position, image in enumerate(images[key]):
                    if isinstance(image, BackendError):
                        outcome = run.tasks[chunk_start + position]
                        outcome.error = outcome.error or image.message
            for key, model in models.items():
                _, _, value_key, options = key
                self._infer_group(model, options, groups[key], images[value_key], chunk_start, run)

    def _load_models(
        self, groups: dict[GroupKey, list[ControlModel]], run: PredictionRun
    ) -> dict[GroupKey, LoadedModel]:
        """Load each model once; a control whose model fails is reported and left out."""
        models: dict[GroupKey, LoadedModel] = {}
        for key, group in groups.items():
            try:
                model = self.registry.get(key[0], model_format=key[1])
                for control in group:
                    _check_task(control, model)
                models[key] = model
                for control in group:
                    _note_unmatched_labels(control, model, run)
            except BackendError as error:
                for control in group:
                    run.control_errors[control.from_name] = error.message
                logger.warning(
                    "Controls %s get no predictions: %s", [c.from_name for c in group], error.message
                )
        return models

    def _infer_group(
        self,
        model: LoadedModel,
        options: tuple,
        group: list[ControlModel],
        images: list[np.ndarray | BackendError],
        chunk_start: int,
        run: PredictionRun,
    ) -> None:
        positions = [
            i
            for i, image in enumerate(images)
            if isinstance(image, np.ndarray) and run.tasks[chunk_start + i].error is None
        ]
        if not positions:
            return
        results = _timed_predict(model, [images[i] for i in positions], dict(options), run)
        with_masks = any(c.needs_masks for c in group)
        for position, result in zip(positions, results, strict=True):
            outcome = run.tasks[chunk_start + position]
            try:
                output = from_ultralytics(result, with_masks=with_masks, mask_budget=run.mask_budget)
            except BackendError as error:  # over MAX_MASK_BYTES: this task only
                outcome.error = error.message
                continue
            for control in group:
                outcome.regions.extend(control.regions(output, model.class_names))

    def _prefetched_chunks(
        self, tasks: list[dict], value_keys: list[str], chunk_size: int, uploads: Mapping[str, Path]
    ) -> Iterator[tuple[int, dict[str, list[np.ndarray | BackendError]]]]:
        """Yield (start, images per data key) chunk by chunk, downloading the next chunk meanwhile.

        A task whose image fails has the error in place of its image.
        """
        starts = list(range(0, len(tasks), chunk_size))
        pending = self._submit_chunk(tasks, starts[0], chunk_size, value_keys, uploads) if starts else None
        for index, start in enumerate(starts):
            futures = pending
            pending = (
                self._submit_chunk(tasks, starts[index + 1], chunk_size, value_keys, uploads)
                if index + 1 < len(starts)
                else None
            )
            # Bounded: a download never outlives its deadline, so neither does a wait queued behind it.
            wait_until = time.monotonic() + self.settings.media_wait_timeout
            yield start, {key: [_result_or_error(f, wait_until) for f in futures[key]] for key in value_keys}

    def _submit_chunk(
        self,
        tasks: list[dict],
        start: int,
        chunk_size: int,
        value_keys: list[str],
        uploads: Mapping[str, Path],
    ) -> dict[str, list[Future]]:
        chunk = tasks[start : start + chunk_size]
        return {
            key: [self._downloads.submit(self._load_task_image, task, key, uploads) for task in chunk]
            for key in value_keys
        }

    def _load_task_image(self, task: dict, value_key: str, uploads: Mapping[str, Path]) -> np.ndarray:
        url = _media_url(task, value_key)
        if isinstance(url, str) and url in uploads:
            return self.media.decode_image(uploads[url], name="the uploaded image")
        return self.media.load_image(url, task.get("id"), project=project_key(task.get("project")))

    # -- videos ---------------------------------------------------------------------------------------

    def _predict_videos(
        self,
        tasks: list[dict],
        groups: dict[GroupKey, list[ControlModel]],
        models: dict[GroupKey, LoadedModel],
        run: PredictionRun,
        uploads: Mapping[str, Path],
    ) -> None:
        """Per task: fetch its video once, then stream it through each video control's model.

        Frames are decoded a batch at a time (`VideoReader`), each batch is one model call under that
        model's scheduler (so image requests take turns with a long video), and every control gets a fresh
        session (its tracker, its probabilities) per video: no state passes between videos or requests.
        A task whose video cannot be fetched or decoded gets `outcome.error`, like a broken image.
        """
        runnable = [
            (control, models[key]) for key, group in groups.items() if key in models for control in group
        ]
        for position, task in enumerate(tasks):
            outcome = run.tasks[position]
            if outcome.error is not None or not runnable:
                continue
            paths: dict[str, Path] = {}
            regions: list[dict] = []
            deadline = Deadline(self.settings.max_video_task_seconds)
            try:
                with ExitStack() as held:  # each video stays in the media cache while it is read
                    for control, model in runnable:
                        if control.value_key not in paths:
                            paths[control.value_key] = self._task_video(
                                task, control.value_key, uploads, held
                            )
                        path = paths[control.value_key]
                        regions.extend(self._predict_video(path, control, model, task["data"], run, deadline))
            except BackendError as error:
                outcome.error = error.message
                continue
            except Exception as error:  # a decoder crash on one hostile video must not fail the request
                logger.exception("Unexpected error while predicting the video of task %s", task.get("id"))
                outcome.error = f"the video could not be processed ({type(error).__name__})"
                continue
            outcome.regions.extend(regions)

    def _task_video(self, task: dict, value_key: str, uploads: Mapping[str, Path], held: ExitStack) -> Path:
        url = _media_url(task, value_key)
        if isinstance(url, str) and url in uploads:
            return uploads[url]
        return held.enter_context(
            self.media.fetched(
                url,
                task.get("id"),
                max_bytes=self.settings.max_video_bytes,
                project=project_key(task.get("project")),
            )
        )

    def _predict_video(
        self,
        path: Path,
        control: VideoControlModel,
        model: LoadedModel,
        task_data: dict,
        run: PredictionRun,
        deadline: Deadline,
    ) -> list[dict]:
        reader = VideoReader(
            path,
            stride=control.vid_stride,
            max_frames=self.settings.max_video_frames,
            max_pixels=self.settings.max_image_pixels,
            name=f"the video of '{short_url(str(task_data.get(control.value_key)))}'",
            deadline=deadline,
        )
        control.check_frame_rate(reader.info.fps, task_data)
        session = control.start_video(model.class_names)
        options = {
            **control.predict_options(),
            **(embedding_options(model) if control.reads_features else {}),
        }
        for numbers, frames in reader.batches(model.batch_size):
            results = _timed_predict(model, frames, options, run)
            outputs = features_of(results) if control.reads_features else map(from_ultralytics, results)
            for number, frame, output in zip(numbers, frames, outputs, strict=True):
                session.add(number, output, frame)
        return session.regions(reader.frames_count, reader.info.fps)

    def close(self) -> None:
        self._downloads.shutdown(wait=False, cancel_futures=True)


def project_key(project: Any) -> str | None:
    """Label Studio's project id from what it sends: "7.1795316247" in /setup and /predict, 7 in tasks."""
    if project is None or isinstance(project, bool):
        return None
    text = str(project).strip().split(".", 1)[0]
    return text or None


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


def _timed_predict(model: LoadedModel, images: list[np.ndarray], options: dict, run: PredictionRun) -> list:
    started = time.perf_counter()
    results = model.predict(images, **options)
    seconds = time.perf_counter() - started
    run.inference_seconds[model.name] = run.inference_seconds.get(model.name, 0.0) + seconds
    return results


def _result_or_error(future: Future, wait_until: float) -> np.ndarray | BackendError:
    try:
        return future.result(timeout=max(0.0, wait_until - time.monotonic()))
    except FutureTimeoutError:
        future.cancel()
        return BackendError(
            "the media was not fetched in time (DOWNLOAD_TOTAL_TIMEOUT): the downloads are busy"
        )
    except BackendError as error:
        return error
    except Exception as error:  # a decoder crash on hostile bytes must not take the request down
        logger.exception("Unexpected error while loading media")
        return BackendError(f"media could not be loaded ({type(error).__name__})")


def _media_url(task: dict, value_key: str) -> Any:
    """The task's media reference for `value_key`; a task without it fails alone (its own error)."""
    url = task["data"].get(value_key)
    if url is None:
        raise LabelingConfigError(f"task {task.get('id')} has no '{value_key}' field in its data")
    return url


def _group_by_model(controls: list[ControlModel]) -> dict[GroupKey, list[ControlModel]]:
    """Controls that read the same image with the same model and options share one inference call."""
    groups: dict[GroupKey, list[ControlModel]] = defaultdict(list)
    for control in controls:
        options = tuple(sorted(control.predict_options().items()))
        groups[(control.model_path, control.model_format, control.value_key, options)].append(control)
    return dict(groups)


def _note_unmatched_labels(control: ControlModel, model: LoadedModel, run: PredictionRun) -> None:
    unmatched = control.unmatched_labels(model.class_names)
    if unmatched:
        names = list(model.class_names.values())
        shown = ", ".join(names[:30]) + (", ..." if len(names) > 30 else "")
        run.label_warnings[control.from_name] = (
            f"labels {', '.join(unmatched)} match no class of model '{model.name}' (its classes: {shown}); "
            'add predicted_values="<model class>" to those labels'
        )


def _check_task(control: ControlModel, model: LoadedModel) -> None:
    if model.task not in control.model_tasks:
        raise WrongModelKindError(
            f"model '{model.name}' is a {model.task} model, but <{control.control_tag} "
            f'name="{control.from_name}"> needs a {" or ".join(control.model_tasks)} model'
        )


def _require_data_keys(tasks: list[dict], controls: list[ControlModel]) -> None:
    """A data key that no task has is a config/data mismatch worth a 4xx, not N task errors."""
    for key in sorted({c.value_key for c in controls}):
        if not any(key in task["data"] for task in tasks):
            present = sorted({k for task in tasks for k in task["data"]})
            raise LabelingConfigError(
                f"no task has the data field '{key}' that the labeling config reads (value=\"${key}\"); "
                f"tasks have: {', '.join(present) or 'nothing'}"
            )


__all__ = ["Int8Export", "PredictionRun", "TaskOutcome", "YOLOBackend"]
