"""A project's annotated images -> an Ultralytics YOLO dataset folder with a deterministic split.

Layout for detect, obb, segment and pose: images/{train,val}/<task id>.<ext>, labels/{train,val}/<task
id>.txt, dataset.yaml (names in the labeling config's order; pose adds kpt_shape). Classify:
{train,val}/<label>/<task id>.<ext> (Ultralytics reads the folders, numbering them alphabetically: the
trained model's class names are still the labels), and a dataset.yaml describing the same. The label
lines come from the pure `converters/yolo_labels.py`.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from converters.yolo_labels import (
    brush_to_yolo,
    choice_of,
    polygon_to_yolo,
    pose_to_yolo,
    rectangle_to_yolo,
    rectangle_to_yolo_obb,
)
from core.errors import TrainingDataError
from training.spec import IMAGE_TASKS, TrainingSpec


@dataclass
class AnnotatedImage:
    task_id: int
    image_path: Path  # local file, already fetched
    regions: list[dict]  # result items of the task's latest annotation for this control
    width: int
    height: int


@dataclass
class DatasetSummary:
    root: Path
    yaml_path: Path
    task: str
    names: list[str]
    train_task_ids: list[int]
    val_task_ids: list[int]
    instances_per_class: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def train_data(self) -> Path:
        """What Ultralytics' `data=` takes: the classify folder, else dataset.yaml."""
        return self.root if self.task == "classify" else self.yaml_path

    def to_json(self) -> dict:
        return {
            "task": self.task,
            "names": self.names,
            "train_task_ids": self.train_task_ids,
            "val_task_ids": self.val_task_ids,
            "instances_per_class": self.instances_per_class,
        }


def write_dataset(
    images: list[AnnotatedImage],
    spec: TrainingSpec,
    out_dir: Path,
    seed: int = 0,
    val_fraction: float = 0.2,
    min_images: int = 4,
    require_every_label: bool = True,
) -> DatasetSummary:
    """Write the dataset; `val_fraction=1.0` puts every image in val (evaluation only).

    Raises TrainingDataError when there are fewer than `min_images` usable images, or (for training) a
    label of the control has no annotated example at all.
    """
    _check_trainable(spec)
    lines = {image.task_id: label_lines(image, spec) for image in images}
    if spec.task == "classify":  # an image is an example of one class; without one it teaches nothing
        images = [image for image in images if lines[image.task_id]]
    if len(images) < min_images:
        what = "image(s) with exactly one choice" if spec.task == "classify" else "image(s)"
        raise TrainingDataError(
            f"{len(images)} annotated {what} for {spec.tag}; at least {min_images} are needed: annotate "
            "more tasks (skipped and cancelled ones do not count)"
        )
    if require_every_label:
        seen = {int(line.split()[0]) for image in images for line in lines[image.task_id]}
        missing = [label for index, label in enumerate(spec.labels) if index not in seen]
        if missing:
            raise TrainingDataError(
                f"no annotated example of {', '.join(repr(m) for m in missing)} in {spec.tag}"
                f"{_where_classes_come_from(spec)}: annotate some, or remove the label"
            )
    train, val = _split(images, lines, seed, val_fraction)
    counts = {}
    for split, members in (("train", train), ("val", val)):
        counts[split] = dict.fromkeys(spec.labels, 0)
        for image in members:
            rows = lines[image.task_id]
            _write_example(out_dir, split, image, rows, spec)
            for row in rows:
                counts[split][spec.labels[int(row.split()[0])]] += 1
    yaml_path = out_dir / "dataset.yaml"
    yaml_path.write_text(yaml.safe_dump(_description(out_dir, spec), sort_keys=False))
    return DatasetSummary(
        root=out_dir,
        yaml_path=yaml_path,
        task=spec.task,
        names=list(spec.labels),
        train_task_ids=[image.task_id for image in train],
        val_task_ids=[image.task_id for image in val],
        instances_per_class=counts,
    )


def _check_trainable(spec: TrainingSpec) -> None:
    if spec.task not in IMAGE_TASKS:
        raise TrainingDataError(f"{spec.tag} cannot be trained from image annotations")
    if spec.task == "pose" and not spec.box_from_name:
        raise TrainingDataError(
            f"{spec.tag} needs a <RectangleLabels> on the same image to train: its boxes say which "
            "keypoints belong to one instance (and give the instances their class)"
        )
    if spec.task == "classify":
        bad = [label for label in spec.labels if "/" in label or "\\" in label or label in (".", "..")]
        if bad:
            raise TrainingDataError(
                f"{spec.tag}: the choice(s) {', '.join(repr(b) for b in bad)} cannot name a class folder "
                "(no '/', '\\', '.' or '..'): rename them to train"
            )


