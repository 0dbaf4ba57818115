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
from converters.task_score import UNCERTAINTY
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


def check_label_config_size(label_config: str, max_bytes: int) -> None:
    """Refuse a config over MAX_LABEL_CONFIG_BYTES before it is hashed, parsed or cached.

    Parsing costs ~60 times the text in memory (a 4.7 MB config: ~300 MB), and the plan cache keeps 64.
    """
    # A character is 1 to 4 bytes: only a text longer than a quarter of the limit is encoded to count.
    if len(label_config) > max_bytes // 4 and len(label_config.encode("utf-8", "replace")) > max_bytes:
        raise LabelingConfigError(
            f"label_config is over the limit of {max_bytes} bytes (MAX_LABEL_CONFIG_BYTES); "
            "a labeling config is a few kilobytes, so check what is being sent"
        )


def build_plan(label_config: str, settings: Settings) -> LabelingPlan:
    if not isinstance(label_config, str) or not label_config.strip():
        raise LabelingConfigError("label_config is empty; send the project's labeling config (XML)")
    check_label_config_size(label_config, settings.max_label_config_bytes)
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

    def score_mode_suffix(self, label_config: str) -> str:
        """What `model_version` adds for the task score mode: "-uncertainty" when a control of the config
        scores uncertainty (a switch of mode is a new version: every task is predicted again, once);
        nothing in confidence mode, so versions from before the mode existed stay valid."""
        try:
            uncertain = any(control.scores_uncertainty for control in self.get(label_config).controls)
        except LabelingConfigError:  # e.g. /setup of a config with nothing to predict: the default decides
            uncertain = self._settings.task_score == UNCERTAINTY
        return f"-{UNCERTAINTY}" if uncertain else ""

    def _build(self, label_config: str) -> LabelingPlan:
        return build_plan(label_config, self._settings)
