"""Label Studio annotation regions -> YOLO label lines (pure; class ids from the config's label order).

Coordinates are normalised to 0..1 and clipped to the image: Ultralytics drops a whole image as corrupt
when one of its label values lies outside 0..1.

Why not `label_studio_sdk.converter`'s YOLO export: it numbers classes in the order labels first appear
in the annotations (so ids change from one export to the next), writes no dataset.yaml and no split, turns
a rotated rectangle into the unrotated box in detect exports, and writes pose keypoints in a compacted
order (gaps in `model_index` closed up), so a trained model would read keypoint 5 as 1. What is right in
it is used: its RLE decoder for brush masks (`decode_rle`), and the same rotated-rectangle corners
(`converters.geometry.label_studio_rect_corners`, the formula of its `convert_annotation_to_yolo_obb`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from converters.geometry import label_studio_rect_corners

__all__ = [
    "brush_to_yolo",
    "choice_of",
    "polygon_to_yolo",
    "pose_to_yolo",
    "rectangle_to_yolo",
    "rectangle_to_yolo_obb",
]


def _class_of(value: dict, key: str, labels: Sequence[str]) -> int | None:
    names = value.get(key) or []
    return labels.index(names[0]) if names and names[0] in labels else None


def _numbers(values: np.ndarray) -> str:
    return " ".join(f"{v:.6f}" for v in np.asarray(values, dtype=np.float64).ravel())


def _corners(value: dict, image_width: int, image_height: int) -> np.ndarray:
    """(4, 2) corners of a rectangle value, normalised (0..1, not clipped). The rotation turns in pixel
    space, so the image's size matters for a rotated rectangle on a non-square image."""
    corners = label_studio_rect_corners(
        value["x"],
        value["y"],
        value["width"],
        value["height"],
        value.get("rotation", 0) or 0,
        image_width,
        image_height,
    )
    return corners / np.array([image_width, image_height], dtype=np.float64)


def rectangle_to_yolo(value: dict, labels: Sequence[str], image_width: int, image_height: int) -> str | None:
    """A `rectanglelabels` value as "class cx cy w h" (normalised, clipped to the image), or None when its
    label is not one of `labels` or nothing of it lies inside the image. A rotated rectangle becomes the
    axis-aligned box around it.

    >>> rectangle_to_yolo({"x": 10, "y": 20, "width": 30, "height": 40, "rectanglelabels": ["b"]}, ("a", "b"), 640, 480)
    '1 0.250000 0.400000 0.300000 0.400000'
    """
    cls = _class_of(value, "rectanglelabels", labels)
    if cls is None:
        return None
    corners = _corners(value, image_width, image_height)
    x1, y1 = np.clip(corners.min(axis=0), 0, 1)
    x2, y2 = np.clip(corners.max(axis=0), 0, 1)
    if x2 <= x1 or y2 <= y1:
        return None
    return f"{cls} {_numbers([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])}"


def rectangle_to_yolo_obb(
    value: dict, labels: Sequence[str], image_width: int, image_height: int
) -> str | None:
    """A (rotated) `rectanglelabels` value as a YOLO OBB line "class x1 y1 x2 y2 x3 y3 x4 y4": its corners
    in the rectangle's own order (top-left, top-right, bottom-right, bottom-left before rotation),
    normalised and clipped to the image; None for another label or nothing inside the image.

    >>> rectangle_to_yolo_obb({"x": 50, "y": 50, "width": 20, "height": 10, "rotation": 90,
    ...     "rectanglelabels": ["a"]}, ("a",), 100, 100)
    '0 0.500000 0.500000 0.500000 0.700000 0.400000 0.700000 0.400000 0.500000'
    """
    cls = _class_of(value, "rectanglelabels", labels)
    if cls is None:
        return None
    corners = np.clip(_corners(value, image_width, image_height), 0, 1)
    if np.ptp(corners[:, 0]) <= 0 or np.ptp(corners[:, 1]) <= 0:
        return None
    return f"{cls} {_numbers(corners)}"


def polygon_to_yolo(value: dict, labels: Sequence[str]) -> str | None:
    """A `polygonlabels` value (points in percent) as "class x1 y1 x2 y2 ..." (normalised, clipped); None
    for another label or fewer than 3 points.

    >>> polygon_to_yolo({"points": [[10, 20], [50, 20], [30, 120]], "polygonlabels": ["a"]}, ("a",))
    '0 0.100000 0.200000 0.500000 0.200000 0.300000 1.000000'
    """
    cls = _class_of(value, "polygonlabels", labels)
    points = np.asarray(value.get("points") or [], dtype=np.float64).reshape(-1, 2)
    if cls is None or len(points) < 3:
        return None
    return f"{cls} {_numbers(np.clip(points / 100, 0, 1))}"


