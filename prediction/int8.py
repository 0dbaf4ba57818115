"""The checked INT8 export of a project's image models, calibrated on the project's own images: what
`model_format="openvino-int8"` serves from then on (`cli.py export-int8`)."""

from __future__ import annotations

import random
import re
import shutil
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from control_models import ControlModel
from control_models.labeling_plan import LabelingPlan
from core.errors import BackendError, LabelingConfigError, MediaError
from core.settings import Settings
from core.tasks import project_key
from inference.int8_export import MIN_CALIBRATION_IMAGES, Int8Check
from inference.model_registry import ModelRegistry
from media.prefetch import ImagePrefetcher
from training.versions import ServedVersions


@dataclass
class Int8Export:
    """What `YOLOBackend.export_int8` did for one model: its checked export, or why there is none."""

    controls: list[str]
    model_path: str
    folder: Path | None = None
    check: Int8Check | None = None
    made_now: bool = False  # False: an export made before was found (no images were fetched)
    images: int = 0  # calibration images written (held-out ones included)
    skipped: list[str] = field(default_factory=list)  # tasks whose image could not be used, and why
    error: str | None = None


class Int8Exporter:
    """Fetches calibration images as /predict fetches them and has the registry make the export."""

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        served: ServedVersions,
        prefetcher: ImagePrefetcher,
    ):
        self.settings = settings
        self.registry = registry
        self.served = served
        self.prefetcher = prefetcher

    def export(
        self,
        plan: LabelingPlan,
        tasks: Sequence[dict],
        folder: Path,
        project: Any = None,
        controls: Sequence[str] | None = None,
        limit: int = 64,
    ) -> list[Int8Export]:
        """The checked INT8 export of each image control's model (or the controls named).

        Per model (the version this project serves, else the configured one): an export made before is
        kept as it is. Otherwise up to `limit` of the tasks' images, spread over the project, are fetched
        as /predict fetches them (`MediaLoader`: the same auth and limits) into `folder/<control>/`, and
        the export and accuracy check of a first `openvino-int8` request run on them, into the cache that
        request reads. Too few images: refused, nothing kept; never calibrated on anything else.
        """
        chosen = [c for c in plan.controls if not controls or c.from_name in controls]
        missing = sorted(set(controls or ()) - {c.from_name for c in chosen})
        if missing:
            raise LabelingConfigError(f"the labeling config has no control named {', '.join(missing)}")
        image_controls = [c for c in chosen if "Image" in c.object_tags]
        if not image_controls:
            raise LabelingConfigError(
                "INT8 exports are calibrated on images: the labeling config has no control on an <Image>"
                + (" among those named" if controls else "")
            )
        key = project_key(project)
        by_model: dict[str, list[ControlModel]] = defaultdict(list)
        for control in image_controls:
            served = self.served.model_path(key, control.from_name) if key else None
            by_model[served or control.model_path].append(control)
        return [
            self._export_int8(model_path, group, list(tasks), folder, limit)
            for model_path, group in by_model.items()
        ]

    def _export_int8(
        self, model_path: str, group: list[ControlModel], tasks: list[dict], folder: Path, limit: int
    ) -> Int8Export:
        outcome = Int8Export(controls=[c.from_name for c in group], model_path=model_path)
        images = folder / re.sub(r"[^\w.-]", "_", group[0].from_name)
        try:
            cached = self.registry.cached_int8_export(model_path)
            if cached is not None:
                outcome.folder, outcome.check = cached
                return outcome
            outcome.images = self._write_calibration_images(
                tasks, sorted({c.value_key for c in group}), images, limit, outcome.skipped
            )
            if outcome.images < MIN_CALIBRATION_IMAGES:
                raise MediaError(
                    f"{outcome.images} of {len(tasks)} task(s) gave an image for {', '.join(outcome.controls)}: "
                    f"an INT8 export needs at least {MIN_CALIBRATION_IMAGES} images like the ones you label "
                    "(import more into the project); it is never calibrated on random data"
                )
            outcome.folder, outcome.check = self.registry.export_int8(model_path, images)
            outcome.made_now = True
        except BackendError as error:
            outcome.error = error.message
        finally:
            shutil.rmtree(images, ignore_errors=True)  # the export keeps what it needs
        return outcome

    def _write_calibration_images(
        self, tasks: list[dict], value_keys: list[str], folder: Path, limit: int, skipped: list[str]
    ) -> int:
        """Write up to `limit` of the tasks' images into `folder` (PNG), in a fixed shuffle of the tasks
        (spread over the project, the same on every run); note the tasks left out in `skipped`."""
        import cv2

        folder.mkdir(parents=True, exist_ok=True)
        order = list(tasks)
        random.Random(0).shuffle(order)
        written = 0
        chunk_size = self.settings.download_workers * 2
        for chunk_start, chunk in self.prefetcher.chunks(order, value_keys, chunk_size, {}):
            for key in value_keys:
                for position, image in enumerate(chunk[key]):
                    task_id = order[chunk_start + position].get("id")
                    if isinstance(image, BackendError):
                        skipped.append(f"task {task_id}: {image.message}")
                    elif written < limit:
                        cv2.imwrite(
                            str(folder / f"{written:05d}.png"), image, [cv2.IMWRITE_PNG_COMPRESSION, 1]
                        )
                        written += 1
            if written >= limit:
                break
        return written
