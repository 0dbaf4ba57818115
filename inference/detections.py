"""The interchange types between Ultralytics and everything else.

`from_ultralytics` is the only function in the project that knows Ultralytics' `Results` objects;
converters and control models only see these dataclasses of numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np

from core.errors import MediaError


@dataclass(frozen=True)
class BoxMask:
    """One instance mask at the original image size, inside its box only.

    `mask` (h, w) bool covers the pixels x..x+w, y..y+h of the image: a full-size stack would cost
    N x H x W (300 masks of a 100 MP image: 30 GB as bool, 120 GB as the float32 it is scaled in).

    >>> BoxMask(1, 2, np.ones((1, 2), bool)).full(4, 4).astype(int).tolist()
    [[0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    """

    x: int
    y: int
    mask: np.ndarray

    def full(self, width: int, height: int) -> np.ndarray:
        """The (height, width) bool mask of the whole image (for Label Studio's RLE, one at a time)."""
        full = np.zeros((height, width), dtype=bool)
        h, w = self.mask.shape
        full[self.y : self.y + h, self.x : self.x + w] = self.mask
        return full


class MaskBudget:
    """Bytes of instance masks one request may still decode (MAX_MASK_BYTES), shared by its tasks.

    A mask costs its box at the original size plus the whole image once more (its RLE is encoded from a
    full-size copy); the task that would go over gets an error, later tasks with fewer masks still run.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.spent = 0

    def spend(self, nbytes: int) -> None:
        if self.spent + nbytes > self.limit:
            raise MediaError(
                f"the masks of this image need more than the {self.limit} bytes left for this request's brush "
                "masks (MAX_MASK_BYTES); predict fewer or smaller images per request, or raise the limit"
            )
        self.spent += nbytes


@dataclass(frozen=True)
class Detections:
    """What a detect/segment/pose/OBB model found in one image (or video frame), in pixels.

    Shapes, for N detections:
        xyxy: (N, 4) float, axis-aligned boxes [x1, y1, x2, y2].
        scores: (N,) float in [0, 1].
        class_ids: (N,) int, indices into the model's class names.
        xywhr: (N, 5) float [cx, cy, w, h, angle in radians, clockwise on screen] for OBB models.
        polygons: N arrays of shape (K_i, 2) [x, y], the outline of each instance mask.
        masks: N `BoxMask`, each instance's mask at the original image size inside its box.
        keypoints: (N, K, 3) float [x, y, visibility score] (score 1.0 when the model gives none).
        track_ids: (N,) int, tracker identities (set by `inference.tracking`, video only).
        candidate_scores, candidate_class_ids: (M,) every candidate the model gave, M >= N, when the
            detections were cut to a higher confidence (`from_ultralytics(keep_above=...)`); None: the
            detections are all the candidates. Not per detection: indexing keeps them as they are.
    """

    image_width: int
    image_height: int
    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    xywhr: np.ndarray | None = None
    polygons: list[np.ndarray] | None = None
    masks: list[BoxMask] | None = None
    keypoints: np.ndarray | None = None
    track_ids: np.ndarray | None = None
    candidate_scores: np.ndarray | None = None
    candidate_class_ids: np.ndarray | None = None

    def candidates(self) -> tuple[np.ndarray, np.ndarray]:
        """(scores, class ids) of every candidate the model considered (the uncertainty reads these)."""
        if self.candidate_scores is None or self.candidate_class_ids is None:
            return self.scores, self.class_ids
        return self.candidate_scores, self.candidate_class_ids

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, index: np.ndarray | slice | list[int]) -> Detections:
        """The detections picked by a boolean mask or an index array, every per-detection field with them.

        >>> d = Detections(4, 4, np.zeros((2, 4)), np.array([0.9, 0.2]), np.array([0, 1]))
        >>> d[d.scores > 0.5].class_ids.tolist()
        [0]
        """
        if isinstance(index, int):
            index = [index]  # always a Detections, never one row
        picked = {
            name: None if value is None else value[index]
            for name, value in (
                ("xyxy", self.xyxy),
                ("scores", self.scores),
                ("class_ids", self.class_ids),
                ("xywhr", self.xywhr),
                ("keypoints", self.keypoints),
                ("track_ids", self.track_ids),
            )
        }
        positions = np.arange(len(self))[index]
        polygons = None if self.polygons is None else [self.polygons[i] for i in positions]
        masks = None if self.masks is None else [self.masks[i] for i in positions]
        return replace(self, polygons=polygons, masks=masks, **picked)

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


def from_ultralytics(
    result: Any,
    with_masks: bool = False,
    mask_budget: MaskBudget | None = None,
    keep_above: float | None = None,
) -> Detections | Classification:
    """Turn one Ultralytics `Results` into `Detections` or `Classification`.

    `with_masks` scales instance masks to the original image size, each inside its box (needed for
    brush masks only), charging `mask_budget`: a `MediaError` when this image's masks do not fit.
    `keep_above`: only detections scoring over it are converted (masks, polygons); every candidate's score
    and class stay in `candidate_scores` / `candidate_class_ids` (for the task's uncertainty).
    """
    height, width = (int(v) for v in result.orig_shape[:2])
    if getattr(result, "probs", None) is not None:
        return Classification(width, height, _numpy(result.probs.data).astype(np.float32))
    if keep_above is not None:
        return _kept_above(result, keep_above, with_masks, mask_budget)

    if getattr(result, "obb", None) is not None:
        return _oriented(result.obb, width, height)
    boxes = result.boxes
    if boxes is None or len(boxes) == 0:
        return Detections.empty(width, height)
    xyxy = _numpy(boxes.xyxy).astype(np.float32).reshape(-1, 4)
    polygons, masks = _polygons_and_masks(result, xyxy, width, height, with_masks, mask_budget)
    return Detections(
        image_width=width,
        image_height=height,
        xyxy=xyxy,
        scores=_numpy(boxes.conf).astype(np.float32).reshape(-1),
        class_ids=_numpy(boxes.cls).astype(np.int64).reshape(-1),
        polygons=polygons,
        masks=masks,
        keypoints=_keypoints(result, len(boxes)),
    )


def _oriented(obb: Any, width: int, height: int) -> Detections:
    return Detections(
        image_width=width,
        image_height=height,
        xyxy=_numpy(obb.xyxy).astype(np.float32).reshape(-1, 4),
        scores=_numpy(obb.conf).astype(np.float32).reshape(-1),
        class_ids=_numpy(obb.cls).astype(np.int64).reshape(-1),
        xywhr=_numpy(obb.xywhr).astype(np.float32).reshape(-1, 5),
    )


def _polygons_and_masks(
    result: Any, xyxy: np.ndarray, width: int, height: int, with_masks: bool, mask_budget: MaskBudget | None
) -> tuple[list[np.ndarray] | None, np.ndarray | None]:
    """Each instance's polygon and, `with_masks`, its mask in its box (charged to `mask_budget`)."""
    if getattr(result, "masks", None) is None:
        return None, None
    polygons = [np.asarray(p, dtype=np.float32).reshape(-1, 2) for p in result.masks.xy]
    if not with_masks:
        return polygons, None
    if mask_budget is not None:
        mask_budget.spend(_mask_bytes(xyxy, width, height))
    return polygons, box_masks(result.masks.data, xyxy, (height, width))


def _keypoints(result: Any, instances: int) -> np.ndarray | None:
    """(instances, K, 3) keypoints; a model without visibility gets 1.0 for every point."""
    if getattr(result, "keypoints", None) is None:
        return None
    data = _numpy(result.keypoints.data).astype(np.float32)
    if data.ndim == 3 and data.shape[-1] == 2:
        data = np.concatenate([data, np.ones((*data.shape[:2], 1), dtype=np.float32)], axis=-1)
    return data.reshape(instances, -1, 3)


def _kept_above(
    result: Any, keep_above: float, with_masks: bool, mask_budget: MaskBudget | None
) -> Detections:
    """The detections over `keep_above` (as if the model ran with conf=keep_above), with every candidate."""
    found = result.obb if getattr(result, "obb", None) is not None else result.boxes
    if found is None or len(found) == 0:
        return from_ultralytics(result, with_masks, mask_budget)
    scores = _numpy(found.conf).astype(np.float32).reshape(-1)
    class_ids = _numpy(found.cls).astype(np.int64).reshape(-1)
    kept = from_ultralytics(result[found.conf > keep_above], with_masks, mask_budget)
    return replace(kept, candidate_scores=scores, candidate_class_ids=class_ids)


def _pixel_box(box: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """The whole pixels (x0, y0, x1, y1) a box touches, inside the image."""
    x0 = int(np.clip(np.floor(box[0]), 0, width))
    y0 = int(np.clip(np.floor(box[1]), 0, height))
    return x0, y0, int(np.clip(np.ceil(box[2]), x0, width)), int(np.clip(np.ceil(box[3]), y0, height))


def _mask_bytes(xyxy: np.ndarray, width: int, height: int) -> int:
    """What `box_masks` and their RLE cost: each box's pixels, and the whole image once per mask."""
    total = 0
    for box in xyxy:
        x0, y0, x1, y1 = _pixel_box(box, width, height)
        total += (x1 - x0) * (y1 - y0) + width * height
    return total


def box_masks(mask_data: Any, xyxy: np.ndarray, original_shape: tuple[int, int]) -> list[BoxMask]:
    """Scale (N, h, w) letterboxed masks to the original image size, each inside its box (N, 4) only.

    The same bilinear sampling as Ultralytics' `scale_masks` (pixel centres, as torch's interpolate with
    align_corners=False, over the letterbox's content), but only the box's pixels are computed: an
    Ultralytics mask is zero outside its box anyway.
    """
    height, width = original_shape
    mask_h, mask_w = (int(v) for v in mask_data.shape[-2:])
    gain = min(mask_h / height, mask_w / width)
    content_w, content_h = max(round(width * gain), 1), max(round(height * gain), 1)
    left, top = round((mask_w - content_w) / 2 - 0.1), round((mask_h - content_h) / 2 - 0.1)
    scale_x, scale_y = content_w / width, content_h / height
    masks = []
    for index, box in enumerate(xyxy):
        x0, y0, x1, y1 = _pixel_box(box, width, height)
        if x1 == x0 or y1 == y0:
            masks.append(BoxMask(x0, y0, np.zeros((y1 - y0, x1 - x0), dtype=bool)))
            continue
        one = _numpy(mask_data[index]).astype(np.float32)  # one mask at a time: a GPU stack stays there
        content = np.ascontiguousarray(one[top : top + content_h, left : left + content_w])
        # box pixel (u, v) samples the content at ((x0 + u + 0.5) * scale - 0.5, ...), edges repeated
        to_content = np.array(
            [[scale_x, 0, (x0 + 0.5) * scale_x - 0.5], [0, scale_y, (y0 + 0.5) * scale_y - 0.5]]
        )
        crop = cv2.warpAffine(
            content,
            to_content,
            (x1 - x0, y1 - y0),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        masks.append(BoxMask(x0, y0, crop > 0.5))
    return masks
