"""Model registries for tests: models whose output is known, and models that wait for the test.

`KnownOutputRegistry` serves, for chosen model paths, a stand-in for an Ultralytics YOLO whose `predict`
returns real `ultralytics.engine.results.Results` built from each image by a test function: everything
from the scheduler to the Label Studio regions runs as in production, and the test knows what the
regions must be (no trained segmentation, OBB or pose model exists offline).
`BlockingRegistry` keeps every prediction in flight until the test releases it: no timing guesses.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inference.model_registry import LoadedModel, ModelRegistry
from inference.scheduler import BatchSizer, FairScheduler

Box = tuple[float, float, float, float]


@dataclass
class KnownOutputModel:
    """Stands in for `ultralytics.YOLO`: `predict` gives `result_of(image)` for every image of a batch."""

    task: str  # detect | segment | classify | pose | obb
    names: dict[int, str]
    result_of: Callable[[np.ndarray], Any]

    def predict(self, images: list[np.ndarray], **_options: Any) -> list[Any]:
        return [self.result_of(image) for image in images]


class KnownOutputRegistry(ModelRegistry):
    """A real registry (path checks, schedulers, batch sizes) that serves `known[model_path]` for those paths."""

    def __init__(self, settings, known: dict[str, KnownOutputModel]):
        super().__init__(settings)
        self.known = known

    def _load(self, model_path: str, path: Path, model_format: str) -> LoadedModel:
        model = self.known.get(model_path)
        if model is None:
            return super()._load(model_path, path, model_format)
        return LoadedModel(
            name=model_path,
            yolo=model,
            task=model.task,
            class_names=model.names,
            batch_size=self._settings.inference_batch_size or 8,
            scheduler=FairScheduler(
                BatchSizer(self._settings.batch_latency_factor, min_gain=self._settings.batch_min_gain)
            ),
        )


def segmentation_result(image: np.ndarray, boxes: list[tuple[int, Box]], names: dict[int, str]) -> Any:
    """A segment `Results`: one instance per (class id, box), its mask the box's pixels (at the image size)."""
    import torch
    from ultralytics.engine.results import Results

    height, width = image.shape[:2]
    masks = torch.zeros((len(boxes), height, width))
    for i, (_, (x1, y1, x2, y2)) in enumerate(boxes):
        masks[i, int(y1) : int(y2), int(x1) : int(x2)] = 1.0
    return Results(image, "known.png", names, boxes=_box_rows(boxes), masks=masks)


def oriented_result(image: np.ndarray, boxes: list[tuple[int, Box, float]], names: dict[int, str]) -> Any:
    """An OBB `Results`: (class id, axis-aligned box, angle in radians) turned about the box's centre."""
    import torch
    from ultralytics.engine.results import Results

    rows = [
        [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, angle, 0.9, class_id]
        for class_id, (x1, y1, x2, y2), angle in boxes
    ]
    return Results(image, "known.png", names, obb=torch.tensor(rows, dtype=torch.float32).reshape(-1, 7))


def pose_result(image: np.ndarray, boxes: list[tuple[int, Box]], names: dict[int, str]) -> Any:
    """A pose `Results` with 17 keypoints per box: 0 at the box's centre, 1 at its top-left corner, the
    others invisible (score 0)."""
    import torch
    from ultralytics.engine.results import Results

    keypoints = torch.zeros((len(boxes), 17, 3))
    for i, (_, (x1, y1, x2, y2)) in enumerate(boxes):
        keypoints[i, 0] = torch.tensor([(x1 + x2) / 2, (y1 + y2) / 2, 0.95])
        keypoints[i, 1] = torch.tensor([x1, y1, 0.9])
    return Results(image, "known.png", names, boxes=_box_rows(boxes), keypoints=keypoints)


def classification_result(image: np.ndarray, probs: list[float], names: dict[int, str]) -> Any:
    import torch
    from ultralytics.engine.results import Results

    return Results(image, "known.png", names, probs=torch.tensor(probs))


