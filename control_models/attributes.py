"""Reading a control tag's attributes (text in the labeling config) into typed values, once.

Every control model parses its attributes when it is built from the config; a bad value is a
`LabelingConfigError` (422) that names the tag, the attribute and a correct example.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from core.errors import LabelingConfigError

TRUE_VALUES = ("true", "1", "yes", "on")
FALSE_VALUES = ("false", "0", "no", "off")


def parse_bool(value: Any, default: bool = False) -> bool:
    """A switch such as `model_skip`: any of TRUE_VALUES is on, anything else off (as Label Studio reads it).

    >>> parse_bool("Yes"), parse_bool(None, default=True), parse_bool("nope")
    (True, True, False)
    """
    if value is None:
        return default
    return str(value).strip().lower() in TRUE_VALUES


def parse_strict_bool(value: Any, where: str, example: str) -> bool:
    """A true/false value where a typo must not silently mean false (tracker parameters)."""
    text = str(value).strip().lower()
    if text in TRUE_VALUES:
        return True
    if text in FALSE_VALUES:
        return False
    raise LabelingConfigError(f"{where}; it must be true or false, e.g. {example}")


def parse_model_prompts(
    attrs: Mapping[str, Any], prompts_of_labels: list[list[str]], control: str, allowed: bool
) -> tuple[str, ...]:
    """`model_prompts="labels"`: an open-vocabulary model's classes are the labels' prompts (each label's
    `predicted_values`, else the label), in config order, each once; unset: no prompts.

    >>> parse_model_prompts({"model_prompts": "labels"}, [["car", "pickup truck"], ["person"]], "box", True)
    ('car', 'pickup truck', 'person')
    """
    value = attrs.get("model_prompts")
    if value is None or str(value).strip() == "":
        return ()
    if str(value).strip().lower() != "labels":
        raise LabelingConfigError(
            f'<{control}> has model_prompts="{value}"; the only value is "labels" (the labels, or their '
            'predicted_values, become the classes of a YOLOE model), e.g. model_prompts="labels"'
        )
    if not allowed:
        raise LabelingConfigError(
            f'<{control}> has model_prompts="labels", which only RectangleLabels, PolygonLabels and '
            "BrushLabels support (with a YOLOE model); remove it"
        )
    prompts = dict.fromkeys(name for names in prompts_of_labels for name in names)
    if not prompts:
        raise LabelingConfigError(f'<{control}> has model_prompts="labels" but no labels to prompt with')
    return tuple(prompts)


def parse_float(
    attrs: Mapping[str, Any],
    name: str,
    default: float,
    control_name: str,
    low: float | None = None,
    high: float | None = None,
) -> float:
    """A number attribute; missing or empty gives `default`; nan, inf or outside [low, high] is refused.

    >>> parse_float({"model_conf": "0.3"}, "model_conf", 0.5, "label", 0.0, 1.0)
    0.3
    """
    value = attrs.get(name)
    if value is None or str(value).strip() == "":
        return default
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise LabelingConfigError(
            f'<{control_name}> has {name}="{value}", which is not a number; write e.g. {name}="{default}"'
        )
    if (low is not None and number < low) or (high is not None and number > high):
        if low is not None and high is not None:
            allowed = f"between {low:g} and {high:g}"
        else:
            allowed = f"at least {low:g}" if low is not None else f"at most {high:g}"
        raise LabelingConfigError(
            f'<{control_name}> has {name}="{value}"; it must be {allowed}, e.g. {name}="{default}"'
        )
    return number


def parse_fraction(attrs: Mapping[str, Any], name: str, default: float, control_name: str) -> float:
    """A score or IoU threshold: a number from 0 to 1."""
    return parse_float(attrs, name, default, control_name, 0.0, 1.0)


# Whole-number attributes with a range: training runs in its own process but on this host's cores,
# memory and disk, and the labeling config is written by whoever edits the project (or posts a body).
# A value outside its range is refused when the plan is built, before any job starts.
INT_RANGES: dict[str, tuple[int, int]] = {
    "model_train_epochs": (1, 1000),
    "model_train_patience": (1, 300),
    "model_train_imgsz": (32, 2048),
    "model_train_batch": (1, 256),
    "model_train_every": (1, 100_000),
    "model_classifier_epochs": (1, 5000),
    "model_classifier_sequence_size": (1, 4096),
    "model_classifier_hidden_size": (1, 1024),
    "model_classifier_num_layers": (1, 8),
    "model_vid_stride": (1, 1000),
}


def parse_positive_int(attrs: Mapping[str, Any], name: str, default: int, control_name: str) -> int:
    """A whole number of at least 1 (a stride, a count of epochs), within `INT_RANGES` for its name.

    >>> parse_positive_int({"model_vid_stride": "5"}, "model_vid_stride", 1, "box")
    5
    """
    value = attrs.get(name)
    if value is None or str(value).strip() == "":
        return default
    low, high = INT_RANGES.get(name, (1, None))
    text = str(value).strip()
    # Parsed only when short: int() of a 5000-digit string is refused by Python anyway (and slow).
    number = int(text) if len(text) <= 12 and text.lstrip("+-").isdigit() else None
    if number is None or number < low or (high is not None and number > high):
        allowed = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise LabelingConfigError(
            f'<{control_name}> has {name}="{value}"; it must be a whole number {allowed}, e.g. {name}="{default}"'
        )
    return number


def parse_choice(
    attrs: Mapping[str, Any], name: str, default: str, choices: tuple[str, ...], control_name: str
) -> str:
    """One of a few words (`model_task_score`), case-insensitive; missing or empty gives `default`.

    >>> parse_choice({"model_task_score": "Uncertainty"}, "model_task_score", "confidence",
    ...              ("confidence", "uncertainty"), "label")
    'uncertainty'
    """
    value = attrs.get(name)
    if value is None or str(value).strip() == "":
        return default
    word = str(value).strip().lower()
    if word not in choices:
        raise LabelingConfigError(
            f'<{control_name}> has {name}="{value}"; use one of: {", ".join(choices)}, e.g. {name}="{default}"'
        )
    return word
