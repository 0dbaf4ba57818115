"""Pixel geometry from Ultralytics -> Label Studio's percent geometry, as pure numpy functions.

Label Studio stores image regions in percent of the original image: x values in percent of the image
width, y values in percent of the image height. Rectangles are (x, y, width, height) with (x, y) the
top-left corner; a rotated rectangle turns by ``rotation`` degrees (clockwise on screen, [0, 360))
about that corner, in pixel space. This is how the editor's RectRegion draws it (a Konva rect rotated
about its origin) and how ``label_studio_sdk.converter.utils.convert_annotation_to_yolo_obb`` reads it.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "label_studio_rect_corners",
    "obb_to_label_studio",
    "polygon_to_percent",
    "xyxy_to_percent",
]


def _check_image_size(image_width: int, image_height: int) -> None:
    # A zero size would turn every coordinate into inf/nan without an error.
    if image_width <= 0 or image_height <= 0:
        raise ValueError(f"image size must be positive, got {image_width}x{image_height}")


def xyxy_to_percent(xyxy: np.ndarray, image_width: int, image_height: int) -> np.ndarray:
    """Convert pixel corner boxes to Label Studio percent boxes, clipped to the image.

    Args:
        xyxy: (N, 4) pixel boxes ``[x1, y1, x2, y2]`` (top-left, bottom-right).
        image_width: image width in pixels.
        image_height: image height in pixels.

    Returns:
        (N, 4) float array ``[x, y, width, height]`` in percent (0..100): x and width of the image
        width, y and height of the image height. A box fully outside the image gets zero size.

    Example:
        >>> xyxy_to_percent(np.array([[64, 48, 320, 240], [-10, 0, 64, 480]]), 640, 480).tolist()
        [[10.0, 10.0, 40.0, 40.0], [0.0, 0.0, 10.0, 100.0]]
    """
    _check_image_size(image_width, image_height)
    boxes = np.asarray(xyxy, dtype=np.float64)
    if boxes.size == 0:
        return np.empty((0, 4), dtype=np.float64)
    boxes = boxes.reshape(-1, 4)
    # Clip in pixels first so width/height shrink with the box instead of just moving its corner.
    x1, x2 = (np.clip(boxes[:, i], 0, image_width) for i in (0, 2))
    y1, y2 = (np.clip(boxes[:, i], 0, image_height) for i in (1, 3))
    return np.stack(
        [
            x1 / image_width * 100,
            y1 / image_height * 100,
            np.maximum(x2 - x1, 0) / image_width * 100,
            np.maximum(y2 - y1, 0) / image_height * 100,
        ],
        axis=1,
    )


def obb_to_label_studio(xywhr: np.ndarray, image_width: int, image_height: int) -> np.ndarray:
    """Convert Ultralytics oriented boxes to Label Studio rotated rectangles.

    Ultralytics' width axis is ``(cos r, sin r)`` and its height axis ``(-sin r, cos r)`` (see
    ``ultralytics.utils.ops.xywhr2xyxyxyxy``), which are exactly the edges Label Studio draws from its
    (x, y) corner, so the conversion is: corner = center - w/2 * width_axis - h/2 * height_axis,
    rotation = r in degrees.

    The same rectangle has four descriptions, one per corner as pivot (angle + k * 90 degrees, width
    and height swapped for odd k). Label Studio wants the pivot inside the image, so the first
    description whose pivot is inside (and whose width and height fit the image's, when one does) wins;
    a box none of whose corners is inside keeps k = 0 and its x or y stays outside 0..100 (callers
    drop it: ``oriented_rectangle_region`` returns None).

    Args:
        xywhr: (N, 5) pixel boxes ``[cx, cy, w, h, angle]``, angle in radians, positive clockwise on
            screen (y points down), as ``Results.obb.xywhr`` gives them.
        image_width: image width in pixels.
        image_height: image height in pixels.

    Returns:
        (N, 5) float array ``[x, y, width, height, rotation]``: the pivot corner in percent of image
        width/height, the size in percent of image width/height, rotation in degrees in [0, 360).

    Example:
        >>> obb_to_label_studio(np.array([[320, 240, 128, 96, np.pi / 2]]), 640, 480).round(3).tolist()
        [[57.5, 36.667, 20.0, 20.0, 90.0]]
    """
    _check_image_size(image_width, image_height)
    boxes = np.asarray(xywhr, dtype=np.float64)
    if boxes.size == 0:
        return np.empty((0, 5), dtype=np.float64)
    cx, cy, w0, h0, angle0 = boxes.reshape(-1, 5).T
    candidates, pivot_inside, size_fits = [], [], []
    for k in range(4):
        angle = angle0 + k * np.pi / 2
        w, h = (h0, w0) if k % 2 else (w0, h0)
        cos, sin = np.cos(angle), np.sin(angle)
        x = cx - w / 2 * cos + h / 2 * sin
        y = cy - w / 2 * sin - h / 2 * cos
        candidates.append((x, y, w, h, angle))
        pivot_inside.append(
            (x >= -1e-6) & (x <= image_width + 1e-6) & (y >= -1e-6) & (y <= image_height + 1e-6)
        )
        size_fits.append((w <= image_width + 1e-6) & (h <= image_height + 1e-6))
    # Best: pivot inside and size within the image's; then pivot inside; else the first description.
    chosen = np.full(len(cx), -1)
    for wanted in ([p & f for p, f in zip(pivot_inside, size_fits, strict=True)], pivot_inside):
        for k in range(4):
            chosen[(chosen < 0) & wanted[k]] = k
    chosen[chosen < 0] = 0
    rows = np.arange(len(cx))
    x, y, w, h, angle = (np.stack(parts)[chosen, rows] for parts in zip(*candidates, strict=True))
    rotation = np.degrees(angle) % 360
    # A tiny negative angle gives exactly 360.0 after the modulo; Label Studio keeps [0, 360).
    rotation[rotation >= 360] = 0.0
    return np.stack(
        [
            x / image_width * 100,
            y / image_height * 100,
            w / image_width * 100,
            h / image_height * 100,
            rotation,
        ],
        axis=1,
    )


def label_studio_rect_corners(
    x: float,
    y: float,
    width: float,
    height: float,
    rotation_degrees: float,
    image_width: int,
    image_height: int,
) -> np.ndarray:
    """Pixel corners of a (possibly rotated) Label Studio rectangle; the inverse of the above.

    Same formula as ``label_studio_sdk.converter.utils.convert_annotation_to_yolo_obb``.

    Args:
        x, y: pivot (top-left before rotation) corner in percent of image width / height.
        width, height: size in percent of image width / height.
        rotation_degrees: clockwise on screen, about (x, y).
        image_width: image width in pixels.
        image_height: image height in pixels.

    Returns:
        (4, 2) float array of pixel corners, in the order the rectangle's own top-left, top-right,
        bottom-right, bottom-left (before rotation).

    Example:
        >>> label_studio_rect_corners(10, 10, 20, 20, 90, 640, 480).round(3).tolist()
        [[64.0, 48.0], [64.0, 176.0], [-32.0, 176.0], [-32.0, 48.0]]
    """
    _check_image_size(image_width, image_height)
    px, py = x / 100 * image_width, y / 100 * image_height
    pw, ph = width / 100 * image_width, height / 100 * image_height
    angle = np.radians(rotation_degrees)
    along_width = np.array([np.cos(angle), np.sin(angle)]) * pw
    along_height = np.array([-np.sin(angle), np.cos(angle)]) * ph
    pivot = np.array([px, py])
    return np.stack([pivot, pivot + along_width, pivot + along_width + along_height, pivot + along_height])


def polygon_to_percent(points: np.ndarray, image_width: int, image_height: int) -> list[list[float]]:
    """Convert a pixel polygon to Label Studio's ``points`` list, clipped to the image.

    Args:
        points: (K, 2) pixel vertices ``[x, y]``.
        image_width: image width in pixels.
        image_height: image height in pixels.

    Returns:
        K pairs ``[x%, y%]`` of plain floats (JSON-ready), each within 0..100; ``[]`` for K == 0.

    Example:
        >>> polygon_to_percent(np.array([[64, 48], [700, 48], [64, -5]]), 640, 480)
        [[10.0, 10.0], [100.0, 10.0], [10.0, 0.0]]
    """
    _check_image_size(image_width, image_height)
    vertices = np.asarray(points, dtype=np.float64)
    if vertices.size == 0:
        return []
    vertices = vertices.reshape(-1, 2)
    percent = vertices / np.array([image_width, image_height]) * 100
    return np.clip(percent, 0, 100).tolist()
