"""Tasks' images a chunk ahead: a thread pool downloads and decodes the next chunk while the caller
works on the current one (the image pipeline runs the model on it; the INT8 export writes it out).

A task whose image fails has the error in place of its image; no failure stops the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from pathlib import Path

import numpy as np

from core.errors import BackendError
from core.settings import Settings
from core.tasks import media_url, project_key
from media.loader import MediaLoader

logger = logging.getLogger(__name__)

ImageOrError = np.ndarray | BackendError


class ImagePrefetcher:
    """Owns the download threads (`DOWNLOAD_WORKERS`) of one backend."""

    def __init__(self, settings: Settings, media: MediaLoader):
        self.settings = settings
        self.media = media
        self._downloads = ThreadPoolExecutor(settings.download_workers, thread_name_prefix="media")

    def chunks(
        self, tasks: list[dict], value_keys: list[str], chunk_size: int, uploads: Mapping[str, Path]
    ) -> Iterator[tuple[int, dict[str, list[ImageOrError]]]]:
        """Yield (start, images per data key) chunk by chunk, downloading the next chunk meanwhile.

        A task whose image fails has the error in place of its image.
        """
        starts = list(range(0, len(tasks), chunk_size))
        pending = self._submit_chunk(tasks, starts[0], chunk_size, value_keys, uploads) if starts else None
        for index, start in enumerate(starts):
            futures = pending
            pending = (
                self._submit_chunk(tasks, starts[index + 1], chunk_size, value_keys, uploads)
                if index + 1 < len(starts)
                else None
            )
            # Bounded: a download never outlives its deadline, so neither does a wait queued behind it.
            wait_until = time.monotonic() + self.settings.media_wait_timeout
            yield start, {key: [_result_or_error(f, wait_until) for f in futures[key]] for key in value_keys}

    def _submit_chunk(
        self,
        tasks: list[dict],
        start: int,
        chunk_size: int,
        value_keys: list[str],
        uploads: Mapping[str, Path],
    ) -> dict[str, list[Future]]:
        chunk = tasks[start : start + chunk_size]
        return {
            key: [self._downloads.submit(self._load_task_image, task, key, uploads) for task in chunk]
            for key in value_keys
        }

    def _load_task_image(self, task: dict, value_key: str, uploads: Mapping[str, Path]) -> np.ndarray:
        url = media_url(task, value_key)
        if isinstance(url, str) and url in uploads:
            return self.media.decode_image(uploads[url], name="the uploaded image")
        return self.media.load_image(url, task.get("id"), project=project_key(task.get("project")))

    def close(self) -> None:
        self._downloads.shutdown(wait=False, cancel_futures=True)


def _result_or_error(future: Future, wait_until: float) -> ImageOrError:
    try:
        return future.result(timeout=max(0.0, wait_until - time.monotonic()))
    except FutureTimeoutError:
        future.cancel()
        return BackendError(
            "the media was not fetched in time (DOWNLOAD_TOTAL_TIMEOUT): the downloads are busy"
        )
    except BackendError as error:
        return error
    except Exception as error:  # a decoder crash on hostile bytes must not take the request down
        logger.exception("Unexpected error while loading media")
        return BackendError(f"media could not be loaded ({type(error).__name__})")
