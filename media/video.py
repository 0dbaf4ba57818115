"""Reading a video file frame by frame, a few frames at a time, so memory does not grow with its length.

`VideoReader(path, stride)` yields batches of (1-based frame numbers, BGR frames) for every
`stride`-th frame (1, 1 + stride, ...); skipped frames are only grabbed, not converted. Once iterated,
`frames_count` is the number of frames the decoder really delivered (container headers may be wrong).
The reader enforces MAX_VIDEO_FRAMES and MAX_IMAGE_PIXELS itself: on the header when it opens the file,
and on the running count at every decoded or grabbed frame, so a header that says 0 frames cannot make
it decode more than the limit (even when a large stride yields no batch for a long time). A task's
`Deadline` (MAX_VIDEO_TASK_SECONDS) is checked at every frame too.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from core.errors import MediaError

logger = logging.getLogger(__name__)

# Label Studio's <Video> assumes 24 frames/s unless frameRate says otherwise.
DEFAULT_FPS = 24.0

# What FFmpeg may do when OpenCV opens a task's video (always a local file here): read files only, and
# only through the demuxers of plain video containers. A playlist (hls `.m3u8`) or an `ffconcat` list is
# refused, so a task's "video" cannot make the decoder read another local file (another project's video).
FFMPEG_CAPTURE_OPTIONS = (
    "protocol_whitelist;file"
    "|format_whitelist;mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,mpeg,ogg,flv,asf"
)


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video; `frames_count` is the header's estimate."""

    width: int
    height: int
    fps: float
    frames_count: int


@dataclass(frozen=True)
class Deadline:
    """The time one video task may take (MAX_VIDEO_TASK_SECONDS), shared by every reader of that task."""

    seconds: float
    started: float = field(default_factory=time.monotonic)

    def check(self, name: str, frames_read: int | None = None) -> None:
        if time.monotonic() - self.started > self.seconds:
            where = f" (stopped after {frames_read} frames)" if frames_read is not None else ""
            raise MediaError(
                f"{name} took more than {self.seconds:g} s to predict{where}, over the limit "
                "(MAX_VIDEO_TASK_SECONDS); predict long videos with cli.py, or raise the limit"
            )


class VideoReader:
    def __init__(
        self,
        path: Path | str,
        stride: int = 1,
        max_frames: int | None = None,
        max_pixels: int | None = None,
        name: str | None = None,
        deadline: Deadline | None = None,
    ):
        if stride < 1:
            raise ValueError(f"stride must be at least 1, got {stride}")
        self.path = Path(path)
        self.stride = stride
        self.max_frames = max_frames
        self.deadline = deadline
        self.name = name or f"'{self.path.name}'"
        self.info = probe_video(self.path)
        if max_pixels is not None:
            check_frame_pixels(self.info.width, self.info.height, max_pixels, self.name)
        if max_frames is not None:
            check_video_frames(self.info.frames_count, max_frames, self.name)
        self.frames_count = 0  # frames decoded so far

    def batches(self, batch_size: int) -> Iterator[tuple[list[int], list[np.ndarray]]]:
        """Yield ([frame numbers], [frames]) with up to `batch_size` frames each."""
        capture = open_capture(self.path)
        if not capture.isOpened():
            raise MediaError(f"'{self.path.name}' is not a video that can be decoded")
        numbers: list[int] = []
        frames: list[np.ndarray] = []
        self.frames_count = 0
        try:
            while True:
                wanted = self.frames_count % self.stride == 0
                if wanted:
                    ok, frame = capture.read()
                else:
                    ok, frame = capture.grab(), None
                if not ok:
                    break
                self.frames_count += 1
                if self.max_frames is not None:
                    check_video_frames(self.frames_count, self.max_frames, self.name)  # headers may lie
                if self.deadline is not None:
                    self.deadline.check(self.name, self.frames_count)  # model calls between batches count
                if wanted:
                    numbers.append(self.frames_count)
                    frames.append(frame)
                    if len(frames) >= batch_size:
                        yield numbers, frames
                        numbers, frames = [], []
            if frames:
                yield numbers, frames
        finally:
            capture.release()
        if self.frames_count == 0:
            raise MediaError(f"'{self.path.name}' has no frames that can be decoded")


def probe_video(path: Path | str) -> VideoInfo:
    """Size, frame rate and (estimated) frame count from the container, without decoding frames."""
    path = Path(path)
    capture = open_capture(path)
    try:
        if not capture.isOpened():
            raise MediaError(f"'{path.name}' is not a video that can be decoded")
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        frames_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        capture.release()
    if width <= 0 or height <= 0:
        raise MediaError(f"'{path.name}' is not a video that can be decoded (no frame size)")
    if not math.isfinite(fps) or fps <= 0 or fps > 1000:
        logger.warning("Video %s reports %r frames/s; assuming %s", path.name, fps, DEFAULT_FPS)
        fps = DEFAULT_FPS
    return VideoInfo(width=width, height=height, fps=fps, frames_count=max(frames_count, 0))


def open_capture(path: Path) -> cv2.VideoCapture:
    """A capture of the local file `path` through FFmpeg, restricted to FFMPEG_CAPTURE_OPTIONS.

    OpenCV reads its FFmpeg options from this environment variable at every open (it has no per-capture
    argument for them); set only when it differs, so concurrent opens do not rewrite the environment.
    The FFmpeg backend is named, so no other backend (an image sequence reader) reads the name instead.
    """
    if os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS") != FFMPEG_CAPTURE_OPTIONS:
        os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = FFMPEG_CAPTURE_OPTIONS
    return cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)


def check_video_frames(frames_count: int, max_frames: int, name: str = "the video") -> None:
    """Refuse a video with more than `max_frames` frames (MAX_VIDEO_FRAMES).

    Call it with the container's frame count before decoding (a cheap refusal) and again with the running
    count while decoding: a container may under-report its length, or not report it at all (0).

    >>> check_video_frames(100, 100)  # at the limit: fine
    """
    if frames_count > max_frames:
        raise MediaError(f"{name} has more than {max_frames} frames, over the limit (MAX_VIDEO_FRAMES)")


def check_frame_pixels(width: int, height: int, max_pixels: int, name: str = "the video") -> None:
    """Refuse a video whose frames are larger than MAX_IMAGE_PIXELS (each frame is decoded whole)."""
    if width * height > max_pixels:
        raise MediaError(f"{name} has frames of {width}x{height} pixels, over the limit of {max_pixels}")
