"""The image pipeline: tasks in chunks of the model's batch size, the next chunk's images downloaded
and decoded while the current chunk runs through each model group in one batched call."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from control_models.base import kept_conf
from core.errors import BackendError
from inference.detections import from_ultralytics
from media.prefetch import ImagePrefetcher
from prediction.groups import ModelGroup
from prediction.run import PredictionRun, timed_predict


class ImagePipeline:
    """Predicts the image controls of a request; the prefetcher's threads fetch the images."""

    def __init__(self, prefetcher: ImagePrefetcher):
        self.prefetcher = prefetcher

    def predict(
        self, tasks: list[dict], groups: list[ModelGroup], run: PredictionRun, uploads: Mapping[str, Path]
    ) -> None:
        """Each task's regions from every group, or the error of its image."""
        if not groups:
            return
        value_keys = sorted({group.value_key for group in groups})
        chunk_size = max(group.model.batch_size for group in groups)
        for chunk_start, images in self.prefetcher.chunks(tasks, value_keys, chunk_size, uploads):
            for key in value_keys:
                for position, image in enumerate(images[key]):
                    if isinstance(image, BackendError):
                        outcome = run.tasks[chunk_start + position]
                        outcome.error = outcome.error or image.message
            for group in groups:
                self._infer_group(group, images[group.value_key], chunk_start, run)

    def _infer_group(
        self, group: ModelGroup, images: list[np.ndarray | BackendError], chunk_start: int, run: PredictionRun
    ) -> None:
        positions = [
            i
            for i, image in enumerate(images)
            if isinstance(image, np.ndarray) and run.tasks[chunk_start + i].error is None
        ]
        if not positions:
            return
        model = group.model
        results = timed_predict(model, [images[i] for i in positions], dict(group.options), run)
        with_masks = any(c.needs_masks for c in group.controls)
        for position, result in zip(positions, results, strict=True):
            outcome = run.tasks[chunk_start + position]
            try:
                output = from_ultralytics(
                    result,
                    with_masks=with_masks,
                    mask_budget=run.mask_budget,
                    keep_above=kept_conf(group.controls),
                )
            except BackendError as error:  # over MAX_MASK_BYTES: this task only
                outcome.error = error.message
                continue
            for control in group.controls:
                outcome.regions.extend(control.regions(output, model.class_names))
                outcome.note_uncertainty(control.task_uncertainty(output, model.class_names))
