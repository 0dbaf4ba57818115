"""Annotated images into a dataset folder, one at a time: fetch, read the header, place, release.

The media cache pins a file only while it is being placed (a hard link, else a copy, into the dataset
folder), so a job holds no descriptor or cache pin per image and the cache stays within
MEDIA_CACHE_BYTES: 10,000 images need what 10 do. Sizes come from the image header (Pillow opens
lazily), never from decoding the pixels; Ultralytics decodes each image when it trains.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import BackendError, MediaError
from media.loader import MediaLoader, short_url
from training.dataset import AnnotatedImage, DatasetWriter
from training.spec import TrainingSpec

# Pillow format -> the suffix Ultralytics lists images by (a cache file may have none)
SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp", "MPO": ".mpo"}


@dataclass(frozen=True)
class ImageHeader:
    width: int  # as shown: after the EXIF orientation
    height: int
    suffix: str


def image_header(path: Path, max_pixels: int, name: str) -> ImageHeader:
    """Size and kind from the header; refuses what cannot be read and what has too many pixels."""
    from PIL import Image
    from ultralytics.data.utils import exif_size

    try:
        with Image.open(path) as image:  # the header only; no pixel is decoded
            width, height = exif_size(image)  # as OpenCV and Ultralytics show it (EXIF orientation)
            kind = image.format or ""
    except Image.DecompressionBombError:
        raise MediaError(f"{name} has too many pixels, over the limit of {max_pixels}") from None
    except Exception:
        raise MediaError(f"{name} is not an image that can be decoded") from None
    if width * height > max_pixels:
        raise MediaError(f"{name} is {width}x{height} pixels, over the limit of {max_pixels}")
    if kind not in SUFFIXES:
        raise MediaError(f"{name} is a {kind or 'unknown'} image, which training cannot read")
    return ImageHeader(width, height, SUFFIXES[kind])


@dataclass
class Collected:
    annotated: int = 0  # tasks with a usable annotation
    placed: int = 0  # images in the dataset
    left_out: list[str] | None = None  # why each task was left out


def collect_images(
    picked: Iterable[tuple[dict, list[dict]]],
    spec: TrainingSpec,
    media: MediaLoader,
    writer: DatasetWriter,
    settings: Any,
    project: str,
    log: Callable[[str], None] = print,
) -> Collected:
    """Fetch each annotated task's image and add it to `writer`; a task whose image cannot be used is
    left out (said in the log), the others go on."""
    collected = Collected(left_out=[])
    for task, regions in picked:
        collected.annotated += 1
        task_id = int(task["id"])
        url = (task.get("data") or {}).get(spec.value_key)
        try:
            with media.fetched(url, task_id, max_bytes=settings.max_image_bytes, project=project) as path:
                header = image_header(path, settings.max_image_pixels, f"'{short_url(str(url))}'")
                image = AnnotatedImage(task_id, path, regions, header.width, header.height, header.suffix)
                added = writer.add(image)  # a link or copy: the cache's file is released after the block
        except BackendError as error:
            collected.left_out.append(f"task {task_id} left out: {error.message}")
            log(collected.left_out[-1])
            continue
        collected.placed += int(added)
    log(f"{collected.placed} annotated image(s) of {collected.annotated} annotated task(s)")
    return collected
