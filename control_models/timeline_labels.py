"""`<TimelineLabels>` on a `<Video>`: temporal segments, from a classifier's classes or from a trained head.

Simple mode (default): the classifier (default `yolov8n-cls.pt`) runs on every frame (or every
`model_vid_stride`-th); each label of the tag maps to model classes (`predicted_values`), and every run
of frames where a label's probability is at least `model_score_threshold` becomes one `timelinelabels`
region. When several classes map to one label, the label's probability on a frame is the best of theirs.

Trainable mode (`model_trainable="true"`, as in the official example): the labels are the project's own,
learnt from its TimelineLabels annotations by a small sequence model (`training/timeline_head.py`) over
the classifier's per-frame features (`inference/features.py`). A training job (Start Training) writes the
head into a version folder; `model.py` binds the served one per request (`with_head`). The head's
per-frame probabilities go through the same `timeline_regions` as simple mode's. Before any head is
served, each task gets an error saying to train first (Label Studio then stores nothing and asks again).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from control_models.attributes import parse_bool, parse_positive_int
from control_models.base import ControlModel, _training_spec
from control_models.video_base import VideoControlModel
from converters.task_score import frame_label_uncertainty, mean_over_frames
from converters.video_regions import timeline_regions
from core.errors import LabelingConfigError, ModelError
from core.settings import Settings
from inference.detections import Classification
from training.spec import SequenceHeadParams


@dataclass
class TimelineLabelsModel(VideoControlModel):
    control_tag: ClassVar[str] = "TimelineLabels"
    model_tasks: ClassVar[tuple[str, ...]] = ("classify",)
    default_model: ClassVar[str] = "yolov8n-cls.pt"

    trainable: bool = False  # model_trainable="true": labels from a trained head, not model classes
    head_path: Path | None = None  # the served head's weights (set per request by `with_head`)
    # The head loaded from head_path, at most one; a bound copy (`with_head`) starts with its own.
    _heads: dict[Path, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    _heads_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    @classmethod
    def from_control(cls, control: Any, settings: Settings, **extra: Any) -> ControlModel:
        if not parse_bool(control.attr.get("model_trainable")):
            return super().from_control(control, settings, **extra)
        attrs = dict(control.attr)
        if (attrs.get("model_format") or settings.model_format) not in ("pt", "auto"):
            raise LabelingConfigError(
                f'<TimelineLabels name="{control.name}"> has model_trainable="true": its head reads the '
                'classifier\'s inner features, which only a .pt model gives; set model_format="pt"'
            )
        # Always the .pt (auto included): an INT8 export gives class probabilities, not the features.
        model = replace(super().from_control(control, settings, trainable=True, **extra), model_format="pt")
        params = SequenceHeadParams(
            vid_stride=model.vid_stride,
            threshold=model.score_threshold,
            epochs=parse_positive_int(
                attrs, "model_classifier_epochs", SequenceHeadParams.epochs, control.name
            ),
            sequence_size=parse_positive_int(
                attrs, "model_classifier_sequence_size", SequenceHeadParams.sequence_size, control.name
            ),
            hidden_size=parse_positive_int(
                attrs, "model_classifier_hidden_size", SequenceHeadParams.hidden_size, control.name
            ),
            num_layers=parse_positive_int(
                attrs, "model_classifier_num_layers", SequenceHeadParams.num_layers, control.name
            ),
        )
        spec = _training_spec(
            cls, control, attrs, model.labels, model.value_key, model.model_path, model.model_format
        )
        # task: the feature model's; kind tells training_pipeline.py and model.py this is a head, not YOLO.
        return replace(model, training=replace(spec, task="classify", kind="timeline", head=params))

    def predict_options(self) -> dict[str, Any]:
        return {}  # a classifier has no confidence or NMS threshold

    @property
    def reads_features(self) -> bool:
        return self.trainable

    def unmatched_labels(self, class_names: Mapping[int, str]) -> list[str]:
        # A trained head's outputs are the labels themselves; the classifier's class names do not matter.
        return [] if self.trainable else super().unmatched_labels(class_names)

    def with_head(self, head_path: Path) -> TimelineLabelsModel:
        """This control serving the trained head at `head_path` (the classifier stays: it gives features)."""
        return replace(self, head_path=head_path)

    def head(self) -> Any:
        """The served head, loaded on first use (a few KB; ModelLoadError when it cannot be read)."""
        from training.timeline_head import load_head

        if self.head_path is None:
            raise ModelError(
                f'<TimelineLabels name="{self.from_name}"> has model_trainable="true" and no trained model '
                "for this project yet: annotate a few videos with it, then press Start Training "
                f"(project Settings -> Model) or run `python cli.py train --project ID --control {self.from_name}`"
            )
        with self._heads_lock:
            if self.head_path not in self._heads:
                self._heads[self.head_path] = load_head(self.head_path.parent, self.head_path.name)
            return self._heads[self.head_path]

    def start_video(self, class_names: Mapping[int, str]) -> ProbabilitySession | HeadSession:
        if not self.trainable:
            return ProbabilitySession(self, self.label_map(class_names))
        head = self.head()
        if head.meta.feature_model != self.model_path:
            raise ModelError(
                f'the trained timeline head of <TimelineLabels name="{self.from_name}"> reads the features '
                f"of '{head.meta.feature_model}', but the control now names model_path '{self.model_path}': "
                "train again (Start Training)"
            )
        labels = [label for label in self.labels if label in head.labels]
        if not labels:
            raise ModelError(
                f'the trained timeline head of <TimelineLabels name="{self.from_name}"> knows the labels '
                f"{', '.join(head.labels)}, none of which the labeling config has now: train again"
            )
        return HeadSession(self, head, labels)

    def uncertainty_of(self, probs: np.ndarray) -> float | None:
        """The video's uncertainty from (frames, labels) probabilities; None in confidence mode."""
        if not self.scores_uncertainty:
            return None
        return mean_over_frames(frame_label_uncertainty(probs)) if len(probs) else 0.0

    def timeline(self, probs: np.ndarray, labels: list[str], frames_count: int) -> list[dict]:
        """Regions for (rows, labels) probabilities of the processed frames, in either mode."""
        return timeline_regions(
            from_name=self.from_name,
            to_name=self.to_name,
            probs=probs,
            labels=labels,
            threshold=self.score_threshold,
            frames_count=frames_count,
            step=self.vid_stride,
        )


