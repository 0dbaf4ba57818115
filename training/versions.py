"""Trained model versions per Label Studio project and control, and which one is served.

Layout under MODEL_ROOT:

    trained/<project>/<control>/<version>/best.pt          the weights
    trained/<project>/<control>/<version>/metrics.json     serving vs new model, per class; the decision
    trained/<project>/<control>/<version>/dataset.json     the dataset summary (split, instances per class)
    trained/<project>/<control>/<version>/run/             Ultralytics' run folder (results.csv, plots)
    trained/<project>/<control>/served.json                {"version": ...}: the pointer
    trained/<project>/<control>/served.lock                the per-control lock of every pointer change
    trained/<project>/<control>/<version>.partial/         a version being written (a job runs)

The pointer is the only thing that decides what is served. It is replaced atomically (a temporary file,
fsync, `os.replace`) after the version folder is complete, so a crash or `kill -9` at any moment leaves
either the old pointer or the new one, never half of one. Readers stat the pointer on every request
(`ServedVersions`), so every gunicorn worker sees a switch at its next request without a restart.

A job writes its version as `<version>.partial` (holding a lock file inside it for its whole life) and
renames it when complete, so a version folder without the suffix is always whole. A job killed with
SIGKILL leaves its partial folder unlocked; `sweep` (at the next job of the control and when a server
starts) removes it. Every pointer change (a job's promotion, `cli.py models --use`) happens under the
control's `served.lock`: a job promotes only if the pointer still names the version it compared against
(compare-and-swap), so a rollback made while it trained stays.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import BackendError, BadRequestError

POINTER = "served.json"
WEIGHTS = "best.pt"
METRICS = "metrics.json"
DATASET = "dataset.json"
# The figure each kind of version is promoted on, as metrics.json names it, and as people read it.
METRIC_LABELS = {"map50_95": "mAP50-95", "top1_accuracy": "top-1 accuracy", "mean_f1": "mean frame F1"}
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
PARTIAL = ".partial"
POINTER_LOCK = "served.lock"
_DRAFT_LOCK = ".job.lock"  # inside a partial folder: held by the job writing it
_VERSION = re.compile(r"^v(\d+)-[0-9]{8}T[0-9]{6}$")
_NUMBERED = re.compile(r"^v(\d+)-[0-9]{8}T[0-9]{6}(\.partial)?$")  # a number taken, done or not
_STALE_S = 60.0  # a partial folder without its lock, or a temporary file, older than this is abandoned


class InsufficientStorageError(BackendError):
    status_code = 507


def safe_name(text: str) -> str:
    """A folder name for a project id or control name (no separators, no '..')."""
    name = _SAFE.sub("_", str(text)).strip("._") or "_"
    return name[:100]


def write_json_atomic(path: Path, data: Any) -> None:
    """Write `data` to `path` so a reader sees the old file or the new one, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(data, file, indent=2, sort_keys=True)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class VersionInfo:
    name: str
    path: Path
    served: bool
    metrics: dict | None  # metrics.json, None while training or when the job failed

    @property
    def complete(self) -> bool:
        return (self.path / WEIGHTS).is_file() and self.metrics is not None