def _box_rows(boxes: list[tuple[int, Box]]) -> Any:
    import torch

    rows = [[*box, 0.9, class_id] for class_id, box in boxes]
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)


class BlockingRegistry(ModelRegistry):
    """A real registry whose models wait for `release` inside every predict call (and say when they do):
    a prediction stays in flight for exactly as long as a test needs, without timing guesses."""

    def __init__(self, settings):
        super().__init__(settings)
        self.entered = threading.Event()
        self.release = threading.Event()

    def get(self, *args, **kwargs):
        model = super().get(*args, **kwargs)
        if not getattr(model, "blocked_by_test", False):
            real_predict = model.predict

            def blocked_predict(*call_args, **call_kwargs):
                self.entered.set()
                assert self.release.wait(60), "the test never released the model"
                return real_predict(*call_args, **call_kwargs)

            model.predict = blocked_predict
            model.blocked_by_test = True
        return model


def build_two_class_classifier(
    target: Path, dark: int, bright: int, size: tuple[int, int], architecture: str = "yolov8n-cls.yaml"
) -> Path:
    """A classifier of `architecture` (yolov8n-cls, yolo11n-cls, yolo26n-cls: one `Classify` head) telling dark frames from bright ones (classes 0 "dark", 1 "bright"), by construction
    instead of training: grey images of level `dark` and `bright` (height, width = `size`) fall on either
    side of its decision.

    Random weights everywhere but the head: its last linear layer projects the pooled features onto the
    difference between a bright and a dark frame's features (centred between them).
    """
    import torch
    from ultralytics import YOLO
    from ultralytics.nn.tasks import ClassificationModel

    model = YOLO(architecture)
    ClassificationModel.reshape_outputs(model.model, 2)
    model.model.names = {0: "dark", 1: "bright"}
    model.model.yaml["nc"] = 2
    model.ckpt = {"train_args": {"imgsz": 224, "task": "classify"}}  # predict at 224 px, like yolov8n-cls.pt
    head = model.model.model[-1]
    with torch.no_grad():  # random features are ~1e-8: scale them up, or fp16 weights cannot separate them
        head.conv.bn.weight.fill_(1e4)
    linear = head.linear
    features = []
    hook = linear.register_forward_pre_hook(lambda _, inputs: features.append(inputs[0][0].detach().clone()))
    for level in (dark, bright):
        model.predict(np.full((*size, 3), level, np.uint8), verbose=False)
    hook.remove()
    dark_features, bright_features = features[-2], features[-1]
    difference = bright_features - dark_features
    direction = difference * (8.0 / float(difference.square().sum()))
    middle = float(direction @ (bright_features + dark_features) / 2)
    with torch.no_grad():
        linear.weight.copy_(torch.stack([-direction, direction]))
        linear.bias.copy_(torch.tensor([middle, -middle]))
    target.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(target))
    return target


class CodeOnUnpickle:
    """Pickled as a call of `os.system`: whatever unpickles it runs the command."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        import os

        return (os.system, (self.command,))


def write_code_running_weights(path: Path, marker: Path) -> Path:
    """A `.pt` file whose unpickling (torch.load without weights_only) creates `marker`."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": CodeOnUnpickle(f"touch {marker}")}, path)
    return path


def build_constant_detect_model(
    target: Path, names: dict[int, str], half_side: int, architecture: str = "yolov8n.yaml", imgsz: int = 640
) -> Path:
    """A detector of `architecture` whose output ignores the image: the squares of `_constant_squares`."""
    return _constant_squares(architecture, "detect", target, names, half_side, imgsz=imgsz)


def build_constant_obb_model(
    target: Path,
    names: dict[int, str],
    half_side: int,
    angle: float,
    architecture: str = "yolov8n-obb.yaml",
    imgsz: int = 640,
) -> Path:
    """An OBB model whose output ignores the image: the squares of `_constant_squares`, each turned by
    `angle` radians. YOLOv8/YOLO11 decode the angle branch as (sigmoid(x) - 0.25) * pi, so it says
    sigmoid^-1(angle / pi + 0.25); YOLO26 (`OBB26`) reads the branch as the angle itself."""
    from ultralytics.nn.modules.head import OBB26
    from ultralytics.nn.tasks import yaml_model_load

    head_class = yaml_model_load(architecture)["head"][-1][2]
    fraction = angle / math.pi + 0.25
    bias = angle if head_class == OBB26.__name__ else math.log(fraction / (1 - fraction))
    return _constant_squares(architecture, "obb", target, names, half_side, bias, imgsz=imgsz)