def _where_classes_come_from(spec: TrainingSpec) -> str:
    if spec.task != "pose":
        return ""
    return f' (pose classes are the boxes of <RectangleLabels name="{spec.box_from_name}">)'


def label_lines(image: AnnotatedImage, spec: TrainingSpec) -> list[str]:
    """The YOLO label lines of one image (classify: one line, the class id, or none)."""
    mine = [region for region in image.regions if region.get("from_name", spec.from_name) == spec.from_name]
    rows = LINES_OF[spec.task](mine, image, spec)
    return [row for row in rows if row is not None]


def _detect_lines(regions: list[dict], image: AnnotatedImage, spec: TrainingSpec) -> list[str | None]:
    return [rectangle_to_yolo(r.get("value") or {}, spec.labels, image.width, image.height) for r in regions]


def _obb_lines(regions: list[dict], image: AnnotatedImage, spec: TrainingSpec) -> list[str | None]:
    return [
        rectangle_to_yolo_obb(r.get("value") or {}, spec.labels, image.width, image.height) for r in regions
    ]


def _segment_lines(regions: list[dict], image: AnnotatedImage, spec: TrainingSpec) -> list[str | None]:
    rows: list[str | None] = []
    for region in regions:
        value = region.get("value") or {}
        if "brushlabels" in value:  # the RLE has the size of the image the annotator saw
            width = region.get("original_width") or image.width
            rows += brush_to_yolo(value, spec.labels, width, region.get("original_height") or image.height)
        else:
            rows.append(polygon_to_yolo(value, spec.labels))
    return rows


def _pose_lines(regions: list[dict], image: AnnotatedImage, spec: TrainingSpec) -> list[str]:
    boxes = [region for region in image.regions if region.get("from_name") == spec.box_from_name]
    return pose_to_yolo(boxes, regions, spec.labels, spec.keypoint_labels, image.width, image.height)


def _classify_lines(regions: list[dict], image: AnnotatedImage, spec: TrainingSpec) -> list[str]:
    chosen = [c for c in (choice_of(r.get("value") or {}, spec.labels) for r in regions) if c is not None]
    return [str(chosen[0])] if len(chosen) == 1 else []


LINES_OF = {
    "detect": _detect_lines,
    "obb": _obb_lines,
    "segment": _segment_lines,
    "pose": _pose_lines,
    "classify": _classify_lines,
}


def _write_example(
    out_dir: Path, split: str, image: AnnotatedImage, rows: list[str], spec: TrainingSpec
) -> None:
    name = f"{image.task_id}{image.image_path.suffix or '.jpg'}"
    if spec.task == "classify":
        for label in spec.labels:  # every class folder in both splits, so both list the same classes
            (out_dir / split / label).mkdir(parents=True, exist_ok=True)
        _place(image.image_path, out_dir / split / spec.labels[int(rows[0])] / name)
        return
    (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
    (out_dir / "labels" / split).mkdir(parents=True, exist_ok=True)
    _place(image.image_path, out_dir / "images" / split / name)
    (out_dir / "labels" / split / f"{image.task_id}.txt").write_text("".join(f"{r}\n" for r in rows))


def _description(out_dir: Path, spec: TrainingSpec) -> dict:
    folders = ("train", "val") if spec.task == "classify" else ("images/train", "images/val")
    description = {
        "path": str(out_dir.resolve()),
        "train": folders[0],
        "val": folders[1],
        "names": dict(enumerate(spec.labels)),
    }
    if spec.task == "pose":
        description["kpt_shape"] = [len(spec.keypoint_labels), 3]
        names = [name or f"unused_{i}" for i, name in enumerate(spec.keypoint_labels)]
        description["kpt_names"] = {i: list(names) for i in range(len(spec.labels))}
    return description


def _split(
    images: list[AnnotatedImage], lines: dict[int, list[str]], seed: int, val_fraction: float
) -> tuple[list[AnnotatedImage], list[AnnotatedImage]]:
    """Seeded shuffle, then ~`val_fraction` to val; an image moves across when that puts a class that
    only one side has on both sides (never emptying train)."""
    order = sorted(images, key=lambda image: image.task_id)
    random.Random(seed).shuffle(order)
    if val_fraction >= 1.0:
        return [], order
    n_val = min(max(1, round(len(order) * val_fraction)), len(order) - 1)
    val, train = order[:n_val], order[n_val:]

    def classes(members: list[AnnotatedImage]) -> set[int]:
        return {int(row.split()[0]) for image in members for row in lines[image.task_id]}

    for source, target in ((train, val), (val, train)):
        for cls in sorted(classes(source) - classes(target)):
            holders = [image for image in source if cls in classes([image])]
            if len(holders) >= 2 and len(source) > 1:
                source.remove(holders[-1])
                target.append(holders[-1])
    return train, val


def _place(source: Path, target: Path) -> None:
    """Hard-link when the file system allows (no copy of the pixels), else copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
