"""Label Studio video regions (`videorectangle` tracks, `timelinelabels` segments) from numpy arrays.

Frames are numbered from 1, as in Label Studio's video editor. When a model ran on every `step`-th frame
only (`model_vid_stride`), rows/observations are on frames 1, 1 + step, 1 + 2 * step, ...; consecutive
observations `step` frames apart count as contiguous.

VideoRectangle: a region is one track; its `value.sequence` holds keyframes, and the editor
interpolates the box between keyframes while the earlier one is `enabled`. A keyframe with
`enabled: false` ends a visible span ("lifespan"), so the last box before a gap and the last box of the
track are disabled. `time` is `frame / fps`, as the editor itself writes it.

TimelineLabels: `value.ranges` holds `{start, end}` frames, both included; a one-frame range has
`start == end`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from converters.geometry import xyxy_to_percent
from converters.regions import Region, make_region

__all__ = [
    "active_runs",
    "keyframe_sequence",
    "span_ends",
    "timeline_regions",
    "track_label",
    "tracks_in_order_of_appearance",
    "video_rectangle_regions",
]


def _check_video(frames_count: int, fps: float) -> None:
    if frames_count <= 0:
        raise ValueError(f"frames_count must be positive, got {frames_count}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")


def span_ends(frames: np.ndarray, step: int = 1) -> np.ndarray:
    """Which observations of one track end a visible span: the last before a gap, and the very last.

    Args:
        frames: (N,) sorted, distinct 1-based frame numbers at which the track was seen.
        step: frames between two processed frames; a jump larger than `step` is a gap.

    Returns:
        (N,) bool.

    Example:
        >>> span_ends(np.array([1, 2, 3, 7, 8, 12])).tolist()
        [False, False, True, False, True, True]
        >>> span_ends(np.array([1, 4, 7, 13]), step=3).tolist()
        [False, False, True, True]
    """
    frames = np.asarray(frames, dtype=np.int64).reshape(-1)
    ends = np.zeros(len(frames), dtype=bool)
    if len(frames) == 0:
        return ends
    ends[:-1] = np.diff(frames) > step
    ends[-1] = True
    return ends


def keyframe_sequence(frames: np.ndarray, boxes_percent: np.ndarray, fps: float, step: int = 1) -> list[dict]:
    """The `value.sequence` of one track.

    Args:
        frames: (N,) 1-based frame numbers, any order; a repeated frame keeps its first box.
        boxes_percent: (N, 4) `[x, y, width, height]` in percent of the frame.
        fps: frames per second of the video (for `time`).
        step: see `span_ends`.

    Example:
        >>> sequence = keyframe_sequence(np.array([2, 1]), np.array([[10, 10, 5, 5], [0, 0, 5, 5]]), fps=10)
        >>> [(k["frame"], k["x"], k["time"], k["enabled"]) for k in sequence]
        [(1, 0.0, 0.1, True), (2, 10.0, 0.2, False)]
    """
    frames = np.asarray(frames, dtype=np.int64).reshape(-1)
    boxes = np.asarray(boxes_percent, dtype=np.float64).reshape(-1, 4)
    if len(frames) != len(boxes):
        raise ValueError(f"{len(frames)} frames but {len(boxes)} boxes")
    order = np.argsort(frames, kind="stable")
    frames, boxes = frames[order], boxes[order]
    first = np.ones(len(frames), dtype=bool)
    first[1:] = np.diff(frames) > 0
    frames, boxes = frames[first], boxes[first]
    ends = span_ends(frames, step)
    return [
        {
            "frame": int(frame),
            "x": float(x),
            "y": float(y),
            "width": float(width),
            "height": float(height),
            "time": float(frame / fps),
            "enabled": not bool(end),
            "rotation": 0,
        }
        for frame, (x, y, width, height), end in zip(frames, boxes, ends, strict=True)
    ]


def video_rectangle_regions(
    *,
    from_name: str,
    to_name: str,
    frames: np.ndarray,
    track_ids: np.ndarray,
    xyxy: np.ndarray,
    scores: np.ndarray,
    labels: Sequence[str],
    frame_width: int,
    frame_height: int,
    frames_count: int,
    fps: float,
    step: int = 1,
) -> list[Region]:
    """One `videorectangle` region per track, in order of first appearance.

    Args:
        frames: (N,) 1-based frame number of each observation (all tracks together).
        track_ids: (N,) int track id of each observation.
        xyxy: (N, 4) pixel boxes `[x1, y1, x2, y2]`; clipped to the frame.
        scores: (N,) detection scores.
        labels: N Label Studio labels (one per observation; a track's label is the one with the
            highest summed score over the track, so a class flicker does not split the region).
        frame_width, frame_height: frame size in pixels.
        frames_count, fps: of the whole video; `duration = frames_count / fps`.
        step: see `span_ends`.

    Returns:
        Regions with `value = {framesCount, duration, sequence, labels}` and `score` = the track's best
        detection score.

    Example:
        >>> regions = video_rectangle_regions(from_name="box", to_name="video", frames=np.array([1, 2, 1]),
        ...     track_ids=np.array([7, 7, 9]), xyxy=np.array([[0, 0, 32, 24]] * 3), scores=np.array([.5, .9, .4]),
        ...     labels=["Car", "Car", "Person"], frame_width=320, frame_height=240, frames_count=50, fps=25)
        >>> [(r["value"]["labels"], len(r["value"]["sequence"]), r["score"]) for r in regions]
        [(['Car'], 2, 0.9), (['Person'], 1, 0.4)]
        >>> regions[0]["value"]["duration"], regions[0]["value"]["sequence"][0]["width"]
        (2.0, 10.0)
    """
    _check_video(frames_count, fps)
    frames, track_ids, scores, labels = _observations(frames, track_ids, scores, labels)
    if len(frames) == 0:
        return []
    boxes = xyxy_to_percent(np.asarray(xyxy).reshape(-1, 4), frame_width, frame_height)
    regions = []
    for track_id in tracks_in_order_of_appearance(frames, track_ids):
        member = track_ids == track_id
        value = {
            "framesCount": int(frames_count),
            "duration": float(frames_count / fps),
            "sequence": keyframe_sequence(frames[member], boxes[member], fps, step),
            "labels": [track_label([labels[i] for i in np.flatnonzero(member)], scores[member])],
        }
        regions.append(
            make_region(
                from_name=from_name,
                to_name=to_name,
                type_="videorectangle",
                value=value,
                score=scores[member].max(),
            )
        )
    return regions


def _observations(
    frames: np.ndarray, track_ids: np.ndarray, scores: np.ndarray, labels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """The per-observation arrays as flat arrays of one length (a ValueError when they differ)."""
    frames = np.asarray(frames, dtype=np.int64).reshape(-1)
    track_ids = np.asarray(track_ids, dtype=np.int64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = list(labels)
    if not (len(track_ids) == len(scores) == len(labels) == len(frames)):
        raise ValueError(
            f"frames, track_ids, scores and labels differ in length: "
            f"{len(frames)}, {len(track_ids)}, {len(scores)}, {len(labels)}"
        )
    return frames, track_ids, scores, labels


def tracks_in_order_of_appearance(frames: np.ndarray, track_ids: np.ndarray) -> list[int]:
    """The distinct track ids, ordered by the first frame each is seen on (then by id).

    Example:
        >>> tracks_in_order_of_appearance(np.array([3, 1, 2, 1]), np.array([4, 9, 4, 7]))
        [7, 9, 4]
    """
    first_frame = {int(t): int(frames[track_ids == t].min()) for t in np.unique(track_ids)}
    return sorted(first_frame, key=lambda t: (first_frame[t], t))


def track_label(labels: Sequence[str], scores: np.ndarray) -> str:
    """The label of one track: the one with the highest summed score (a class flicker does not win).

    Example:
        >>> track_label(["Car", "Truck", "Car"], np.array([0.4, 0.7, 0.5]))
        'Car'
    """
    votes: dict[str, float] = {}
    for label, score in zip(labels, scores, strict=True):
        votes[label] = votes.get(label, 0.0) + float(score)
    return max(votes, key=lambda name: votes[name])


def active_runs(active: np.ndarray) -> list[tuple[int, int]]:
    """Runs of consecutive True rows as (first, last) row indices, both included.

    Example:
        >>> active_runs(np.array([1, 1, 0, 1, 0, 0, 1, 1], dtype=bool))
        [(0, 1), (3, 3), (6, 7)]
        >>> active_runs(np.zeros(0, dtype=bool))
        []
    """
    active = np.asarray(active, dtype=bool).reshape(-1)
    if active.size == 0:
        return []
    padded = np.concatenate([[False], active, [False]]).astype(np.int8)
    changes = np.diff(padded)
    starts = np.flatnonzero(changes == 1)
    stops = np.flatnonzero(changes == -1) - 1
    return [(int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


def timeline_regions(
    *,
    from_name: str,
    to_name: str,
    probs: np.ndarray,
    labels: Sequence[str],
    threshold: float,
    frames_count: int,
    step: int = 1,
) -> list[Region]:
    """`timelinelabels` regions for the runs of frames where a label's probability is >= `threshold`.

    Args:
        probs: (N, L) probability of each of the L labels on each processed frame; row i is frame
            `i * step + 1` and stands for the frames up to the next processed one.
        labels: the L Label Studio labels.
        threshold: a frame shows a label when its probability is at least this.
        frames_count: frames in the video (the last range ends there at the latest).
        step: see the module docstring.

    Returns:
        One region per run and label, ordered by start frame then label; `score` = the mean
        probability over the run's processed frames.

    Example:
        >>> probs = np.array([[0.9, 0.1], [0.8, 0.6], [0.2, 0.7]])
        >>> regions = timeline_regions(from_name="t", to_name="video", probs=probs, labels=["Run", "Walk"],
        ...     threshold=0.5, frames_count=3)
        >>> [(r["value"]["timelinelabels"], r["value"]["ranges"]) for r in regions]
        [(['Run'], [{'start': 1, 'end': 2}]), (['Walk'], [{'start': 2, 'end': 3}])]
        >>> regions = timeline_regions(from_name="t", to_name="video", probs=probs, labels=["Run", "Walk"],
        ...     threshold=0.5, frames_count=8, step=3)
        >>> [(r["value"]["timelinelabels"], r["value"]["ranges"]) for r in regions]
        [(['Run'], [{'start': 1, 'end': 6}]), (['Walk'], [{'start': 4, 'end': 8}])]
    """
    if frames_count <= 0:
        raise ValueError(f"frames_count must be positive, got {frames_count}")
    probs = np.asarray(probs, dtype=np.float64)
    if probs.size == 0:
        return []
    probs = probs.reshape(len(probs), -1)
    if probs.shape[1] != len(labels):
        raise ValueError(f"probs has {probs.shape[1]} columns but there are {len(labels)} labels")
    found = []
    for column, label in enumerate(labels):
        for first, last in active_runs(probs[:, column] >= threshold):
            start = first * step + 1
            end = max(start, min((last + 1) * step, frames_count))
            score = float(probs[first : last + 1, column].mean())
            found.append((start, column, end, label, score))
    found.sort(key=lambda item: (item[0], item[1]))
    return [
        make_region(
            from_name=from_name,
            to_name=to_name,
            type_="timelinelabels",
            value={"ranges": [{"start": int(start), "end": int(end)}], "timelinelabels": [label]},
            score=score,
        )
        for start, _, end, label, score in found
    ]
