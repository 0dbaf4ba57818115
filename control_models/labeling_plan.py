"""From a labeling config to the list of control models that predict for it, cached per config text.

Label Studio sends the whole labeling config with every /predict; parsing it and building label maps
each time would be wasted work, so `PlanCache` keeps the plan of each config text it has seen.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from dataclasses import dataclass

from label_studio_sdk.label_interface import LabelInterface

from control_models import CONTROL_MODELS, ControlModel
from control_models.attributes import parse_bool
from core.errors import LabelingConfigError
from core.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelingPlan:
    config_hash: str
    controls: tuple[ControlModel, ...]


def config_hash(label_config: str) -> str:
    """A short digest of a config, blind to white space (Label Studio may re-indent it)."""
    normalized = re.sub(r"\s+", " ", label_config).strip()
    return hashlib.sha256(normalized.encode()).hexdigest()[:8]


def build_plan(label_config: str, settings: Settings) -> LabelingPlan:
    if not isinstance(label_config, str) or not label_config.strip():
        raise LabelingConfigError("label_config is empty; send the project's labeling config (XML)")
    try:
        interface = LabelInterface(label_config)
    except Exception as error:
        raise LabelingConfigError(
            f"label_config is not a valid labeling config: {_first_line(error)}"
        ) from None

    controls: list[ControlModel] = []
    seen_tags: list[str] = []
    for control in interface.controls:
        seen_tags.append(control.tag)
        if parse_bool(control.attr.get("model_skip")):
            logger.debug("Control %s skipped (model_skip)", control.name)
            continue
        control_class = next((c for c in CONTROL_MODELS if c.matches(control)), None)
        if control_class is None:
            continue
        controls.append(control_class.from_control(control, settings, interface=interface))

    if not controls:
        supported = sorted({c.control_tag for c in CONTROL_MODELS})
        raise LabelingConfigError(
            "the labeling config has no control tag this backend can predict for "
            f"(found: {', '.join(seen_tags) or 'none'}; supported: {', '.join(supported)}; "
            'tags with model_skip="true" are left out)'
        )
    return LabelingPlan(config_hash=config_hash(label_config), controls=tuple(controls))


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__


class PlanCache:
    """The plans of the most recent config texts (an LRU of `size`); thread-safe, errors not cached."""

    def __init__(self, settings: Settings, size: int = 64):
        self._settings = settings
        self.get = functools.lru_cache(maxsize=size)(self._build)

    def _build(self, label_config: str) -> LabelingPlan:
        return build_plan(label_config, self._settings)
