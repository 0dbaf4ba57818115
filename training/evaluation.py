"""How good a model is on a dataset's val split, for every trainable kind, with one piece of code.

The same code scores the served model and a newly trained one. The served model may name its classes
differently from the labels (COCO `car` filling the label `Car` through `predicted_values`), so its
predictions are read through the control's label map before they are matched; Ultralytics' own `val()`
cannot do that (it compares class ids), so matching is done here and the curves are Ultralytics'
`ap_per_class`. What "overlap" means per kind (Ultralytics' own measures):

| kind     | matched by                                   | main metric    |
|----------|----------------------------------------------|----------------|
| detect   | box IoU (`box_iou`)                          | mAP50-95       |
| obb      | rotated-box IoU (`batch_probiou`)            | mAP50-95       |
| segment  | mask IoU of the outlines, drawn at <= 320 px | mAP50-95       |
| pose     | keypoint similarity (`kpt_iou`, OKS)         | mAP50-95 (OKS) |
| classify | the best class the label map keeps           | top-1 accuracy |

The same pass counts, per task, the annotated regions the model missed and the regions it found that
no annotation has (matched by the kind's own overlap at 0.5, predictions of confidence 0.25 or more;
classify: a wrong top choice): `cli.py evaluate`'s worst tasks and the job's metrics never disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import TrainingDataError
from inference.heads import end_to_end_options
from training.dataset import DatasetSummary
from training.spec import IMAGE_TASKS, TrainingSpec

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
TASK_CONF = 0.25  # the confidence a prediction needs to count in a task's errors (as /predict shows it)


@dataclass
class TaskErrors:
    task_id: int
    missed: int  # annotated regions the model did not find (overlap >= 0.5, same label)
    false: int  # regions the model found that no annotation has


MASK_SIDE = 320  # segment masks are compared at most this many pixels wide or high


@dataclass
class Evaluation:
    map50_95: float | None  # None for classify
    map50: float | None
    precision: float  # mean over the classes with annotations
    recall: float
    per_class: dict[str, dict[str, float]]  # label -> precision, recall, map50, map50_95, support
    metric: str = "map50_95"  # the field promotion compares: map50_95, or top1_accuracy (classify)
    top1_accuracy: float | None = None
    tasks: list[TaskErrors] = field(default_factory=list, repr=False)  # per held-out task

    @property
    def score(self) -> float:
        return float(getattr(self, self.metric) or 0.0)

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("tasks")  # per task: what `cli.py evaluate` lists, not what a version keeps
        return data


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
    model, to_class = _model_and_classes(model_path, spec, class_names_to_labels)
    options = {"imgsz": imgsz, "verbose": False, **({"device": device} if device else {})}
    options.update(end_to_end_options(model))  # YOLO26 judged NMS-free, as served (inference/heads.py)
    if spec.task == "classify":
        return _classify(model, dataset, spec, to_class, options)
    truth_of, found_of, overlaps = KINDS[spec.task]
    matches: list[np.ndarray] = []
    scores: list[float] = []
    predicted: list[int] = []
    truth_classes: list[int] = []
    tasks: list[TaskErrors] = []
    for image_path in sorted((dataset.root / "images" / "val").iterdir()):
        width, height = _shown_size(image_path)
        lines = (dataset.root / "labels" / "val" / f"{image_path.stem}.txt").read_text().splitlines()
        rows = [[float(v) for v in line.split()] for line in lines]
        truth = truth_of(rows, width, height, spec)
        truth_classes += [cls for cls, _ in truth]
        result = model.predict(str(image_path), conf=0.001, **options)[0]
        found = [
            (to_class[c], g, conf) for c, g, conf in found_of(result, width, height, spec) if c in to_class
        ]
        ious = overlaps([g for _, g, _ in found], [g for _, g in truth]) if found and truth else None
        matched = _match(found, truth, ious)
        for cls, tp, conf in matched:
            matches.append(tp)
            scores.append(conf)
            predicted.append(cls)
        tasks.append(_task_errors(image_path, matched, len(truth)))
    evaluation = _summary(matches, scores, predicted, truth_classes, spec.labels)
    evaluation.tasks = tasks
    return evaluation


def _model_and_classes(
    model_path: Path, spec: TrainingSpec, class_names_to_labels: dict[str, str] | None
) -> tuple[Any, dict[int, int]]:
    """The model to score, and its class ids mapped to the spec's label indices (labels it lacks left out)."""
    from ultralytics import YOLO

    if spec.task not in IMAGE_TASKS:
        raise TrainingDataError(f"evaluating a {spec.task} model is not supported")
    model = YOLO(str(model_path))
    if spec.task != "detect" and model.task != spec.task:  # detect reads the boxes of any box model
        raise TrainingDataError(
            f"model '{Path(model_path).name}' is a {model.task} model; {spec.tag} needs a {spec.task} model"
        )
    to_label = {int(i): _label_of(str(n), class_names_to_labels) for i, n in model.names.items()}
    return model, {i: spec.labels.index(label) for i, label in to_label.items() if label in spec.labels}


