"""Multi-object tracking over a video's detections, with Ultralytics' BoT-SORT / ByteTrack.

`YOLO.track()` keeps its trackers on the model's predictor and reads their settings from a YAML file,
so two requests on one model would share (and reset) each other's tracks, and per-request settings
would need temporary files. Instead, `ObjectTracker` is a fresh tracker per video, built from a plain
dict (the tracker YAML's values with the labeling config's overrides) and fed with our `Detections`;
the model itself only detects, frame by frame.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from inference.detections import Detections

# Trackers that need nothing but boxes and the frame (ReID and the newer trackers hook the predictor).
SUPPORTED_TRACKERS = ("botsort", "bytetrack")


def builtin_tracker_yaml(name: str) -> Path | None:
    """Ultralytics' own `cfg/trackers/<name>.yaml`, found without importing Ultralytics (or torch)."""
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "cfg" / "trackers" / f"{name}.yaml"
    return path if path.is_file() else None


def read_tracker_yaml(path: Path) -> dict[str, Any]:
    """The settings in a tracker YAML; ValueError when it is not a mapping with a `tracker_type`."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"cannot be read as YAML ({type(error).__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("tracker_type"), str):
        raise ValueError("is not a tracker configuration (no 'tracker_type')")
    return data


class ObjectTracker:
    """The tracker of one video: feed it every processed frame's detections, in frame order."""

    def __init__(self, config: Mapping[str, Any]):
        from ultralytics.trackers.track import TRACKER_MAP
        from ultralytics.utils import IterableSimpleNamespace

        tracker_type = config.get("tracker_type")
        if tracker_type not in SUPPORTED_TRACKERS:
            raise ValueError(f"tracker_type '{tracker_type}' is not one of {', '.join(SUPPORTED_TRACKERS)}")
        self._tracker = TRACKER_MAP[tracker_type](args=IterableSimpleNamespace(**dict(config)))

    def update(self, detections: Detections, frame: np.ndarray) -> Detections:
        """The detections that belong to a confirmed track on this frame, with their `track_ids`.

        Boxes, scores and classes are the detector's own (not the tracker's smoothed boxes).
        """
        from ultralytics.engine.results import Boxes

        height, width = detections.image_height, detections.image_width
        data = np.concatenate(
            [
                np.asarray(detections.xyxy, dtype=np.float32).reshape(-1, 4),
                np.asarray(detections.scores, dtype=np.float32).reshape(-1, 1),
                np.asarray(detections.class_ids, dtype=np.float32).reshape(-1, 1),
            ],
            axis=1,
        )
        tracks = self._tracker.update(Boxes(data, (height, width)), frame)
        if len(tracks) == 0:
            return Detections.empty(width, height)
        tracked = detections[tracks[:, -1].astype(np.int64)]
        return replace(tracked, track_ids=tracks[:, 4].astype(np.int64))
