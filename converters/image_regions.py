"""Label Studio prediction regions (one result dict each) built from pixel geometry.

Every region has ``id``, ``from_name``, ``to_name``, ``type``, ``value`` and a float ``score``; image
regions also carry ``original_width``, ``original_height`` and ``image_rotation`` so Label Studio can
map percent coordinates back to pixels. Functions that can produce nothing drawable return ``None``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from label_studio_sdk.converter.brush import mask2rle

from converters.geometry import obb_to_label_studio, polygon_to_percent, xyxy_to_percent
from converters.regions import Region, make_region

__all__ = [
    "brush_region",
    "choices_region",
    "keypoint_region",
    "oriented_rectangle_region",
    "polygon_region",
    "prediction_score",
    "rectangle_region",
    "taxonomy_region",
]


def _image_region(
    type_: str,
    value: dict[str, Any],
    names: tuple[str, str, str | None],
    score: float,
    image_width: int,
    image_height: int,
) -> Region:
    """One region on an image: `make_region` plus the image's size; `names` is (from, to, region id)."""
    from_name, to_name, region_id = names
    region = make_region(
        region_id=region_id, from_name=from_name, to_name=to_name, type_=type_, value=value, score=score
    )
    return {
        **region,
        "original_width": int(image_width),
        "original_height": int(image_height),
        "image_rotation": 0,
    }


def _rectangle_value(x: float, y: float, width: float, height: float, rotation: float, label: str) -> dict:
    return {
        "x": float(x),
        "y": float(y),
        "width": float(width),
        "height": float(height),
        "rotation": rotation,
        "rectanglelabels": [label],
    }


def rectangle_region(
    *,
    from_name: str,
    to_name: str,
    label: str,
    xyxy: np.ndarray,
    score: float,
    image_width: int,
    image_height: int,
    region_id: str | None = None,
) -> Region:
    """An axis-aligned ``rectanglelabels`` region from one pixel box.

    Args:
        xyxy: (4,) pixel box ``[x1, y1, x2, y2]``; clipped to the image.

    Example:
        >>> region = rectangle_region(from_name="label", to_name="image", label="car", score=0.9,
        ...     xyxy=np.array([64, 48, 320, 240]), image_width=640, image_height=480)
        >>> region["value"]
        {'x': 10.0, 'y': 10.0, 'width': 40.0, 'height': 40.0, 'rotation': 0, 'rectanglelabels': ['car']}
    """
    x, y, width, height = xyxy_to_percent(np.asarray(xyxy).reshape(1, 4), image_width, image_height)[0]
    value = _rectangle_value(x, y, width, height, 0, label)
    return _image_region(
        "rectanglelabels", value, (from_name, to_name, region_id), score, image_width, image_height
    )


def oriented_rectangle_region(
    *,
    from_name: str,
    to_name: str,
    label: str,
    xywhr: np.ndarray,
    score: float,
    image_width: int,
    image_height: int,
    region_id: str | None = None,
) -> Region | None:
    """A rotated ``rectanglelabels`` region from one Ultralytics oriented box; None when no corner of
    the box lies inside the image or a side is longer than the image's (Label Studio refuses both).

    Args:
        xywhr: (5,) pixel box ``[cx, cy, w, h, angle_radians]``; see ``geometry.obb_to_label_studio``.

    Example:
        >>> region = oriented_rectangle_region(from_name="label", to_name="image", label="ship",
        ...     xywhr=np.array([320, 240, 128, 96, np.pi / 2]), score=0.8, image_width=640, image_height=480)
        >>> {k: round(v, 3) for k, v in region["value"].items() if k != "rectanglelabels"}
        {'x': 57.5, 'y': 36.667, 'width': 20.0, 'height': 20.0, 'rotation': 90.0}
    """
    x, y, width, height, rotation = obb_to_label_studio(
        np.asarray(xywhr).reshape(1, 5), image_width, image_height
    )[0]
    if not (-1e-4 <= x <= 100 + 1e-4 and -1e-4 <= y <= 100 + 1e-4) or max(width, height) > 100 + 1e-4:
        return None  # Label Studio refuses a pivot outside the image or a side longer than the image
    x, y = min(max(x, 0.0), 100.0), min(max(y, 0.0), 100.0)
    value = _rectangle_value(x, y, width, height, float(rotation), label)
    return _image_region(
        "rectanglelabels", value, (from_name, to_name, region_id), score, image_width, image_height
    )


def polygon_region(
    *,
    from_name: str,
    to_name: str,
    label: str,
    points: np.ndarray,
    score: float,
    image_width: int,
    image_height: int,
    region_id: str | None = None,
) -> Region | None:
    """A closed ``polygonlabels`` region from pixel vertices; ``None`` below 3 vertices.

    Args:
        points: (K, 2) pixel vertices ``[x, y]``; clipped to the image.

    Example:
        >>> polygon_region(from_name="label", to_name="image", label="cat", score=0.7, image_width=640,
        ...     image_height=480, points=np.array([[0, 0], [64, 0], [64, 48]]))["value"]["points"]
        [[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]]
    """
    percent_points = polygon_to_percent(points, image_width, image_height)
    # Ultralytics emits degenerate 0-2 point segments for tiny masks; Label Studio cannot draw those.
    if len(percent_points) < 3:
        return None
    value = {"points": percent_points, "closed": True, "polygonlabels": [label]}
    return _image_region(
        "polygonlabels", value, (from_name, to_name, region_id), score, image_width, image_height
    )


