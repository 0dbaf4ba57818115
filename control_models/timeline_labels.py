"""`<TimelineLabels>` on a `<Video>`: temporal segments from a classification model (simple mode).

The classifier (default `yolov8n-cls.pt`) runs on every frame (or every `model_vid_stride`-th); each
label of the tag maps to model classes (`predicted_values`), and every run of frames where a label's
probability is at least `model_score_threshold` becomes one `timelinelabels` region. When several
classes map to one label, the label's probability on a frame is the best of theirs.

Trainable mode (`model_trainable="true"`: a small sequence model trained from the project's
annotations) comes with training; until then such a tag is refused with a message saying so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from control_models.attributes import parse_bool
from control_models.base import ControlModel
from control_models.video_base import VideoControlModel
from converters.video_regions import timeline_regions
from core.errors import LabelingConfigError
from core.settings import Settings
from inference.detections import Classification


@dataclass
class TimelineLabelsModel(VideoControlModel):
    control_tag: ClassVar[str] = "TimelineLabels"
    model_tasks: ClassVar[tuple[str, ...]] = ("classify",)
    default_model: ClassVar[str] = "yolov8n-cls.pt"

    @classmethod
    def from_control(cls, control: Any, settings: Settings, **extra: Any) -> ControlModel:
        if parse_bool(control.attr.get("model_trainable")):
            raise LabelingConfigError(
                f'<TimelineLabels name="{control.name}"> has model_trainable="true": trainable timeline '
                "models come with training, which this backend does not do yet. Remove model_trainable "
                "to label frames with the classification model's own classes (simple mode)."
            )
        return super().from_control(control, settings, **extra)

    def predict_options(self) -> dict[str, Any]:
        return {}  # a classifier has no confidence or NMS threshold

    def start_video(self, class_names: Mapping[int, str]) -> ProbabilitySession:
        return ProbabilitySession(self, self.label_map(class_names))


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

    def add(self, frame: int, output: Classification, image: np.ndarray) -> None:
        probs = np.asarray(output.probs, dtype=np.float32)
        self._rows.append(
            np.array([probs[classes].max() if len(classes) else 0.0 for classes in self._classes], np.float32)
        )

    def regions(self, frames_count: int, fps: float) -> list[dict]:
        if not self._rows or not self._labels:
            return []
        return timeline_regions(
            from_name=self._control.from_name,
            to_name=self._control.to_name,
            probs=np.stack(self._rows),
            labels=self._labels,
            threshold=self._control.score_threshold,
            frames_count=frames_count,
            step=self._control.vid_stride,
        )
