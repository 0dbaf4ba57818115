"""Answers show no path of the server: a job's log tail and error name files relative to MODEL_ROOT.

A training job's log is Ultralytics' own output (`Scanning /srv/models/trained/7/label/v3-.../labels`,
weights paths, tracebacks from site-packages). What a caller may see of it is the part after the
folder it already knows by name: `trained/7/label/v3-.../labels`. Other folders of the server become
their setting's name (`MEDIA_CACHE_DIR/...`) or a placeholder.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from core.settings import PROJECT_ROOT, Settings


class PathRedactor:
    def __init__(self, settings: Settings):
        roots = {
            str(settings.model_root): "",
            str(settings.media_cache_dir): "MEDIA_CACHE_DIR/",
            str(PROJECT_ROOT): "",
            sys.prefix: "<python>/",
            sys.base_prefix: "<python>/",
            tempfile.gettempdir(): "<tmp>/",
            str(Path.home()): "~/",
        }
        # Longest first: MODEL_ROOT is often inside the project's folder or the home folder.
        self._roots = sorted(
            ((root.rstrip("/") + "/", shown) for root, shown in roots.items() if root.rstrip("/")),
            key=lambda item: -len(item[0]),
        )

    def text(self, value: str) -> str:
        for root, shown in self._roots:
            if root in value:
                value = value.replace(root, shown)
        return value

    def __call__(self, value: Any) -> Any:
        """`value` (JSON-like) with every string's server paths made relative."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {key: self(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self(item) for item in value]
        return value
