"""How good a detector is on a dataset's val split: mAP50-95, mAP50, precision, recall, per class.

The same code scores the served model and a newly trained one. The served model may name its classes
differently from the labels (COCO `car` filling the label `Car` through `predicted_values`), so its
predictions are read through the control's label map before they are matched; Ultralytics' own `val()`
cannot do that (it compares class ids), so matching is done here and the curves are Ultralytics'
`ap_per_class`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core.errors import TrainingDataError
from training.dataset import DatasetSummary
from training.spec import TrainingSpec

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


@dataclass
class Evaluation:
    map50_95: float
    map50: float
    precision: float
    recall: float
    per_class: dict[str, dict[str, float]]  # label -> precision, recall, map50, map50_95, support

    def to_json(self) -> dict:
        return asdict(self)


def evaluate(
    model_path: Path,
    dataset: DatasetSummary,
    spec: TrainingSpec,
    imgsz: int,
    class_names_to_labels: dict[str, str] | None = None,
    device: str = "",
) -> Evaluation:
    """Score `model_path` on the val split; `class_names_to_labels` maps its class names to labels
    (None: its names are the labels, as for a model trained here)."""
    from ultralytics import YOLO

    if spec.task != "detect":
        raise TrainingDataError(f"evaluating a {spec.task} model is not supported yet")
    model = YOLO(str(model_path))
    to_label = {int(i): _label_of(str(n), class_names_to_labels) for i, n in model.names.items()}
    matches: list[np.ndarray] = []
    scores: list[float] = []
    predicted: list[int] = []
    truth_classes: list[int] = []
    for image_path in sorted((dataset.root / "images" / "val").iterdir()):
        truth = _truth(dataset.root / "labels" / "val" / f"{image_path.stem}.txt", image_path)
        truth_classes += [cls for cls, _ in truth]
        options = {"imgsz": imgsz, "conf": 0.001, "verbose": False, **({"device": device} if device else {})}
        result = model.predict(str(image_path), **options)[0]
        found = [
            (spec.labels.index(to_label[int(c)]), box, conf)
            for c, box, conf in zip(
                result.boxes.cls.tolist(), result.boxes.xyxy.tolist(), result.boxes.conf.tolist(), strict=True
            )
            if to_label.get(int(c)) in spec.labels
        ]
        for cls, tp, conf in _match(found, truth):
            matches.append(tp)
            scores.append(conf)
            predicted.append(cls)
    return _summary(matches, scores, predicted, truth_classes, spec.labels)


def _label_of(class_name: str, class_names_to_labels: dict[str, str] | None) -> str | None:
    if class_names_to_labels is None:
        return class_name
    return class_names_to_labels.get(class_name, class_names_to_labels.get(class_name.lower()))


def _truth(label_file: Path, image_path: Path) -> list[tuple[int, list[float]]]:
    """(class, pixel xyxy) of each annotated box of one val image."""
    import cv2

    height, width = cv2.imread(str(image_path)).shape[:2]
    boxes = []
    for line in label_file.read_text().splitlines():
        cls, cx, cy, w, h = (float(v) for v in line.split())
        boxes.append(
            (
                int(cls),
                [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height],
            )
        )
    return boxes


def _match(
    found: list[tuple[int, list[float], float]], truth: list[tuple[int, list[float]]]
) -> list[tuple[int, np.ndarray, float]]:
    """Greedy by score, per IoU threshold: each annotated box is taken by at most one prediction."""
    import torch
    from ultralytics.utils.metrics import box_iou

    used = np.zeros((len(truth), len(IOU_THRESHOLDS)), dtype=bool)
    rows = []
    for cls, box, conf in sorted(found, key=lambda item: -item[2]):
        tp = np.zeros(len(IOU_THRESHOLDS), dtype=bool)
        if truth:
            ious = box_iou(torch.tensor([box]), torch.tensor([b for _, b in truth])).numpy()[0]
            for k, threshold in enumerate(IOU_THRESHOLDS):
                candidates = [
                    j
                    for j, (tc, _) in enumerate(truth)
                    if tc == cls and not used[j, k] and ious[j] >= threshold
                ]
                if candidates:
                    best = max(candidates, key=lambda j: ious[j])
                    used[best, k] = tp[k] = True
        rows.append((cls, tp, conf))
    return rows


def _summary(
    matches: list[np.ndarray],
    scores: list[float],
    predicted: list[int],
    truth_classes: list[int],
    labels: tuple[str, ...],
) -> Evaluation:
    from ultralytics.utils.metrics import ap_per_class

    per_class: dict[str, dict[str, float]] = {}
    if matches and truth_classes:
        _, _, p, r, _, ap, classes, *_ = ap_per_class(
            np.array(matches), np.array(scores), np.array(predicted), np.array(truth_classes)
        )
        for index, cls in enumerate(classes):
            per_class[labels[int(cls)]] = {
                "precision": float(p[index]),
                "recall": float(r[index]),
                "map50": float(ap[index, 0]),
                "map50_95": float(ap[index].mean()),
                "support": truth_classes.count(int(cls)),
            }
    for index, label in enumerate(labels):  # classes with annotations but no prediction at all
        if label not in per_class and index in truth_classes:
            per_class[label] = {"precision": 0.0, "recall": 0.0, "map50": 0.0, "map50_95": 0.0}
            per_class[label]["support"] = truth_classes.count(index)
    rows = list(per_class.values())

    def mean(key: str) -> float:
        return float(np.mean([row[key] for row in rows])) if rows else 0.0

    return Evaluation(mean("map50_95"), mean("map50"), mean("precision"), mean("recall"), per_class)