def build_constant_segment_model(
    target: Path,
    names: dict[int, str],
    half_side: int,
    architecture: str = "yolov8n-seg.yaml",
    imgsz: int = 640,
) -> Path:
    """A segmentation model whose output ignores the image: the squares of `_constant_squares`, each with
    a mask that fills its box (every prototype is a constant ~2.86 and every mask coefficient 1)."""

    def fill_masks(head) -> None:  # called under torch.no_grad()
        prototypes = head.proto.cv3  # Conv + BatchNorm + SiLU: a zero convolution leaves SiLU(bias)
        prototypes.conv.weight.zero_()
        prototypes.bn.weight.fill_(1.0)
        prototypes.bn.bias.fill_(3.0)
        prototypes.bn.running_mean.zero_()
        prototypes.bn.running_var.fill_(1.0)

    return _constant_squares(architecture, "segment", target, names, half_side, 1.0, fill_masks, imgsz=imgsz)


def build_constant_pose_model(
    target: Path,
    names: dict[int, str],
    half_side: int,
    architecture: str = "yolov8n-pose.yaml",
    imgsz: int = 640,
) -> Path:
    """A pose model whose output ignores the image: the squares of `_constant_squares`, each with 17
    keypoints: 0 at the square's centre, 1 at its top-left corner (score ~0.99), the others at the centre
    with score ~0 (left out by a keypoint threshold).

    Keypoint branch bias b (in stride units): YOLOv8/YOLO11 place x at (2b + anchor - 0.5) * stride,
    YOLO26 (`Pose26`) at (b + anchor) * stride; the anchor is the cell's centre."""
    import torch

    def place_keypoints(head) -> None:  # called under torch.no_grad()
        nk = head.kpt_shape[0]
        offsets = torch.zeros((nk, 3))
        offsets[:, 2] = -20.0  # invisible
        offsets[0, 2] = offsets[1, 2] = 5.0
        offsets[1, :2] = -half_side  # top-left corner: half a side up and left of the centre
        if not hasattr(head, "cv4_kpts"):  # (2b - 0.5) must equal the offset
            offsets[:, :2] = (offsets[:, :2] + 0.5) / 2
        for branch in _branches(head):
            for level in range(head.nl):
                last = branch["kpts_head"][level] if "kpts_head" in branch else branch["pose_head"][level][-1]
                last.weight.zero_()
                last.bias.copy_(offsets.reshape(-1))

    return _constant_squares(
        architecture, "pose", target, names, half_side, None, place_keypoints, imgsz=imgsz
    )


def _branches(head) -> list[dict]:
    """The head's output branches: one-to-many (NMS) and, on YOLO26's end-to-end head, one-to-one too."""
    branches = [head.one2many]
    if getattr(head, "one2one_cv2", None) is not None:
        branches.append(head.one2one)
    return branches


