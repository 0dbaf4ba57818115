"""A project's annotated images -> an Ultralytics YOLO dataset folder, one image at a time.

`DatasetWriter.add` places one image (a hard link, else a copy: the caller may release its own file at
once) and writes its label file into the side `training/split.py` gives its task id; `finish` checks
the whole and writes dataset.yaml. Nothing per image stays open or in memory but its class ids.

Layout for detect, obb, segment and pose: images/{train,val}/<task id>.<ext>, labels/{train,val}/<task
id>.txt, dataset.yaml (names in the labeling config's order; pose adds kpt_shape). Classify:
{train,val}/<label>/<task id>.<ext> (Ultralytics reads the folders, numbering them alphabetically: the
trained model's class names are still the labels), and a dataset.yaml describing the same. The label
lines come from the pure `converters/yolo_labels.py`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
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
from training.split import Split


@dataclass
class AnnotatedImage:
    task_id: int
    image_path: Path  # local file, already fetched
    regions: list[dict]  # result items of the task's latest annotation for this control
    width: int
    height: int
    suffix: str = ""  # the file name suffix of its kind, when the local file's name has none or another


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
    def without_held_out_example(self) -> list[str]:
        """Labels without a held-out example: the evaluation cannot score them (the split stays)."""
        held_out = self.instances_per_class.get("val", {})
        return [name for name in self.names if not held_out.get(name)]

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
            "without_held_out_example": self.without_held_out_example,
        }


class DatasetWriter:
    """Writes the dataset of `spec` into `out_dir` as images arrive; `finish` when all have."""

    def __init__(self, spec: TrainingSpec, out_dir: Path, split: Split):
        _check_trainable(spec)
        self.spec, self.out_dir, self.split = spec, out_dir, split
        self._classes: dict[int, list[int]] = {}  # task id -> class of each label line
        self._files: dict[int, tuple[str, str]] = {}  # task id -> (image file name, classify folder)
        self._val: set[int] = set()
        _make_folders(out_dir, spec)

    def add(self, image: AnnotatedImage) -> bool:
        """Write one example; False when it has nothing to teach (classify: not exactly one choice)."""
        rows = label_lines(image, self.spec)
        if self.spec.task == "classify" and not rows:
            return False
        side = "val" if self.split.held_out(image.task_id) else "train"
        name = f"{image.task_id}{image.suffix or image.image_path.suffix or '.jpg'}"
        folder = self.spec.labels[int(rows[0])] if self.spec.task == "classify" else ""
        _write_example(self.out_dir, side, name, image.image_path, image.task_id, rows, self.spec)
        self._classes[image.task_id] = [int(row.split()[0]) for row in rows]
        self._files[image.task_id] = (name, folder)
        if side == "val":
            self._val.add(image.task_id)
        return True

    def __len__(self) -> int:
        return len(self._classes)

    def finish(self, min_images: int = 4, require_every_label: bool = True) -> DatasetSummary:
        """Check the whole (enough images, every label annotated), settle the split, write dataset.yaml.

        Raises TrainingDataError when there are fewer than `min_images` usable images, or (for training)
        a label of the control has no annotated example at all.
        """
        spec = self.spec
        if len(self) < min_images:
            what = "image(s) with exactly one choice" if spec.task == "classify" else "image(s)"
            raise TrainingDataError(
                f"{len(self)} annotated {what} for {spec.tag}; at least {min_images} are needed: annotate "
                "more tasks (skipped and cancelled ones do not count)"
            )
        if require_every_label:
            seen = {cls for classes in self._classes.values() for cls in classes}
            missing = [label for index, label in enumerate(spec.labels) if index not in seen]
            if missing:
                raise TrainingDataError(
                    f"no annotated example of {', '.join(repr(m) for m in missing)} in {spec.tag}"
                    f"{_where_classes_come_from(spec)}: annotate some, or remove the label"
                )
        train = [t for t in self._classes if t not in self._val]
        for task_id in self.split.settle(train, sorted(self._val)):
            self._move_to_val(task_id)
        yaml_path = self.out_dir / "dataset.yaml"
        yaml_path.write_text(yaml.safe_dump(_description(self.out_dir, spec), sort_keys=False))
        val_ids = [t for t in self._classes if t in self._val]
        return DatasetSummary(
            root=self.out_dir,
            yaml_path=yaml_path,
            task=spec.task,
            names=list(spec.labels),
            train_task_ids=[t for t in self._classes if t not in self._val],
            val_task_ids=val_ids,
            instances_per_class={
                side: self._counts([t for t in self._classes if (t in self._val) == (side == "val")])
                for side in ("train", "val")
            },
        )

    def _counts(self, task_ids: list[int]) -> dict[str, int]:
        counts = dict.fromkeys(self.spec.labels, 0)
        for task_id in task_ids:
            for cls in self._classes[task_id]:
                counts[self.spec.labels[cls]] += 1
        return counts

    def _move_to_val(self, task_id: int) -> None:
        name, folder = self._files[task_id]
        if self.spec.task == "classify":
            os.replace(self.out_dir / "train" / folder / name, self.out_dir / "val" / folder / name)
        else:
            for kind, file_name in (("images", name), ("labels", f"{task_id}.txt")):
                os.replace(self.out_dir / kind / "train" / file_name, self.out_dir / kind / "val" / file_name)
        self._val.add(task_id)


def write_dataset(
    images: Iterable[AnnotatedImage],
    spec: TrainingSpec,
    out_dir: Path,
    split: Split | None = None,
    val_fraction: float | None = None,
    min_images: int = 4,
    require_every_label: bool = True,
) -> DatasetSummary:
    """Write the dataset of these images at once; `val_fraction=1.0` puts every image in val
    (evaluation only). The split is `split`'s (default: the hash rule at `val_fraction`)."""
    if split is None:
        split = Split() if val_fraction is None else Split(val_fraction)
    writer = DatasetWriter(spec, out_dir, split)
    for image in images:
        writer.add(image)
    return writer.finish(min_images, require_every_label)


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


def _make_folders(out_dir: Path, spec: TrainingSpec) -> None:
    """Both sides' folders up front (Ultralytics wants both; classify: every class in both, so both
    list the same classes)."""
    for side in ("train", "val"):
        if spec.task == "classify":
            for label in spec.labels:
                (out_dir / side / label).mkdir(parents=True, exist_ok=True)
        else:
            (out_dir / "images" / side).mkdir(parents=True, exist_ok=True)
            (out_dir / "labels" / side).mkdir(parents=True, exist_ok=True)


def _write_example(
    out_dir: Path, split: str, name: str, source: Path, task_id: int, rows: list[str], spec: TrainingSpec
) -> None:
    if spec.task == "classify":
        _place(source, out_dir / split / spec.labels[int(rows[0])] / name)
        return
    _place(source, out_dir / "images" / split / name)
    (out_dir / "labels" / split / f"{task_id}.txt").write_text("".join(f"{r}\n" for r in rows))


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


def _place(source: Path, target: Path) -> None:
    """Hard-link when the file system allows (no copy of the pixels), else copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
