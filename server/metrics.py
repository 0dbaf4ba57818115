"""In-process counters for `GET /metrics`, in Prometheus' text format (one process, no extra package)."""

from __future__ import annotations

import threading
from collections import Counter


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, int]] = Counter()
        self._tasks = 0
        self._failed_tasks = 0
        self._predict_seconds = 0.0
        self._predict_calls = 0

    def observe_request(self, route: str, status: int) -> None:
        with self._lock:
            self._requests[(route, status)] += 1

    def observe_prediction(self, tasks: int, failed: int, seconds: float) -> None:
        with self._lock:
            self._tasks += tasks
            self._failed_tasks += failed
            self._predict_seconds += seconds
            self._predict_calls += 1

    def prometheus(self, loaded_models: int) -> str:
        with self._lock:
            lines = [
                "# HELP yolo_backend_requests_total HTTP requests by route and status.",
                "# TYPE yolo_backend_requests_total counter",
                *(
                    f'yolo_backend_requests_total{{route="{route}",status="{status}"}} {n}'
                    for (route, status), n in sorted(self._requests.items())
                ),
                "# HELP yolo_backend_tasks_total Tasks received in /predict.",
                "# TYPE yolo_backend_tasks_total counter",
                f"yolo_backend_tasks_total {self._tasks}",
                "# HELP yolo_backend_task_failures_total Tasks answered with an error (media, model).",
                "# TYPE yolo_backend_task_failures_total counter",
                f"yolo_backend_task_failures_total {self._failed_tasks}",
                "# HELP yolo_backend_predict_seconds_total Time spent in /predict.",
                "# TYPE yolo_backend_predict_seconds_total counter",
                f"yolo_backend_predict_seconds_total {self._predict_seconds:.6f}",
                "# HELP yolo_backend_loaded_models Models loaded in this process.",
                "# TYPE yolo_backend_loaded_models gauge",
                f"yolo_backend_loaded_models {loaded_models}",
            ]
        return "\n".join(lines) + "\n"
