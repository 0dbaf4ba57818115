"""The YOLO image kind of the training job, and the same steps scoring a model for `cli.py evaluate`.

collect: annotated tasks -> images fetched one at a time into a YOLO dataset (`training/images.py`);
train: Ultralytics fine-tunes the served model; evaluate: `training/evaluation.py` scores the served
and the new model on the same held-out tasks; decide: better on the main metric (or "always").
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.errors import BackendError, LabelingConfigError
from inference.model_registry import ModelRegistry
from media.loader import MediaLoader
from training.dataset import DatasetSummary, DatasetWriter
from training.evaluation import Evaluation, evaluate
from training.images import collect_images
from training.int8 import export_trained, wants_int8
from training.skeleton import Base, Collected, Extras, Picked, TrainingJob, file_size, held_out_note
from training.spec import TrainingSpec
from training.split import VAL_FRACTION, Split
from training.trainer import TrainParams, fine_tune
from training.versions import METRIC_LABELS, WEIGHTS, Draft, VersionStore

SEED = 0


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


@dataclass
class ServingModel:
    weights: Path
    label_map: dict[str, str] | None  # class name -> label; None: its names are the labels
    name: str


def serving_model(
    store: VersionStore, registry: ModelRegistry, project: str, spec: TrainingSpec, served: str | None
) -> ServingModel:
    """The weights served now (the `served` version, else the configured model) and how to read them."""
    if served is not None and store.weights(project, spec.from_name, served).is_file():
        return ServingModel(store.weights(project, spec.from_name, served), None, served)
    loaded = registry.get(spec.model_path)  # downloads official weights when allowed and online
    if spec.task != "detect" and loaded.task != spec.task:  # detect fine-tunes any model with boxes
        raise LabelingConfigError(
            f"model '{spec.model_path}' is a {loaded.task} model; {spec.tag} trains a {spec.task} model"
        )
    return ServingModel(registry.resolve(loaded.name), dict(spec.label_map), spec.model_path)


class ImageTraining(TrainingJob):
    """Fine-tune the control's YOLO model on its annotated images."""

    val_fraction = VAL_FRACTION

    def __init__(
        self,
        settings: Any,
        registry: ModelRegistry,
        store: VersionStore,
        reporter: Any,
        media: MediaLoader,
        log: Any = print,
    ):
        super().__init__(settings, store, reporter, log)
        self.registry = registry
        self.media = media
        self.params: TrainParams | None = None

    def base(self, project: str, spec: TrainingSpec, served: str | None) -> Base:
        model = serving_model(self.store, self.registry, project, spec, served)
        return Base(model.name, served, file_size(model.weights), model)

    def collect(
        self, project: str, spec: TrainingSpec, picked: Picked, draft: Draft, split: Split
    ) -> Collected:
        writer = DatasetWriter(spec, draft.path / "dataset", split)
        collect_images(picked, spec, self.media, writer, self.settings, project, self.log)
        self.reporter.phase("writing dataset")
        dataset = writer.finish()
        summary = dataset.to_json()
        self.log(f"{len(dataset.train_task_ids)} task(s) to train on, {len(dataset.val_task_ids)} held out")
        return Collected(dataset, summary, held_out_note(dataset.without_held_out_example))

    def train(self, spec: TrainingSpec, data: DatasetSummary, base: Base, draft: Draft) -> None:
        self.params = TrainParams(
            epochs=spec.epochs,
            imgsz=spec.imgsz,
            batch=spec.batch,
            patience=spec.patience,
            seed=SEED,
            device=self.settings.device,
        )
        run_dir = draft.path / "run"
        best = fine_tune(base.model.weights, data.train_data, run_dir, self.params, self.reporter.epoch)
        os.replace(best, draft.path / WEIGHTS)  # moved, not copied: one copy of the weights
        shutil.rmtree(run_dir / "weights", ignore_errors=True)  # last.pt: not kept

    def evaluate(
        self, spec: TrainingSpec, data: DatasetSummary, base: Base, draft: Draft
    ) -> tuple[Evaluation, Evaluation]:
        device = self.settings.device
        before = evaluate(base.model.weights, data, spec, spec.imgsz, base.model.label_map, device)
        after = evaluate(draft.path / WEIGHTS, data, spec, spec.imgsz, None, device)
        return before, after

    def decide(
        self, spec: TrainingSpec, before: Evaluation, after: Evaluation, base: Base
    ) -> tuple[bool, str]:
        return decide(spec.promote, before.score, after.score, base.name, before.metric)

    def serving_extras(self, spec: TrainingSpec, data: DatasetSummary, draft: Draft) -> Extras | None:
        """On a CPU host serving INT8 (MODEL_FORMAT=auto), the new weights' checked INT8 export."""
        if not wants_int8(self.settings, spec):
            return None
        self.reporter.phase("INT8 export")
        made = export_trained(draft.path / WEIGHTS, data, spec.imgsz, self.settings.int8_max_drop)
        self.log(made.sentence)
        return Extras({"int8": made.metrics}, made.sentence)

    def metrics(
        self, spec: TrainingSpec, base: Base, before: Evaluation, after: Evaluation, draft: Draft
    ) -> dict:
        return {
            "task": spec.task,
            "metric": before.metric,
            "serving": {"model": base.name, **before.to_json()},
            "new": {"model": draft.name, **after.to_json()},
            "base_weights": base.name,
            "params": asdict(self.params) if self.params else {},
        }


def score_project(
    settings: Any,
    store: VersionStore,
    registry: ModelRegistry,
    media: MediaLoader,
    project: str,
    spec: TrainingSpec,
    picked: Picked,
    model_path: str = "",
    log: Any = print,
) -> tuple[str, Evaluation]:
    """(model name, its evaluation with per-task errors) on every annotated task: `cli.py evaluate`.

    The same dataset writer and the same `evaluate` as a job's, with every task held out."""
    if model_path:
        model = ServingModel(registry.resolve(model_path), dict(spec.label_map), model_path)
        if not model.weights.is_file():
            raise BackendError(f"model file '{model_path}' not found in MODEL_ROOT")
    else:
        model = serving_model(store, registry, project, spec, store.served(project, spec.from_name))
    with tempfile.TemporaryDirectory(prefix="evaluate-") as folder:
        writer = DatasetWriter(spec, Path(folder) / "dataset", Split(1.0))
        collect_images(picked, spec, media, writer, settings, project, log)
        dataset = writer.finish(min_images=1, require_every_label=False)
        evaluation = evaluate(model.weights, dataset, spec, spec.imgsz, model.label_map, settings.device)
    return model.name, evaluation
