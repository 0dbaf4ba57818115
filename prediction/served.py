"""The trained versions a project serves, bound to its controls for one request.

Each request stats the project's pointers (`ServedVersions`); a control with a served version is
replaced by a copy bound to those weights (kept, so its label map is built once per version), and
after a promotion or a rollback the version served before leaves this worker's memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import replace
from typing import Any

from control_models import ControlModel
from control_models.labeling_plan import LabelingPlan
from core.settings import Settings
from core.tasks import project_key
from inference.model_registry import ModelRegistry
from training.versions import ServedVersions

# Bound controls kept (config, control, version): a few per project; the least recently used go first.
MAX_BOUND_CONTROLS = 256


class ServedControls:
    """Binds served versions to controls; two caches, each with its own lock."""

    def __init__(self, settings: Settings, served: ServedVersions, registry: ModelRegistry):
        self.settings = settings
        self.served = served
        self.registry = registry
        self._bound: OrderedDict[tuple, ControlModel] = OrderedDict()
        self._bound_lock = threading.Lock()
        self._served_paths: dict[tuple[str, str], str | None] = {}
        self._served_paths_lock = threading.Lock()

    def controls(self, plan: LabelingPlan, project: Any) -> list[ControlModel]:
        """The plan's controls, each bound to the trained version this project serves for it, if any."""
        trained = self.served_model_paths(plan, project)
        return [
            self.trained_control(plan, c, trained[c.from_name]) if c.from_name in trained else c
            for c in plan.controls
        ]

    def served_model_paths(self, plan: LabelingPlan, project: Any) -> dict[str, str]:
        """from_name -> the trained weights this project serves for that control (stat per request)."""
        key = project_key(project)
        paths = {}
        for control in plan.controls:
            path = self.served.model_path(key, control.from_name) if key else None
            if path:
                paths[control.from_name] = path
            self._unload_replaced(key, control.from_name, path)
        return paths

    def _unload_replaced(self, project: str | None, control: str, path: str | None) -> None:
        """After a promotion or rollback, the version served before leaves this worker's memory."""
        if not project:
            return
        with self._served_paths_lock:
            previous = self._served_paths.get((project, control))
            if previous == path:
                return
            self._served_paths[(project, control)] = path
        if previous:
            self.registry.unload(previous)

    def trained_control(self, plan: LabelingPlan, control: ControlModel, model_path: str) -> ControlModel:
        """The control bound to its trained weights; kept so its label map is built once per version."""
        key = (plan.config_hash, control.from_name, model_path)
        with self._bound_lock:
            bound = self._bound.get(key)
            if bound is not None:
                self._bound.move_to_end(key)
                return bound
        bound = self._bind(control, model_path)
        with self._bound_lock:
            bound = self._bound.setdefault(key, bound)  # another thread may have bound it meanwhile
            while len(self._bound) > MAX_BOUND_CONTROLS:
                self._bound.popitem(last=False)
        return bound

    def _bind(self, control: ControlModel, model_path: str) -> ControlModel:
        if control.training is not None and control.training.kind == "timeline":
            # A trained TimelineLabels head: the classifier stays (it gives the features the head reads).
            return control.with_head(self.settings.model_root / model_path)
        # A trained model's classes are the labels themselves: predicted_values no longer apply.
        labels = {
            label: {k: v for k, v in attrs.items() if k != "predicted_values"}
            for label, attrs in control.labels.items()
        }
        return replace(control, model_path=model_path, labels=labels)

    def bound_count(self) -> int:
        """How many bound controls are kept (at most MAX_BOUND_CONTROLS)."""
        with self._bound_lock:
            return len(self._bound)
