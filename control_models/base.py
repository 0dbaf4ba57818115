"""What every control model shares: reading its attributes from the labeling config and label mapping.

A control model answers three questions for one control tag of the labeling config:
- `matches(control)`: is this tag mine?
- `from_control(control, settings)`: build me from the tag's attributes (once per config text);
- `regions(output, class_names)`: turn one model output into Label Studio regions (pure, no model).
The model call itself lives in `model.py`, so `regions` can be tested on hand-made arrays.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from control_models.attributes import parse_choice, parse_fraction, parse_model_prompts, parse_positive_int
from converters.task_score import CANDIDATE_FLOOR, TASK_SCORE_MODES, UNCERTAINTY, detection_uncertainty
from core.errors import LabelingConfigError
from core.settings import Settings
from inference.detections import Classification, Detections
from training.spec import TrainingSpec

logger = logging.getLogger(__name__)

MODEL_FORMATS = ("auto", "pt", "openvino-int8")


def first_sibling(interface: Any, control: Any, tag: str) -> Any | None:
    """The first `<tag>` control of the config that annotates an object this control annotates too
    (their toName share a name), e.g. the `<Labels>` of a `<VideoRectangle>`; None when there is none."""
    objects = set(control.to_name or [])
    for candidate in getattr(interface, "controls", None) or []:
        if candidate.tag == tag and objects & set(candidate.to_name or []):
            return candidate
    return None


def predicted_names(label: str, attrs: Mapping[str, Any]) -> list[str]:
    """The model class names a Label Studio label stands for: `predicted_values`, else the label."""
    raw = attrs.get("predicted_values")
    if raw:
        return [name.strip() for name in str(raw).split(",") if name.strip()]
    return [label]


def build_label_map(
    labels: Mapping[str, Mapping[str, Any]], class_names: Mapping[int, str]
) -> dict[int, str]:
    """Model class index -> Label Studio label.

    A class matches a label when its name equals one of the label's predicted names, exactly or
    ignoring case. Example: labels {"Car": {"predicted_values": "car,truck"}} and classes
    {2: "car", 7: "truck", 0: "person"} give {2: "Car", 7: "Car"}.
    """
    by_lower: dict[str, int] = {}
    for index, name in class_names.items():
        by_lower.setdefault(name.lower(), index)
    exact = {name: index for index, name in class_names.items()}
    label_map: dict[int, str] = {}
    for label, attrs in labels.items():
        for name in predicted_names(label, attrs):
            index = exact.get(name, by_lower.get(name.lower()))
            if index is not None:
                label_map.setdefault(index, label)
    return label_map


@dataclass
class ControlModel:
    """One control tag of the labeling config, bound to the model that predicts for it."""

    control_tag: ClassVar[str] = ""
    model_tasks: ClassVar[tuple[str, ...]] = ()  # Ultralytics tasks whose output this control reads
    default_model: ClassVar[str] = ""
    needs_masks: ClassVar[bool] = False
    object_tags: ClassVar[tuple[str, ...]] = ("Image",)
    training_task: ClassVar[str | None] = None  # the Ultralytics task this tag trains; None: not trainable
    open_vocabulary: ClassVar[bool] = False  # may prompt a YOLOE model with its labels (model_prompts)

    from_name: str
    to_name: str
    value_key: str  # the task data key of the object tag ("image" for value="$image")
    model_path: str
    score_threshold: float
    labels: dict[str, dict[str, Any]]  # Label Studio label -> its attributes
    attrs: dict[str, Any] = field(default_factory=dict)
    model_format: str = "pt"  # auto | pt | openvino-int8
    training: TrainingSpec | None = None  # how to train this control (None: the tag is not trainable)
    conf: float = 0.5  # Ultralytics' confidence (model_conf; the score threshold unless set)
    iou: float | None = None  # NMS IoU (model_iou); None keeps Ultralytics' own
    task_score: str = "confidence"  # model_task_score: what the task's score says (converters/task_score.py)
    prompts: tuple[str, ...] = ()  # model_prompts="labels": the YOLOE model's classes, in config order
    _label_maps: dict[tuple, dict[int, str]] = field(default_factory=dict, repr=False, compare=False)
    _label_map_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    # -- building ----------------------------------------------------------------------------------

    @classmethod
    def matches(cls, control: Any) -> bool:
        objects = getattr(control, "objects", None) or []
        return control.tag == cls.control_tag and bool(objects) and objects[0].tag in cls.object_tags

    @classmethod
    def from_control(cls, control: Any, settings: Settings, **extra: Any) -> ControlModel:
        """Build from the tag; `extra` holds subclass fields and `interface` (the parsed config)."""
        extra.pop("interface", None)
        attrs = dict(control.attr)
        model_path = _allowed_model_path(control, attrs, settings)
        object_tag = control.objects[0]
        value = _task_field(object_tag)
        labels = {label: dict(tag.attr) for label, tag in (control.labels_attrs or {}).items()}
        model_format = _model_format(control, attrs, settings)
        score_threshold = parse_fraction(
            attrs, "model_score_threshold", settings.model_score_threshold, control.name
        )
        extra.setdefault("conf", parse_fraction(attrs, "model_conf", score_threshold, control.name))
        if "model_iou" in attrs:
            extra.setdefault("iou", parse_fraction(attrs, "model_iou", 0.7, control.name))
        extra.setdefault(
            "task_score",
            parse_choice(attrs, "model_task_score", settings.task_score, TASK_SCORE_MODES, control.name),
        )
        extra.setdefault(
            "prompts",
            parse_model_prompts(
                attrs,
                [predicted_names(label, label_attrs) for label, label_attrs in labels.items()],
                f'{control.tag} name="{control.name}"',
                cls.open_vocabulary,
            ),
        )
        if extra["prompts"]:
            extra.setdefault("training", None)  # the classes are the prompts: nothing to train (README)
            model_format = attrs.get("model_format") or "pt"  # MODEL_FORMAT=openvino-int8 cannot prompt
        if cls.training_task is not None:
            extra.setdefault(
                "training",
                _training_spec(
                    cls, control, attrs, labels, value[1:], model_path or cls.default_model, model_format
                ),
            )
        return cls(
            from_name=control.name,
            to_name=object_tag.name,
            value_key=value[1:],
            model_path=model_path or cls.default_model,
            score_threshold=score_threshold,
            labels=labels,
            attrs=attrs,
            model_format=model_format,
            **extra,
        )

    def training_spec(self) -> TrainingSpec | None:
        return self.training

    # -- inference parameters ------------------------------------------------------------------------

    def predict_options(self) -> dict[str, Any]:
        """Keyword arguments for Ultralytics' predict; controls with equal options share one call."""
        # Ultralytics drops boxes under `conf` inside NMS, cheaper than filtering afterwards. Uncertainty
        # needs the weaker candidates too: down to the floor, and regions filter by `conf` afterwards.
        options: dict[str, Any] = {"conf": self.candidate_conf}
        if self.iou is not None:
            options["iou"] = self.iou
        return options

    @property
    def scores_uncertainty(self) -> bool:
        """Whether this control's task score is its uncertainty (model_task_score="uncertainty")."""
        return self.task_score == UNCERTAINTY

    @property
    def candidate_conf(self) -> float:
        """The confidence the model is asked for: `conf`, or the candidate floor in uncertainty mode."""
        return min(self.conf, CANDIDATE_FLOOR) if self.scores_uncertainty else self.conf

    # -- label mapping -------------------------------------------------------------------------------

    def label_map(self, class_names: Mapping[int, str]) -> dict[int, str]:
        """Model class index -> Label Studio label, built once per model and logged when empty."""
        key = tuple(sorted(class_names.items()))
        label_map = self._label_maps.get(key)
        if label_map is None:
            with self._label_map_lock:
                label_map = self._label_maps.get(key)
                if label_map is None:
                    label_map = self._build_label_map(class_names)
                    self._label_maps[key] = label_map
        return label_map

    def _build_label_map(self, class_names: Mapping[int, str]) -> dict[int, str]:
        label_map = build_label_map(self.labels, class_names)
        if not label_map:
            shown = ", ".join(list(class_names.values())[:30])
            logger.warning(
                'Control "%s": none of its labels %s match a class of model %s (%s%s). '
                'Add predicted_values="<model class>" to a label, or model_skip="true" to the control.',
                self.from_name,
                sorted(self.labels),
                self.model_path,
                shown,
                ", ..." if len(class_names) > 30 else "",
            )
        return label_map

    def unmatched_labels(self, class_names: Mapping[int, str]) -> list[str]:
        """The labels that stand for no class of this model (shown to users, e.g. on the try-it page)."""
        mapped = set(self.label_map(class_names).values())
        return [label for label in self.labels if label not in mapped]

    # -- conversion ----------------------------------------------------------------------------------

    def regions(self, output: Detections | Classification, class_names: Mapping[int, str]) -> list[dict]:
        raise NotImplementedError

    def regions_per_detection(
        self,
        output: Detections,
        class_names: Mapping[int, str],
        make_region: Callable[[int, str], dict | None],
    ) -> list[dict]:
        """`make_region(index, label)` for every kept detection; None (nothing drawable) is left out."""
        regions = (make_region(i, label) for i, label in self.kept_detections(output, class_names))
        return [region for region in regions if region is not None]

    def kept_detections(self, output: Detections, class_names: Mapping[int, str]) -> list[tuple[int, str]]:
        """(index, label) of the detections that pass the threshold and map to a label.

        In uncertainty mode the model ran with a lower `conf` (`candidate_conf`); keeping only scores over
        `conf` here, as Ultralytics' NMS does (`>`), gives the regions confidence mode gives.
        """
        label_map = self.label_map(class_names)
        floor = self.conf if self.candidate_conf < self.conf else -1.0
        return [
            (i, label_map[int(class_id)])
            for i, (class_id, score) in enumerate(zip(output.class_ids, output.scores, strict=True))
            if score >= self.score_threshold and score > floor and int(class_id) in label_map
        ]

    def task_uncertainty(
        self, output: Detections | Classification, class_names: Mapping[int, str]
    ) -> float | None:
        """How unsure the model is for this control on one image (None in confidence mode): the candidates
        of the control's labels (every one down to the floor) through `detection_uncertainty`."""
        if not self.scores_uncertainty:
            return None
        scores, class_ids = output.candidates()
        return detection_uncertainty(scores[np.isin(class_ids, list(self.label_map(class_names)))])


