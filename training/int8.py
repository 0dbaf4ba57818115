"""The INT8 export a training job makes of the version it promotes, so MODEL_FORMAT=auto serves it at INT8
speed with no extra step: calibrated on the job's training images, checked on its held-out images
against their annotations (`inference/int8_export.py`), kept only within INT8_MAX_DROP."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.errors import ModelLoadError
from inference.int8_export import Int8AccuracyError, Int8Check, export_for_dataset
from inference.model_registry import uses_cuda
from training.dataset import DatasetSummary
from training.spec import TrainingSpec

# The check compares box mAP50-95; a classifier has none (its exports are not checked, so not made).
INT8_TASKS = ("detect", "segment", "obb", "pose")
SERVES_INT8 = ("auto", "openvino-int8")


@dataclass
class TrainedInt8:
    """What the job's INT8 step did: metrics.json's `int8` entry and the sentence for the job's message."""

    kept: bool
    check: Int8Check | None = None
    error: str | None = None
    metrics: dict = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = {"kept": self.kept, "error": self.error}
        if self.check is not None:
            self.metrics |= {
                "metric": self.check.metric,
                "pt": {"map50_95": self.check.pt_score, "ms_per_image": self.check.pt_ms},
                "int8": {"map50_95": self.check.int8_score, "ms_per_image": self.check.int8_ms},
                "held_out_images": self.check.held_out_images,
                "calibration_images": self.check.calibration_images,
                "export_seconds": self.check.export_seconds,
            }

    @property
    def sentence(self) -> str:
        if self.kept and self.check is not None:
            return f"INT8 export kept, served by MODEL_FORMAT=auto: {describe(self.check)}"
        figures = f" ({describe(self.check)})" if self.check is not None else ""
        return f"INT8 export not kept, the .pt is served: {self.error}{figures}"


def wants_int8(settings: Any, spec: TrainingSpec) -> bool:
    """Whether a promoted version of this control gets an INT8 export: a CPU host serving it as auto or
    openvino-int8, TRAINING_INT8 on, and a model the check can score."""
    return (
        settings.training_int8
        and spec.model_format in SERVES_INT8
        and spec.task in INT8_TASKS
        and not uses_cuda(settings.device)
    )


def export_trained(weights: Path, dataset: DatasetSummary, imgsz: int, max_drop: float) -> TrainedInt8:
    """Make and check the INT8 export of `weights` on the job's dataset; a refusal or a failing exporter
    leaves the `.pt` served and says why (the version itself is not affected)."""
    description = yaml.safe_load(dataset.yaml_path.read_text())
    train, held_out = (_images(dataset.root / "images" / split) for split in ("train", "val"))
    try:
        _folder, check = export_for_dataset(weights, description, train, held_out, imgsz, max_drop)
    except Int8AccuracyError as refused:
        lost = f"it loses {refused.check.drop_points:.1f} points, more than INT8_MAX_DROP ({max_drop})"
        return TrainedInt8(kept=False, check=refused.check, error=lost)
    except ModelLoadError as error:
        return TrainedInt8(kept=False, error=error.message)
    except Exception as error:  # the exporter or NNCF failed: the .pt serves, as without the step
        return TrainedInt8(kept=False, error=f"the export failed ({type(error).__name__}: {error})")
    return TrainedInt8(kept=True, check=check)


def describe(check: Int8Check) -> str:
    """'mAP50-95 0.612 (.pt 0.615) on 40 held-out images, 14.1 ms an image (.pt 31.0 ms)'."""
    speed = ""
    if check.int8_ms is not None and check.pt_ms is not None:
        speed = f", {check.int8_ms:.1f} ms an image (.pt {check.pt_ms:.1f} ms)"
    return (
        f"{check.metric} {check.int8_score:.3f} (.pt {check.pt_score:.3f}) on {check.held_out_images} "
        f"held-out images{speed}"
    )


def _images(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_file()) if folder.is_dir() else []
