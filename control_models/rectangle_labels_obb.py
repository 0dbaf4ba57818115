"""`<RectangleLabels model_obb="true">` on an image: rotated boxes from an OBB model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from control_models.attributes import parse_bool
from control_models.base import ControlModel
from converters.image_regions import oriented_rectangle_region
from inference.detections import Detections


class OrientedRectangleLabelsModel(ControlModel):
    control_tag: ClassVar[str] = "RectangleLabels"
    model_tasks: ClassVar[tuple[str, ...]] = ("obb",)
    default_model: ClassVar[str] = "yolov8n-obb.pt"
    training_task: ClassVar[str | None] = "obb"

    @classmethod
    def matches(cls, control) -> bool:
        return super().matches(control) and parse_bool(control.attr.get("model_obb"))

    def regions(self, output: Detections, class_names: Mapping[int, str]) -> list[dict]:
        if output.xywhr is None:
            return []
        return self.regions_per_detection(
            output,
            class_names,
            lambda i, label: oriented_rectangle_region(
                from_name=self.from_name,
                to_name=self.to_name,
                label=label,
                xywhr=output.xywhr[i],
                score=float(output.scores[i]),
                image_width=output.image_width,
                image_height=output.image_height,
            ),
        )
