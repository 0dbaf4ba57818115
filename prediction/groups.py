"""Controls grouped per model call, their models loaded once, and the checks that refuse a request
before any media is fetched (a data key no task has, a model of the wrong kind)."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

from control_models import ControlModel
from core.errors import BackendError, LabelingConfigError, WrongModelKindError
from inference.model_registry import LoadedModel, ModelRegistry
from prediction.run import PredictionRun

logger = logging.getLogger(__name__)

GroupKey = tuple[str, str, str, tuple, tuple]  # (model path, format, data key, predict options, prompts)


@dataclass
class ModelGroup:
    """Controls that share one model call: the loaded model, the data key they read, the options."""

    model: LoadedModel
    controls: list[ControlModel]
    value_key: str
    options: tuple


def group_by_model(controls: list[ControlModel]) -> dict[GroupKey, list[ControlModel]]:
    """Controls that read the same image with the same model and options share one inference call."""
    groups: dict[GroupKey, list[ControlModel]] = defaultdict(list)
    for control in controls:
        options = tuple(sorted(control.predict_options().items()))
        key = (control.model_path, control.model_format, control.value_key, options, control.prompts)
        groups[key].append(control)
    return dict(groups)


def load_models(
    registry: ModelRegistry, groups: dict[GroupKey, list[ControlModel]], run: PredictionRun
) -> list[ModelGroup]:
    """Load each model once; a control whose model fails is reported and left out."""
    models: list[ModelGroup] = []
    for key, group in groups.items():
        try:
            model = registry.get(key[0], model_format=key[1], prompts=key[4])
            for control in group:
                _check_task(control, model)
            models.append(ModelGroup(model, group, value_key=key[2], options=key[3]))
            for control in group:
                _note_unmatched_labels(control, model, run)
        except BackendError as error:
            for control in group:
                run.control_errors[control.from_name] = error.message
            logger.warning("Controls %s get no predictions: %s", [c.from_name for c in group], error.message)
    return models


def require_data_keys(tasks: list[dict], controls: list[ControlModel]) -> None:
    """A data key that no task has is a config/data mismatch worth a 4xx, not N task errors."""
    for key in sorted({c.value_key for c in controls}):
        if not any(key in task["data"] for task in tasks):
            present = sorted({k for task in tasks for k in task["data"]})
            raise LabelingConfigError(
                f"no task has the data field '{key}' that the labeling config reads (value=\"${key}\"); "
                f"tasks have: {', '.join(present) or 'nothing'}"
            )


def _note_unmatched_labels(control: ControlModel, model: LoadedModel, run: PredictionRun) -> None:
    unmatched = control.unmatched_labels(model.class_names)
    if unmatched:
        names = list(model.class_names.values())
        shown = ", ".join(names[:30]) + (", ..." if len(names) > 30 else "")
        run.label_warnings[control.from_name] = (
            f"labels {', '.join(unmatched)} match no class of model '{model.name}' (its classes: {shown}); "
            'add predicted_values="<model class>" to those labels'
        )


def _check_task(control: ControlModel, model: LoadedModel) -> None:
    if model.task not in control.model_tasks:
        raise WrongModelKindError(
            f"model '{model.name}' is a {model.task} model, but <{control.control_tag} "
            f'name="{control.from_name}"> needs a {" or ".join(control.model_tasks)} model'
        )
