"""An RQ worker for this backend's jobs (`./worker.sh`): prediction and training jobs from `REDIS_URL`.

Run as many as you like, on any hosts that share `MODEL_ROOT` (trained versions, the served pointers)
and reach Redis and Label Studio; each reads its settings (LABEL_STUDIO_API_KEY included) from its own
environment. Each job runs in a work horse forked per job (RQ's default), so a crash or an
out-of-memory kill ends that job only; the worker imports what jobs run first (`preload`), so a horse
starts in milliseconds rather than seconds.

Abandoned jobs: RQ renews a running job's heartbeat every WORKER_HEARTBEAT_SECONDS and keeps it alive
60 s past the last one; one worker cleans the registries every WORKER_MAINTENANCE_SECONDS (an idle
worker wakes that often to do so). A job whose worker was killed is therefore retried once, or failed,
about 60 + heartbeat + maintenance seconds (~100 s by default) after its worker died, never left running.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from core.settings import Settings


def run_job(kind: str) -> int:
    """What the queue runs (in a work horse): the job whose meta RQ hands us, by kind."""
    from training.jobs import as_job_process

    settings = as_job_process(Settings())  # first: the job's niceness and threads for all it runs

    from rq import get_current_job

    from training.rq_runner import RQReporter

    reporter = RQReporter(get_current_job())
    if kind == "predict":
        import prediction_job

        return prediction_job.execute(reporter, settings)
    return train(reporter, settings)


def train(reporter: Any, settings: Settings) -> int:
    """The training job of `training_pipeline.py`, holding (project, control)'s lease while it runs."""
    from training.rq_runner import training_lock_name
    from training_pipeline import train_reported

    job = reporter.job
    with reporter.admitted(training_lock_name(job.project, job.control)) as admitted:
        if not admitted:
            reporter.cancelled("cancelled before it started")
            return 0
        return train_reported(reporter, lambda: settings)


def preload() -> None:
    """Import what every job runs, once, in the worker: each work horse RQ forks then starts with it
    (torch, torchvision, Ultralytics and ours: about 5 s of CPU a job on a 2-core host). Imports only: a fork does
    not inherit torch's threads or a CUDA context, so neither is started here, and CUDA is probed
    through NVML (PyTorch's way to keep `is_available` from initialising CUDA before a fork)."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    import torchvision  # noqa: F401 - what a predictor's first call imports (NMS): 1,000 modules
    from ultralytics import YOLO  # noqa: F401

    import prediction_job  # noqa: F401 - torch and the backend
    import training_pipeline  # noqa: F401 - training's own modules


def main() -> int:
    from rq import Worker

    from training.rq_runner import QUEUE_NAME, connect

    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not settings.redis_url:
        print("error: set REDIS_URL (e.g. redis://localhost:6379/0) for a worker", file=sys.stderr)
        return 2
    preload()
    worker = Worker(
        [QUEUE_NAME],
        connection=connect(settings.redis_url),
        job_monitoring_interval=settings.worker_heartbeat_seconds,
        maintenance_interval=settings.worker_maintenance_seconds,
        # An idle worker blocks this long minus 15 s on the queue, then cleans the registries if due.
        worker_ttl=settings.worker_maintenance_seconds + 15,
    )
    worker.work(logging_level=settings.log_level.upper())
    return 0


if __name__ == "__main__":
    os.environ.setdefault("ULTRALYTICS_SAFE_LOAD", "true")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    sys.exit(main())
