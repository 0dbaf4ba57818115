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
from tests import training_projects as projects
from tests.conftest import SHAPES_MODEL, rectangle_annotation
from tools.shapes import draw_shapes_image
from training.dataset import AnnotatedImage, write_dataset
from training.evaluation import evaluate
from training.split import position

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
    summary = write_dataset(images, spec, tmp_path / "dataset")
    description = yaml.safe_load(summary.yaml_path.read_text())
    assert description["names"] == {0: "triangle", 1: "circle", 2: "square"}
    assert sorted(summary.train_task_ids + summary.val_task_ids) == list(range(1, 11))
    assert summary.val_task_ids == [t for t in range(1, 11) if position(t) < 0.2]  # the stable rule
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
    assert write_dataset(images, spec, tmp_path / "again").val_task_ids == summary.val_task_ids
    assert all(summary.instances_per_class["train"][label] > 0 for label in LABELS)
    unscored = [label for label in LABELS if not summary.instances_per_class["val"][label]]
    assert summary.without_held_out_example == unscored == summary.to_json()["without_held_out_example"]


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


# -- every other trainable tag: dataset lines against the geometry the images were drawn from ----------


def write_project(
    kind: str, folder: Path, settings, count: int = 10, val_fraction: float = 0.2, **attrs: str
):
    """A project of `kind` (tests/training_projects.py) written as a dataset; (spec, examples, summary)."""
    (control, *_) = [
        c for c in build_plan(projects.config(kind, **attrs), settings).controls if c.from_name == "label"
    ]
    spec = control.training_spec()
    made = projects.examples(kind, count)
    images = []
    for task_id, example in enumerate(made, start=1):
        path = folder / f"task-{task_id}.png"
        cv2.imwrite(str(path), example.image)
        images.append(AnnotatedImage(task_id, path, example.regions, projects.WIDTH, projects.HEIGHT))
    summary = write_dataset(images, spec, folder / "dataset", val_fraction=val_fraction)
    return spec, made, summary


def label_rows(summary, task_id: int) -> list[list[float]]:
    split = "val" if task_id in summary.val_task_ids else "train"
    text = (summary.root / "labels" / split / f"{task_id}.txt").read_text()
    return [[float(v) for v in line.split()] for line in text.splitlines()]


SIZE = np.array([projects.WIDTH, projects.HEIGHT], dtype=float)


def test_yolo_label_docstring_examples():
    import doctest

    import converters.yolo_labels

    result = doctest.testmod(converters.yolo_labels)
    assert result.attempted >= 6 and result.failed == 0


def test_obb_lines_are_the_rotated_corners_in_the_rectangles_order(make_settings, tmp_path):
    from label_studio_sdk.converter.utils import convert_annotation_to_yolo_obb

    spec, made, summary = write_project("obb", tmp_path, make_settings())
    assert spec.task == "obb" and spec.labels == projects.BARS
    assert yaml.safe_load(summary.yaml_path.read_text())["names"] == {0: "bar", 1: "plate"}
    for task_id, example in enumerate(made, start=1):
        rows = label_rows(summary, task_id)
        assert len(rows) == len(example.truth) == 2
        for row, truth, region in zip(rows, example.truth, example.regions, strict=True):
            assert projects.BARS[int(row[0])] == truth["label"]
            assert row[1:] == pytest.approx((truth["corners"] / SIZE).ravel().tolist(), abs=1e-5)
            sdk = convert_annotation_to_yolo_obb(
                {**region["value"], "original_width": 160, "original_height": 128}
            )
            assert row[1:] == pytest.approx(np.ravel(sdk).tolist(), abs=1e-5)  # the SDK's own corners
    rotations = [region["value"]["rotation"] for example in made for region in example.regions]
    assert min(rotations) < 90 < max(rotations)  # both orientations: corner order, not sorted corners


def test_polygon_lines_are_the_outlines(make_settings, tmp_path):
    spec, made, summary = write_project("polygon", tmp_path, make_settings())
    assert spec.task == "segment" and spec.labels == projects.SHAPES
    for task_id, example in enumerate(made, start=1):
        rows = label_rows(summary, task_id)
        assert [projects.SHAPES[int(r[0])] for r in rows] == [t["label"] for t in example.truth]
        for row, truth in zip(rows, example.truth, strict=True):
            assert row[1:] == pytest.approx((truth["points"] / SIZE).ravel().tolist(), abs=1e-5)


def test_brush_masks_become_outline_polygons_covering_the_same_pixels(make_settings, tmp_path):
    spec, made, summary = write_project("brush", tmp_path, make_settings())
    assert spec.task == "segment" and spec.control_tag == "BrushLabels"
    for task_id, example in enumerate(made, start=1):
        rows = label_rows(summary, task_id)
        assert [projects.SHAPES[int(r[0])] for r in rows] == [t["label"] for t in example.truth]
        for row, truth in zip(rows, example.truth, strict=True):
            drawn = np.zeros((projects.HEIGHT, projects.WIDTH), np.uint8)
            outline = np.round(np.reshape(row[1:], (-1, 2)) * SIZE).astype(np.int32)
            cv2.fillPoly(drawn, [outline], 1)
            overlap = (drawn.astype(bool) & truth["mask"]).sum() / (drawn.astype(bool) | truth["mask"]).sum()
            assert overlap > 0.9, (truth["label"], overlap)


