"""Training a `TimelineLabels` head: annotated videos -> per-frame features and labels -> head -> version.

The classifier is not fine-tuned: it gives every processed frame a feature vector
(`inference/features.py`, the same call serving makes), the annotation gives every frame its labels
(`converters/timeline_frames.py`), and a small sequence model (`training/timeline_head.py`) learns the
labels from the features. Videos, not frames, are split into train and held-out (by a stable hash of
the task id, `training/split.py`): frames of one video are too alike for a frame-level split to say
anything about a new video.

Evaluation scores every frame of the held-out videos, per label: precision, recall and F1 of the
frames the head's ranges cover (rows expanded to frames as `timeline_regions` draws them) against the
annotated frames. The served head, when there is one, is scored on the same videos; the new head is
promoted when its mean F1 is higher (or `model_train_promote="always"`), through the same job skeleton
and "publish a version" step as the image models (`training/skeleton.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converters.timeline_frames import frame_labels, processed_rows, rows_to_frames
from core.errors import BackendError, ModelError, ModelLoadError, TrainingDataError
from core.settings import Settings
from inference.features import frame_features
from inference.model_registry import LoadedModel, ModelRegistry
from media.video import VideoReader
from training.skeleton import Base, Collected, Picked, TrainingJob, file_size, held_out_note
from training.spec import SequenceHeadParams, TrainingSpec
from training.split import Split, split_ids
from training.versions import WEIGHTS, Draft, VersionStore

logger = logging.getLogger(__name__)

MIN_VIDEOS = 2  # one to learn from, one to check on
_NOW = object()  # serving_head's default: read the pointer
VAL_FRACTION = 0.25


@dataclass
class VideoSample:
    """One annotated video as the head sees it."""

    task_id: int
    features: np.ndarray  # (N, D) float32, rows on frames 1, 1 + step, ...
    targets: np.ndarray  # (N, L) bool: the labels of those frames
    truth: np.ndarray  # (F, L) bool: the labels of every frame (what evaluation scores against)

    @property
    def frames_count(self) -> int:
        return len(self.truth)


def video_features(model: LoadedModel, path: Path, stride: int, settings: Settings) -> tuple[np.ndarray, int]:
    """(N, D) features of every `stride`-th frame and the number of frames decoded (limits enforced)."""
    reader = VideoReader(
        path,
        stride=stride,
        max_frames=settings.max_video_frames,
        max_pixels=settings.max_image_pixels,
        name=f"'{path.name}'",
    )
    chunks = [frame_features(model, frames) for _, frames in reader.batches(model.batch_size)]
    return np.concatenate(chunks), reader.frames_count


def make_sample(
    task_id: int,
    features: np.ndarray,
    frames_count: int,
    regions: list[dict],
    labels: tuple[str, ...],
    step: int,
) -> VideoSample:
    """Labels for the frames of one video whose `features` were taken on every `step`-th frame."""
    truth = frame_labels(regions, labels, frames_count)
    targets = processed_rows(truth, step)
    if len(targets) != len(features):
        raise ValueError(f"{len(features)} feature rows for {len(targets)} processed frames")
    return VideoSample(task_id, np.asarray(features, np.float32), targets, truth)


def check_samples(samples: list[VideoSample], spec: TrainingSpec) -> None:
    """Enough videos, and every label annotated somewhere (as for images: a label never shown cannot be learnt)."""
    tag = f'<{spec.control_tag} name="{spec.from_name}">'
    if len(samples) < MIN_VIDEOS:
        raise TrainingDataError(
            f"{len(samples)} annotated video(s) for {tag}; at least {MIN_VIDEOS} are needed: annotate more "
            "tasks (skipped and cancelled ones do not count)"
        )
    seen = np.any(np.concatenate([sample.targets for sample in samples]), axis=0)
    missing = [label for label, found in zip(spec.labels, seen, strict=True) if not found]
    if missing:
        raise TrainingDataError(
            f"no annotated frame of {', '.join(repr(m) for m in missing)} in {tag}: annotate some, "
            "or remove the label"
        )


def split_by_task(
    samples: list[VideoSample], split: Split | None = None
) -> tuple[list[VideoSample], list[VideoSample]]:
    """(train, held-out) videos by the stable hash of their task ids (`training/split.py`): at least one
    held out; the order Label Studio lists them in does not matter."""
    by_id = {sample.task_id: sample for sample in samples}
    train, val = split_ids(sorted(by_id), split or Split(VAL_FRACTION))
    return [by_id[t] for t in train], [by_id[t] for t in val]


# -- evaluation ---------------------------------------------------------------------------------------------


@dataclass
class TimelineEvaluation:
    mean_f1: float  # over the labels with annotated or predicted frames
    precision: float
    recall: float
    per_label: dict[str, dict[str, float]]  # label -> precision, recall, f1, support (annotated frames)
    frames: int  # frames scored

    def to_json(self) -> dict:
        return asdict(self)


def frame_scores(
    truths: list[np.ndarray], predictions: list[np.ndarray], labels: tuple[str, ...]
) -> TimelineEvaluation:
    """Per-label precision, recall and F1 over all frames of all videos: (F_i, L) bool each.

    A label with neither annotated nor predicted frames says nothing and is left out of the means;
    a label with annotations but no prediction scores 0 (and the other way round).

    Example:
        >>> truth = [np.array([[1, 0], [1, 0], [0, 0], [0, 0]], bool)]
        >>> found = [np.array([[1, 0], [0, 0], [1, 0], [0, 0]], bool)]
        >>> result = frame_scores(truth, found, ("Run", "Walk"))
        >>> result.per_label["Run"]["f1"], sorted(result.per_label), result.mean_f1
        (0.5, ['Run'], 0.5)
    """
    truth = np.concatenate(truths) if truths else np.zeros((0, len(labels)), bool)
    found = np.concatenate(predictions) if predictions else np.zeros((0, len(labels)), bool)
    per_label: dict[str, dict[str, float]] = {}
    for column, label in enumerate(labels):
        tp = int(np.sum(truth[:, column] & found[:, column]))
        fp = int(np.sum(~truth[:, column] & found[:, column]))
        fn = int(np.sum(truth[:, column] & ~found[:, column]))
        if tp + fp + fn == 0:
            continue
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[label] = {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}

    def mean(key: str) -> float:
        return float(np.mean([row[key] for row in per_label.values()])) if per_label else 0.0

    return TimelineEvaluation(mean("f1"), mean("precision"), mean("recall"), per_label, len(truth))


def predicted_frames(
    head: Any, sample: VideoSample, labels: tuple[str, ...], threshold: float, step: int
) -> np.ndarray:
    """(F, L) bool: the frames the head's ranges cover, per label of `labels` (a label the head does not
    know covers nothing)."""
    probabilities = head.probabilities(sample.features)
    active = np.zeros((len(probabilities), len(labels)), bool)
    for column, label in enumerate(labels):
        if label in head.labels:
            active[:, column] = probabilities[:, head.labels.index(label)] >= threshold
    return rows_to_frames(active, sample.frames_count, step)


def evaluate_head(
    head: Any, samples: list[VideoSample], labels: tuple[str, ...], params: SequenceHeadParams
) -> TimelineEvaluation:
    found = [predicted_frames(head, s, labels, params.threshold, params.vid_stride) for s in samples]
    return frame_scores([s.truth for s in samples], found, labels)


def decide_head(promote: str, serving: float | None, new: float, serving_name: str) -> tuple[bool, str]:
    """Promote when the new head's mean F1 beats the served head's; the first head (nothing served: the
    control answers "train first") when it finds any annotated frame of the held-out videos at all."""
    against = f"{serving:.4f} ({serving_name})" if serving is not None else "no head served"
    figures = f"mean frame F1 {new:.4f} (new) vs {against}"
    if promote == "always":
        return True, f'promoted (model_train_promote="always"): {figures}'
    if serving is None:
        if new > 0:
            return True, f"promoted: the first trained head, {figures}"
        return False, f"kept, not promoted: it finds no annotated frame of the held-out videos, {figures}"
    if new > serving:
        return True, f"promoted: better, {figures}"
    return False, f"kept, not promoted: not better than the served head, {figures}"


# -- the job --------------------------------------------------------------------------------------------------


class TimelineTraining(TrainingJob):
    """One training job of a trainable `TimelineLabels`; `reporter` receives phases and epochs."""

    val_fraction = VAL_FRACTION
    collect_phase = "extracting features"

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        store: VersionStore,
        reporter: Any,
        media: Any = None,
        log: Callable = print,
    ):
        super().__init__(settings, store, reporter, log)
        self.registry = registry
        self.media = media
        self.left_out: list[str] = []

    def samples(
        self, spec: TrainingSpec, picked: Picked, fetch: Callable[[Any, int], Path]
    ) -> list[VideoSample]:
        """A sample per annotated task; a task whose video cannot be fetched or read is left out (logged)."""
        params = _params(spec)
        model = self.registry.get(spec.model_path)
        samples = []
        annotated = 0
        for task, regions in picked:
            annotated += 1
            task_id = int(task["id"])
            url = (task.get("data") or {}).get(spec.value_key)
            try:
                features, frames_count = video_features(
                    model, fetch(url, task_id), params.vid_stride, self.settings
                )
            except ModelError:
                raise  # the classifier, not this video: every task would fail alike
            except BackendError as error:
                self.left_out.append(f"task {task_id} left out: {error.message}")
                self.log(self.left_out[-1])
                continue
            samples.append(
                make_sample(task_id, features, frames_count, regions, spec.labels, params.vid_stride)
            )
        self.log(f"{len(samples)} annotated video(s) of {annotated} annotated task(s)")
        return samples

    # -- the steps of the job skeleton (training/skeleton.py) --------------------------------------------------

    def base(self, project: str, spec: TrainingSpec, served: str | None) -> Base:
        name, head = self.serving_head(project, spec, served)
        weights = self.store.weights(project, spec.from_name, served) if served else None
        return Base(name, served, file_size(weights), head)

    def collect(
        self, project: str, spec: TrainingSpec, picked: Picked, draft: Draft, split: Split
    ) -> Collected:
        def fetch(url: Any, task_id: int) -> Path:
            return self.media.local_path(
                url, task_id, max_bytes=self.settings.max_video_bytes, project=project
            )

        samples = self.samples(spec, picked, fetch)
        check_samples(samples, spec)
        train, val = split_by_task(samples, split)
        summary = dataset_summary(spec, train, val)
        unseen = [label for label, count in summary["frames_per_label"]["val"].items() if not count]
        summary["without_held_out_example"] = unseen
        return Collected((train, val), summary, held_out_note(unseen))

    def train(self, spec: TrainingSpec, data: Any, base: Base, draft: Draft) -> None:
        from training.timeline_head import train_head

        train, _ = data
        head = train_head(
            [(s.features, s.targets) for s in train],
            spec.labels,
            _params(spec),
            spec.model_path,
            seed=0,
            on_epoch=self.reporter.epoch,
        )
        head.save(draft.path, WEIGHTS)
        self.head = head

    def evaluate(self, spec: TrainingSpec, data: Any, base: Base, draft: Draft) -> tuple[Any, Any]:
        _, val = data
        params = _params(spec)
        after = evaluate_head(self.head, val, spec.labels, params)
        before = evaluate_head(base.model, val, spec.labels, params) if base.model else None
        return before, after

    def decide(self, spec: TrainingSpec, before: Any, after: Any, base: Base) -> tuple[bool, str]:
        return decide_head(spec.promote, before.mean_f1 if before else None, after.mean_f1, base.name)

    def metrics(self, spec: TrainingSpec, base: Base, before: Any, after: Any, draft: Draft) -> dict:
        return {
            "kind": "timeline",
            "serving": {"model": base.name, **(before.to_json() if before else {})},
            "new": {"model": draft.name, **after.to_json()},
            "feature_model": spec.model_path,
            "params": asdict(_params(spec)),
            "left_out": self.left_out,
        }

    def serving_head(self, project: str, spec: TrainingSpec, served: Any = _NOW) -> tuple[str, Any]:
        """(name, head) of the `served` version (default: the one served now); ("none", None) when none
        is, or when it cannot be read any more."""
        from training.timeline_head import load_head

        version = self.store.served(project, spec.from_name) if served is _NOW else served
        if version is None:
            return "none", None
        try:
            head = load_head(self.store.control_dir(project, spec.from_name) / version, WEIGHTS)
        except ModelLoadError as error:
            self.log(f"the served head {version} is not comparable: {error.message}")
            return version, None
        if head.meta.feature_model != spec.model_path:  # it reads another classifier's features
            self.log(f"the served head {version} reads {head.meta.feature_model}: not comparable")
            return version, None
        return version, head


def dataset_summary(spec: TrainingSpec, train: list[VideoSample], val: list[VideoSample]) -> dict:
    """dataset.json: the split by task and the annotated frames per label on each side."""

    def frames(members: list[VideoSample]) -> dict[str, int]:
        if not members:
            return dict.fromkeys(spec.labels, 0)
        counts = np.concatenate([m.truth for m in members]).sum(axis=0)
        return {label: int(count) for label, count in zip(spec.labels, counts, strict=True)}

    return {
        "task": "timeline",
        "names": list(spec.labels),
        "train_task_ids": [s.task_id for s in train],
        "val_task_ids": [s.task_id for s in val],
        "frames_per_label": {"train": frames(train), "val": frames(val)},
    }


def _params(spec: TrainingSpec) -> SequenceHeadParams:
    if spec.kind != "timeline" or spec.head is None:
        raise TrainingDataError(f'<{spec.control_tag} name="{spec.from_name}"> is not a trainable timeline')
    return spec.head