class ProbabilitySession:
    """One video's per-frame label probabilities (frames x labels, small), turned into runs at the end."""

    def __init__(self, control: TimelineLabelsModel, label_map: dict[int, str]):
        self._control = control
        # Labels in the config's order; each with the model classes that stand for it.
        self._labels = [label for label in control.labels if label in label_map.values()]
        self._classes = [
            np.array([i for i, mapped in label_map.items() if mapped == label], dtype=np.int64)
            for label in self._labels
        ]
        self._rows: list[np.ndarray] = []

    def uncertainty(self) -> float | None:
        rows = np.stack(self._rows) if self._rows else np.empty((0, len(self._labels)), np.float32)
        return self._control.uncertainty_of(rows)

    def add(self, frame: int, output: Classification, image: np.ndarray) -> None:
        probs = np.asarray(output.probs, dtype=np.float32)
        self._rows.append(
            np.array([probs[classes].max() if len(classes) else 0.0 for classes in self._classes], np.float32)
        )

    def regions(self, frames_count: int, fps: float) -> list[dict]:
        if not self._rows or not self._labels:
            return []
        return self._control.timeline(np.stack(self._rows), self._labels, frames_count)


class HeadSession:
    """One video's per-frame features (frames x 256 floats for yolov8n-cls); the head reads them all at
    the end, both ways along the video, and its probabilities become runs."""

    def __init__(self, control: TimelineLabelsModel, head: Any, labels: list[str]):
        self._control = control
        self._head = head
        self._labels = labels  # the config's labels the head knows, in the config's order
        self._columns = [head.labels.index(label) for label in labels]
        self._rows: list[np.ndarray] = []
        self._probs = np.empty((0, len(labels)), np.float32)  # the head's, for the labels, once read

    def add(self, frame: int, output: np.ndarray, image: np.ndarray) -> None:
        self._rows.append(np.asarray(output, dtype=np.float32).reshape(-1))

    def uncertainty(self) -> float | None:
        return self._control.uncertainty_of(self._probs)

    def regions(self, frames_count: int, fps: float) -> list[dict]:
        if not self._rows:
            return []
        probs = self._head.probabilities(np.stack(self._rows))
        self._probs = probs[:, self._columns]
        return self._control.timeline(self._probs, self._labels, frames_count)
