"""`GET /metrics` through prometheus_client, correct with several gunicorn workers.

start.sh points PROMETHEUS_MULTIPROC_DIR at an empty folder before gunicorn starts: every worker then
writes its values there and a scrape, answered by any one worker, adds up all of them
(`MultiProcessCollector`); `server/gunicorn_conf.py` drops the files of a worker that exits. Without the
variable (tests, `uvicorn` by hand) the values live in this process only.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

# Seconds: a one-image request on a GPU up to a bulk retrieve near Label Studio's 100 s time-out.
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 300)


class Metrics:
    """The backend's metrics, registered in a registry of their own (no process-wide globals)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, multiprocess_dir: str = ""):
        self._multiprocess_dir = multiprocess_dir
        self._registry = CollectorRegistry()
        registry = self._registry
        self.requests = Counter(
            "yolo_backend_requests",
            "HTTP requests by route and status.",
            ["route", "status"],
            registry=registry,
        )
        self.tasks = Counter("yolo_backend_tasks", "Tasks received in /predict.", registry=registry)
        self.task_failures = Counter(
            "yolo_backend_task_failures", "Tasks answered with an error (media, model).", registry=registry
        )
        self.predict_seconds = Histogram(
            "yolo_backend_predict_seconds",
            "Time to answer /predict.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.inference_seconds = Histogram(
            "yolo_backend_inference_seconds",
            "Time inside one model's calls during one /predict.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.loaded_models = Gauge(
            "yolo_backend_loaded_models",
            "Models loaded, summed over live worker processes.",
            multiprocess_mode="livesum",
            registry=registry,
        )

    def observe_request(self, route: str, status: int) -> None:
        self.requests.labels(route=route, status=str(status)).inc()

    def observe_prediction(
        self, tasks: int, failed: int, seconds: float, inference_seconds: dict[str, float], loaded_models: int
    ) -> None:
        self.tasks.inc(tasks)
        self.task_failures.inc(failed)
        self.predict_seconds.observe(seconds)
        for model, model_seconds in inference_seconds.items():
            self.inference_seconds.labels(model=model).observe(model_seconds)
        self.loaded_models.set(loaded_models)

    def exposition(self, loaded_models: int) -> bytes:
        """The text a scrape gets: every worker's values when running under gunicorn, else this process's."""
        self.loaded_models.set(loaded_models)
        if not self._multiprocess_dir:
            return generate_latest(self._registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self._multiprocess_dir)
        return generate_latest(merged)
