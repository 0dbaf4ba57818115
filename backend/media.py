"""Turn the media URL of a task into pixels.

Task data names media as Label Studio URLs (`/data/upload/...`, `/data/local-files/?d=...`), cloud URIs
(`s3://...`, presigned through Label Studio), plain `http(s)` URLs or local paths. `MediaLoader` owns
the download cache (a folder, bounded in bytes, keyed by URL) and is safe to use from several threads.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import cv2
import numpy as np
import requests

from backend.errors import MediaError
from backend.label_studio_api import LabelStudioAuth
from backend.settings import Settings

logger = logging.getLogger(__name__)

CLOUD_SCHEMES = ("s3", "gs", "gcs", "azure-blob", "azure-spi")
_CHUNK = 1 << 16


class MediaLoader:
    def __init__(self, settings: Settings, auth: Callable[[], LabelStudioAuth | None]):
        self._settings = settings
        self._auth = auth  # called per download: /setup may bring Label Studio's address later
        self._cache_dir = settings.media_cache_dir
        self._cache_lock = threading.Lock()

    # -- public ------------------------------------------------------------------------------------

    def load_image(self, url: str, task_id: int | None = None) -> np.ndarray:
        """The image at `url` as a BGR uint8 array (H, W, 3)."""
        path = self.local_path(url, task_id, max_bytes=self._settings.max_image_bytes)
        check_image_pixels(path, self._settings.max_image_pixels)
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise MediaError(f"'{_short(url)}' is not an image that can be decoded")
        return image

    def local_path(self, url: str, task_id: int | None = None, max_bytes: int | None = None) -> Path:
        """A local file holding the media at `url`, downloading it (once) when it is remote."""
        if not isinstance(url, str) or not url.strip():
            raise MediaError("the task has no media URL")
        url = url.strip()
        scheme = urlparse(url).scheme.lower()
        max_bytes = max_bytes or self._settings.max_video_bytes
        if scheme in ("http", "https"):
            return self._cached_download(url, self._headers_for(url), max_bytes)
        if url.startswith("/data/"):
            auth = self._label_studio(url)
            return self._cached_download(auth.base_url + url, auth.headers(), max_bytes)
        if scheme in CLOUD_SCHEMES:
            return self._presigned(url, task_id, max_bytes)
        if scheme in ("", "file"):
            return self._local_file(urlparse(url).path if scheme == "file" else url)
        raise MediaError(f"media URL scheme '{scheme}' is not supported ('{_short(url)}')")

    # -- sources -----------------------------------------------------------------------------------

    def _label_studio(self, url: str) -> LabelStudioAuth:
        auth = self._auth()
        if auth is None or not auth.base_url:
            raise MediaError(
                f"'{_short(url)}' is a Label Studio URL, but LABEL_STUDIO_URL is not set "
                "(set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY for the backend)"
            )
        return auth

    def _headers_for(self, url: str) -> dict[str, str]:
        """Label Studio's own URLs get its auth; other hosts never see the key."""
        auth = self._auth()
        if auth is not None and auth.base_url and _same_origin(url, auth.base_url):
            return auth.headers()
        return {}

    def _presigned(self, uri: str, task_id: int | None, max_bytes: int) -> Path:
        if task_id is None:
            raise MediaError(f"'{_short(uri)}' needs the task id to be presigned by Label Studio")
        auth = self._label_studio(uri)
        encoded = base64.urlsafe_b64encode(uri.encode()).decode()
        presign_url = f"{auth.base_url}/tasks/{int(task_id)}/presign/?fileuri={encoded}"
        return self._cached_download(presign_url, auth.headers(), max_bytes, cache_key=uri)

    def _local_file(self, path_text: str) -> Path:
        path = Path(path_text).expanduser()
        if not path.is_absolute():
            raise MediaError(f"'{_short(path_text)}' is neither a URL nor an absolute path")
        roots = self._settings.allowed_local_root_paths
        resolved = path.resolve()
        if roots and not any(resolved.is_relative_to(root) for root in roots):
            raise MediaError(f"'{_short(path_text)}' is outside ALLOWED_LOCAL_ROOTS")
        if not resolved.is_file():
            raise MediaError(f"'{_short(path_text)}' does not exist on the backend's machine")
        return resolved

    # -- cache -------------------------------------------------------------------------------------

    def _cached_download(
        self, url: str, headers: dict[str, str], max_bytes: int, cache_key: str | None = None
    ) -> Path:
        key = hashlib.sha256((cache_key or url).encode()).hexdigest()
        suffix = Path(urlparse(cache_key or url).path).suffix[:10]
        target = self._cache_dir / f"{key}{suffix}"
        if target.is_file():
            os.utime(target)  # recently used: last to be evicted
            return target
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{threading.get_ident()}.part")
        try:
            self._download(url, headers, partial, max_bytes)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        self._evict()
        return target

    def _download(self, url: str, headers: dict[str, str], destination: Path, max_bytes: int) -> None:
        timeout = (self._settings.download_connect_timeout, self._settings.download_read_timeout)
        try:
            with requests.get(url, headers=headers, stream=True, timeout=timeout) as response:
                if response.status_code != 200:
                    raise MediaError(f"'{_short(url)}' answered HTTP {response.status_code}")
                declared = int(response.headers.get("Content-Length") or 0)
                if declared > max_bytes:
                    raise MediaError(f"'{_short(url)}' is {declared} bytes, over the limit of {max_bytes}")
                received = 0
                with open(destination, "wb") as file:
                    for chunk in response.iter_content(_CHUNK):
                        received += len(chunk)
                        if received > max_bytes:
                            raise MediaError(f"'{_short(url)}' is over the size limit of {max_bytes} bytes")
                        file.write(chunk)
        except requests.RequestException as error:
            raise MediaError(f"'{_short(url)}' could not be downloaded ({type(error).__name__})") from None

    def _evict(self) -> None:
        """Keep the cache under its byte budget, dropping least recently used files first."""
        with self._cache_lock:
            files = [p for p in self._cache_dir.iterdir() if p.is_file() and not p.name.endswith(".part")]
            stats = sorted(((p.stat(), p) for p in files), key=lambda item: item[0].st_mtime)
            total = sum(stat.st_size for stat, _ in stats)
            for stat, path in stats:
                if total <= self._settings.media_cache_bytes:
                    break
                path.unlink(missing_ok=True)
                total -= stat.st_size


def check_image_pixels(path: Path, max_pixels: int) -> None:
    """Refuse decompression bombs by reading only the image header."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        raise MediaError("the image has too many pixels") from None
    except Exception:
        return  # not a format PIL knows; OpenCV decides below
    if width * height > max_pixels:
        raise MediaError(f"the image is {width}x{height} pixels, over the limit of {max_pixels}")


_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def _same_origin(url: str, base_url: str) -> bool:
    """Same scheme, host and port; the loopback names count as one host (Label Studio mixes them)."""
    a, b = urlparse(url), urlparse(base_url)
    host_a = "localhost" if a.hostname in _LOOPBACK else a.hostname
    host_b = "localhost" if b.hostname in _LOOPBACK else b.hostname
    return (a.scheme, host_a, a.port) == (b.scheme, host_b, b.port)


def _short(url: str, limit: int = 120) -> str:
    """A URL for messages: without query (presigned secrets live there) and not too long."""
    parsed = urlparse(url)
    # Local-files URLs keep their query: it holds the file name the user needs to see.
    text = url if parsed.path.startswith("/data/local-files") else url.split("?", 1)[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."
