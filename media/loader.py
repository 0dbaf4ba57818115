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
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import cv2
import numpy as np
import requests
import urllib3

from core.errors import MediaError
from core.settings import Settings
from media.label_studio_api import LabelStudioAuth

logger = logging.getLogger(__name__)

CLOUD_SCHEMES = ("s3", "gs", "gcs", "azure-blob", "azure-spi")
_CHUNK = 1 << 16
_MAX_REDIRECTS = 5


class MediaLoader:
    def __init__(self, settings: Settings, auth: Callable[[str | None], LabelStudioAuth | None]):
        self._settings = settings
        # Called per download with the task's project: /setup may bring Label Studio's address later,
        # and each project its own.
        self._auth = auth
        self._cache_dir = settings.media_cache_dir
        self._cache_lock = threading.Lock()

    # -- public ------------------------------------------------------------------------------------

    def load_image(self, url: str, task_id: int | None = None, project: str | None = None) -> np.ndarray:
        """The image at `url` as a BGR uint8 array (H, W, 3)."""
        path = self.local_path(url, task_id, max_bytes=self._settings.max_image_bytes, project=project)
        return self.decode_image(path, name=f"'{_short(url)}'")

    def decode_image(self, path: Path, name: str) -> np.ndarray:
        """A local image file as a BGR uint8 array, within MAX_IMAGE_PIXELS; `name` is for messages."""
        check_image_pixels(path, self._settings.max_image_pixels, name=name)
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise MediaError(f"{name} is not an image that can be decoded")
        return image

    def local_path(
        self, url: str, task_id: int | None = None, max_bytes: int | None = None, project: str | None = None
    ) -> Path:
        """A local file holding the media at `url`, downloading it (once) when it is remote.

        `project` (Label Studio's project id) picks the Label Studio credentials when they come from
        that project's /setup rather than from the environment.
        """
        auth = self._auth(project)
        if not isinstance(url, str) or not url.strip():
            raise MediaError("the task has no media URL")
        url = url.strip()
        try:
            parsed = urlparse(url)
            scheme, _ = parsed.scheme.lower(), parsed.port  # .port refuses a port out of range
        except ValueError:  # "http://[::1", "http://host:99999/": urlparse refuses them
            raise MediaError(f"'{_short(url)}' is not a valid URL") from None
        max_bytes = max_bytes or self._settings.max_video_bytes
        if scheme in ("http", "https"):
            self._check_host(url, auth)
            return self._cached_download(
                url, auth, max_bytes, check_hop=lambda hop: self._check_host(hop, auth)
            )
        if url.startswith("/data/"):
            auth = _label_studio(url, auth)
            return self._cached_download(auth.base_url + url, auth, max_bytes)
        if scheme in CLOUD_SCHEMES:
            return self._presigned(url, task_id, max_bytes, auth)
        if scheme == "file":
            if parsed.netloc not in ("", "localhost"):
                raise MediaError(f"'{_short(url)}' names another machine; a file URL must be local")
            return self._local_file(unquote(parsed.path), max_bytes)
        if scheme == "":
            return self._local_file(url, max_bytes)
        raise MediaError(
            f"media URL scheme '{scheme}' is not supported ('{_short(url)}'); use http(s), "
            "a Label Studio URL or a local path"
        )

    # -- sources -----------------------------------------------------------------------------------

    def _check_host(self, url: str, auth: LabelStudioAuth | None) -> None:
        """With ALLOWED_MEDIA_HOSTS set, http(s) media comes only from those hosts and Label Studio's."""
        allowed = self._settings.allowed_media_host_list
        if not allowed:
            return
        host = (urlparse(url).hostname or "").lower()
        if auth is not None and auth.base_url and _same_origin(url, auth.base_url):
            return  # Label Studio's own origin: scheme, host and port, not its host on any port
        if any(host == name or (name.startswith("*.") and host.endswith(name[1:])) for name in allowed):
            return
        raise MediaError(f"'{_short(url)}' is on host '{host}', which is not in ALLOWED_MEDIA_HOSTS")

    def _presigned(self, uri: str, task_id: int | None, max_bytes: int, auth: LabelStudioAuth | None) -> Path:
        if not isinstance(task_id, int) or isinstance(task_id, bool):
            raise MediaError(f"'{_short(uri)}' needs the task's numeric id to be presigned by Label Studio")
        auth = _label_studio(uri, auth)
        encoded = base64.urlsafe_b64encode(uri.encode()).decode()
        presign_url = f"{auth.base_url}/tasks/{task_id}/presign/?fileuri={encoded}"
        return self._cached_download(presign_url, auth, max_bytes, cache_key=uri)

    def _local_file(self, path_text: str, max_bytes: int) -> Path:
        path = Path(path_text).expanduser()
        if not path.is_absolute():
            raise MediaError(f"'{_short(path_text)}' is neither a URL nor an absolute path")
        roots = self._settings.allowed_local_root_paths
        resolved = path.resolve()
        if roots and not any(resolved.is_relative_to(root) for root in roots):
            raise MediaError(f"'{_short(path_text)}' is outside ALLOWED_LOCAL_ROOTS")
        if not resolved.is_file():
            raise MediaError(f"'{_short(path_text)}' does not exist on the backend's machine")
        size = resolved.stat().st_size
        if size > max_bytes:
            raise MediaError(f"'{_short(path_text)}' is {size} bytes, over the limit of {max_bytes}")
        return resolved

    # -- cache -------------------------------------------------------------------------------------

    def _cached_download(
        self,
        url: str,
        auth: LabelStudioAuth | None,
        max_bytes: int,
        cache_key: str | None = None,
        check_hop: Callable[[str], None] | None = None,
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
            self._download(url, auth, partial, max_bytes, check_hop)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        self._evict()
        return target

    def _download(
        self,
        url: str,
        auth: LabelStudioAuth | None,
        destination: Path,
        max_bytes: int,
        check_hop: Callable[[str], None] | None,
    ) -> None:
        """Stream `url` into `destination`, within MAX_*_BYTES and DOWNLOAD_*_TIMEOUT.

        Redirects are followed here, hop by hop: Label Studio's key goes only to a hop whose origin is
        Label Studio's, and with `check_hop` every hop must pass ALLOWED_MEDIA_HOSTS (Label Studio's own
        redirects, to presigned storage URLs, are trusted). The body is read with `read1`, which returns as
        soon as some bytes arrive, so a server dripping bytes meets the total deadline, not only the
        per-read timeout.
        """
        timeout = (self._settings.download_connect_timeout, self._settings.download_read_timeout)
        deadline = time.monotonic() + self._settings.download_total_timeout
        try:
            response = self._follow_redirects(url, auth, timeout, check_hop)
            with response:
                if response.status_code != 200:
                    raise MediaError(f"'{_short(url)}' answered HTTP {response.status_code}")
                declared = _content_length(response)
                if declared is not None and declared > max_bytes:
                    raise MediaError(f"'{_short(url)}' is {declared} bytes, over the limit of {max_bytes}")
                received = 0
                with open(destination, "wb") as file:
                    while chunk := response.raw.read1(_CHUNK, decode_content=True):
                        received += len(chunk)
                        if received > max_bytes:
                            raise MediaError(f"'{_short(url)}' is over the size limit of {max_bytes} bytes")
                        if time.monotonic() > deadline:
                            raise MediaError(
                                f"'{_short(url)}' took longer than {self._settings.download_total_timeout:g} s "
                                "to download (DOWNLOAD_TOTAL_TIMEOUT)"
                            )
                        file.write(chunk)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
            raise MediaError(f"'{_short(url)}' could not be downloaded ({type(error).__name__})") from None

    def _follow_redirects(
        self,
        url: str,
        auth: LabelStudioAuth | None,
        timeout: tuple[float, float],
        check_hop: Callable[[str], None] | None,
    ) -> requests.Response:
        current = url
        for _ in range(_MAX_REDIRECTS + 1):
            # The key is decided on the URL as requests will send it (prepared: backslashes, userinfo and
            # escapes normalised by the parser that connects), never on a second parse of the raw text.
            requested = requests.Request("GET", current).prepare().url
            response = requests.get(
                requested,
                headers=_headers_for(requested, auth),
                stream=True,
                timeout=timeout,
                allow_redirects=False,
            )
            if not response.is_redirect:
                return response
            response.close()
            current = urljoin(current, response.headers["Location"])
            if urlparse(current).scheme.lower() not in ("http", "https"):
                raise MediaError(f"'{_short(url)}' redirects to a URL that is not http(s)")
            if check_hop is not None:
                check_hop(current)
        raise MediaError(f"'{_short(url)}' redirects more than {_MAX_REDIRECTS} times")

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


def _label_studio(url: str, auth: LabelStudioAuth | None) -> LabelStudioAuth:
    if auth is None or not auth.base_url:
        raise MediaError(
            f"'{_short(url)}' is a Label Studio URL, but LABEL_STUDIO_URL is not set "
            "(set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY for the backend)"
        )
    return auth


def _headers_for(url: str, auth: LabelStudioAuth | None) -> dict[str, str]:
    """Label Studio's own origin (scheme, host, port) gets its auth; nothing else ever sees the key."""
    if auth is not None and auth.base_url and _same_origin(url, auth.base_url):
        return auth.headers()
    return {}


def check_image_pixels(path: Path, max_pixels: int, name: str = "the image") -> None:
    """Refuse decompression bombs by reading only the image header.

    A file whose header Pillow cannot read is refused too: its size cannot be checked, and OpenCV would
    allocate whatever such a header declares.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
    except Image.DecompressionBombError:  # Pillow's own guard, for gross cases
        raise MediaError(f"{name} has too many pixels, over the limit of {max_pixels}") from None
    except Exception:
        raise MediaError(f"{name} is not an image that can be decoded") from None
    if width * height > max_pixels:
        raise MediaError(f"{name} is {width}x{height} pixels, over the limit of {max_pixels}")


_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def _content_length(response: requests.Response) -> int | None:
    """The declared body size, or None when absent or not a number (the byte count decides then)."""
    try:
        return int(response.headers["Content-Length"])
    except (KeyError, ValueError):
        return None


def _same_origin(url: str, base_url: str) -> bool:
    """Same scheme, host and port; the loopback names count as one host (Label Studio mixes them)."""
    try:
        a, b = urlparse(url), urlparse(base_url)
        port_a, port_b = a.port, b.port
    except ValueError:  # a hostname from /setup that is not a URL
        return False
    host_a = "localhost" if a.hostname in _LOOPBACK else a.hostname
    host_b = "localhost" if b.hostname in _LOOPBACK else b.hostname
    return (a.scheme, host_a, port_a) == (b.scheme, host_b, port_b)


def _short(url: str, limit: int = 120) -> str:
    """A URL for messages: without query (presigned secrets live there) and not too long."""
    try:
        path = urlparse(url).path
    except ValueError:  # not a URL urlparse accepts: no query to keep either
        path = ""
    # Local-files URLs keep their query: it holds the file name the user needs to see.
    text = url if path.startswith("/data/local-files") else url.split("?", 1)[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."
