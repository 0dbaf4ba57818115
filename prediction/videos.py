"""The video pipeline: per task, its video fetched once, then streamed through each video control's
model a batch of frames at a time.

Each batch is one model call under that model's scheduler (so image requests take turns with a long
video), and every control gets a fresh session (its tracker, its probabilities) per video: no state
passes between videos or requests. A task whose video cannot be fetched or decoded gets
`outcome.error`, like a broken image.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path

from control_models.video_base import VideoControlModel
from core.errors import BackendError
from core.settings import Settings
from core.tasks import media_url, project_key
from inference.detections import from_ultralytics
from inference.features import embedding_options, features_of
from inference.model_registry import LoadedModel
from media.loader import MediaLoader, short_url
from media.video import Deadline, VideoReader
from prediction.groups import ModelGroup
from prediction.run import PredictionRun, TaskOutcome, timed_predict

logger = logging.getLogger(__name__)


class VideoPipeline:
    """Predicts the video controls of a request (`VideoRectangle`, `TimelineLabels`)."""

    def __init__(self, settings: Settings, media: MediaLoader):
        self.settings = settings
        self.media = media

    def predict(
        self, tasks: list[dict], groups: list[ModelGroup], run: PredictionRun, uploads: Mapping[str, Path]
    ) -> None:
        """Per task: fetch its video once, then stream it through each video control's model."""
        runnable = [(control, group.model) for group in groups for control in group.controls]
        for position, task in enumerate(tasks):
            outcome = run.tasks[position]
            if outcome.error is not None or not runnable:
                continue
            paths: dict[str, Path] = {}
            regions: list[dict] = []
            found = TaskOutcome(task_id=outcome.task_id)  # its uncertainties, kept when every video worked
            deadline = Deadline(self.settings.max_video_task_seconds)
            try:
                with ExitStack() as held:  # each video stays in the media cache while it is read
                    for control, model in runnable:
                        if control.value_key not in paths:
                            paths[control.value_key] = self._task_video(
                                task, control.value_key, uploads, held
                            )
                        path = paths[control.value_key]
                        regions.extend(
                            self._predict_video(path, control, model, task["data"], run, deadline, found)
                        )
            except BackendError as error:
                outcome.error = error.message
                continue
            except Exception as error:  # a decoder crash on one hostile video must not fail the request
                logger.exception("Unexpected error while predicting the video of task %s", task.get("id"))
                outcome.error = f"the video could not be processed ({type(error).__name__})"
                continue
            outcome.regions.extend(regions)
            outcome.uncertainties.extend(found.uncertainties)

    def _task_video(self, task: dict, value_key: str, uploads: Mapping[str, Path], held: ExitStack) -> Path:
        url = media_url(task, value_key)
        if isinstance(url, str) and url in uploads:
            return uploads[url]
        return held.enter_context(
            self.media.fetched(
                url,
                task.get("id"),
                max_bytes=self.settings.max_video_bytes,
                project=project_key(task.get("project")),
            )
        )

    def _predict_video(
        self,
        path: Path,
        control: VideoControlModel,
        model: LoadedModel,
        task_data: dict,
        run: PredictionRun,
        deadline: Deadline,
        found: TaskOutcome,
    ) -> list[dict]:
        reader = VideoReader(
            path,
            stride=control.vid_stride,
            max_frames=self.settings.max_video_frames,
            max_pixels=self.settings.max_image_pixels,
            name=f"the video of '{short_url(str(task_data.get(control.value_key)))}'",
            deadline=deadline,
        )
        control.check_frame_rate(reader.info.fps, task_data)
        session = control.start_video(model.class_names)
        options = {
            **control.predict_options(),
            **(embedding_options(model) if control.reads_features else {}),
        }
        for numbers, frames in reader.batches(model.batch_size):
            results = timed_predict(model, frames, options, run)
            outputs = features_of(results) if control.reads_features else map(from_ultralytics, results)
            for number, frame, output in zip(numbers, frames, outputs, strict=True):
                session.add(number, output, frame)
        regions = session.regions(reader.frames_count, reader.info.fps)
        found.note_uncertainty(session.uncertainty())
        return regions
