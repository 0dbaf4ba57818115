"""The outcome of one /predict: per task its regions or its error, per control why it could not run."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from converters.task_score import task_score
from inference.detections import MaskBudget
from inference.model_registry import LoadedModel


@dataclass
class TaskOutcome:
    """What one task gets: regions, or the reason it has none."""

    task_id: Any
    regions: list[dict] = field(default_factory=list)
    error: str | None = None
    uncertainties: list[float] = field(default_factory=list)  # one per control in uncertainty mode

    def note_uncertainty(self, uncertainty: float | None) -> None:
        if uncertainty is not None:  # None: the control scores confidence
            self.uncertainties.append(uncertainty)


@dataclass
class PredictionRun:
    """The outcome of one /predict: per task, plus the controls that could not run at all."""

    model_version: str
    tasks: list[TaskOutcome]
    control_errors: dict[str, str]
    # Per control: its labels that match no model class (Label Studio never shows these; the log and
    # the try-it page do).
    label_warnings: dict[str, str] = field(default_factory=dict)
    # Seconds spent inside each model's calls during this run (the /metrics histogram per model).
    inference_seconds: dict[str, float] = field(default_factory=dict)
    # Bytes of brush masks this run may still decode (MAX_MASK_BYTES); None: no limit.
    mask_budget: MaskBudget | None = None

    def refuse_every_task(self) -> None:
        """Some controls cannot run: no task gets a prediction, each gets an error naming them.

        Label Studio stores a prediction for good under its model_version and never asks again, so a
        prediction without the failed controls' regions would stay wrong after the model is fixed.
        """
        failed = "; ".join(f"<{name}>: {message}" for name, message in self.control_errors.items())
        error = (
            f"not predicted, because some controls of the labeling config cannot run ({failed}); fix their "
            'models, or add model_skip="true" to those controls, and the task is predicted at the next retrieve'
        )
        for outcome in self.tasks:
            outcome.regions = []
            outcome.error = outcome.error or error

    def failed_tasks(self) -> int:
        return sum(outcome.error is not None for outcome in self.tasks)

    def results(self) -> list[dict]:
        results = []
        for outcome in self.tasks:
            if outcome.error is not None:
                results.append({"task": outcome.task_id, "error": outcome.error})
            else:
                results.append(
                    {
                        "result": outcome.regions,
                        "score": task_score(outcome.regions, outcome.uncertainties),
                        "model_version": self.model_version,
                    }
                )
        return results


def timed_predict(model: LoadedModel, images: list[np.ndarray], options: dict, run: PredictionRun) -> list:
    """`model.predict`, its seconds added to the run's per-model inference time."""
    started = time.perf_counter()
    results = model.predict(images, **options)
    seconds = time.perf_counter() - started
    run.inference_seconds[model.name] = run.inference_seconds.get(model.name, 0.0) + seconds
    return results