def choice_errors(task_id: int, lines: list[str], predicted: str | None, spec: TrainingSpec) -> TaskErrors:
    """A classified image: the annotated choice missed, and a wrong choice found (a label of the control)."""
    truth = spec.labels[int(lines[0])] if lines else None
    found = predicted if predicted in spec.labels else None
    return TaskErrors(
        task_id, int(truth is not None and found != truth), int(found is not None and found != truth)
    )


def _task_errors(image_path: Path, matched: list[tuple[int, np.ndarray, float]], truth: int) -> TaskErrors:
    """One task's misses and false regions at the first threshold (0.5), of confident predictions.

    `_match` takes predictions by descending confidence, so the confident ones were matched first:
    their matches are what they would be without the others."""
    confident = [tp for _, tp, conf in matched if conf >= TASK_CONF]
    found = sum(bool(tp[0]) for tp in confident)
    return TaskErrors(_task_id(image_path), truth - found, len(confident) - found)


def _task_id(image_path: Path) -> int:
    return int(image_path.stem) if image_path.stem.isdigit() else -1


def _shown_size(image_path: Path) -> tuple[int, int]:
    """(width, height) as OpenCV shows the image (EXIF orientation applied), from its header."""
    from PIL import Image
    from ultralytics.data.utils import exif_size

    with Image.open(image_path) as image:
        width, height = exif_size(image)  # Ultralytics' own reading: (width, height)
    return width, height


def _label_of(class_name: str, class_names_to_labels: dict[str, str] | None) -> str | None:
    if class_names_to_labels is None:
        return class_name
    return class_names_to_labels.get(class_name, class_names_to_labels.get(class_name.lower()))


# -- per kind: truth from the label lines, predictions from Results, overlaps (predictions x truth) ------

Found = list[tuple[int, Any, float]]  # (model class index, geometry, confidence)


def _boxes_truth(rows: list[list[float]], width: int, height: int, spec: TrainingSpec) -> list:
    """(class, pixel xyxy) per "cls cx cy w h ..." line (pose lines start the same way)."""
    boxes = []
    for cls, cx, cy, w, h, *_ in rows:
        boxes.append(
            (
                int(cls),
                [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height],
            )
        )
    return boxes


def _boxes_found(result: Any, width: int, height: int, spec: TrainingSpec) -> Found:
    boxes = result.boxes
    return list(zip(boxes.cls.int().tolist(), boxes.xyxy.tolist(), boxes.conf.tolist(), strict=True))


def _box_overlaps(found: list, truth: list) -> np.ndarray:
    import torch
    from ultralytics.utils.metrics import box_iou

    return box_iou(torch.tensor(found), torch.tensor(truth)).numpy()


