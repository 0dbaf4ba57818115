"""`<PolygonLabels>` on an image: instance outlines from a segmentation model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from control_models.base import ControlModel
from converters.image_regions import polygon_region
from inference.detections import Detections


class PolygonLabelsModel(ControlModel):
    control_tag: ClassVar[str] = "PolygonLabels"
    model_tasks: ClassVar[tuple[str, ...]] = ("segment",)
    default_model: ClassVar[str] = "yolov8n-seg.pt"
    training_task: ClassVar[str | None] = "segment"
    open_vocabulary: ClassVar[bool] = True  # model_prompts="labels" with a YOLOE model

    def regions(self, output: Detections, class_names: Mapping[int, str]) -> list[dict]:
        if output.polygons is None:
            return []
        return self.regions_per_detection(
            output,
            class_names,
            lambda i, label: polygon_region(
                from_name=self.from_name,
                to_name=self.to_name,
                label=label,
                points=output.polygons[i],
                score=float(output.scores[i]),
                image_width=output.image_width,
                image_height=output.image_height,
            ),
        )