def _constant_squares(
    architecture: str,
    task: str,
    target: Path,
    names: dict[int, str],
    half_side: int,
    extra_bias: float | None = None,
    finish=None,
    imgsz: int = 640,
) -> Path:
    """A model of `architecture` whose every anchor of the stride-32 level predicts a square of side
    2 * half_side * 32 px (at the inference size) of class 0 with score ~0.99; the other levels and
    classes score ~0, so NMS (or YOLO26's one-to-one top-k) keeps a grid of such squares.

    The last convolution of each head branch (both of YOLO26's end-to-end head: the model serves the
    one-to-one branch, as released YOLO26 weights do) gets zero weights and a bias that says it: the box
    branch one peaked distribution bin (`half_side`) per side, or the distance itself when the head has
    no DFL (reg_max 1, YOLO26), the class branch the scores, the task's own branch (OBB angle, mask
    coefficients) `extra_bias`; `finish(head)` sets anything else. Predicts at `imgsz` by default.
    """
    import torch
    from ultralytics import YOLO

    model = YOLO(architecture)
    head = model.model.model[-1]
    head.nc, head.no = len(names), len(names) + head.reg_max * 4
    with torch.no_grad():
        for branch in _branches(head):
            for level in range(head.nl):
                box, cls = branch["box_head"][level][-1], branch["cls_head"][level]
                cls[-1] = torch.nn.Conv2d(cls[-1].in_channels, len(names), 1)
                box.weight.zero_()
                cls[-1].weight.zero_()
                if head.reg_max > 1:
                    bins = torch.full((4, head.reg_max), -20.0)
                    bins[:, half_side] = 20.0
                    box.bias.copy_(bins.reshape(-1))
                else:
                    box.bias.fill_(float(half_side))
                scores = torch.full((len(names),), -20.0)
                if level == head.nl - 1:
                    scores[0] = 5.0
                cls[-1].bias.copy_(scores)
                extra_head = branch.get("mask_head") or branch.get("angle_head")
                if extra_head is not None and extra_bias is not None:
                    extra_head[level][-1].weight.zero_()
                    extra_head[level][-1].bias.fill_(extra_bias)
        if finish is not None:
            finish(head)
    if getattr(head, "one2one_cv2", None) is not None:
        model.model.end2end = True  # NMS-free, as released YOLO26 weights predict by default
    model.model.names = names
    model.model.yaml["nc"] = len(names)
    model.ckpt = {"train_args": {"imgsz": imgsz, "task": task}}
    target.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(target))
    return target


YOLOE_FEATURE = 0  # the embedding dimension every stride-32 cell of a constant YOLOE looks like


def build_constant_yoloe_model(
    target: Path, half_side: int, architecture: str = "yoloe-26s-seg.yaml", imgsz: int = 640
) -> Path:
    """A YOLOE (open vocabulary) whose output ignores the image: the squares of `_constant_squares`, with
    masks filling them, and a class score that depends only on the prompt embedding.

    Each cell's visual embedding (the `cls_head` branch) is 15 along dimension YOLOE_FEATURE at the
    stride-32 level and 0 elsewhere; the contrastive head scores a prompt embedding e as
    sigmoid(15 * e[YOLOE_FEATURE] - 10) (BatchNorm identity, logit scale 1). So a prompt whose embedding
    is the unit vector along YOLOE_FEATURE finds every square (score ~0.99), any prompt orthogonal to it
    nothing: which prompt the answer names is chosen by the embeddings a test supplies."""
    import torch
    from ultralytics import YOLOE

    model = YOLOE(architecture)
    head = model.model.model[-1]
    with torch.no_grad():
        for branch in _branches(head):
            for level in range(head.nl):
                box, features = branch["box_head"][level][-1], branch["cls_head"][level][-1]
                box.weight.zero_()
                box.bias.fill_(float(half_side))
                features.weight.zero_()
                features.bias.zero_()
                if level == head.nl - 1:
                    features.bias[YOLOE_FEATURE] = 15.0
                contrastive = branch["contrastive_head"][level]
                contrastive.norm.reset_running_stats()  # mean 0, variance 1: the identity in eval
                contrastive.logit_scale.fill_(0.0)
                contrastive.bias.fill_(-10.0)
                coefficients = branch["mask_head"][level][-1]
                coefficients.weight.zero_()
                coefficients.bias.fill_(1.0)
        prototypes = head.proto.cv3
        prototypes.conv.weight.zero_()
        prototypes.bn.weight.fill_(1.0)
        prototypes.bn.bias.fill_(3.0)
        prototypes.bn.running_mean.zero_()
        prototypes.bn.running_var.fill_(1.0)
    model.model.end2end = True
    model.ckpt = {"train_args": {"imgsz": imgsz, "task": "segment"}}
    target.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(target))
    return target