def _allowed_model_path(control: Any, attrs: dict[str, str], settings: Settings) -> str | None:
    """The tag's `model_path`, refused unless ALLOW_CUSTOM_MODEL_PATH."""
    model_path = attrs.get("model_path")
    if model_path and not settings.allow_custom_model_path:
        raise LabelingConfigError(
            f'<{control.tag} name="{control.name}"> sets model_path="{model_path}", but custom model '
            "paths are off: set ALLOW_CUSTOM_MODEL_PATH=true on the backend, or remove model_path"
        )
    return model_path


def _task_field(object_tag: Any) -> str:
    """The object tag's `value` ("$image"): it must name a task field."""
    value = str(object_tag.value or "")
    if not value.startswith("$") or len(value) < 2:
        raise LabelingConfigError(
            f'<{object_tag.tag} name="{object_tag.name}"> has value="{value}"; '
            'it must name a task field, e.g. value="$image"'
        )
    return value


def _model_format(control: Any, attrs: dict, settings: Settings) -> str:
    model_format = attrs.get("model_format") or settings.model_format
    if model_format not in MODEL_FORMATS:
        raise LabelingConfigError(
            f'<{control.tag} name="{control.name}"> has model_format="{model_format}"; '
            f"use one of: {', '.join(MODEL_FORMATS)}"
        )
    return model_format