def _obb_truth(rows: list[list[float]], width: int, height: int, spec: TrainingSpec) -> list:
    """(class, pixel xywhr) per "cls x1 y1 ... x4 y4" line."""
    from ultralytics.utils.ops import xyxyxyxy2xywhr

    if not rows:
        return []
    corners = np.array([row[1:9] for row in rows], dtype=np.float32) * np.tile([width, height], 4)
    return [(int(row[0]), box) for row, box in zip(rows, xyxyxyxy2xywhr(corners).tolist(), strict=True)]


def _obb_found(result: Any, width: int, height: int, spec: TrainingSpec) -> Found:
    obb = result.obb
    return list(zip(obb.cls.int().tolist(), obb.xywhr.tolist(), obb.conf.tolist(), strict=True))


def _obb_overlaps(found: list, truth: list) -> np.ndarray:
    import torch
    from ultralytics.utils.metrics import batch_probiou

    return batch_probiou(torch.tensor(found), torch.tensor(truth)).numpy()


def _mask_scale(width: int, height: int) -> float:
    return min(1.0, MASK_SIDE / max(width, height))


def _raster(polygon: np.ndarray, width: int, height: int) -> np.ndarray:
    """A pixel polygon drawn as a flat 0/1 mask of the image scaled to at most MASK_SIDE pixels."""
    import cv2

    scale = _mask_scale(width, height)
    mask = np.zeros((max(1, round(height * scale)), max(1, round(width * scale))), dtype=np.uint8)
    if len(polygon) >= 3:
        cv2.fillPoly(mask, [np.round(np.asarray(polygon) * scale).astype(np.int32)], 1)
    return mask.ravel()


def _segment_truth(rows: list[list[float]], width: int, height: int, spec: TrainingSpec) -> list:
    size = np.array([width, height], dtype=np.float64)
    return [(int(row[0]), _raster(np.reshape(row[1:], (-1, 2)) * size, width, height)) for row in rows]


def _segment_found(result: Any, width: int, height: int, spec: TrainingSpec) -> Found:
    if result.masks is None:
        return []
    polygons = result.masks.xy  # pixel outlines in the original image
    boxes = result.boxes
    return [
        (cls, _raster(polygon, width, height), conf)
        for cls, polygon, conf in zip(boxes.cls.int().tolist(), polygons, boxes.conf.tolist(), strict=True)
    ]


def _mask_overlaps(found: list, truth: list) -> np.ndarray:
    import torch
    from ultralytics.utils.metrics import mask_iou

    return mask_iou(torch.tensor(np.stack(found)).float(), torch.tensor(np.stack(truth)).float()).numpy()


def _pose_truth(rows: list[list[float]], width: int, height: int, spec: TrainingSpec) -> list:
    """(class, (box area, pixel keypoints (K, 3))) per pose line."""
    truth = []
    for (cls, xyxy), row in zip(_boxes_truth(rows, width, height, spec), rows, strict=True):
        points = np.array(row[5:], dtype=np.float64).reshape(-1, 3) * [width, height, 1]
        truth.append((cls, ((xyxy[2] - xyxy[0]) * (xyxy[3] - xyxy[1]), points)))
    return truth


def _pose_found(result: Any, width: int, height: int, spec: TrainingSpec) -> Found:
    if result.keypoints is None:
        return []
    wanted = len(spec.keypoint_labels)
    points = result.keypoints.data.cpu().numpy()  # (N, K, 3): x, y, confidence
    fitted = np.zeros((len(points), wanted, 3))
    fitted[:, : min(wanted, points.shape[1])] = points[:, :wanted]  # a served model may know more or fewer
    boxes = result.boxes
    return list(zip(boxes.cls.int().tolist(), fitted, boxes.conf.tolist(), strict=True))


