"""A task's prediction `score`: how sure the model is (`confidence`) or how unsure (`uncertainty`).

Label Studio's Data Manager sorts tasks by their prediction's `score`; with `model_task_score="uncertainty"`
(or TASK_SCORE=uncertainty) the task the model is least sure of comes first when sorted descending, so a
team labels those first (active learning). Every region keeps its own confidence; only the task's score
changes meaning. All scores are in [0, 1]:

- `confidence` (default): the mean of the regions' scores, as the official example (`prediction_score`).
- `uncertainty`, detect / OBB / segment / pose (`detection_uncertainty`): the largest binary entropy
  H(p) = -(p log p + (1 - p) log(1 - p)) / log 2 over every candidate the model considered down to
  CANDIDATE_FLOOR, not only the regions over the threshold: one object at p = 0.5 makes the task 1.0,
  objects at 0.3 make it 0.88, candidates all at 0.95 or 0.05 make it 0.29; no candidate at all: 0.0.
- `uncertainty`, classify (`classification_uncertainty`): 1 - (p1 - p2), the margin between the two most
  probable labels (classes mapped to one label add up; classes of no label stay apart): 0.9/0.1 gives 0.2,
  0.5/0.5 gives 1.0.
- `uncertainty`, timeline (`frame_label_uncertainty`): per processed frame, the mean binary entropy of the
  labels' probabilities (each label is its own on/off decision per frame).
- video: the mean of the per-frame values over the processed frames (`mean_over_frames`).
- several controls in uncertainty mode: the most unsure one decides (`task_score` takes the largest).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from converters.image_regions import prediction_score
from converters.regions import Region

CONFIDENCE = "confidence"
UNCERTAINTY = "uncertainty"
TASK_SCORE_MODES = (CONFIDENCE, UNCERTAINTY)
# Candidates under this confidence are not considered: each is almost surely background, and Ultralytics
# keeps at most 300 per image anyway. Detection models predict with min(model_conf, CANDIDATE_FLOOR) in
# uncertainty mode; regions are still only the candidates over the control's thresholds.
CANDIDATE_FLOOR = 0.05


def binary_entropy(probabilities: np.ndarray) -> np.ndarray:
    """Entropy of each yes/no decision with P(yes) = p, in bits (0 at p = 0 or 1, 1 at p = 0.5).

    >>> binary_entropy(np.array([0.0, 0.5, 0.9, 1.0])).round(3).tolist()
    [0.0, 1.0, 0.469, 0.0]
    """
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1 - 1e-12)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def detection_uncertainty(candidate_scores: np.ndarray) -> float:
    """The uncertainty of one image's detections: the largest binary entropy of its candidates' scores (N,).

    >>> round(detection_uncertainty(np.array([0.95, 0.3])), 3), detection_uncertainty(np.empty(0))
    (0.881, 0.0)
    """
    scores = np.asarray(candidate_scores, dtype=np.float64).reshape(-1)
    if scores.size == 0:
        return 0.0
    return float(binary_entropy(scores).max())


def classification_uncertainty(probs: np.ndarray, groups: Sequence[Sequence[int]] = ()) -> float:
    """1 - (p1 - p2) over the classes' probabilities (C,); `groups` lists class indices that are one label
    (their probabilities add up). One class only: 1 - p1.

    >>> round(classification_uncertainty(np.array([0.9, 0.08, 0.02])), 3)
    0.18
    >>> round(classification_uncertainty(np.array([0.45, 0.45, 0.1]), groups=[[0, 1]]), 3)
    0.2
    """
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    if probs.size == 0:
        return 0.0
    grouped = np.zeros(len(probs), dtype=bool)
    merged = []
    for group in groups:
        members = [i for i in group if 0 <= i < len(probs) and not grouped[i]]
        if members:
            merged.append(probs[members].sum())
            grouped[members] = True
    values = np.sort(np.concatenate([np.array(merged, dtype=np.float64), probs[~grouped]]))[::-1]
    second = values[1] if len(values) > 1 else 0.0
    return float(np.clip(1.0 - (values[0] - second), 0.0, 1.0))


def frame_label_uncertainty(label_probs: np.ndarray) -> np.ndarray:
    """Per frame, the mean binary entropy of the labels' probabilities: (frames, labels) -> (frames,).

    >>> frame_label_uncertainty(np.array([[0.5, 0.5], [1.0, 0.0]])).round(3).tolist()
    [1.0, 0.0]
    """
    probs = np.asarray(label_probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] == 0:
        return np.zeros(len(probs), dtype=np.float64)
    return binary_entropy(probs).mean(axis=1)


def mean_over_frames(frame_scores: Iterable[float]) -> float:
    """A video's uncertainty: the mean over its processed frames; 0.0 without any.

    >>> mean_over_frames([0.25, 0.75]), mean_over_frames([])
    (0.5, 0.0)
    """
    values = [float(v) for v in frame_scores]
    return sum(values) / len(values) if values else 0.0


def task_score(regions: Sequence[Region], uncertainties: Sequence[float]) -> float:
    """The prediction `score` of one task: the largest control uncertainty when any control of the config
    is in uncertainty mode, else the mean region confidence (`prediction_score`, unchanged).

    >>> task_score([{"score": 0.9}], []), task_score([{"score": 0.9}], [0.2, 0.7])
    (0.9, 0.7)
    """
    if uncertainties:
        return float(max(uncertainties))
    return prediction_score(regions)
