"""One module per Label Studio control tag; `CONTROL_MODELS` lists them in matching order.

A new tag is a new module plus one line here.
"""

from control_models.base import ControlModel
from control_models.brush_labels import BrushLabelsModel
from control_models.choices import ChoicesModel, TaxonomyModel
from control_models.keypoint_labels import KeyPointLabelsModel
from control_models.polygon_labels import PolygonLabelsModel
from control_models.rectangle_labels import RectangleLabelsModel
from control_models.rectangle_labels_obb import OrientedRectangleLabelsModel
from control_models.timeline_labels import TimelineLabelsModel
from control_models.video_rectangle import VideoRectangleModel

CONTROL_MODELS: tuple[type[ControlModel], ...] = (
    OrientedRectangleLabelsModel,
    RectangleLabelsModel,
    PolygonLabelsModel,
    BrushLabelsModel,
    ChoicesModel,
    TaxonomyModel,
    KeyPointLabelsModel,
    VideoRectangleModel,
    TimelineLabelsModel,
)

__all__ = ["CONTROL_MODELS", "ControlModel"]
