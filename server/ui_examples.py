"""The try-it page's example configs: a fixed list, written here, one per control tag.

The first one runs offline on a fresh clone: the bundled `models/shapes-yolov8n.pt` and a sample image
the page serves. It names the model with `model_path`, which configs may only do with
ALLOW_CUSTOM_MODEL_PATH=true; the page's examples are trusted instead, because their text is this
module's: a config sent to `/ui/predict` that is exactly one of them is planned with custom model paths
allowed (the model must still be inside MODEL_ROOT). Any other text, an edited example included, and
every `/predict`, follow the server's setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from control_models.labeling_plan import PlanCache
from core.errors import BackendError
from core.settings import Settings

SAMPLES = Path(__file__).resolve().parent / "static" / "examples"
BUNDLED_MODELS = {"shapes-yolov8n.pt"}  # files in the repository's models/ folder

IMAGE = '<Image name="image" value="$image"/>'
VIDEO = '<Video name="video" value="$video" frameRate="25"/>'


@dataclass(frozen=True)
class Example:
    name: str
    config: str
    sample: str | None = None  # a file of server/static/examples/, served at /ui/examples/<file>


def _view(*lines: str) -> str:
    return "<View>\n" + "\n".join(f"  {line}" for line in lines) + "\n</View>"


EXAMPLES: tuple[Example, ...] = (
    Example(
        "Shapes (bundled model, offline)",
        _view(
            IMAGE,
            '<RectangleLabels name="label" toName="image" model_path="shapes-yolov8n.pt" '
            'model_score_threshold="0.25">',
            '  <Label value="circle"/>',
            '  <Label value="square"/>',
            '  <Label value="triangle"/>',
            "</RectangleLabels>",
        ),
        sample="shapes.jpg",
    ),
    Example(
        "RectangleLabels",
        _view(
            IMAGE,
            '<RectangleLabels name="label" toName="image" model_score_threshold="0.25">',
            '  <Label value="Person" predicted_values="person"/>',
            '  <Label value="Vehicle" predicted_values="car,bus,truck"/>',
            "</RectangleLabels>",
        ),
    ),
    Example(
        "RectangleLabels (OBB)",
        _view(
            IMAGE,
            '<RectangleLabels name="label" toName="image" model_obb="true">',
            '  <Label value="Plane" predicted_values="plane"/>',
            '  <Label value="Ship" predicted_values="ship"/>',
            "</RectangleLabels>",
        ),
    ),
    Example(
        "PolygonLabels",
        _view(
            IMAGE,
            '<PolygonLabels name="polygon" toName="image">',
            '  <Label value="Person" predicted_values="person"/>',
            '  <Label value="Car" predicted_values="car"/>',
            "</PolygonLabels>",
        ),
    ),
    Example(
        "BrushLabels",
        _view(
            IMAGE,
            '<BrushLabels name="brush" toName="image">',
            '  <Label value="Person" predicted_values="person"/>',
            '  <Label value="Car" predicted_values="car"/>',
            "</BrushLabels>",
        ),
    ),
    Example(
        "Choices",
        _view(
            IMAGE,
            '<Choices name="choice" toName="image" choice="single">',
            '  <Choice value="Cat" predicted_values="tabby,tiger_cat,Persian_cat"/>',
            '  <Choice value="Dog" predicted_values="golden_retriever,beagle"/>',
            "</Choices>",
        ),
    ),
    Example(
        "Taxonomy",
        _view(
            IMAGE,
            '<Taxonomy name="taxonomy" toName="image">',
            '  <Choice value="Animal">',
            '    <Choice value="Cat" predicted_values="tabby,tiger_cat"/>',
            '    <Choice value="Dog" predicted_values="beagle"/>',
            "  </Choice>",
            "</Taxonomy>",
        ),
    ),
    Example(
        "KeyPointLabels",
        _view(
            IMAGE,
            '<RectangleLabels name="box" toName="image">',
            '  <Label value="Person" predicted_values="person"/>',
            "</RectangleLabels>",
            '<KeyPointLabels name="keypoints" toName="image">',
            '  <Label value="nose" predicted_values="person" model_index="0"/>',
            '  <Label value="left_eye" predicted_values="person" model_index="1"/>',
            '  <Label value="right_eye" predicted_values="person" model_index="2"/>',
            "</KeyPointLabels>",
        ),
    ),
    Example(
        "VideoRectangle",
        _view(
            VIDEO,
            '<Labels name="videoLabels" toName="video">',
            '  <Label value="Person" predicted_values="person"/>',
            '  <Label value="Car" predicted_values="car"/>',
            "</Labels>",
            '<VideoRectangle name="box" toName="video" model_tracker="botsort"/>',
        ),
    ),
    Example(
        "TimelineLabels",
        _view(
            VIDEO,
            '<TimelineLabels name="timeline" toName="video" model_score_threshold="0.3">',
            '  <Label value="Cat" predicted_values="tabby,tiger_cat"/>',
            '  <Label value="Dog" predicted_values="beagle"/>',
            "</TimelineLabels>",
        ),
    ),
)

EXAMPLE_CONFIGS = frozenset(example.config for example in EXAMPLES)
SAMPLE_FILES = frozenset(example.sample for example in EXAMPLES if example.sample)


def trusted_plans(settings: Settings) -> PlanCache:
    """Plans for the examples' own texts: custom model paths allowed (still inside MODEL_ROOT)."""
    return PlanCache(settings.model_copy(update={"allow_custom_model_path": True}), size=len(EXAMPLES))


def describe(examples_plans: PlanCache, settings: Settings) -> list[dict[str, Any]]:
    """What the page shows of each example: its config, sample, and the weight files it needs."""
    described = []
    for example in EXAMPLES:
        try:
            weights = sorted({control.model_path for control in examples_plans.get(example.config).controls})
        except BackendError as error:  # an example that does not plan is a bug; show it, do not hide it
            weights, note = [], f"this example cannot be used: {error.message}"
        else:
            missing = [name for name in weights if not (settings.model_root / name).is_file()]
            note = _missing_note(missing, settings)
        described.append(
            {
                "name": example.name,
                "config": example.config,
                "sample": f"/ui/examples/{example.sample}" if example.sample else None,
                "weights": weights,
                "ready": not note,
                "note": note,
            }
        )
    return described


def _missing_note(missing: list[str], settings: Settings) -> str:
    """Which weight files the example needs and where to put them; empty when all are there."""
    if not missing:
        return ""
    names, it = ", ".join(missing), "it" if len(missing) == 1 else "them"
    where = f"put {it} into MODEL_ROOT ({settings.model_root})"
    if set(missing) <= BUNDLED_MODELS:
        return f"needs {names}, which comes with the repository (models/): {where}"
    if settings.allow_model_download:
        return (
            f"needs {names}, not in MODEL_ROOT yet: the backend downloads {it} on the first Predict when "
            f"this machine is online; offline, {where}"
        )
    return f"needs {names}, not in MODEL_ROOT; downloads are off (ALLOW_MODEL_DOWNLOAD): {where}"