def _pose_overlaps(found: list, truth: list) -> np.ndarray:
    import torch
    from ultralytics.utils.metrics import OKS_SIGMA, kpt_iou

    keypoints = len(found[0])
    sigma = OKS_SIGMA if keypoints == 17 else np.ones(keypoints) / keypoints  # as Ultralytics' PoseValidator
    # Ultralytics scales the box area by 0.53 to approximate the segment area COCO's OKS uses.
    area = torch.tensor([a for a, _ in truth]) * 0.53
    oks = kpt_iou(torch.tensor(np.stack([k for _, k in truth])), torch.tensor(np.stack(found)), area, sigma)
    return oks.numpy().T


KINDS: dict[str, tuple[Callable, Callable, Callable]] = {
    "detect": (_boxes_truth, _boxes_found, _box_overlaps),
    "obb": (_obb_truth, _obb_found, _obb_overlaps),
    "segment": (_segment_truth, _segment_found, _mask_overlaps),
    "pose": (_pose_truth, _pose_found, _pose_overlaps),
}


# -- matching and the figures --------------------------------------------------------------------------


def _match(found: Found, truth: list, ious: np.ndarray | None) -> list[tuple[int, np.ndarray, float]]:
    """Greedy by score, per IoU threshold: each annotated region is taken by at most one prediction of
    its class. `ious` is (predictions, truth), in `found`'s order."""
    used = np.zeros((len(truth), len(IOU_THRESHOLDS)), dtype=bool)
    rows = []
    for p in sorted(range(len(found)), key=lambda index: -found[index][2]):
        cls, _, conf = found[p]
        tp = np.zeros(len(IOU_THRESHOLDS), dtype=bool)
        for k, threshold in enumerate(IOU_THRESHOLDS):
            candidates = [
                j
                for j, (tc, _) in enumerate(truth)
                if tc == cls and not used[j, k] and ious is not None and ious[p, j] >= threshold
            ]
            if candidates:
                best = max(candidates, key=lambda j: ious[p, j])
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


def _classify(
    model: Any, dataset: DatasetSummary, spec: TrainingSpec, to_class: dict[int, int], options: dict
) -> Evaluation:
    """Top-1 accuracy and per-class precision/recall; the prediction is the most probable class the
    label map keeps (as predict chooses), none when it keeps none."""
    truth: list[int] = []
    chosen: list[int | None] = []
    tasks: list[TaskErrors] = []
    for cls, label in enumerate(spec.labels):
        folder = dataset.root / "val" / label
        for image_path in sorted(folder.iterdir()) if folder.is_dir() else []:
            probs = model.predict(str(image_path), **options)[0].probs.data.cpu().numpy()
            kept = [i for i in to_class if i < len(probs)]
            truth.append(cls)
            chosen.append(to_class[max(kept, key=lambda i: probs[i])] if kept else None)
            found = spec.labels[chosen[-1]] if chosen[-1] is not None else None
            tasks.append(choice_errors(_task_id(image_path), [str(cls)], found, spec))
    per_class: dict[str, dict[str, float]] = {}
    for cls, label in enumerate(spec.labels):
        support = truth.count(cls)
        picked = sum(1 for c in chosen if c == cls)
        right = sum(1 for t, c in zip(truth, chosen, strict=True) if t == c == cls)
        if support or picked:
            per_class[label] = {
                "precision": right / picked if picked else 0.0,
                "recall": right / support if support else 0.0,
                "support": support,
            }
    with_support = [row for row in per_class.values() if row["support"]]
    accuracy = sum(1 for t, c in zip(truth, chosen, strict=True) if t == c) / len(truth) if truth else 0.0
    return Evaluation(
        map50_95=None,
        map50=None,
        precision=float(np.mean([row["precision"] for row in with_support])) if with_support else 0.0,
        recall=float(np.mean([row["recall"] for row in with_support])) if with_support else 0.0,
        per_class=per_class,
        metric="top1_accuracy",
        top1_accuracy=accuracy,
        tasks=tasks,
    )
