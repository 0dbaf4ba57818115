"""`<BrushLabels>` on an image: instance masks from a segmentation model, as Label Studio RLE."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from control_models.base import ControlModel
from converters.image_regions import brush_region
from inference.detections import Detections


class BrushLabelsModel(ControlModel):
    control_tag: ClassVar[str] = "BrushLabels"
    model_tasks: ClassVar[tuple[str, ...]] = ("segment",)
    default_model: ClassVar[str] = "yolov8n-seg.pt"
    needs_masks: ClassVar[bool] = True
    training_task: ClassVar[str | None] = "segment"  # masks -> outline polygons (converters/yolo_labels.py)
    open_vocabulary: ClassVar[bool] = True  # model_prompts="labels" with a YOLOE model

    def regions(self, output: Detections, class_names: Mapping[int, str]) -> list[dict]:
        if output.masks is None:
            return []
        return self.regions_per_detection(
            output,
            class_names,
            lambda i, label: brush_region(
                from_name=self.from_name,
                to_name=self.to_name,
                label=label,
                mask=output.masks[i].full(output.image_width, output.image_height),  # one at a time
                score=float(output.scores[i]),
            ),
        )