def test_pose_lines_group_keypoints_per_box_in_model_index_order(make_settings, tmp_path):
    spec, made, summary = write_project("pose", tmp_path, make_settings())
    assert (spec.task, spec.labels, spec.box_from_name) == ("pose", projects.SHAPES, "box")
    assert spec.keypoint_labels == ("top", "", "left", "right")
    description = yaml.safe_load(summary.yaml_path.read_text())
    assert description["kpt_shape"] == [4, 3] and description["names"][0] == "triangle"
    for task_id, example in enumerate(made, start=1):
        rows = label_rows(summary, task_id)
        assert len(rows) == len(example.truth)
        for row, truth in zip(rows, example.truth, strict=True):
            x1, y1, x2, y2 = truth["box"]
            assert projects.SHAPES[int(row[0])] == truth["label"]
            expected_box = [(x1 + x2) / 2 / 160, (y1 + y2) / 2 / 128, (x2 - x1) / 160, (y2 - y1) / 128]
            assert row[1:5] == pytest.approx(expected_box, abs=1e-5)
            for index, name in enumerate(spec.keypoint_labels):
                point = truth["keypoints"].get(name)
                expected = [point[0] / 160, point[1] / 128, 2] if point else [0, 0, 0]
                assert row[5 + 3 * index : 8 + 3 * index] == pytest.approx(expected, abs=1e-5), (name, index)


def test_a_keypoint_goes_to_the_box_its_parent_id_names_even_outside_it():
    from converters.yolo_labels import pose_to_yolo

    def box(region_id, x):
        return {
            "id": region_id,
            "value": {"x": x, "y": 10, "width": 20, "height": 20, "rectanglelabels": ["a"]},
        }

    points = [
        {"parentID": "right", "value": {"x": 25, "y": 20, "keypointlabels": ["p"]}},  # inside "left"
        {"value": {"x": 15, "y": 15, "keypointlabels": ["q"]}},  # inside "left", no parent
        {"value": {"x": 90, "y": 90, "keypointlabels": ["q"]}},  # in no box: left out
    ]
    lines = pose_to_yolo([box("left", 10), box("right", 50)], points, ("a",), ("p", "q"), 100, 100)
    assert lines == [
        "0 0.200000 0.200000 0.200000 0.200000 0.000000 0.000000 0 0.150000 0.150000 2",
        "0 0.600000 0.200000 0.200000 0.200000 0.250000 0.200000 2 0.000000 0.000000 0",
    ]


@pytest.mark.parametrize("kind", ["choices", "taxonomy"])
def test_choices_and_taxonomy_become_class_folders(make_settings, tmp_path, kind):
    spec, made, summary = write_project(kind, tmp_path, make_settings(), count=12)
    assert spec.task == "classify" and spec.labels == projects.SHAPES  # a taxonomy's leaves
    description = yaml.safe_load(summary.yaml_path.read_text())
    assert (description["train"], description["val"]) == (
        "train",
        "val",
    ) and summary.train_data == summary.root
    for task_id, example in enumerate(made, start=1):
        split = "val" if task_id in summary.val_task_ids else "train"
        assert (summary.root / split / example.truth[0]["label"] / f"{task_id}.png").is_file()
    for split in ("train", "val"):
        assert sorted(p.name for p in (summary.root / split).iterdir()) == sorted(projects.SHAPES)
    assert all(summary.instances_per_class["train"][label] > 0 for label in projects.SHAPES)


def test_what_cannot_be_trained_is_said(make_settings, tmp_path):
    settings = make_settings()
    several = projects.examples("choices", 6)
    for example in several[:3]:
        example.regions[0]["value"]["choices"] = ["circle", "square"]  # a multiple-choice answer
    (control,) = build_plan(projects.config("choices"), settings).controls
    cv2.imwrite(str(tmp_path / "x.png"), several[0].image)  # images are placed as they come
    images = [AnnotatedImage(i, tmp_path / "x.png", e.regions, 160, 128) for i, e in enumerate(several)]
    with pytest.raises(TrainingDataError, match=r"3 annotated image\(s\) with exactly one choice"):
        write_dataset(images, control.training_spec(), tmp_path / "d")
    alone = (
        projects.config("pose")
        .replace('<RectangleLabels name="box" toName="image">', "<!--")
        .replace("</RectangleLabels>", "-->")
    )
    (keypoints,) = build_plan(alone, settings).controls
    with pytest.raises(TrainingDataError, match="needs a <RectangleLabels> on the same image"):
        write_dataset(images, keypoints.training_spec(), tmp_path / "d")
    slashed = projects.config("choices").replace('value="circle"', 'value="round/circle"')
    (choices,) = build_plan(slashed, settings).controls
    with pytest.raises(TrainingDataError, match="'round/circle' cannot name a class folder"):
        write_dataset(images, choices.training_spec(), tmp_path / "d")