def brush_region(
    *,
    from_name: str,
    to_name: str,
    label: str,
    mask: np.ndarray,
    score: float,
    region_id: str | None = None,
) -> Region | None:
    """A ``brushlabels`` region holding the mask as Label Studio RLE; ``None`` for an empty mask.

    Args:
        mask: (H, W) mask at the original image size; any non-zero pixel is foreground.

    The RLE encodes an RGBA image with every channel 0 or 255 (``label_studio_sdk.converter.brush``'s
    ``mask2rle`` repeats the value into 4 channels; the editor draws the alpha channel, so foreground
    must be 255, not 1). ``decode_rle(rle).reshape(H, W, 4)[:, :, 3]`` gives the 0/255 mask back.

    Example:
        >>> region = brush_region(from_name="brush", to_name="image", label="cat", score=0.7,
        ...     mask=np.eye(4, 6, dtype=bool))
        >>> region["value"]["format"], region["original_width"], region["original_height"]
        ('rle', 6, 4)
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    if not mask.any():
        return None
    height, width = mask.shape
    rle = mask2rle(np.where(mask != 0, np.uint8(255), np.uint8(0)))  # uint8 at once, not int64 first
    value = {"format": "rle", "rle": [int(byte) for byte in rle], "brushlabels": [label]}
    return _image_region("brushlabels", value, (from_name, to_name, region_id), score, width, height)


def keypoint_region(
    *,
    from_name: str,
    to_name: str,
    label: str,
    x: float,
    y: float,
    score: float,
    image_width: int,
    image_height: int,
    point_size: float,
    parent_id: str | None = None,
    region_id: str | None = None,
) -> Region:
    """A ``keypointlabels`` region from one pixel point, optionally grouped under a parent region.

    Args:
        x, y: pixel position; clipped to the image.
        point_size: drawn point size in percent of the image width (Label Studio's ``value.width``;
            the editor only recognises a keypoint value when ``width`` is present).
        parent_id: ``id`` of the region (usually the pose's bounding box) this point belongs to;
            Label Studio groups regions by the top-level ``parentID`` key.

    Example:
        >>> region = keypoint_region(from_name="kp", to_name="image", label="nose", x=320, y=120,
        ...     score=0.6, image_width=640, image_height=480, point_size=0.5, parent_id="box1")
        >>> region["value"], region["parentID"]
        ({'x': 50.0, 'y': 25.0, 'width': 0.5, 'keypointlabels': ['nose']}, 'box1')
    """
    [[x_percent, y_percent]] = polygon_to_percent(np.array([[x, y]]), image_width, image_height)
    value = {"x": x_percent, "y": y_percent, "width": float(point_size), "keypointlabels": [label]}
    region = _image_region(
        "keypointlabels", value, (from_name, to_name, region_id), score, image_width, image_height
    )
    if parent_id is not None:
        region["parentID"] = parent_id
    return region


def choices_region(
    *, from_name: str, to_name: str, choices: Sequence[str], score: float, region_id: str | None = None
) -> Region:
    """A ``choices`` (classification) region.

    Example:
        >>> choices_region(from_name="cls", to_name="image", choices=["cat"], score=0.9)["value"]
        {'choices': ['cat']}
    """
    return make_region(
        region_id=region_id,
        from_name=from_name,
        to_name=to_name,
        type_="choices",
        value={"choices": list(choices)},
        score=score,
    )


def taxonomy_region(
    *,
    from_name: str,
    to_name: str,
    paths: Sequence[Sequence[str]],
    score: float,
    region_id: str | None = None,
) -> Region:
    """A ``taxonomy`` region; each path runs from the root to the chosen node.

    Example:
        >>> taxonomy_region(from_name="tax", to_name="image", paths=[["Animal", "Cat"]], score=0.9)["value"]
        {'taxonomy': [['Animal', 'Cat']]}
    """
    return make_region(
        region_id=region_id,
        from_name=from_name,
        to_name=to_name,
        type_="taxonomy",
        value={"taxonomy": [list(path) for path in paths]},
        score=score,
    )


def prediction_score(regions: Sequence[Region]) -> float:
    """The prediction-level score: mean of the regions' scores, 0.0 when there are none.

    Example:
        >>> prediction_score([{"score": 0.5}, {"score": 1.0}]), prediction_score([])
        (0.75, 0.0)
    """
    scores = [float(region["score"]) for region in regions if region.get("score") is not None]
    if not scores:
        return 0.0
    return sum(scores) / len(scores)
