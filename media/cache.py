"""The media download cache: one folder of files named by key, bounded in bytes, shared by processes.

Every gunicorn worker and training job may use the same folder, so "in use" is an advisory lock on the
file (`flock`, shared while a file is read; an evictor deletes a file only when it gets the lock
exclusively, without waiting): a file in use is never evicted, by this process or another one. A
download is written to a unique temporary file (`mkstemp`), locked before it gets its final name, and
linked there only if no other download was first (the first complete copy wins, nothing is replaced under
a reader). Temporary files older than any live download can be are swept.

A scan of the folder costs a stat per cached file (over a second for 10,000 files on a busy machine), so
a release scans only when this process added 1% of the budget since its last scan, or 30 s have
passed: a training job placing 10,000 images, or a worker serving cached images, does not scan the
whole folder after each one (a tiny budget still scans every time).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

PART_SUFFIX = ".part"
SCAN_SHARE = 0.01  # of MEDIA_CACHE_BYTES added by this process since its last scan: scan again
SCAN_INTERVAL_S = 30.0


class MediaCache:
    def __init__(self, folder: Path, max_bytes: int, stale_part_seconds: float):
        self.folder = folder
        self.max_bytes = max_bytes
        self._stale_part_seconds = stale_part_seconds
        self._evict_lock = threading.Lock()
        self._added = 0  # bytes this process put into the folder since its last scan
        self._last_scan = float("-inf")

    @contextmanager
    def pinned(self, key: str, fill: Callable[[Path], None], keep_after: bool = False) -> Iterator[Path]:
        """The cached file for `key` (made by `fill(temporary path)` when missing), kept until the block ends.

        With `keep_after`, the eviction at the end spares it too: a file handed out without a pin stays
        until a later download needs the room. `key` is the file name (the caller decides its suffix).
        """
        target = self.folder / key
        descriptor = _open_locked(target)
        if descriptor is None:
            descriptor = self._download(target, fill)
        try:
            yield target
        finally:
            os.close(descriptor)
        if self._scan_due():
            self.evict(keep=target if keep_after else None)

    def _scan_due(self) -> bool:
        with self._evict_lock:
            return (
                self._added >= self.max_bytes * SCAN_SHARE
                or time.monotonic() - self._last_scan >= SCAN_INTERVAL_S
            )

    def _download(self, target: Path, fill: Callable[[Path], None]) -> int:
        self.folder.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(
            dir=self.folder, prefix=f"{target.name[:16]}-", suffix=PART_SUFFIX
        )
        partial = Path(name)
        try:
            fill(partial)
            with self._evict_lock:
                self._added += partial.stat().st_size
            fcntl.flock(descriptor, fcntl.LOCK_SH)  # pinned before it has its name: no evictor can take it
            try:
                os.link(partial, target)
            except FileExistsError:  # another thread or process finished first: use its copy
                existing = _open_locked(target)
                if existing is not None:
                    os.close(descriptor)
                    return existing
                os.replace(partial, target)  # it was evicted meanwhile: ours takes the name
            except OSError:  # a file system without hard links
                os.replace(partial, target)
            return descriptor
        except BaseException:
            os.close(descriptor)
            raise
        finally:
            partial.unlink(missing_ok=True)

    def evict(self, keep: Path | None = None) -> None:
        """Drop least recently used files until the cache fits MEDIA_CACHE_BYTES, skipping files in use."""
        if not self.folder.is_dir():
            return
        with self._evict_lock:
            self._added, self._last_scan = 0, time.monotonic()
            now = time.time()
            files = []
            for entry in os.scandir(self.folder):
                try:
                    stat = entry.stat()
                except FileNotFoundError:
                    continue
                path = Path(entry.path)
                if entry.name.endswith(PART_SUFFIX):
                    if now - stat.st_mtime > self._stale_part_seconds:  # no live download is this old
                        path.unlink(missing_ok=True)
                elif entry.is_file():
                    files.append((stat.st_mtime, stat.st_size, path))
            files.sort()
            total = sum(size for _, size, _ in files)
            for _, size, path in files:
                if total <= self.max_bytes:
                    break
                if path != keep and _remove_unless_in_use(path):
                    total -= size


def _open_locked(path: Path) -> int | None:
    """A descriptor of `path` holding a shared lock, or None when there is no such file (any more)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    fcntl.flock(descriptor, fcntl.LOCK_SH)  # waits only for an evictor that is deleting it right now
    if os.fstat(descriptor).st_nlink == 0:  # it was: this inode has no name any more
        os.close(descriptor)
        return None
    os.utime(descriptor)  # recently used: last to be evicted
    return descriptor


def _remove_unless_in_use(path: Path) -> bool:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return False  # someone reads it
    try:
        if os.stat(path).st_ino == os.fstat(descriptor).st_ino:
            path.unlink()
        return True
    except FileNotFoundError:
        return True
    finally:
        os.close(descriptor)