# -- evaluation of the other kinds: a stand-in model that answers the drawn truth ------------------------

MODEL_NAMES = {0: "CIRCLE", 1: "dog", 2: "SQUARE", 3: "TRIANGLE", 4: "BAR", 5: "PLATE"}  # not config order


class TruthModel:
    """Answers like a YOLO model of `task` whose classes are MODEL_NAMES: exactly the drawn truth of each
    image (task id = file stem), so a correct evaluation scores it 1 through the label map."""

    def __init__(self, task: str, made: list, offset: float = 0.0):
        self.task, self.made, self.names = task, made, MODEL_NAMES
        self.offset = offset  # pixels added to the answered corners, outlines or keypoints (not boxes)

    def predict(self, source: str, **options):
        import torch
        from ultralytics.engine.results import Results
        from ultralytics.utils.ops import xyxyxyxy2xywhr

        image = cv2.imread(source)
        truth = self.made[int(Path(source).stem) - 1].truth
        ids = {name.lower(): i for i, name in MODEL_NAMES.items()}
        cls = torch.tensor([[ids[t["label"]]] for t in truth], dtype=torch.float32)
        if self.task == "classify":
            probs = torch.full((len(MODEL_NAMES),), 0.02)
            probs[1] = 0.6  # "dog" is likelier, but no label stands for it
            probs[int(cls[0, 0])] = 0.3
            return [Results(image, source, MODEL_NAMES, probs=probs)]
        if self.task == "obb":
            corners = np.stack([t["corners"].ravel() + self.offset for t in truth]).astype(np.float32)
            xywhr = torch.tensor(xyxyxyxy2xywhr(corners))
            return [
                Results(image, source, MODEL_NAMES, obb=torch.cat([xywhr, torch.ones(len(truth), 1), cls], 1))
            ]
        if self.task == "segment":
            outlines = [t["points"] for t in truth]
        else:
            x1, y1, x2, y2 = (np.array([t["box"][i] for t in truth]) for i in range(4))
            outlines = [
                np.array([[a, b], [c, b], [c, d], [a, d]]) for a, b, c, d in zip(x1, y1, x2, y2, strict=True)
            ]
        xyxy = torch.tensor([[*o.min(0), *o.max(0)] for o in outlines], dtype=torch.float32)
        boxes = torch.cat([xyxy, torch.ones(len(truth), 1), cls], 1)
        if self.task == "segment":
            masks = np.zeros((len(truth), *image.shape[:2]), np.uint8)
            for mask, outline in zip(masks, outlines, strict=True):
                cv2.fillPoly(mask, [np.round(outline + self.offset).astype(np.int32)], 1)
            return [Results(image, source, MODEL_NAMES, boxes=boxes, masks=torch.tensor(masks).float())]
        keypoints = torch.zeros(len(truth), 17, 3)  # a COCO-sized pose model: more keypoints than labelled
        for row, t in zip(keypoints, truth, strict=True):
            for index, name in projects.KEYPOINTS.items():
                if name in t["keypoints"]:
                    row[index] = torch.tensor([*np.add(t["keypoints"][name], self.offset), 0.9])
        return [Results(image, source, MODEL_NAMES, boxes=boxes, keypoints=keypoints)]


@pytest.mark.parametrize("kind", ["obb", "polygon", "pose", "choices"])
def test_every_kind_scores_the_truth_high_through_the_label_map_and_zero_without(
    make_settings, tmp_path, monkeypatch, kind
):
    import ultralytics

    spec, made, dataset = write_project(kind, tmp_path, make_settings(), count=6, val_fraction=1.0)
    monkeypatch.setattr(ultralytics, "YOLO", lambda path: TruthModel(spec.task, made))
    mapped = evaluate(Path("served.pt"), dataset, spec, imgsz=160, class_names_to_labels=spec.label_map)
    unmapped = evaluate(Path("served.pt"), dataset, spec, imgsz=160, class_names_to_labels={})
    support = sum(len(example.truth) for example in made)
    assert sum(row["support"] for row in mapped.per_class.values()) == support
    assert set(mapped.per_class) <= set(spec.labels) and mapped.recall == pytest.approx(1.0)
    if kind == "choices":
        assert mapped.metric == "top1_accuracy" and mapped.score == 1.0 and mapped.map50_95 is None
    else:
        assert (
            mapped.metric == "map50_95" and mapped.map50 == pytest.approx(0.995) and mapped.score > 0.9
        )  # 0.995: the top of the curve
    assert unmapped.score == 0.0 and unmapped.recall == 0.0
    if kind != "choices":  # the kind's own overlap decides: answers 16 px off score far lower
        monkeypatch.setattr(ultralytics, "YOLO", lambda path: TruthModel(spec.task, made, offset=16.0))
        off = evaluate(Path("served.pt"), dataset, spec, imgsz=160, class_names_to_labels=spec.label_map)
        assert off.score < mapped.score / 2, (off.score, mapped.score)
