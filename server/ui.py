"""The try-it page (`GET /ui`): pick a labeling config, upload an image or a video, see the prediction.

The page is static (server/static/, no build step, nothing fetched from elsewhere). Its upload goes
through `YOLOBackend.predict` like any /predict: the file waits in a private temporary folder for this
request only and reaches the backend in-process (`uploads=`), under a URL that no /predict body can
resolve, so it never becomes a local path task and never lands under MODEL_ROOT.
"""

from __future__ import annotations

import json
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import FileResponse, Response
from starlette.exceptions import HTTPException

from control_models.labeling_plan import PlanCache
from core.settings import Settings
from inference.model_registry import WEIGHT_SUFFIXES
from model import YOLOBackend
from server.ui_examples import EXAMPLE_CONFIGS, SAMPLE_FILES, SAMPLES, describe, trusted_plans

STATIC = Path(__file__).resolve().parent / "static"
_ASSETS = {"ui.js": "text/javascript", "ui.css": "text/css", "favicon.svg": "image/svg+xml"}
_SAMPLE_TYPES = {".jpg": "image/jpeg", ".png": "image/png", ".mp4": "video/mp4"}
_MAX_LISTED_MODELS = 200
_COPY_CHUNK = 1 << 20


def install_ui(app: FastAPI, settings: Settings, backend: YOLOBackend) -> None:
    """Routes of the page. Plain routes, not a StaticFiles mount: the app's basic auth covers routes only."""

    _install_page(app)
    examples_plans = _install_examples(app, settings)

    @app.get("/ui/models")
    def models() -> dict[str, Any]:
        return {  # names relative to MODEL_ROOT, never the server's own path (a caller needs no more)
            "allow_custom_model_path": settings.allow_custom_model_path,
            "files": model_files(settings.model_root),
            "loaded": backend.registry.loaded(),
            "errors": dict(backend.registry.last_errors),
        }

    @app.post("/ui/predict")
    def predict_upload(label_config: str = Form(...), file: UploadFile = File(...)) -> dict[str, Any]:
        # The page's own examples may name the bundled model; any other text follows the server's settings.
        normalized = label_config.replace("\r\n", "\n")  # a browser's form may send a textarea's CRLFs
        trusted = normalized in EXAMPLE_CONFIGS
        plans, label_config = (examples_plans, normalized) if trusted else (backend.plans, label_config)
        plan = plans.get(label_config)  # a bad config is a 422 before the file is copied
        is_video = any("Video" in control.object_tags for control in plan.controls)
        limit = settings.max_video_bytes if is_video else settings.max_image_bytes
        name = _safe_name(file.filename or "upload")
        url = f"upload:{uuid.uuid4().hex}/{name}"
        with tempfile.TemporaryDirectory(prefix="yolo-ui-") as folder:
            path = Path(folder) / name
            _copy_within(file, path, limit, "MAX_VIDEO_BYTES" if is_video else "MAX_IMAGE_BYTES")
            task = {"id": 1, "data": {control.value_key: url for control in plan.controls}}
            run = backend.predict([task], label_config, uploads={url: path}, plans=plans)
        result = run.results()[0]
        return {
            "file_name": file.filename,
            "model_version": run.model_version,
            "result": result.get("result", []),
            "task_error": result.get("error"),
            "control_errors": run.control_errors,
            "label_warnings": run.label_warnings,
            "models": {control.from_name: control.model_path for control in plan.controls},
        }


def _install_page(app: FastAPI) -> None:
    """The page, its icon and its static files."""

    @app.get("/ui", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "ui.html", media_type="text/html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        # The page names its icon; a browser asking the default path (other pages) gets no 404 either.
        return Response(status_code=204)

    @app.get("/ui/static/{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        if name not in _ASSETS:
            raise HTTPException(404, "Not Found")
        return FileResponse(STATIC / name, media_type=_ASSETS[name])


def _install_examples(app: FastAPI, settings: Settings) -> PlanCache:
    """The page's fixed examples and their sample files; the plan cache that trusts exactly those configs."""
    examples_plans = trusted_plans(settings)

    @app.get("/ui/examples")
    def examples() -> dict[str, Any]:
        return {"examples": describe(examples_plans, settings)}

    @app.get("/ui/examples/{name}", include_in_schema=False)
    async def sample(name: str) -> FileResponse:
        if name not in SAMPLE_FILES:
            raise HTTPException(404, "Not Found")
        return FileResponse(SAMPLES / name, media_type=_SAMPLE_TYPES[Path(name).suffix])

    return examples_plans


def model_files(root: Path) -> list[dict[str, Any]]:
    """Weight files under MODEL_ROOT (relative names, as `model_path` takes them), newest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES]
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [
        {
            "name": p.relative_to(root).as_posix(),
            "bytes": p.stat().st_size,
            "modified": p.stat().st_mtime,
            "metrics": _metrics_beside(p),
        }
        for p in found[:_MAX_LISTED_MODELS]
    ]


def _metrics_beside(weights: Path) -> dict[str, Any] | None:
    """A trained version's metrics.json, kept in the folder of its weights (None for other files)."""
    try:
        metrics = json.loads((weights.parent / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


def _safe_name(file_name: str) -> str:
    """The upload's base name without path parts or odd characters; its suffix tells decoders the type."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(file_name.replace("\\", "/")).name).lstrip(".")
    return name[-100:] or "upload"


def _copy_within(upload: UploadFile, target: Path, limit: int, setting: str) -> None:
    copied = 0
    with open(target, "wb") as out:
        while chunk := upload.file.read(_COPY_CHUNK):
            copied += len(chunk)
            if copied > limit:
                raise HTTPException(413, f"the uploaded file is over the limit of {limit} bytes ({setting})")
            out.write(chunk)
    if copied == 0:
        raise HTTPException(422, "the uploaded file is empty")
