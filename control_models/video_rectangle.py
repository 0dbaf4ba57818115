"""`<VideoRectangle>` on a `<Video>`: object tracks from a detection model and a tracker.

`VideoRectangle` has no labels of its own: they come from the `<Labels toName="video">` tag on the same
video, whose labels map to model classes as usual (`predicted_values`). Attributes:

- `model_path` (default `yolov8n.pt`), `model_conf` (0.25: detections below it are not tracked),
  `model_iou` (0.7), `model_vid_stride` (1), `model_score_threshold` (a track whose best score is
  below it is dropped);
- `model_tracker`: `botsort` (default), `bytetrack`, or the name of a tracker YAML in MODEL_ROOT
  without its extension (`model_tracker="mytracker"` reads `MODEL_ROOT/mytracker.yaml`);
- tracker parameters prefixed by the tracker's name, typed like the YAML's value:
  `botsort_track_high_thresh="0.6"`, `bytetrack_track_buffer="50"`, `mytracker_match_thresh="0.9"`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from control_models.attributes import parse_fraction, parse_strict_bool
from control_models.base import ControlModel, first_sibling
from control_models.video_base import VideoControlModel
from converters.task_score import detection_uncertainty, mean_over_frames
from converters.video_regions import video_rectangle_regions
from core.errors import LabelingConfigError
from core.settings import Settings
from inference.detections import Detections
from inference.tracking import SUPPORTED_TRACKERS, ObjectTracker, builtin_tracker_yaml, read_tracker_yaml

DEFAULT_TRACKER = "botsort"


@dataclass
class VideoRectangleModel(VideoControlModel):
    control_tag: ClassVar[str] = "VideoRectangle"
    model_tasks: ClassVar[tuple[str, ...]] = ("detect", "segment", "pose")
    default_model: ClassVar[str] = "yolov8n.pt"

    tracker_config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_control(cls, control: Any, settings: Settings, **extra: Any) -> ControlModel:
        interface = extra.get("interface")
        labels_tag = _labels_tag_for(interface, control)
        tracker_config = tracker_config_from_attrs(control.attr, settings.model_root, control.name)
        model = super().from_control(
            control,
            settings,
            tracker_config=tracker_config,
            conf=parse_fraction(control.attr, "model_conf", 0.25, control.name),
            iou=parse_fraction(control.attr, "model_iou", 0.7, control.name),
            **extra,
        )
        labels = {label: dict(tag.attr) for label, tag in (labels_tag.labels_attrs or {}).items()}
        return replace(model, labels=labels)

    def start_video(self, class_names: Mapping[int, str]) -> TrackSession:
        return TrackSession(self, self.label_map(class_names), ObjectTracker(self.tracker_config))


class TrackSession:
    """One video's tracks: the mapped detections of each frame go through a tracker of this video only."""

    def __init__(self, control: VideoRectangleModel, label_map: dict[int, str], tracker: ObjectTracker):
        self._control = control
        self._label_map = label_map
        self._tracker = tracker
        self._mapped = np.array(sorted(label_map), dtype=np.int64)
        self._frames: list[np.ndarray] = []
        self._track_ids: list[np.ndarray] = []
        self._xyxy: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []
        self._class_ids: list[np.ndarray] = []
        self._frame_size = (1, 1)
        self._frame_uncertainties: list[float] = []

    def add(self, frame: int, output: Detections, image: np.ndarray) -> None:
        self._frame_size = (output.image_width, output.image_height)
        mapped = output[np.isin(output.class_ids, self._mapped)]
        if self._control.scores_uncertainty:
            self._frame_uncertainties.append(detection_uncertainty(mapped.scores))
            # The model ran down to the candidate floor; the tracker sees what confidence mode gives it.
            mapped = mapped[mapped.scores > self._control.conf]
        tracked = self._tracker.update(mapped, image)  # every frame, even an empty one: tracks age
        if len(tracked) == 0:
            return
        self._frames.append(np.full(len(tracked), frame, dtype=np.int64))
        self._track_ids.append(tracked.track_ids)
        self._xyxy.append(tracked.xyxy)
        self._scores.append(tracked.scores)
        self._class_ids.append(tracked.class_ids)

    def uncertainty(self) -> float | None:
        return mean_over_frames(self._frame_uncertainties) if self._control.scores_uncertainty else None

    def regions(self, frames_count: int, fps: float) -> list[dict]:
        if not self._frames:
            return []
        track_ids = np.concatenate(self._track_ids)
        scores = np.concatenate(self._scores)
        keep = np.zeros(len(track_ids), dtype=bool)
        for track_id in np.unique(track_ids):
            member = track_ids == track_id
            keep |= member & (scores[member].max() >= self._control.score_threshold)
        class_ids = np.concatenate(self._class_ids)[keep]
        width, height = self._frame_size
        return video_rectangle_regions(
            from_name=self._control.from_name,
            to_name=self._control.to_name,
            frames=np.concatenate(self._frames)[keep],
            track_ids=track_ids[keep],
            xyxy=np.concatenate(self._xyxy)[keep],
            scores=scores[keep],
            labels=[self._label_map[int(c)] for c in class_ids],
            frame_width=width,
            frame_height=height,
            frames_count=frames_count,
            fps=fps,
            step=self._control.vid_stride,
        )


