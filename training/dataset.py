"""A project's annotated images -> an Ultralytics YOLO dataset folder with a deterministic split.

Layout: images/{train,val}/<task id>.<ext>, labels/{train,val}/<task id>.txt, dataset.yaml (names in the
labeling config's order). Detection only today: the spec's control is a `RectangleLabels`.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from converters.yolo_labels import rectangle_to_yolo
from core.errors import TrainingDataError
from training.spec import TrainingSpec


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

    Raises TrainingDataError when there are fewer than `min_images` images, or (for training) a label of
    the control has no annotated example at all.
    """
    if spec.task != "detect":
        raise TrainingDataError(f'<{spec.control_tag} name="{spec.from_name}"> cannot be trained yet')
    if len(images) < min_images:
        raise TrainingDataError(
            f'{len(images)} annotated image(s) for <{spec.control_tag} name="{spec.from_name}">; '
            f"at least {min_images} are needed: annotate more tasks (skipped and cancelled ones do not count)"
        )
    lines = {image.task_id: _label_lines(image, spec.labels) for image in images}
    if require_every_label:
        seen = {int(line.split()[0]) for rows in lines.values() for line in rows}
        missing = [label for index, label in enumerate(spec.labels) if index not in seen]
        if missing:
            raise TrainingDataError(
                f"no annotated example of {', '.join(repr(m) for m in missing)} in "
                f'<{spec.control_tag} name="{spec.from_name}">: annotate some, or remove the label'
            )
    train, val = _split(images, lines, seed, val_fraction)
    counts = {}
    for split, members in (("train", train), ("val", val)):
        counts[split] = dict.fromkeys(spec.labels, 0)
        (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
        (out_dir / "labels" / split).mkdir(parents=True, exist_ok=True)
        for image in members:
            _place(
                image.image_path,
                out_dir / "images" / split / f"{image.task_id}{image.image_path.suffix or '.jpg'}",
            )
            rows = lines[image.task_id]
            (out_dir / "labels" / split / f"{image.task_id}.txt").write_text("".join(f"{r}\n" for r in rows))
            for row in rows:
                counts[split][spec.labels[int(row.split()[0])]] += 1
    yaml_path = out_dir / "dataset.yaml"
    description = {
        "path": str(out_dir.resolve()),
        "train": "images/train",
        "val": "images/val",
        "names": dict(enumerate(spec.labels)),
    }
    yaml_path.write_text(yaml.safe_dump(description, sort_keys=False))
    return DatasetSummary(
        root=out_dir,
        yaml_path=yaml_path,
        task=spec.task,
        names=list(spec.labels),
        train_task_ids=[image.task_id for image in train],
        val_task_ids=[image.task_id for image in val],
        instances_per_class=counts,
    )


def _label_lines(image: AnnotatedImage, labels: tuple[str, ...]) -> list[str]:
    rows = (rectangle_to_yolo(region.get("value") or {}, labels) for region in image.regions)
    return [row for row in rows if row is not None]


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
