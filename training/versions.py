"""Trained model versions per Label Studio project and control, and which one is served.

Layout under MODEL_ROOT:

    trained/<project>/<control>/<version>/best.pt          the weights
    trained/<project>/<control>/<version>/metrics.json     serving vs new model, per class; the decision
    trained/<project>/<control>/<version>/dataset.json     the dataset summary (split, instances per class)
    trained/<project>/<control>/<version>/run/             Ultralytics' run folder (results.csv, plots)
    trained/<project>/<control>/served.json                {"version": ...}: the pointer

The pointer is the only thing that decides what is served. It is replaced atomically (a temporary file,
fsync, `os.replace`) after the version folder is complete, so a crash or `kill -9` at any moment leaves
either the old pointer or the new one, never half of one. Readers stat the pointer on every request
(`ServedVersions`), so every gunicorn worker sees a switch at its next request without a restart.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import BadRequestError

POINTER = "served.json"
WEIGHTS = "best.pt"
METRICS = "metrics.json"
DATASET = "dataset.json"
# The figure each kind of version is promoted on, as metrics.json names it, and as people read it.
METRIC_LABELS = {"map50_95": "mAP50-95", "top1_accuracy": "top-1 accuracy", "mean_f1": "mean frame F1"}
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_VERSION = re.compile(r"^v(\d+)-[0-9]{8}T[0-9]{6}$")


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

    def create_version(self, project: str, control: str) -> Path:
        """A new, empty version folder: v<n>-<UTC time>, n one more than the highest so far."""
        folder = self.control_dir(project, control)
        folder.mkdir(parents=True, exist_ok=True)
        while True:
            numbers = [int(m.group(1)) for p in folder.iterdir() if (m := _VERSION.match(p.name))]
            name = f"v{max(numbers, default=0) + 1}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
            try:
                (folder / name).mkdir()
                return folder / name
            except FileExistsError:  # another process took this number in the same second
                time.sleep(0.01)

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

    def promote(self, project: str, control: str, version: str) -> None:
        """Serve `version` from the next request on (also a rollback to an older version)."""
        known = {v.name: v for v in self.versions(project, control)}
        if version not in known:
            names = ", ".join(known) or "none"
            raise BadRequestError(f"no version '{version}' for control '{control}' (versions: {names})")
        if not known[version].complete:
            raise BadRequestError(f"version '{version}' is incomplete (no best.pt or metrics.json)")
        write_json_atomic(
            self.control_dir(project, control) / POINTER,
            {"version": version, "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        )

    def unserve(self, project: str, control: str) -> None:
        """Serve the control's configured model again."""
        (self.control_dir(project, control) / POINTER).unlink(missing_ok=True)


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