def _labels_tag_for(interface: Any, control: Any) -> Any:
    """The `<Labels>` tag on the same video as this `<VideoRectangle>`."""
    labels = first_sibling(interface, control, "Labels")
    if labels is not None:
        return labels
    video = next(iter(sorted(control.to_name or [])), "video")
    raise LabelingConfigError(
        f'<VideoRectangle name="{control.name}"> needs a <Labels toName="{video}"> tag with the labels to '
        f'predict, e.g. <Labels name="videoLabels" toName="{video}"><Label value="Car"/></Labels>'
    )


def tracker_config_from_attrs(
    attrs: Mapping[str, Any], model_root: Path, control_name: str
) -> dict[str, Any]:
    """The tracker settings for a `<VideoRectangle>`: its tracker YAML plus the prefixed overrides.

    Example: `model_tracker="bytetrack" bytetrack_track_buffer="50"` gives Ultralytics' bytetrack.yaml
    with `track_buffer: 50`.
    """
    name = str(attrs.get("model_tracker") or DEFAULT_TRACKER).strip()
    where = f'<VideoRectangle name="{control_name}"> has model_tracker="{name}"'
    path = _tracker_yaml(name, model_root, where)
    try:
        defaults = read_tracker_yaml(path)
    except ValueError as error:
        raise LabelingConfigError(f"{where}, but {path.name} {error}") from None
    if defaults["tracker_type"] not in SUPPORTED_TRACKERS:
        raise LabelingConfigError(
            f"{where}, whose tracker_type is '{defaults['tracker_type']}'; this backend runs "
            f"{' and '.join(SUPPORTED_TRACKERS)} only"
        )

    config = dict(defaults)
    prefixes = {name.lower(), *SUPPORTED_TRACKERS}
    for attr, raw in attrs.items():
        prefix = next((p for p in prefixes if attr.lower().startswith(p + "_")), None)
        if prefix is None:
            continue
        if prefix != name.lower():
            raise LabelingConfigError(
                f'<VideoRectangle name="{control_name}"> has {attr}="{raw}", a parameter of the {prefix} '
                f'tracker, but its tracker is "{name}"; write {name}_{attr[len(prefix) + 1 :]} or '
                f'model_tracker="{prefix}"'
            )
        key = attr[len(prefix) + 1 :].lower()
        if key not in defaults or key in ("tracker_type", "model"):
            known = ", ".join(f"{name}_{k}" for k in defaults if k not in ("tracker_type", "model"))
            raise LabelingConfigError(
                f'<VideoRectangle name="{control_name}"> has {attr}="{raw}", but {path.name} has no '
                f"parameter '{key}'; known parameters: {known}"
            )
        config[key] = _typed_like(raw, defaults[key], attr, control_name)
    if config.get("with_reid"):
        raise LabelingConfigError(
            f'<VideoRectangle name="{control_name}">: ReID (with_reid) is not supported by this backend; '
            f'set {name}_with_reid="false"'
        )
    return config


def _tracker_yaml(name: str, model_root: Path, where: str) -> Path:
    """MODEL_ROOT/<name>.yaml when it exists (it may override a built-in one), else Ultralytics' own."""
    root = model_root.resolve()
    if not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise LabelingConfigError(
            f"{where}; give the name of a tracker YAML inside MODEL_ROOT, without its extension"
        )
    candidate = (root / f"{name}.yaml").resolve()
    if not candidate.is_relative_to(root):
        raise LabelingConfigError(f"{where}, whose YAML resolves outside MODEL_ROOT; that is not allowed")
    if candidate.is_file():
        return candidate
    builtin = builtin_tracker_yaml(name) if name in SUPPORTED_TRACKERS else None
    if builtin is None:
        raise LabelingConfigError(
            f"{where}, but there is no {name}.yaml in MODEL_ROOT; use botsort, bytetrack or the name of a "
            "tracker YAML in MODEL_ROOT (without .yaml)"
        )
    return builtin


def _typed_like(raw: Any, default: Any, attr: str, control_name: str) -> Any:
    """`raw` (a config attribute, text) as the type of the tracker YAML's `default`."""
    text = str(raw).strip()
    where = f'<VideoRectangle name="{control_name}"> has {attr}="{raw}"'
    if isinstance(default, bool):
        return parse_strict_bool(text, where, example=f'{attr}="{str(default).lower()}"')
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise LabelingConfigError(
                f'{where}; it must be a whole number, e.g. {attr}="{default}"'
            ) from None
    if isinstance(default, float):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise LabelingConfigError(f'{where}; it must be a number, e.g. {attr}="{default}"')
        return value
    return text
