"""Small annotated Label Studio projects with known geometry, one per trainable image tag.

Each example is a generated image, the Label Studio result items an annotator would have made for it,
and the truth in pixels it was drawn from (what the dataset lines must say). Images are `WIDTH` x
`HEIGHT`, not square, so a mix-up of x and y or of percent and pixels shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
from label_studio_sdk.converter.brush import mask2rle

from tools.shapes import draw_shapes_image, make_background, render_shape

WIDTH, HEIGHT = 160, 128
SHAPES = ("triangle", "circle", "square")  # config order, not tools.shapes' model order
BARS = ("bar", "plate")  # OBB classes: a long thin and a squarer rotated rectangle
KEYPOINTS = {0: "top", 2: "left", 3: "right"}  # model_index -> label; index 1 unused on purpose


@dataclass
class Example:
    image: np.ndarray
    regions: list[dict]
    truth: list[dict] = field(default_factory=list)  # per instance: label + pixel geometry


def config(kind: str, **attrs: str) -> str:
    """The labeling config of one kind; the control to train is always named "label"."""
    extra = " ".join(f'{k}="{v}"' for k, v in attrs.items())

    def labels(names, tag="Label", **per_label):
        return "".join(f'<{tag} value="{n}" {per_label.get(n, "")}/>' for n in names)

    controls = {
        "rectangle": f'<RectangleLabels name="label" toName="image" {extra}>{labels(SHAPES)}</RectangleLabels>',
        "obb": f'<RectangleLabels name="label" toName="image" model_obb="true" {extra}>{labels(BARS)}</RectangleLabels>',
        "polygon": f'<PolygonLabels name="label" toName="image" {extra}>{labels(SHAPES)}</PolygonLabels>',
        "brush": f'<BrushLabels name="label" toName="image" {extra}>{labels(SHAPES)}</BrushLabels>',
        "pose": (
            f'<KeyPointLabels name="label" toName="image" {extra}>'
            + "".join(f'<Label value="{n}" model_index="{i}"/>' for i, n in KEYPOINTS.items())
            + '</KeyPointLabels><RectangleLabels name="box" toName="image">'
            + labels(SHAPES)
            + "</RectangleLabels>"
        ),
        "choices": f'<Choices name="label" toName="image" {extra}>{labels(SHAPES, "Choice")}</Choices>',
        "taxonomy": (
            f'<Taxonomy name="label" toName="image" {extra}><Choice value="Shape">'
            f"{labels(SHAPES, 'Choice')}</Choice></Taxonomy>"
        ),
    }
    return f'<View><Image name="image" value="$image"/>{controls[kind]}</View>'


def _item(kind: str, value: dict, region_id: str, from_name: str = "label") -> dict:
    return {
        "id": region_id,
        "from_name": from_name,
        "to_name": "image",
        "type": kind,
        "original_width": WIDTH,
        "original_height": HEIGHT,
        "image_rotation": 0,
        "value": value,
    }


def shape_outline(name: str, box) -> np.ndarray:
    """(K, 2) pixel polygon of a tools.shapes shape: the triangle's and square's corners, a 24-gon circle."""
    x1, y1, x2, y2 = box
    if name == "triangle":
        return np.array([[x1, y2], [x2, y2], [(x1 + x2) / 2, y1]])
    if name == "square":
        return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    return np.stack(
        [(x1 + x2) / 2 + (x2 - x1) / 2 * np.cos(angles), (y1 + y2) / 2 + (y2 - y1) / 2 * np.sin(angles)], 1
    )


def obb_example(rng: np.random.Generator, index: int) -> Example:
    """One bar and one plate, each turned by a random angle, drawn from their corners."""
    image = make_background(rng, WIDTH, HEIGHT)
    regions, truth = [], []
    for k, (label, size, center) in enumerate(
        (("bar", (64.0, 14.0), (44.0, 64.0)), ("plate", (36.0, 28.0), (116.0, 64.0)))
    ):
        rotation = float(rng.uniform(5, 80) if index % 2 else rng.uniform(95, 175))
        w, h = size
        angle = math.radians(rotation)
        along_w = np.array([math.cos(angle), math.sin(angle)]) * w
        along_h = np.array([-math.sin(angle), math.cos(angle)]) * h
        pivot = np.array(center) - along_w / 2 - along_h / 2
        corners = np.stack([pivot, pivot + along_w, pivot + along_w + along_h, pivot + along_h])
        cv2.fillPoly(image, [np.round(corners).astype(np.int32)], (20, 20, 230) if k else (230, 20, 20))
        value = {
            "x": 100 * pivot[0] / WIDTH,
            "y": 100 * pivot[1] / HEIGHT,
            "width": 100 * w / WIDTH,
            "height": 100 * h / HEIGHT,
            "rotation": rotation,
            "rectanglelabels": [label],
        }
        regions.append(_item("rectanglelabels", value, f"r{index}-{k}"))
        truth.append({"label": label, "corners": corners})
    return Example(image, regions, truth)


def _shapes(rng: np.random.Generator, n_shapes: int = 2) -> tuple[np.ndarray, list]:
    return draw_shapes_image(rng, WIDTH, HEIGHT, n_shapes=n_shapes)


def rectangle_example(rng: np.random.Generator, index: int) -> Example:
    image, shapes = _shapes(rng)
    regions, truth = [], []
    for k, (name, (x1, y1, x2, y2)) in enumerate(shapes):
        value = {
            "x": 100 * x1 / WIDTH,
            "y": 100 * y1 / HEIGHT,
            "width": 100 * (x2 - x1) / WIDTH,
            "height": 100 * (y2 - y1) / HEIGHT,
            "rotation": 0,
            "rectanglelabels": [name],
        }
        regions.append(_item("rectanglelabels", value, f"b{index}-{k}"))
        truth.append({"label": name, "box": (x1, y1, x2, y2)})
    return Example(image, regions, truth)


def polygon_example(rng: np.random.Generator, index: int) -> Example:
    image, shapes = _shapes(rng)
    regions, truth = [], []
    for k, (name, box) in enumerate(shapes):
        outline = shape_outline(name, box)
        points = (outline / [WIDTH, HEIGHT] * 100).tolist()
        regions.append(_item("polygonlabels", {"points": points, "polygonlabels": [name]}, f"p{index}-{k}"))
        truth.append({"label": name, "points": outline})
    return Example(image, regions, truth)


def brush_example(rng: np.random.Generator, index: int) -> Example:
    """Each shape's own mask as the editor stores it (RLE of an RGBA image, foreground 255)."""
    image, shapes = _shapes(rng)
    regions, truth = [], []
    for k, (name, box) in enumerate(shapes):
        mask = render_shape(np.zeros((HEIGHT, WIDTH, 3), np.uint8), name, box, (255, 255, 255))[:, :, 0]
        mask = np.where(mask > 127, 255, 0).astype(np.uint8)
        value = {"format": "rle", "rle": [int(b) for b in mask2rle(mask)], "brushlabels": [name]}
        regions.append(_item("brushlabels", value, f"b{index}-{k}"))
        truth.append({"label": name, "mask": mask > 0})
    return Example(image, regions, truth)


