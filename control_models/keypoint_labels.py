"""`<KeyPointLabels>` on an image: pose keypoints, each label bound to a keypoint index.

`<Label value="nose" predicted_values="person" model_index="0"/>` says: keypoint 0 of a "person"
detection is a "nose". With `model_add_bboxes="true"` (default) each pose also gets its box, drawn
by the first `<RectangleLabels>` on the same image (Label Studio only accepts rectangles from a
rectangle tag), and its keypoints are linked to that box through `parentID`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from control_models.attributes import parse_bool, parse_float
from control_models.base import ControlModel, build_label_map, first_sibling
from converters.image_regions import keypoint_region, rectangle_region
from converters.regions import new_region_id
from core.errors import LabelingConfigError
from core.settings import Settings
from inference.detections import Detections

logger = logging.getLogger(__name__)


@dataclass
class KeyPointLabelsModel(ControlModel):
    control_tag: ClassVar[str] = "KeyPointLabels"
    model_tasks: ClassVar[tuple[str, ...]] = ("pose",)
    default_model: ClassVar[str] = "yolov8n-pose.pt"

    keypoint_labels: dict[int, str] = field(default_factory=dict)  # keypoint index -> label
    point_threshold: float = 0.0
    point_size: float = 1.0
    bbox_from_name: str | None = None  # the RectangleLabels control that draws pose boxes
    bbox_labels: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_control(cls, control: Any, settings: Settings, **extra: Any) -> ControlModel:
        interface = extra.pop("interface", None)
        attrs = control.attr
        keypoint_labels: dict[int, str] = {}
        for label, tag in (control.labels_attrs or {}).items():
            index = tag.attr.get("model_index")
            if index is None:
                continue
            try:
                keypoint_labels[int(index)] = label
            except ValueError:
                raise LabelingConfigError(
                    f'<Label value="{label}"> of <KeyPointLabels name="{control.name}"> has '
                    f'model_index="{index}"; it must be the keypoint number, e.g. model_index="0"'
                ) from None
        if not keypoint_labels:
            raise LabelingConfigError(
                f'<KeyPointLabels name="{control.name}"> has no <Label model_index="N">; give each '
                "label the index of the model keypoint it stands for (COCO pose: 0 = nose, ...)"
            )
        bbox_from_name, bbox_labels = None, {}
        if parse_bool(attrs.get("model_add_bboxes"), default=True) and interface is not None:
            bbox_from_name, bbox_labels = _rectangle_control_for(interface, control)
        return super().from_control(
            control,
            settings,
            keypoint_labels=keypoint_labels,
            point_threshold=parse_float(attrs, "model_point_threshold", 0.0, control.name),
            point_size=parse_float(attrs, "model_point_size", 1.0, control.name),
            bbox_from_name=bbox_from_name,
            bbox_labels=bbox_labels,
            **extra,
        )

    def _build_label_map(self, class_names: Mapping[int, str]) -> dict[int, str]:
        """Which detection classes carry these keypoints: the labels' predicted_values, else all."""
        wanted = {
            name.strip().lower()
            for attrs in self.labels.values()
            for name in str(attrs.get("predicted_values", "")).split(",")
            if name.strip()
        }
        return {index: name for index, name in class_names.items() if not wanted or name.lower() in wanted}

    def unmatched_labels(self, class_names: Mapping[int, str]) -> list[str]:
        """Keypoint labels name keypoints, not classes: they match nothing only when no class carries them."""
        return [] if self.label_map(class_names) else list(self.labels)

    def regions(self, output: Detections, class_names: Mapping[int, str]) -> list[dict]:
        if output.keypoints is None:
            return []
        bbox_map = build_label_map(self.bbox_labels, class_names) if self.bbox_from_name else {}
        regions: list[dict] = []
        for i, _ in self.kept_detections(output, class_names):
            parent_id = None
            bbox_label = bbox_map.get(int(output.class_ids[i]))
            if bbox_label is not None:
                parent_id = new_region_id()
                regions.append(
                    rectangle_region(
                        from_name=self.bbox_from_name,
                        to_name=self.to_name,
                        label=bbox_label,
                        xyxy=output.xyxy[i],
                        score=float(output.scores[i]),
                        image_width=output.image_width,
                        image_height=output.image_height,
                        region_id=parent_id,
                    )
                )
            for index, label in self.keypoint_labels.items():
                if index >= output.keypoints.shape[1]:
                    continue
                x, y, visibility = (float(v) for v in output.keypoints[i, index])
                if visibility < self.point_threshold:
                    continue
                regions.append(
                    keypoint_region(
                        from_name=self.from_name,
                        to_name=self.to_name,
                        label=label,
                        x=x,
                        y=y,
                        score=visibility,
                        image_width=output.image_width,
                        image_height=output.image_height,
                        point_size=self.point_size,
                        parent_id=parent_id,
                    )
                )
        return regions


def _rectangle_control_for(interface: Any, control: Any) -> tuple[str | None, dict[str, dict[str, Any]]]:
    other = first_sibling(interface, control, "RectangleLabels")
    if other is not None:
        labels = {label: dict(tag.attr) for label, tag in (other.labels_attrs or {}).items()}
        return other.name, labels
    logger.info(
        'KeyPointLabels "%s": no <RectangleLabels> on the same image, so poses get no boxes', control.name
    )
    return None, {}
