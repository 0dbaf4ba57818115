"""Label Studio annotation regions -> YOLO label lines (pure; class ids from the config's label order).

Why not `label_studio_sdk.converter`: its YOLO export numbers classes in the order labels first appear
in the annotations (so ids change from one export to the next), writes no dataset.yaml and no split.
"""

from __future__ import annotations

import numpy as np

from converters.geometry import label_studio_rect_corners


def rectangle_to_yolo(value: dict, labels: tuple[str, ...]) -> str | None:
    """A `rectanglelabels` value as "class cx cy w h" (normalised, clipped to the image), or None when its
    label is not one of `labels` or nothing of it lies inside the image. A rotated rectangle becomes the
    axis-aligned box around it.

    >>> rectangle_to_yolo({"x": 10, "y": 20, "width": 30, "height": 40, "rectanglelabels": ["b"]}, ("a", "b"))
    '1 0.250000 0.400000 0.300000 0.400000'
    """
    names = value.get("rectanglelabels") or []
    if not names or names[0] not in labels:
        return None
    # Corners in percent: an image of 100 x 100 "pixels" keeps Label Studio's units.
    corners = label_studio_rect_corners(
        value["x"], value["y"], value["width"], value["height"], value.get("rotation", 0) or 0, 100, 100
    )
    x1, y1 = np.clip(corners.min(axis=0), 0, 100) / 100
    x2, y2 = np.clip(corners.max(axis=0), 0, 100) / 100
    if x2 <= x1 or y2 <= y1:
        return None
    return f"{labels.index(names[0])} {(x1 + x2) / 2:.6f} {(y1 + y2) / 2:.6f} {x2 - x1:.6f} {y2 - y1:.6f}"