def pose_example(rng: np.random.Generator, index: int) -> Example:
    """A box per shape and keypoints at its top middle and bottom corners (the triangle's vertices).

    Keypoints of the first shape name their box through parentID, the others only lie inside it; the
    second shape's "right" keypoint is not annotated (a missing keypoint)."""
    image, shapes = _shapes(rng)
    regions, truth = [], []
    for k, (name, box) in enumerate(shapes):
        x1, y1, x2, y2 = box
        box_id = f"box{index}-{k}"
        value = {
            "x": 100 * x1 / WIDTH,
            "y": 100 * y1 / HEIGHT,
            "width": 100 * (x2 - x1) / WIDTH,
            "height": 100 * (y2 - y1) / HEIGHT,
            "rotation": 0,
            "rectanglelabels": [name],
        }
        regions.append(_item("rectanglelabels", value, box_id, from_name="box"))
        points = {"top": ((x1 + x2) / 2, y1), "left": (x1, y2), "right": (x2, y2)}
        if k == 1:
            del points["right"]
        for label, (x, y) in points.items():
            point = _item(
                "keypointlabels",
                {"x": 100 * x / WIDTH, "y": 100 * y / HEIGHT, "width": 0.6, "keypointlabels": [label]},
                f"{box_id}-{label}",
            )
            if k == 0:
                point["parentID"] = box_id
            regions.append(point)
        truth.append({"label": name, "box": box, "keypoints": points})
    return Example(image, regions, truth)


def choices_example(rng: np.random.Generator, index: int, taxonomy: bool = False) -> Example:
    """One shape per image, the classes taking turns (every class in every split)."""
    name = SHAPES[index % len(SHAPES)]
    image = make_background(rng, WIDTH, HEIGHT)
    size = float(rng.integers(50, 90))
    x1, y1 = float(rng.integers(1, WIDTH - size)), float(rng.integers(1, HEIGHT - size))
    render_shape(image, name, (x1, y1, x1 + size, y1 + size), (20, 20, 230))
    value = {"taxonomy": [["Shape", name]]} if taxonomy else {"choices": [name]}
    kind = "taxonomy" if taxonomy else "choices"
    return Example(image, [_item(kind, value, f"c{index}")], [{"label": name}])


EXAMPLES = {
    "rectangle": rectangle_example,
    "obb": obb_example,
    "polygon": polygon_example,
    "brush": brush_example,
    "pose": pose_example,
    "choices": choices_example,
    "taxonomy": lambda rng, index: choices_example(rng, index, taxonomy=True),
}


def examples(kind: str, count: int, seed: int = 5) -> list[Example]:
    rng = np.random.default_rng(seed)
    return [EXAMPLES[kind](rng, index) for index in range(count)]
