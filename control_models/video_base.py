"""What the control tags on a `<Video>` share: `model_vid_stride` and a session per video.

An image control turns one model output into regions (`regions`); a video control sees a whole video:
`start_video` gives a fresh `VideoSession` that `model.py` feeds with each processed frame's output,
in frame order, and asks for the regions at the end. The session holds everything that lives for one
video (a tracker, per-frame probabilities), so two videos never share state.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from control_models.attributes import parse_positive_int
from control_models.base import ControlModel
from core.settings import Settings
from inference.detections import Classification, Detections
from media.video import DEFAULT_FPS

logger = logging.getLogger(__name__)


class VideoSession(Protocol):
    def add(self, frame: int, output: Detections | Classification | np.ndarray, image: np.ndarray) -> None:
        """One processed frame (1-based number), its model output (its feature vector when the control
        `reads_features`) and its pixels (BGR)."""

    def regions(self, frames_count: int, fps: float) -> list[dict]:
        """The regions for the whole video, once every frame has been added."""

    def uncertainty(self) -> float | None:
        """The video's uncertainty, the mean over its processed frames, after `regions`; None in
        confidence mode (`converters/task_score.py`)."""


@dataclass
class VideoControlModel(ControlModel):
    object_tags: ClassVar[tuple[str, ...]] = ("Video",)

    vid_stride: int = 1  # run the model on every vid_stride-th frame only
    video_frame_rate: str = ""  # the <Video frameRate="..."> attribute as written; "" is Label Studio's 24

    @classmethod
    def from_control(cls, control: Any, settings: Settings, **extra: Any) -> ControlModel:
        stride = parse_positive_int(control.attr, "model_vid_stride", 1, control.name)
        video_attrs = {key.lower(): value for key, value in dict(control.objects[0].attr).items()}
        return super().from_control(
            control,
            settings,
            vid_stride=stride,
            video_frame_rate=str(video_attrs.get("framerate") or ""),
            **extra,
        )

    def check_frame_rate(self, fps: float, task_data: Mapping[str, Any]) -> None:
        """Warn when Label Studio will number this video's frames differently from its real frame rate.

        Label Studio turns frame numbers into times with `<Video frameRate>` (24 unless set), while
        the backend numbers the frames it decodes: with another rate, boxes land at the wrong moments.
        """
        written = self.video_frame_rate or f"{DEFAULT_FPS:g}"
        text = str(task_data.get(written[1:], "")) if written.startswith("$") else written
        try:
            declared = float(text)
        except ValueError:
            return
        if declared > 0 and abs(declared - fps) > 0.01 * fps:
            logger.warning(
                '<Video name="%s"> plays at frameRate=%s in Label Studio, but the video has %.3f frames/s: '
                'keyframes will be shown at the wrong times; set frameRate="%.3g" (or "$fps" from the task)',
                self.to_name,
                text,
                fps,
                fps,
            )

    @property
    def reads_features(self) -> bool:
        """Whether the session wants each frame's feature vector (`inference/features.py`) instead of
        the model's output (a trained TimelineLabels head does)."""
        return False

    def start_video(self, class_names: Mapping[int, str]) -> VideoSession:
        raise NotImplementedError
