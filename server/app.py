"""The HTTP protocol Label Studio speaks to an ML backend, on FastAPI.

`create_app(settings, backend)` builds the application; gunicorn calls it as a factory
(`gunicorn 'server.app:create_app()'`), tests call it with their own settings and model registry.
Routes are thin: check the body, call one method of `YOLOBackend`, shape the answer.
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import BackendError
from core.settings import Settings
from core.tasks import as_dicts
from model import YOLOBackend
from server.auth import BasicAuth
from server.body_limit import BodySizeLimit
from server.browser_guard import BrowserGuard
from server.jobs import BudgetedPredict, PredictionJobs, install_job_routes
from server.metrics import Metrics
from server.redact import PathRedactor
from server.schemas import (
    HealthResponse,
    PredictRequest,
    PredictResponse,
    SetupRequest,
    SetupResponse,
    WebhookRequest,
)
from server.ui import install_ui

logger = logging.getLogger(__name__)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger().setLevel(level.upper())
    # urllib3's DEBUG lines hold whole URLs, presigned storage signatures included; our own messages
    # name every failed download (without the query) instead.
    logging.getLogger("urllib3").setLevel(max(logging.getLogger().level, logging.INFO))


def create_app(settings: Settings | None = None, backend: YOLOBackend | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level)
    backend = backend or YOLOBackend(settings)
    redact = PathRedactor(settings)  # job logs and errors name files relative to MODEL_ROOT

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        # Sync routes run in AnyIO's thread pool; THREADS bounds how many predict at once.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threads
        yield
        backend.close()

    app = FastAPI(
        title="YOLO ML backend for Label Studio",
        lifespan=lifespan,
    )
    app.state.backend = backend
    metrics = Metrics(settings.prometheus_multiproc_dir)
    jobs = PredictionJobs(backend, settings)
    budgeted_predict = BudgetedPredict(
        backend,
        settings.predict_time_budget,
        lambda project, ids, config: jobs.predict(project, ids, config, trigger="PREDICT_TIME_BUDGET"),
    )
    _install_error_handlers(app)
    _install_metrics(app, metrics)
    app.add_middleware(
        BodySizeLimit, max_bytes=settings.max_request_bytes, max_uploads=settings.max_concurrent_uploads
    )
    app.add_middleware(BasicAuth, settings=settings)  # before the body is read
    app.add_middleware(BrowserGuard)  # added last: outermost (its headers go on 401s too)

    _install_label_studio_routes(app, jobs, budgeted_predict, metrics, redact)
    _install_job_and_metrics_routes(app, jobs, metrics, redact)
    install_ui(app, settings, backend)

    return app


def _health(backend: YOLOBackend) -> dict[str, Any]:
    return {
        "status": "UP",
        "model_class": type(backend).__name__,
        "loaded_models": backend.registry.loaded(),
        "model_errors": dict(backend.registry.last_errors),
    }


def _install_label_studio_routes(
    app: FastAPI,
    jobs: PredictionJobs,
    budgeted_predict: BudgetedPredict,
    metrics: Metrics,
    redact: PathRedactor,
) -> None:
    """What Label Studio calls: health, /setup, /predict, /webhook (each a thin call into the backend)."""
    backend, settings = jobs.backend, jobs.settings

    # async: answered on the event loop, so it never waits for a thread that runs a prediction.
    @app.get("/", response_model=HealthResponse)
    @app.get("/health", response_model=HealthResponse)
    async def health() -> dict[str, Any]:
        return _health(backend)

    @app.post("/setup", response_model=SetupResponse)
    def setup(body: SetupRequest) -> dict[str, Any]:
        version = backend.setup(
            body.labeling_config(),
            hostname=body.hostname,
            access_token=body.access_token,
            project=body.project,
        )
        return {"model_version": version}

    @app.post("/predict", response_model=PredictResponse, response_model_exclude_none=True)
    def predict(body: PredictRequest) -> dict[str, Any]:
        started = time.perf_counter()
        run = budgeted_predict(as_dicts(body.tasks), body.label_config, project=body.project)
        metrics.observe_prediction(
            tasks=len(run.tasks),
            failed=run.failed_tasks(),
            seconds=time.perf_counter() - started,
            inference_seconds=run.inference_seconds,
            loaded_models=len(backend.registry.loaded()),
        )
        response: dict[str, Any] = {"results": run.results(), "model_version": run.model_version}
        if run.control_errors:
            response["errors"] = run.control_errors
        return response

    @app.post("/webhook")
    def webhook(body: WebhookRequest) -> dict[str, Any]:
        if body.action == "TASKS_CREATED" and settings.prelabel_new_tasks:
            return redact(jobs.new_tasks(body.model_dump()))
        return redact(backend.fit(body.action, body.model_dump()))


def _install_job_and_metrics_routes(
    app: FastAPI, jobs: PredictionJobs, metrics: Metrics, redact: PathRedactor
) -> None:
    """Jobs (`server/jobs.py`) and the Prometheus exposition."""
    backend = jobs.backend
    install_job_routes(app, jobs, redact)

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        text = metrics.exposition(loaded_models=len(backend.registry.loaded()))
        return Response(text, media_type=metrics.content_type)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BackendError)
    async def backend_error(_: Request, error: BackendError) -> JSONResponse:
        return JSONResponse({"error": error.message}, status_code=error.status_code)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        # Unknown routes, wrong methods, bodies that cannot be parsed: the same {"error"} shape as ours.
        return JSONResponse(
            {"error": str(error.detail)}, status_code=error.status_code, headers=error.headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = []
        for item in error.errors()[:10]:
            if item.get("type") == "json_invalid":
                return JSONResponse(
                    {"error": "invalid request body: " + json_problem(error)}, status_code=400
                )
            where = ".".join(str(part) for part in item.get("loc", ()) if part != "body") or "body"
            problems.append(f"{where}: {item.get('msg', 'invalid')}")
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith(("application/json", "multipart/form-data")):
            # curl -d without -H sends a form: the body was never read as JSON.
            problems.append(
                f"send JSON with 'Content-Type: application/json' (this request's: '{content_type}')"
            )
        return JSONResponse({"error": "invalid request body: " + "; ".join(problems)}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        logger.exception("Unhandled error")
        return JSONResponse({"error": "internal error; the backend log has the details"}, status_code=500)


def json_problem(error: RequestValidationError) -> str:
    """Where a body stops being JSON (line, column) and what the parser expected there; no body text is
    quoted (it may hold a password)."""
    item = next(item for item in error.errors() if item.get("type") == "json_invalid")
    what = str((item.get("ctx") or {}).get("error") or "not JSON").removesuffix(" at")
    if what == "Invalid control character":  # a config pasted with its line breaks into a JSON string
        what += " (a line break or tab inside a string must be written as \\n or \\t)"
    position, document = item.get("loc", (None,))[-1], error.body
    if not isinstance(position, int) or not isinstance(document, str):
        return f"JSON decode error: {what}"
    line = document.count("\n", 0, position) + 1
    column = position - document.rfind("\n", 0, position)
    return f"JSON decode error at line {line}, column {column} (character {position}): {what}"


def _install_metrics(app: FastAPI, metrics: Metrics) -> None:
    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.observe_request(getattr(route, "path", "unmatched"), response.status_code)
        return response