class VersionStore:
    """The versions of every (project, control) under MODEL_ROOT/trained; safe across processes."""

    def __init__(self, model_root: Path):
        self.model_root = Path(model_root)
        self.root = self.model_root / "trained"

    def control_dir(self, project: str, control: str) -> Path:
        return self.root / safe_name(project) / safe_name(control)

    def create_version(self, project: str, control: str, suffix: str = "") -> Path:
        """A new, empty version folder: v<n>-<UTC time>[suffix], n one more than the highest so far
        (partial folders count: their number is taken)."""
        folder = self.control_dir(project, control)
        folder.mkdir(parents=True, exist_ok=True)
        while True:
            numbers = [int(m.group(1)) for p in folder.iterdir() if (m := _NUMBERED.match(p.name))]
            name = f"v{max(numbers, default=0) + 1}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
            try:
                (folder / f"{name}{suffix}").mkdir()
                return folder / f"{name}{suffix}"
            except FileExistsError:  # another process took this number in the same second
                time.sleep(0.01)

    @contextlib.contextmanager
    def draft(self, project: str, control: str) -> Iterator[Draft]:
        """A version being written: `<version>.partial`, locked for the block's life, removed when the
        block raises. `publish` turns it into the version; a SIGKILL leaves it to `sweep`."""
        path = self.create_version(project, control, PARTIAL)
        lock = os.open(path / _DRAFT_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(lock, fcntl.LOCK_EX)
        draft = Draft(project, control, path.name[: -len(PARTIAL)], path)
        try:
            yield draft
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)  # nothing half-made stays behind
            raise
        finally:
            os.close(lock)

    def publish(
        self, draft: Draft, compared_against: str | None, metrics: dict, promote: bool, decision: str
    ) -> Published:
        """Complete `draft` (metrics.json, the rename) and serve it when `promote` and the pointer still
        names `compared_against` (None: the configured model): compare-and-swap under the control's lock.
        metrics.json says what was done, so it agrees with the pointer."""
        with self.pointer_lock(draft.project, draft.control):
            now = self.served(draft.project, draft.control)
            changed = now != compared_against
            if promote and changed:
                decision = (
                    f"kept, not promoted: the served version changed during the job: "
                    f"{compared_against or 'base'} \u2192 {now or 'base'} (the job would have said: {decision})"
                )
            promoted = promote and not changed
            write_json_atomic(
                draft.path / METRICS,
                {**metrics, "promoted": promoted, "decision": decision, "served_at_end": now or "base"},
            )
            final = draft.path.with_name(draft.name)
            os.rename(draft.path, final)  # whole now: a sweep never takes a folder without the suffix
            _fsync_dir(final.parent)
            (final / _DRAFT_LOCK).unlink(missing_ok=True)
            if promoted:
                self._point(draft.project, draft.control, draft.name)
            return Published(draft.name, promoted, decision)

    def prune(self, project: str, control: str, keep: int) -> list[str]:
        """Delete the oldest versions so that at most `keep` remain, never the served one (which counts
        among them); the names deleted. Under the control's lock: no `--use` meanwhile."""
        with self.pointer_lock(project, control):
            served = self.served(project, control)
            found = self.versions(project, control)
            others = [v for v in found if v.name != served]
            room = max(0, keep - (len(found) - len(others)))
            gone = others[: max(0, len(others) - room)]  # oldest first
            for version in gone:
                shutil.rmtree(version.path, ignore_errors=True)
            return [v.name for v in gone]

    def sweep(self, project: str | None = None, control: str | None = None) -> list[Path]:
        """Remove what killed jobs left: partial folders whose job is gone, old temporary files. For one
        control, one project, or everything under MODEL_ROOT/trained (a server's start)."""
        if project is not None and control is not None:
            folders = [self.control_dir(project, control)]
        else:
            projects = [self.root / safe_name(project)] if project is not None else _subfolders(self.root)
            folders = [c for p in projects for c in _subfolders(p)]
        removed = []
        for folder in folders:
            for path in _subfolders(folder):
                if path.name.endswith(PARTIAL) and _abandoned(path):
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
            for path in folder.glob(".*.tmp") if folder.is_dir() else []:
                with contextlib.suppress(OSError):
                    if time.time() - path.stat().st_mtime > _STALE_S:
                        path.unlink()
        return removed

    def held_out_before(self, project: str, control: str) -> frozenset[int]:
        """The task ids the newest version with a dataset.json held out (they stay held out)."""
        for version in reversed(self.versions(project, control)):
            summary = read_json(version.path / DATASET)
            if summary is not None and isinstance(summary.get("val_task_ids"), list):
                return frozenset(int(t) for t in summary["val_task_ids"] if isinstance(t, int))
        return frozenset()

    def versions(self, project: str, control: str) -> list[VersionInfo]:
        folder = self.control_dir(project, control)
        served = self.served(project, control)
        if not folder.is_dir():
            return []
        found = [p for p in folder.iterdir() if p.is_dir() and _VERSION.match(p.name)]
        found.sort(key=lambda p: int(_VERSION.match(p.name).group(1)))
        return [VersionInfo(p.name, p, p.name == served, read_json(p / METRICS)) for p in found]

    def controls(self, project: str) -> list[str]:
        folder = self.root / safe_name(project)
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def served(self, project: str, control: str) -> str | None:
        """The served version's name, or None (the control's configured model is served)."""
        pointer = read_json(self.control_dir(project, control) / POINTER)
        version = pointer.get("version") if pointer else None
        return version if isinstance(version, str) and _VERSION.match(version) else None

    def weights(self, project: str, control: str, version: str) -> Path:
        return self.control_dir(project, control) / version / WEIGHTS

    def model_path(self, project: str, control: str, version: str) -> str:
        """The weights as a `model_path` relative to MODEL_ROOT (what the model registry loads)."""
        return self.weights(project, control, version).relative_to(self.model_root).as_posix()

    @contextlib.contextmanager
    def pointer_lock(self, project: str, control: str) -> Iterator[None]:
        """The control's lock for every pointer change (promote, rollback, a job's compare-and-swap,
        pruning); across processes, held for milliseconds."""
        folder = self.control_dir(project, control)
        folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(folder / POINTER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)

    def promote(self, project: str, control: str, version: str) -> None:
        """Serve `version` from the next request on (also a rollback to an older version)."""
        with self.pointer_lock(project, control):
            known = {v.name: v for v in self.versions(project, control)}
            if version not in known:
                names = ", ".join(known) or "none"
                raise BadRequestError(f"no version '{version}' for control '{control}' (versions: {names})")
            if not known[version].complete:
                raise BadRequestError(f"version '{version}' is incomplete (no best.pt or metrics.json)")
            self._point(project, control, version)

    def unserve(self, project: str, control: str) -> None:
        """Serve the control's configured model again."""
        with self.pointer_lock(project, control):
            (self.control_dir(project, control) / POINTER).unlink(missing_ok=True)

    def _point(self, project: str, control: str, version: str) -> None:
        write_json_atomic(
            self.control_dir(project, control) / POINTER,
            {"version": version, "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        )


@dataclass(frozen=True)
class Draft:
    """A version being written by a job: `path` is `<name>.partial` until `publish` renames it."""

    project: str
    control: str
    name: str
    path: Path


@dataclass(frozen=True)
class Published:
    version: str
    promoted: bool
    decision: str  # what metrics.json says: the job's decision, or why it did not promote after all


def check_free_disk(folder: Path, needed: int, what: str = "MODEL_ROOT") -> None:
    """Refuse to start when the file system of `folder` has less than `needed` bytes free."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise InsufficientStorageError(
            f"only {free / 1e9:.2f} GB free on the disk of {what}; a training job needs at least "
            f"{needed / 1e9:.2f} GB (TRAINING_MIN_FREE_BYTES, and 4 times the model it starts from): "
            "free some space, or keep fewer versions (MODEL_VERSIONS_KEPT)"
        )


def _subfolders(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_dir()]
    except OSError:
        return []


def _abandoned(partial: Path) -> bool:
    """A partial folder whose job is gone: its lock is free (or it never got one and is old)."""
    try:
        descriptor = os.open(partial / _DRAFT_LOCK, os.O_RDWR)
    except FileNotFoundError:
        with contextlib.suppress(OSError):
            return time.time() - partial.stat().st_mtime > _STALE_S
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False  # its job is alive
    finally:
        os.close(descriptor)


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class ServedVersions:
    """Per request: which trained version each control of a project serves.

    One stat per pointer file and request; the file is parsed again only when its mtime or size changed,
    so a promotion by any process is seen at the next request of every worker.
    """

    def __init__(self, store: VersionStore):
        self.store = store
        self._cache: dict[Path, tuple[tuple[int, int], str | None]] = {}
        self._lock = threading.Lock()

    def served(self, project: str | None, control: str) -> str | None:
        if not project:
            return None
        pointer = self.store.control_dir(project, control) / POINTER
        try:
            stat = pointer.stat()
        except OSError:
            return None
        key = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._cache.get(pointer)
        if cached is not None and cached[0] == key:
            return cached[1]
        version = self.store.served(project, control)
        if version is not None and not self.store.weights(project, control, version).is_file():
            version = None  # a pointer to deleted weights: serve the configured model
        with self._lock:
            self._cache[pointer] = (key, version)
        return version

    def model_path(self, project: str | None, control: str) -> str | None:
        version = self.served(project, control)
        return self.store.model_path(project, control, version) if version else None
