"""Turn the media URL of a task into pixels.

Task data names media as Label Studio URLs (`/data/upload/...`, `/data/local-files/?d=...`), cloud URIs
(`s3://...`, presigned through Label Studio), plain `http(s)` URLs or local paths. `MediaLoader` owns
the download cache (a folder, bounded in bytes, keyed by URL) and is safe to use from several threads.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlencode, urljoin, urlparse, urlunparse

import cv2
import numpy as np
import requests
import urllib3

from core.errors import MediaError
from core.settings import Settings
from media.cache import MediaCache
from media.http_client import MediaHTTP, NonPublicAddress
from media.label_studio_client import LabelStudioClient

logger = logging.getLogger(__name__)

CLOUD_SCHEMES = ("s3", "gs", "gcs", "azure-blob", "azure-spi")
_CHUNK = 1 << 16
_MAX_REDIRECTS = 5


class MediaLoader:
    def __init__(self, settings: Settings, auth: Callable[[str | None], LabelStudioClient | None]):
        self._settings = settings
        # Called per download with the task's project: /setup may bring Label Studio's address later,
        # and each project its own.
        self._auth = auth
        # No live download is older than its deadline: a temporary file older than that (and a minute) is
        # left by a process that died.
        self._cache = MediaCache(
            settings.media_cache_dir,
            settings.media_cache_bytes,
            stale_part_seconds=settings.media_wait_timeout + 60,
        )
        self._http = MediaHTTP()

    # -- public ------------------------------------------------------------------------------------

    def load_image(self, url: str, task_id: int | None = None, project: str | None = None) -> np.ndarray:
        """The image at `url` as a BGR uint8 array (H, W, 3)."""
        with self.fetched(url, task_id, max_bytes=self._settings.max_image_bytes, project=project) as path:
            return self.decode_image(path, name=f"'{short_url(url)}'")

    def decode_image(self, path: Path, name: str) -> np.ndarray:
        """A local image file as a BGR uint8 array, within MAX_IMAGE_PIXELS; `name` is for messages."""
        check_image_pixels(path, self._settings.max_image_pixels, name=name)
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise MediaError(f"{name} is not an image that can be decoded")
        return image

    @contextmanager
    def fetched(
        self, url: str, task_id: int | None = None, max_bytes: int | None = None, project: str | None = None
    ) -> Iterator[Path]:
        """A local file holding the media at `url`, downloaded (once) when remote, kept until the block ends.

        A downloaded file is never evicted from the cache while a block holds it (in any process).
        `project` (Label Studio's project id) picks the Label Studio credentials when they come from
        that project's /setup rather than from the environment.
        """
        with self._fetched(url, task_id, max_bytes, project, keep_after=False) as path:
            yield path

    def local_path(
        self, url: str, task_id: int | None = None, max_bytes: int | None = None, project: str | None = None
    ) -> Path:
        """Like `fetched`, without holding the file: it stays until a later download needs its room."""
        with self._fetched(url, task_id, max_bytes, project, keep_after=True) as path:
            return path

    @contextmanager
    def _fetched(
        self, url: str, task_id: int | None, max_bytes: int | None, project: str | None, keep_after: bool
    ) -> Iterator[Path]:
        source = self._source(url, task_id, max_bytes or self._settings.max_video_bytes, project)
        if isinstance(source, Path):
            yield source
            return
        with self._cache.pinned(source.file_name, source.fill, keep_after) as path:
            yield path

    # -- sources -----------------------------------------------------------------------------------

    def _source(self, url: str, task_id: int | None, max_bytes: int, project: str | None) -> Path | _Remote:
        auth = self._auth(project)
        if not isinstance(url, str) or not url.strip():
            raise MediaError("the task has no media URL")
        url = url.strip()
        try:
            parsed = urlparse(url)
            scheme, _ = parsed.scheme.lower(), parsed.port  # .port refuses a port out of range
        except ValueError:  # "http://[::1", "http://host:99999/": urlparse refuses them
            raise MediaError(f"'{short_url(url)}' is not a valid URL") from None
        if scheme in ("http", "https"):
            return self._remote(url, auth, max_bytes)
        if url.startswith("/data/"):
            auth = _label_studio(url, auth)
            return self._remote(auth.base_url + url, auth, max_bytes)
        if scheme in CLOUD_SCHEMES:
            return self._presigned(url, task_id, max_bytes, auth)
        if scheme == "file":
            if parsed.netloc not in ("", "localhost"):
                raise MediaError(f"'{short_url(url)}' names another machine; a file URL must be local")
            return self._local_file(unquote(parsed.path), max_bytes)
        if scheme == "":
            return self._local_file(url, max_bytes)
        raise MediaError(
            f"media URL scheme '{scheme}' is not supported ('{short_url(url)}'); use http(s), "
            "a Label Studio URL or a local path"
        )

    def _remote(
        self, url: str, auth: LabelStudioClient | None, max_bytes: int, cache_key: str | None = None
    ) -> _Remote:
        named = cache_key or url
        file_name = hashlib.sha256(named.encode()).hexdigest() + _media_suffix(named)
        return _Remote(file_name, lambda destination: self._download(url, auth, destination, max_bytes))

    def _presigned(
        self, uri: str, task_id: int | None, max_bytes: int, auth: LabelStudioClient | None
    ) -> _Remote:
        if not isinstance(task_id, int) or isinstance(task_id, bool):
            raise MediaError(
                f"'{short_url(uri)}' needs the task's numeric id to be presigned by Label Studio"
            )
        auth = _label_studio(uri, auth)
        encoded = base64.urlsafe_b64encode(uri.encode()).decode()
        presign_url = f"{auth.base_url}/tasks/{task_id}/presign/?fileuri={encoded}"
        return self._remote(presign_url, auth, max_bytes, cache_key=uri)

    def _local_file(self, path_text: str, max_bytes: int) -> Path:
        """A file under ALLOWED_LOCAL_ROOTS; outside them (or with none set) nothing tells whether it exists."""
        path = Path(path_text).expanduser()
        if not path.is_absolute():
            raise MediaError(f"'{short_url(path_text)}' is neither a URL nor an absolute path")
        roots = self._settings.allowed_local_root_paths
        if not roots:
            raise MediaError(
                f"'{short_url(path_text)}' is a local path, and the backend reads local files only inside "
                "ALLOWED_LOCAL_ROOTS, which is not set (set it to the folder, or serve the file through "
                "Label Studio)"
            )
        resolved = path.resolve()
        if not any(resolved.is_relative_to(root) for root in roots):
            raise MediaError(f"'{short_url(path_text)}' is outside ALLOWED_LOCAL_ROOTS")
        if not resolved.is_file():
            raise MediaError(f"'{short_url(path_text)}' does not exist on the backend's machine")
        size = resolved.stat().st_size
        if size > max_bytes:
            raise MediaError(f"'{short_url(path_text)}' is {size} bytes, over the limit of {max_bytes}")
        return resolved

    # -- downloads ---------------------------------------------------------------------------------

    def _may_reach_private(self, url: str, auth: LabelStudioClient | None) -> bool:
        """Whether this hop may go to a non-public address; refuses a host outside ALLOWED_MEDIA_HOSTS.

        Label Studio's own origin may (scheme, host and port, not its host on any port); so may a host
        listed in ALLOWED_MEDIA_HOSTS, or any with ALLOW_PRIVATE_MEDIA.
        """
        if auth is not None and auth.base_url and _same_origin(url, auth.base_url):
            return True
        allowed = self._settings.allowed_media_host_list
        parsed = urlparse(url)
        host = (parsed.hostname or "").lower()
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        listed = any(
            (host == name or (name.startswith("*.") and host.endswith(name[1:])))
            and entry_port in (None, port)
            for name, entry_port in allowed
        )
        if allowed and not listed:
            raise MediaError(f"'{short_url(url)}' is on host '{host}', which is not in ALLOWED_MEDIA_HOSTS")
        return listed or self._settings.allow_private_media

    def _download(self, url: str, auth: LabelStudioClient | None, destination: Path, max_bytes: int) -> None:
        """Stream `url` into `destination`, within MAX_*_BYTES and DOWNLOAD_*_TIMEOUT.

        The total deadline holds on the sockets (`MediaHTTP.deadline`): a server dripping headers, a
        chunk-size line or body bytes meets it, not only the per-read timeout. Content encodings are
        refused (we ask for `identity`): a gzip stream is decoded inside urllib3, where a header that
        never ends would keep a read busy past any check of ours, and media files are compressed already.
        """
        timeout = (self._settings.download_connect_timeout, self._settings.download_read_timeout)
        total = self._settings.download_total_timeout
        too_slow = f"'{short_url(url)}' took longer than {total:g} s to download (DOWNLOAD_TOTAL_TIMEOUT)"
        with self._http.deadline(total) as watch:
            try:
                response = self._follow_redirects(url, auth, timeout)
                with response:
                    self._check_response(url, response, max_bytes)
                    received = 0
                    with open(destination, "wb") as file:
                        while chunk := response.raw.read1(_CHUNK, decode_content=False):
                            received += len(chunk)
                            if received > max_bytes:
                                raise MediaError(
                                    f"'{short_url(url)}' is over the size limit of {max_bytes} bytes"
                                )
                            if watch.expired:
                                raise MediaError(too_slow)
                            file.write(chunk)
                    if watch.expired:  # the socket was shut down: what arrived may be cut short
                        raise MediaError(too_slow)
            except NonPublicAddress as refused:
                logger.warning("refused media host %s: it resolves to %s", refused.host, refused.addresses)
                raise MediaError(
                    f"'{short_url(url)}' leads to host '{refused.host}', which is not a public address "
                    "(loopback, private network or link-local); to fetch media from it on purpose, add it "
                    "to ALLOWED_MEDIA_HOSTS (host or host:port) or set ALLOW_PRIVATE_MEDIA=true"
                ) from None
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError) as error:
                if watch.expired:
                    raise MediaError(too_slow) from None
                raise MediaError(
                    f"'{short_url(url)}' could not be downloaded ({type(error).__name__})"
                ) from None

    @staticmethod
    def _check_response(url: str, response: requests.Response, max_bytes: int) -> None:
        if response.status_code != 200:
            raise MediaError(f"'{short_url(url)}' answered HTTP {response.status_code}")
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise MediaError(
                f"'{short_url(url)}' was sent with Content-Encoding '{encoding[:20]}'; media must be sent "
                "as is (the backend asks for Accept-Encoding: identity)"
            )
        declared = _content_length(response)
        if declared is not None and declared > max_bytes:
            raise MediaError(f"'{short_url(url)}' is {declared} bytes, over the limit of {max_bytes}")

    def _follow_redirects(
        self, url: str, auth: LabelStudioClient | None, timeout: tuple[float, float]
    ) -> requests.Response:
        """Follow redirects hop by hop, each hop checked again on the URL as it is requested.

        Label Studio's key goes only to a hop on Label Studio's origin. Every hop must pass
        ALLOWED_MEDIA_HOSTS and may reach a non-public address only as `_may_reach_private` says; the hop
        a Label Studio answer redirects to (presigned storage, often on Label Studio's own network) is
        trusted like Label Studio.
        """
        current, trusted = url, False
        for _ in range(_MAX_REDIRECTS + 1):
            # Decided on the URL as requests will send it (prepared: backslashes, userinfo and escapes
            # normalised by the parser that connects), never on a second parse of the raw text.
            requested = requests.Request("GET", current).prepare().url
            private_ok = trusted or self._may_reach_private(requested, auth)
            response = self._http.get(
                requested, headers=_headers_for(requested, auth), timeout=timeout, public_only=not private_ok
            )
            if not response.is_redirect:
                return response
            response.close()
            trusted = auth is not None and bool(auth.base_url) and _same_origin(requested, auth.base_url)
            current = urljoin(requested, response.headers["Location"])
            if urlparse(current).scheme.lower() not in ("http", "https"):
                raise MediaError(f"'{short_url(url)}' redirects to a URL that is not http(s)")
        raise MediaError(f"'{short_url(url)}' redirects more than {_MAX_REDIRECTS} times")


@dataclass(frozen=True)
class _Remote:
    """A download: its file name in the cache and how to write it into a file."""

    file_name: str
    fill: Callable[[Path], None]


# Plain image and video containers (Ultralytics reads files by path only with such a suffix). Any other
# suffix of a URL is dropped: a playlist (`.m3u8`) could make FFmpeg open `file:` URLs it lists, and
# FFmpeg detects HLS only by that suffix.
SAFE_MEDIA_SUFFIXES = frozenset(
    [
        ".bmp",
        ".jpeg",
        ".jpg",
        ".png",
        ".tif",
        ".tiff",
        ".webp",
        ".heic",
        ".mpo",
        ".avi",
        ".m4v",
        ".mkv",
        ".mov",
        ".mp4",
        ".mpeg",
        ".mpg",
        ".webm",
        ".wmv",
        ".gif",
    ]
)


def _media_suffix(url: str) -> str:
    try:
        suffix = Path(unquote(urlparse(url).path)).suffix.lower()
    except ValueError:
        return ""
    return suffix if suffix in SAFE_MEDIA_SUFFIXES else ""


def _label_studio(url: str, auth: LabelStudioClient | None) -> LabelStudioClient:
    if auth is None or not auth.base_url:
        raise MediaError(
            f"'{short_url(url)}' is a Label Studio URL, but LABEL_STUDIO_URL is not set "
            "(set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY for the backend)"
        )
    return auth


def _headers_for(url: str, auth: LabelStudioClient | None) -> dict[str, str]:
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


def short_url(url: str, limit: int = 120) -> str:
    """A URL for messages and logs: without its query (presigned secrets live there) or userinfo, not too long.

    Label Studio local-files URLs keep their `d` parameter, the file name the user needs to see.

    >>> short_url("https://bucket.s3.amazonaws.com/a.jpg?X-Amz-Signature=secret")
    'https://bucket.s3.amazonaws.com/a.jpg'
    >>> short_url("http://user:pass@host/a.jpg")
    'http://host/a.jpg'
    """
    try:
        parsed = urlparse(url)
        netloc = parsed.netloc.rpartition("@")[2]
        kept = ""
        if parsed.path.startswith("/data/local-files"):
            files = parse_qs(parsed.query).get("d")
            kept = "?" + urlencode({"d": files[0]}, safe="/") if files else ""
        text = urlunparse((parsed.scheme, netloc, parsed.path, "", "", "")) + kept
    except ValueError:  # not a URL urlparse accepts: drop whatever follows "?" and before "@"
        text = url.split("?", 1)[0].split("#", 1)[0]
        scheme, sep, rest = text.partition("://")
        text = scheme + sep + rest.rpartition("@")[2] if sep else text
    return text if len(text) <= limit else text[: limit - 3] + "..."
