"""YOLO26's NMS-free one-to-one head serves wherever a model has one.

YOLO26 heads carry two branches: one-to-many (boxes per anchor, then NMS; what training's loss needs)
and one-to-one (one box per object, top-k, no NMS: the end-to-end design). Ultralytics predicts,
validates and exports through the one-to-one branch only when asked with `nms=False`; without it,
through the one-to-many branch and NMS. Serving (`LoadedModel.predict`), the training job's evaluation
and the INT8 export and its check all ask for it, so a YOLO26 predicts NMS-free everywhere, and a
version fine-tuned here is judged as it will be served.
"""

from __future__ import annotations

from typing import Any


def has_end_to_end_head(yolo: Any) -> bool:
    """Whether an Ultralytics model (a `.pt` loaded as `YOLO`) has a one-to-one (NMS-free) branch."""
    layers = getattr(getattr(yolo, "model", None), "model", None)
    try:
        head = layers[-1]
    except (TypeError, IndexError, KeyError):  # an exported model: no torch layers
        return False
    return getattr(head, "one2one_cv2", None) is not None


def end_to_end_options(yolo: Any) -> dict[str, Any]:
    """Keyword arguments for predict/val/export selecting the one-to-one head where there is one."""
    return {"nms": False} if has_end_to_end_head(yolo) else {}