def brush_to_yolo(
    value: dict, labels: Sequence[str], mask_width: int, mask_height: int, min_area: float = 4.0
) -> list[str]:
    """A `brushlabels` value (Label Studio RLE of a mask_width x mask_height RGBA image) as one polygon
    line per separate blob of the mask (outer outlines; holes are filled), normalised. [] for another
    label, an RLE of the wrong size, or blobs under `min_area` pixels.

    >>> from label_studio_sdk.converter.brush import mask2rle
    >>> mask = np.zeros((10, 20), np.uint8); mask[2:6, 4:12] = 255
    >>> brush_to_yolo({"format": "rle", "rle": mask2rle(mask), "brushlabels": ["a"]}, ("a",), 20, 10)
    ['0 0.200000 0.200000 0.200000 0.500000 0.550000 0.500000 0.550000 0.200000']
    """
    import cv2
    from label_studio_sdk.converter.brush import decode_rle

    cls = _class_of(value, "brushlabels", labels)
    if cls is None or not value.get("rle") or mask_width <= 0 or mask_height <= 0:
        return []
    pixels = decode_rle(value["rle"])
    if pixels.size != mask_width * mask_height * 4:
        return []
    mask = (pixels.reshape(mask_height, mask_width, 4)[:, :, 3] > 0).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    lines = []
    for contour in contours:
        if len(contour) < 3 or cv2.contourArea(contour) < min_area:
            continue
        points = contour.reshape(-1, 2) / np.array([mask_width, mask_height], dtype=np.float64)
        lines.append(f"{cls} {_numbers(np.clip(points, 0, 1))}")
    return lines


def pose_to_yolo(
    boxes: Sequence[dict],
    keypoints: Sequence[dict],
    labels: Sequence[str],
    keypoint_labels: Sequence[str],
    image_width: int,
    image_height: int,
) -> list[str]:
    """One YOLO pose line "class cx cy w h x1 y1 v1 ..." per annotated box.

    Label Studio stores each keypoint as its own region (x, y in percent, one `keypointlabels` label).
    A keypoint belongs to the box its `parentID` names (as predictions link them), else to the smallest
    box it lies in; others are left out. Keypoint i of a line is the one labelled `keypoint_labels[i]`
    (its model_index); missing ones, and ones outside the image, are "0 0 0" (v=2: visible).

    Args:
        boxes: `rectanglelabels` result items (with `id` and `value`) of the box control.
        keypoints: `keypointlabels` result items of the keypoint control.

    >>> box = {"id": "b", "value": {"x": 10, "y": 10, "width": 50, "height": 50, "rectanglelabels": ["p"]}}
    >>> point = {"value": {"x": 20, "y": 30, "keypointlabels": ["eye"]}}
    >>> pose_to_yolo([box], [point], ("p",), ("nose", "eye"), 100, 100)
    ['0 0.350000 0.350000 0.500000 0.500000 0.000000 0.000000 0 0.200000 0.300000 2']
    """
    instances: list[tuple[str, str, np.ndarray]] = []  # (region id, "cls cx cy w h", pixel xyxy)
    for region in boxes:
        value = region.get("value") or {}
        line = rectangle_to_yolo(value, labels, image_width, image_height)
        if line is None:
            continue
        corners = _corners(value, image_width, image_height) * 100  # percent, as the keypoints are
        xyxy = np.concatenate([corners.min(axis=0), corners.max(axis=0)])
        instances.append((str(region.get("id", "")), line, xyxy))
    points: list[dict[str, tuple[float, float]]] = [{} for _ in instances]
    ids = {region_id: i for i, (region_id, _, _) in enumerate(instances) if region_id}
    for region in keypoints:
        value = region.get("value") or {}
        names = value.get("keypointlabels") or []
        if not names or names[0] not in keypoint_labels or "x" not in value or "y" not in value:
            continue
        x, y = float(value["x"]), float(value["y"])
        owner = ids.get(str(region.get("parentID", "")), _smallest_box_around(instances, x, y))
        if owner is not None:
            points[owner].setdefault(names[0], (x, y))
    lines = []
    for (_, line, _), found in zip(instances, points, strict=True):
        parts = [line]
        for name in keypoint_labels:
            x, y = found.get(name, (-1.0, -1.0))
            inside = bool(name) and 0 <= x <= 100 and 0 <= y <= 100
            parts.append(f"{x / 100:.6f} {y / 100:.6f} 2" if inside else "0.000000 0.000000 0")
        lines.append(" ".join(parts))
    return lines


def _smallest_box_around(instances: Sequence[tuple[str, str, np.ndarray]], x: float, y: float) -> int | None:
    inside = [
        (float((box[2] - box[0]) * (box[3] - box[1])), i)
        for i, (_, _, box) in enumerate(instances)
        if box[0] - 1e-6 <= x <= box[2] + 1e-6 and box[1] - 1e-6 <= y <= box[3] + 1e-6
    ]
    return min(inside)[1] if inside else None


def choice_of(value: dict, labels: Sequence[str]) -> int | None:
    """The class of a `choices` or `taxonomy` value with exactly one choice (a taxonomy path counts as
    its last element); None for none, several, or one not in `labels`.

    >>> choice_of({"choices": ["dog"]}, ("cat", "dog")), choice_of({"taxonomy": [["Animal", "cat"]]}, ("cat",))
    (1, 0)
    """
    chosen = value.get("choices")
    if chosen is None:
        chosen = [path[-1] for path in value.get("taxonomy") or [] if path]
    if len(chosen or []) != 1 or chosen[0] not in labels:
        return None
    return labels.index(chosen[0])
