"""A private, detect-only stand-in for train10a's `training.spec`, `training.dataset`, `training.evaluation`
and `ControlModel.training_spec()`, following TRAINING_CONTRACT.md, installed only while those are not on
this branch yet (`install()` does nothing once the real modules exist). Tests only; never imported by
the project.
"""

from __future__ import annotations

import importlib.util
import random
import shutil
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path


def install() -> bool:
    """Put the stand-ins in place when the real modules are missing; True when it did."""
    if "training.spec" in sys.modules:
        return getattr(sys.modules["training.spec"], "__spec__", None) is None
    if importlib.util.find_spec("training.spec") is not None:
        return False
    from control_models.base import ControlModel, parse_bool, predicted_names
    from core.errors import BackendError

    class TrainingDataError(BackendError):
        status_code = 422

    @dataclass(frozen=True)
    class TrainingSpec:
        from_name: str
        control_tag: str
        value_key: str
        task: str
        labels: tuple[str, ...]
        model_path: str
        label_map: dict[str, str]
        keypoint_labels: tuple[str, ...] = ()
        epochs: int = 30
        imgsz: int = 320
        batch: int = 8
        patience: int = 10
        promote: str = "better"
        train_every: int = 0

    def training_spec(self):
        if self.control_tag != "RectangleLabels" or parse_bool(self.attrs.get("model_obb")):
            return None
        attrs = self.attrs
        return TrainingSpec(
            from_name=self.from_name,
            control_tag=self.control_tag,
            value_key=self.value_key,
            task="detect",
            labels=tuple(self.labels),
            model_path=self.model_path,
            label_map={n: label for label, a in self.labels.items() for n in predicted_names(label, a)},
            epochs=int(attrs.get("model_train_epochs", 30)),
            imgsz=int(attrs.get("model_train_imgsz", 320)),
            batch=int(attrs.get("model_train_batch", 8)),
            patience=int(attrs.get("model_train_patience", 10)),
            promote=str(attrs.get("model_train_promote", "better")),
            train_every=int(attrs.get("model_train_every", 0)),
        )

    @dataclass
    class AnnotatedImage:
        task_id: int
        image_path: Path
        regions: list[dict]
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

    def write_dataset(images, spec, out_dir, seed=0, val_fraction=0.2, min_images=4):
        if len(images) < min_images:
            raise TrainingDataError(f"{len(images)} annotated image(s); at least {min_images} are needed")
        order = sorted(images, key=lambda image: image.task_id)
        random.Random(seed).shuffle(order)
        n_val = max(1, round(len(order) * val_fraction))
        splits = {"val": order[:n_val], "train": order[n_val:]}
        counts = {split: dict.fromkeys(spec.labels, 0) for split in splits}
        for split, members in splits.items():
            (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
            (out_dir / "labels" / split).mkdir(parents=True, exist_ok=True)
            for image in members:
                target = out_dir / "images" / split / f"{image.task_id}{image.image_path.suffix or '.jpg'}"
                shutil.copyfile(image.image_path, target)
                lines = []
                for region in image.regions:
                    value = region["value"]
                    label = value["rectanglelabels"][0]
                    counts[split][label] += 1
                    cx = (value["x"] + value["width"] / 2) / 100
                    cy = (value["y"] + value["height"] / 2) / 100
                    w, h = value["width"] / 100, value["height"] / 100
                    lines.append(f"{spec.labels.index(label)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
                (out_dir / "labels" / split / f"{image.task_id}.txt").write_text("\n".join(lines))
        yaml_path = out_dir / "dataset.yaml"
        names = "\n".join(f"  {i}: {name}" for i, name in enumerate(spec.labels))
        yaml_path.write_text(f"path: {out_dir}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
        return DatasetSummary(
            out_dir,
            yaml_path,
            "detect",
            list(spec.labels),
            [i.task_id for i in splits["train"]],
            [i.task_id for i in splits["val"]],
            counts,
        )

    @dataclass
    class Evaluation:
        map50_95: float
        map50: float
        precision: float
        recall: float
        per_class: dict[str, dict[str, float]]

        def to_json(self) -> dict:
            return dict(self.__dict__)

    def evaluate(model_path, dataset, spec, imgsz, class_names_to_labels=None, device=""):
        """Box mAP on the val split, the model's classes read through the label map (as the contract says)."""
        import cv2
        import numpy as np
        import torch
        from ultralytics import YOLO
        from ultralytics.utils.metrics import ap_per_class, box_iou

        model = YOLO(str(model_path))
        to_label = {
            int(i): (class_names_to_labels or {}).get(n) if class_names_to_labels else n
            for i, n in model.names.items()
        }
        thresholds = np.linspace(0.5, 0.95, 10)
        tps, confs, pred_cls, target_cls = [], [], [], []
        for image_path in sorted((dataset.root / "images" / "val").iterdir()):
            height, width = cv2.imread(str(image_path)).shape[:2]
            truth = []
            for line in (dataset.root / "labels" / "val" / f"{image_path.stem}.txt").read_text().splitlines():
                c, cx, cy, w, h = (float(v) for v in line.split())
                truth.append(
                    (
                        int(c),
                        [
                            (cx - w / 2) * width,
                            (cy - h / 2) * height,
                            (cx + w / 2) * width,
                            (cy + h / 2) * height,
                        ],
                    )
                )
            target_cls += [c for c, _ in truth]
            result = model.predict(str(image_path), imgsz=imgsz, conf=0.001, verbose=False)[0]
            found = [
                (spec.labels.index(to_label[int(c)]), box, conf)
                for c, box, conf in zip(
                    result.boxes.cls.tolist(),
                    result.boxes.xyxy.tolist(),
                    result.boxes.conf.tolist(),
                    strict=True,
                )
                if to_label.get(int(c)) in spec.labels
            ]
            found.sort(key=lambda item: -item[2])
            used = np.zeros((len(truth), 10), dtype=bool)
            for c, box, conf in found:
                tp = np.zeros(10, dtype=bool)
                if truth:
                    ious = box_iou(torch.tensor([box]), torch.tensor([b for _, b in truth])).numpy()[0]
                    for k, threshold in enumerate(thresholds):
                        candidates = [
                            j
                            for j, (tc, _) in enumerate(truth)
                            if tc == c and not used[j, k] and ious[j] >= threshold
                        ]
                        if candidates:
                            best = max(candidates, key=lambda j: ious[j])
                            used[best, k] = tp[k] = True
                tps.append(tp)
                confs.append(conf)
                pred_cls.append(c)
        per_class = {}
        if tps:
            _, _, p, r, _, ap, classes, *_ = ap_per_class(
                np.array(tps), np.array(confs), np.array(pred_cls), np.array(target_cls)
            )
        else:
            p = r = np.zeros(0)
            ap = np.zeros((0, 10))
            classes = np.array([])
        for index, c in enumerate(classes):
            per_class[spec.labels[int(c)]] = {
                "precision": float(p[index]),
                "recall": float(r[index]),
                "map50": float(ap[index, 0]),
                "map50_95": float(ap[index].mean()),
                "support": int(target_cls.count(int(c))),
            }
        for label in spec.labels:
            if label not in per_class and target_cls.count(spec.labels.index(label)):
                per_class[label] = {
                    "precision": 0.0,
                    "recall": 0.0,
                    "map50": 0.0,
                    "map50_95": 0.0,
                    "support": target_cls.count(spec.labels.index(label)),
                }
        rows = list(per_class.values())

        def mean(key):
            return float(np.mean([row[key] for row in rows])) if rows else 0.0

        return Evaluation(mean("map50_95"), mean("map50"), mean("precision"), mean("recall"), per_class)

    modules = {
        "training.spec": {"TrainingSpec": TrainingSpec},
        "training.dataset": {
            "AnnotatedImage": AnnotatedImage,
            "DatasetSummary": DatasetSummary,
            "write_dataset": write_dataset,
        },
        "training.evaluation": {"Evaluation": Evaluation, "evaluate": evaluate},
    }
    for name, members in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(members)
        sys.modules[name] = module
    ControlModel.training_spec = training_spec
    return True
