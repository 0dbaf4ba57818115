"""Annotations -> YOLO dataset files, and the evaluation that decides promotion, on generated images with
known geometry (no Label Studio, no training)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from control_models.labeling_plan import build_plan
from converters.yolo_labels import rectangle_to_yolo
from core.errors import LabelingConfigError, TrainingDataError
from tests.conftest import SHAPES_MODEL, rectangle_annotation
from tools.shapes import draw_shapes_image
from training.dataset import AnnotatedImage, write_dataset
from training.evaluation import evaluate

LABELS = ("triangle", "circle", "square")  # config order, not the order shapes happen to appear


def config(labels: str = "", **attrs: str) -> str:
    extra = " ".join(f'{k}="{v}"' for k, v in attrs.items())
    labels = labels or "".join(f'<Label value="{label}"/>' for label in LABELS)
    return (
        f'<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image" {extra}>'
        f"{labels}</RectangleLabels></View>"
    )


def spec_of(label_config: str, settings):
    (control,) = build_plan(label_config, settings).controls
    return control.training_spec()


def shapes_images(
    folder: Path, count: int, seed: int = 3, size=(160, 128), rename=str
) -> list[AnnotatedImage]:
    rng = np.random.default_rng(seed)
    images = []
    for task_id in range(1, count + 1):
        image, shapes = draw_shapes_image(rng, *size, n_shapes=3)
        path = folder / f"task-{task_id}.png"
        cv2.imwrite(str(path), image)
        regions = [rectangle_annotation(rename(name), box, *size, from_name="box") for name, box in shapes]
        images.append(AnnotatedImage(task_id, path, regions, *size))
    return images


def test_rectangles_become_yolo_lines_with_config_order_ids():
    value = {"x": 10, "y": 20, "width": 30, "height": 40, "rectanglelabels": ["circle"]}
    assert rectangle_to_yolo(value, LABELS, 640, 480) == "1 0.250000 0.400000 0.300000 0.400000"
    assert rectangle_to_yolo({**value, "rectanglelabels": ["dog"]}, LABELS, 640, 480) is None


def test_a_rotated_rectangle_becomes_the_box_around_it_and_is_clipped():
    # 20 x 10 (percent) turned 90 degrees about its top-left corner (50, 50): it spans x 40..50, y 50..70.
    value = {"x": 50, "y": 50, "width": 20, "height": 10, "rotation": 90, "rectanglelabels": ["square"]}
    assert rectangle_to_yolo(value, LABELS, 100, 100) == "2 0.450000 0.600000 0.100000 0.200000"
    # The turn is in pixels: on 640 x 480 the 128 px wide side ends up 128 px high, 26.7 % of the height.
    assert rectangle_to_yolo(value, LABELS, 640, 480) == "2 0.462500 0.633333 0.075000 0.266667"
    outside = {"x": 90, "y": 90, "width": 20, "height": 20, "rectanglelabels": ["square"]}
    assert rectangle_to_yolo(outside, LABELS, 640, 480) == "2 0.950000 0.950000 0.100000 0.100000"
    assert rectangle_to_yolo({**outside, "x": 120}, LABELS, 640, 480) is None


def test_dataset_files_match_the_annotations_line_by_line(make_settings, tmp_path):
    spec = spec_of(config(), make_settings())
    images = shapes_images(tmp_path, 10)
    summary = write_dataset(images, spec, tmp_path / "dataset", seed=0)
    description = yaml.safe_load(summary.yaml_path.read_text())
    assert description["names"] == {0: "triangle", 1: "circle", 2: "square"}
    assert sorted(summary.train_task_ids + summary.val_task_ids) == list(range(1, 11))
    assert len(summary.val_task_ids) == 2
    for image in images:
        split = "val" if image.task_id in summary.val_task_ids else "train"
        lines = (tmp_path / "dataset" / "labels" / split / f"{image.task_id}.txt").read_text().splitlines()
        assert len(lines) == len(image.regions)
        for line, annotated in zip(lines, image.regions, strict=True):
            cls, cx, cy, w, h = line.split()
            value = annotated["value"]
            assert LABELS[int(cls)] == value["rectanglelabels"][0]
            expected = (
                value["x"] + value["width"] / 2,
                value["y"] + value["height"] / 2,
                value["width"],
                value["height"],
            )
            assert [float(cx), float(cy), float(w), float(h)] == pytest.approx(
                [v / 100 for v in expected], abs=1e-5
            )
        copied = tmp_path / "dataset" / "images" / split / f"{image.task_id}.png"
        assert copied.read_bytes() == image.image_path.read_bytes()
    assert write_dataset(images, spec, tmp_path / "again", seed=0).val_task_ids == summary.val_task_ids
    for split in ("train", "val"):
        assert all(summary.instances_per_class[split][label] > 0 for label in LABELS)


def test_too_little_data_says_what_is_missing(make_settings, tmp_path):
    spec = spec_of(config(), make_settings())
    images = shapes_images(tmp_path, 3)
    with pytest.raises(TrainingDataError, match="3 annotated image"):
        write_dataset(images, spec, tmp_path / "d1")
    with_dog = spec_of(config(labels='<Label value="circle"/><Label value="dog"/>'), make_settings())
    with pytest.raises(TrainingDataError, match="no annotated example of 'dog'"):
        write_dataset(shapes_images(tmp_path, 6), with_dog, tmp_path / "d2")


def test_training_attributes_are_parsed_once_with_clear_errors(make_settings):
    spec = spec_of(
        config(model_train_epochs="3", model_train_imgsz="96", model_train_every="5"), make_settings()
    )
    assert (spec.epochs, spec.imgsz, spec.train_every, spec.promote, spec.labels) == (
        3,
        96,
        5,
        "better",
        LABELS,
    )
    with pytest.raises(LabelingConfigError, match='model_train_epochs="x"'):
        spec_of(config(model_train_epochs="x"), make_settings())
    with pytest.raises(LabelingConfigError, match="model_train_promote"):
        spec_of(config(model_train_promote="sometimes"), make_settings())
    video = (
        '<View><Video name="video" value="$video"/><VideoRectangle name="box" toName="video"/>'
        '<Labels name="l" toName="video"><Label value="circle"/></Labels></View>'
    )
    assert [c.training_spec() for c in build_plan(video, make_settings()).controls] == [None]


def test_the_shapes_detector_scores_high_and_the_same_through_a_label_map(make_settings, tmp_path):
    spec = spec_of(config(), make_settings())
    dataset = write_dataset(
        shapes_images(tmp_path, 8, size=(224, 224)), spec, tmp_path / "d", val_fraction=1.0
    )
    direct = evaluate(SHAPES_MODEL, dataset, spec, imgsz=224)
    assert direct.map50 > 0.8 and set(direct.per_class) == set(LABELS)
    assert sum(row["support"] for row in direct.per_class.values()) == 24
    capitalised = ("Triangle", "Circle", "Square")
    renamed = spec_of(
        config(labels="".join(f'<Label value="{c}" predicted_values="{c.lower()}"/>' for c in capitalised)),
        make_settings(),
    )
    dataset2 = write_dataset(
        shapes_images(tmp_path, 8, size=(224, 224), rename=str.capitalize),
        renamed,
        tmp_path / "d2",
        val_fraction=1.0,
    )
    mapped = evaluate(SHAPES_MODEL, dataset2, renamed, imgsz=224, class_names_to_labels=renamed.label_map)
    assert mapped.map50_95 == pytest.approx(direct.map50_95) and set(mapped.per_class) == set(capitalised)
    unmapped = evaluate(SHAPES_MODEL, dataset2, renamed, imgsz=224, class_names_to_labels={})
    assert unmapped.map50_95 == 0.0
