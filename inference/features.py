"""Per-image feature vectors from an Ultralytics classifier: what a trained `TimelineLabels` head reads.

Ultralytics' own embedding path is used (`predict(..., embed=[layer])`, what `YOLO.embed` does): the
output of the layer before the `Classify` head, average-pooled, one vector per image (256 numbers for
yolov8n-cls). The call goes through `LoadedModel.predict`, so it takes turns with every other request
on the model like a normal prediction. Training and serving both call these two functions: the head
is always fed the features it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from core.errors import WrongModelKindError
from inference.model_registry import LoadedModel

__all__ = ["embedding_options", "features_of", "frame_features"]


def embedding_options(model: LoadedModel) -> dict[str, Any]:
    """`predict` keyword arguments that make `model` answer feature vectors instead of `Results`.

    Raises WrongModelKindError for a model without Ultralytics layers (an OpenVINO export ignores
    `embed` and would answer class probabilities).
    """
    layers = getattr(getattr(model.yolo, "model", None), "model", None)
    if model.task != "classify" or layers is None or not hasattr(layers, "__len__"):
        raise WrongModelKindError(
            f"model '{model.name}' cannot give per-frame features: a trained timeline needs an "
            "Ultralytics classification model in .pt format (model_format pt)"
        )
    # A tuple, not a list: predict options are part of a hashable group key in model.py.
    return {"embed": (len(layers) - 2,)}  # the layer before the Classify head, as YOLO.embed picks


def features_of(outputs: Sequence[Any]) -> np.ndarray:
    """(N, D) float32 from the N embedding tensors `predict(..., embed=...)` answered.

    Example:
        >>> features_of([np.ones(3), np.zeros(3)]).tolist()
        [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
        >>> features_of([]).shape
        (0, 0)
    """
    if len(outputs) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    rows = []
    for output in outputs:
        if hasattr(output, "detach"):
            output = output.detach().float().cpu().numpy()
        rows.append(np.asarray(output, dtype=np.float32).reshape(-1))
    return np.stack(rows)


def frame_features(model: LoadedModel, frames: Sequence[np.ndarray]) -> np.ndarray:
    """(N, D) feature vectors of N BGR frames, one model call per batch through the model's scheduler."""
    if not frames:
        return np.zeros((0, 0), dtype=np.float32)
    outputs = model.predict(list(frames), **embedding_options(model))
    if outputs and not hasattr(outputs[0], "shape"):  # a Results object: the format ignored `embed`
        raise WrongModelKindError(
            f"model '{model.name}' answered class probabilities instead of features; use model_format pt"
        )
    return features_of(outputs)
