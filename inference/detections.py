"""The interchange types between Ultralytics and everything else.

`from_ultralytics` is the only function in the project that knows Ultralytics' `Results` objects;
converters and control models only see these dataclasses of numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Detections:
    """What a detect/segment/pose/OBB model found in one image (or video frame), in pixels.

    Shapes, for N detections:
        xyxy: (N, 4) float, axis-aligned boxes [x1, y1, x2, y2].
        scores: (N,) float in [0, 1].
        class_ids: (N,) int, indices into the model's class names.
        xywhr: (N, 5) float [cx, cy, w, h, angle in radians, clockwise on screen] for OBB models.
        polygons: N arrays of shape (K_i, 2) [x, y], the outline of each instance mask.
        masks: (N, H, W) bool at the original image size.
        keypoints: (N, K, 3) float [x, y, visibility score] (score 1.0 when the model gives none).
        track_ids: (N,) int, tracker identities (set by `inference.tracking`, video only).
    """

    image_width: int
    image_height: int
    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    xywhr: np.ndarray | None = None
    polygons: list[np.ndarray] | None = None
    masks: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    track_ids: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls, image_width: int, image_height: int) -> Detections:
        return cls(
            image_width=image_width,
            image_height=image_height,
            xyxy=np.empty((0, 4), dtype=np.float32),
            scores=np.empty((0,), dtype=np.float32),
            class_ids=np.empty((0,), dtype=np.int64),
        )


@dataclass(frozen=True)
class Classification:
    """What a classification model gave for one image: `probs` (C,) over the model's classes."""

    image_width: int
    image_height: int
    probs: np.ndarray = field(default_factory=lambda: np.empty((0,), dtype=np.float32))


def _numpy(tensor: Any) -> np.ndarray:
    return tensor.cpu().numpy() if hasattr(tensor, "cpu") else np.asarray(tensor)


def from_ultralytics(result: Any, with_masks: bool = False) -> Detections | Classification:
    """Turn one Ultralytics `Results` into `Detections` or `Classification`.

    `with_masks` rasterises instance masks at the original image size (needed for brush masks only:
    it costs H*W bytes per instance).
    """
    height, width = (int(v) for v in result.orig_shape[:2])
    if getattr(result, "probs", None) is not None:
        return Classification(width, height, _numpy(result.probs.data).astype(np.float32))

    if getattr(result, "obb", None) is not None:
        obb = result.obb
        xywhr = _numpy(obb.xywhr).astype(np.float32).reshape(-1, 5)
        return Detections(
            image_width=width,
            image_height=height,
            xyxy=_numpy(obb.xyxy).astype(np.float32).reshape(-1, 4),
            scores=_numpy(obb.conf).astype(np.float32).reshape(-1),
            class_ids=_numpy(obb.cls).astype(np.int64).reshape(-1),
            xywhr=xywhr,
        )

    boxes = result.boxes
    if boxes is None or len(boxes) == 0:
        return Detections.empty(width, height)

    polygons = None
    masks = None
    if getattr(result, "masks", None) is not None:
        polygons = [np.asarray(p, dtype=np.float32).reshape(-1, 2) for p in result.masks.xy]
        if with_masks:
            masks = _masks_at_original_size(result.masks.data, (height, width))

    keypoints = None
    if getattr(result, "keypoints", None) is not None:
        data = _numpy(result.keypoints.data).astype(np.float32)
        if data.ndim == 3 and data.shape[-1] == 2:
            data = np.concatenate([data, np.ones((*data.shape[:2], 1), dtype=np.float32)], axis=-1)
        keypoints = data.reshape(len(boxes), -1, 3)

    return Detections(
        image_width=width,
        image_height=height,
        xyxy=_numpy(boxes.xyxy).astype(np.float32).reshape(-1, 4),
        scores=_numpy(boxes.conf).astype(np.float32).reshape(-1),
        class_ids=_numpy(boxes.cls).astype(np.int64).reshape(-1),
        polygons=polygons,
        masks=masks,
        keypoints=keypoints,
    )


def _masks_at_original_size(mask_data: Any, original_shape: tuple[int, int]) -> np.ndarray:
    """Scale (N, h, w) masks from the letterboxed inference size back to the original image size."""
    from ultralytics.utils.ops import scale_masks

    if len(mask_data) == 0:
        return np.zeros((0, *original_shape), dtype=bool)
    scaled = scale_masks(mask_data[None].float(), original_shape)[0]  # (N, H, W), letterbox removed
    return _numpy(scaled > 0.5)
