"""`<RectangleLabels>` on an image: axis-aligned boxes from a detection model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from control_models.attributes import parse_bool
from control_models.base import ControlModel
from converters.image_regions import rectangle_region
from inference.detections import Detections


class RectangleLabelsModel(ControlModel):
    control_tag: ClassVar[str] = "RectangleLabels"
    # Segmentation and pose models give boxes too, so any of them can fill a rectangle tag.
    model_tasks: ClassVar[tuple[str, ...]] = ("detect", "segment", "pose")
    default_model: ClassVar[str] = "yolov8m.pt"
    training_task: ClassVar[str | None] = "detect"
    open_vocabulary: ClassVar[bool] = True  # model_prompts="labels" with a YOLOE model

    @classmethod
    def matches(cls, control) -> bool:
        return super().matches(control) and not parse_bool(control.attr.get("model_obb"))

    def regions(self, output: Detections, class_names: Mapping[int, str]) -> list[dict]:
        return self.regions_per_detection(
            output,
            class_names,
            lambda i, label: rectangle_region(
                from_name=self.from_name,
                to_name=self.to_name,
                label=label,
                xyxy=output.xyxy[i],
                score=float(output.scores[i]),
                image_width=output.image_width,
                image_height=output.image_height,
            ),
        )