def kept_conf(group: Sequence[ControlModel]) -> float | None:
    """What one shared model call's detections are cut to before they are converted: the lowest `conf` of
    the controls when one of them asked the model for weaker candidates (uncertainty mode), else None."""
    if not any(control.candidate_conf < control.conf for control in group):
        return None
    return min(control.conf for control in group)


def _training_spec(
    cls: type[ControlModel],
    control: Any,
    attrs: Mapping[str, Any],
    labels: Mapping[str, Mapping[str, Any]],
    value_key: str,
    model_path: str,
    model_format: str,
) -> TrainingSpec:
    """The control's `model_train_*` attributes, parsed once; its labels in config order are the classes."""
    promote = str(attrs.get("model_train_promote") or "better").strip().lower()
    if promote not in ("better", "always"):
        raise LabelingConfigError(
            f'<{control.tag} name="{control.name}"> has model_train_promote="{promote}"; use "better" or "always"'
        )
    every = attrs.get("model_train_every")
    return TrainingSpec(
        from_name=control.name,
        control_tag=control.tag,
        value_key=value_key,
        task=cls.training_task,
        labels=tuple(labels),
        model_path=model_path,
        model_format=model_format,
        label_map=class_label_map(labels),
        epochs=parse_positive_int(attrs, "model_train_epochs", 30, control.name),
        imgsz=parse_positive_int(attrs, "model_train_imgsz", 320, control.name),
        batch=parse_positive_int(attrs, "model_train_batch", 8, control.name),
        patience=parse_positive_int(attrs, "model_train_patience", 10, control.name),
        promote=promote,
        train_every=0
        if every in (None, "", "0")
        else parse_positive_int(attrs, "model_train_every", 0, control.name),
    )


def class_label_map(labels: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Model class name -> Label Studio label, for reading a served model's classes while evaluating.

    Names are matched exactly or ignoring case, as in predict: {"Car": {"predicted_values": "car"}} gives
    {"car": "Car"}.
    """
    label_map: dict[str, str] = {}
    for label, label_attrs in labels.items():
        for name in predicted_names(label, label_attrs):
            label_map.setdefault(name, label)
            label_map.setdefault(name.lower(), label)
    return label_map
