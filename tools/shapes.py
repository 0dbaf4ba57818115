"""Synthetic "shapes" images with known ground-truth boxes (pure numpy + OpenCV).

Used to train the tiny detector shipped as ``models/shapes-yolov8n.pt`` (see
``tools/train_shapes_model.py``) and by tests that must check boxes land in the right place.

Conventions
-----------
* Classes, in model order: ``CLASS_NAMES = ("circle", "square", "triangle")`` (ids 0, 1, 2).
* Images are BGR ``uint8`` arrays of shape ``(height, width, 3)`` (OpenCV layout).
* Boxes are ``(x1, y1, x2, y2)`` floats in pixels, pixel-edge convention: a shape covering pixel
  columns ``10..49`` has ``x1=10, x2=50``. Every shape touches all four sides of its box:
  circles are inscribed in a square box, squares fill it, triangles point up with their base on the
  box's bottom edge and apex at the middle of its top edge.
* Everything is deterministic given the seed / ``np.random.Generator`` passed in.

API
---
``draw_shapes_image(rng, width=320, height=240, n_shapes=None) -> (image, [(name, xyxy), ...])``
    Random training/test image: noisy coloured background and 1-4 (or ``n_shapes``) filled,
    non-overlapping shapes of random class, colour and size (30-90 px), fully inside the image.
``draw_scene(width, height, shapes, background_seed=0) -> image``
    Render one frame from explicit ``(name, xyxy, bgr_color)`` shapes on a background that depends
    only on ``background_seed`` (same seed -> same background), e.g. for moving-shape videos.
``sample_shapes(rng, width, height, n_shapes=None, ...) -> [(name, xyxy, bgr_color), ...]``
    The layout sampler used by ``draw_shapes_image``.
``make_background(rng, width, height) -> image`` and ``render_shape(image, name, xyxy, color)``
    The two building blocks.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle")
CLASS_IDS: dict[str, int] = {name: i for i, name in enumerate(CLASS_NAMES)}

Box = tuple[float, float, float, float]
Color = tuple[int, int, int]

_SHIFT = 4  # OpenCV fixed-point fractional bits for sub-pixel drawing
_SCALE = 1 << _SHIFT


def make_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A mildly noisy, coloured background: random base colour + linear gradient + Gaussian noise."""
    base = rng.uniform(60, 200, size=3)
    direction = rng.uniform(-1, 1, size=2)
    amplitude = rng.uniform(10, 40, size=3)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (direction[0] * (xs / max(width - 1, 1) - 0.5) + direction[1] * (ys / max(height - 1, 1) - 0.5))[
        ..., None
    ]
    img = base[None, None, :] + ramp * amplitude[None, None, :]
    img = img + rng.normal(0, rng.uniform(3, 10), size=(height, width, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _pt(x: float, y: float) -> tuple[int, int]:
    return round(x * _SCALE), round(y * _SCALE)


def render_shape(image: np.ndarray, name: str, xyxy: Sequence[float], color: Sequence[int]) -> np.ndarray:
    """Draw a filled ``name`` shape that exactly fills box ``xyxy`` (pixel edges) onto ``image`` in place."""
    if name not in CLASS_IDS:
        raise ValueError(f"unknown shape {name!r}; expected one of {CLASS_NAMES}")
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    color = tuple(int(c) for c in color)
    # Pixel-edge box [x1, x2) -> pixel-centre coordinates x1 .. x2 - 1.
    cx1, cy1, cx2, cy2 = x1, y1, x2 - 1, y2 - 1
    if name == "square":
        cv2.rectangle(
            image, _pt(cx1, cy1), _pt(cx2, cy2), color, thickness=-1, lineType=cv2.LINE_8, shift=_SHIFT
        )
    elif name == "circle":
        center = _pt((cx1 + cx2) / 2, (cy1 + cy2) / 2)
        axes = _pt((cx2 - cx1) / 2, (cy2 - cy1) / 2)
        cv2.ellipse(image, center, axes, 0, 0, 360, color, thickness=-1, lineType=cv2.LINE_AA, shift=_SHIFT)
    else:  # triangle, apex up
        pts = np.array([_pt(cx1, cy2), _pt(cx2, cy2), _pt((cx1 + cx2) / 2, cy1)], dtype=np.int32)
        cv2.fillPoly(image, [pts], color, lineType=cv2.LINE_AA, shift=_SHIFT)
    return image


def _contrasting_color(
    rng: np.random.Generator, background_mean: np.ndarray, min_dist: float = 90.0
) -> Color:
    for _ in range(100):
        c = rng.integers(0, 256, size=3)
        if np.linalg.norm(c - background_mean) >= min_dist:
            return int(c[0]), int(c[1]), int(c[2])
    # Fallback: the colour "opposite" the background.
    c = np.where(background_mean > 127, 20, 235)
    return int(c[0]), int(c[1]), int(c[2])


def _overlaps(a: Box, b: Box, margin: float) -> bool:
    return not (
        a[2] + margin <= b[0] or b[2] + margin <= a[0] or a[3] + margin <= b[1] or b[3] + margin <= a[1]
    )


def sample_shapes(
    rng: np.random.Generator,
    width: int,
    height: int,
    n_shapes: int | None = None,
    min_size: int = 30,
    max_size: int = 90,
    background_mean: Sequence[float] | None = None,
    margin: int = 4,
) -> list[tuple[str, Box, Color]]:
    """Random non-overlapping shapes fully inside the image: ``[(name, xyxy, bgr_color), ...]``.

    ``n_shapes`` defaults to a random 1-4. Circles and squares get square boxes; triangles get a
    width in [min_size, max_size] and a height of 0.75-1.15 x the width. Fewer shapes than asked are
    returned only if the image is too crowded to place them (never for the defaults at 320x240).
    """
    if n_shapes is None:
        n_shapes = int(rng.integers(1, 5))
    bg = np.asarray(background_mean if background_mean is not None else (128, 128, 128), dtype=float)
    max_size = min(max_size, width - 2, height - 2)
    min_size = min(min_size, max_size)
    shapes: list[tuple[str, Box, Color]] = []
    attempts = 0
    while len(shapes) < n_shapes and attempts < 200 * max(n_shapes, 1):
        attempts += 1
        name = CLASS_NAMES[int(rng.integers(len(CLASS_NAMES)))]
        w = int(rng.integers(min_size, max_size + 1))
        h = w if name != "triangle" else int(np.clip(round(w * rng.uniform(0.75, 1.15)), min_size, max_size))
        x1 = int(rng.integers(1, width - w))  # keep a 1 px border: fully inside
        y1 = int(rng.integers(1, height - h))
        box: Box = (float(x1), float(y1), float(x1 + w), float(y1 + h))
        if any(_overlaps(box, other[1], margin) for other in shapes):
            continue
        shapes.append((name, box, _contrasting_color(rng, bg)))
    return shapes


def draw_shapes_image(
    rng: np.random.Generator, width: int = 320, height: int = 240, n_shapes: int | None = None
) -> tuple[np.ndarray, list[tuple[str, Box]]]:
    """A random image and its ground truth ``[(class_name, (x1, y1, x2, y2)), ...]`` in pixels."""
    image = make_background(rng, width, height)
    shapes = sample_shapes(
        rng, width, height, n_shapes=n_shapes, background_mean=image.reshape(-1, 3).mean(axis=0)
    )
    for name, box, color in shapes:
        render_shape(image, name, box, color)
    return image, [(name, box) for name, box, _ in shapes]


def draw_scene(
    width: int,
    height: int,
    shapes: Sequence[tuple[str, Sequence[float], Sequence[int]]],
    background_seed: int = 0,
) -> np.ndarray:
    """Render one frame: background fixed by ``background_seed``, then each ``(name, xyxy, bgr)`` in order.

    Deterministic: same arguments -> identical pixels. Boxes may be fractional (drawn with sub-pixel
    precision) and may extend past the image border (the shape is clipped).
    """
    image = make_background(np.random.default_rng(background_seed), width, height)
    for name, box, color in shapes:
        render_shape(image, name, box, color)
    return image


def to_yolo_labels(boxes: Sequence[tuple[str, Sequence[float]]], width: int, height: int) -> list[str]:
    """Ground truth -> Ultralytics YOLO label lines ``"cls cx cy w h"`` (normalised to 0-1)."""
    lines = []
    for name, (x1, y1, x2, y2) in boxes:
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        lines.append(f"{CLASS_IDS[name]} {cx:.6f} {cy:.6f} {(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")
    return lines
