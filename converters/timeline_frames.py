"""Timeline segments <-> per-frame label arrays, the two directions a trainable `TimelineLabels` needs.

Label Studio's `timelinelabels` regions hold `value.ranges = [{start, end}]` in frames, numbered from 1,
both ends included, the same shape `converters/video_regions.timeline_regions` emits. Training reads
annotations into a (frames, labels) multi-hot array; evaluation expands the rows a model produced on
every `step`-th frame to every frame, by the same rule `timeline_regions` uses to draw ranges (row i
is frame `i * step + 1` and stands for the frames up to the next processed one), so a frame counts as
predicted exactly when the range Label Studio would show covers it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = ["frame_labels", "processed_rows", "rows_to_frames"]


def frame_labels(regions: Iterable[dict[str, Any]], labels: Sequence[str], frames_count: int) -> np.ndarray:
    """Multi-hot labels of every frame from `timelinelabels` result items.

    Args:
        regions: Label Studio result items; items of another type, labels not in `labels` and ranges
            that are not two whole numbers are left out. Ranges are clipped to the video.
        labels: the L labels, in column order.
        frames_count: frames in the video.

    Returns:
        (frames_count, L) bool; row f is frame f + 1.

    Example:
        >>> regions = [{"type": "timelinelabels", "value": {"ranges": [{"start": 2, "end": 3}],
        ...     "timelinelabels": ["Run"]}}, {"value": {"ranges": [{"start": 4, "end": 9}],
        ...     "timelinelabels": ["Walk", "Run"]}}]
        >>> frame_labels(regions, ["Run", "Walk"], 5).astype(int).tolist()
        [[0, 0], [1, 0], [1, 0], [1, 1], [1, 1]]
    """
    if frames_count < 0:
        raise ValueError(f"frames_count must not be negative, got {frames_count}")
    column = {label: index for index, label in enumerate(labels)}
    active = np.zeros((frames_count, len(labels)), dtype=bool)
    for region in regions:
        if region.get("type", "timelinelabels") != "timelinelabels":
            continue
        value = region.get("value") or {}
        columns = [column[name] for name in value.get("timelinelabels") or [] if name in column]
        for frame_range in value.get("ranges") or []:
            start, end = _whole(frame_range.get("start")), _whole(frame_range.get("end"))
            if start is None or end is None or not columns:
                continue
            first, last = max(start, 1), min(end, frames_count)
            if first <= last:
                active[first - 1 : last, columns] = True
    return active


def _whole(value: Any) -> int | None:
    """A frame number as Label Studio writes it (an int, sometimes a float like 12.0); None otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        return None
    return round(value)


def processed_rows(per_frame: np.ndarray, step: int = 1) -> np.ndarray:
    """The rows of the frames a model sees with `model_vid_stride=step`: frames 1, 1 + step, ...

    Example:
        >>> processed_rows(np.arange(7).reshape(7, 1), step=3).ravel().tolist()
        [0, 3, 6]
    """
    if step < 1:
        raise ValueError(f"step must be at least 1, got {step}")
    return np.asarray(per_frame)[::step]


def rows_to_frames(rows: np.ndarray, frames_count: int, step: int = 1) -> np.ndarray:
    """Per-frame values from rows on every `step`-th frame: row i covers frames i*step+1 .. (i+1)*step.

    The inverse of `processed_rows` in the sense `timeline_regions` draws ranges: the last row covers
    the frames up to `frames_count`; frames after the last row's span (fewer rows than the video needs)
    get False/0.

    Args:
        rows: (N, L) values (bool or probabilities).
        frames_count: frames in the video.
        step: frames between two processed frames.

    Returns:
        (frames_count, L), same dtype as `rows`.

    Example:
        >>> rows_to_frames(np.array([[True], [False], [True]]), frames_count=8, step=3).ravel().tolist()
        [True, True, True, False, False, False, True, True]
    """
    if step < 1:
        raise ValueError(f"step must be at least 1, got {step}")
    rows = np.asarray(rows)
    rows = rows.reshape(len(rows), -1)
    frames = np.zeros((frames_count, rows.shape[1]), dtype=rows.dtype)
    if len(rows) == 0 or frames_count <= 0:
        return frames
    covered = min(frames_count, len(rows) * step)
    frames[:covered] = np.repeat(rows, step, axis=0)[:covered]
    return frames
