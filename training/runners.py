"""Which `JobRunner` a process uses: RQ workers when `REDIS_URL` is set, else local job processes."""

from __future__ import annotations

import shutil
import sys

from core.settings import PROJECT_ROOT, Settings
from training.jobs import JobRunner, LocalProcessRunner
from training.trigger import host_training_slots


def job_runner(settings: Settings) -> JobRunner:
    """With REDIS_URL every job goes on the queue (this process never runs one); without it each job
    is a process of this machine (`training_pipeline.py`, `prediction_job.py`)."""
    if settings.redis_url:
        from training.rq_runner import RQRunner

        return RQRunner(settings.redis_url)
    # Niced from its first instruction: importing torch and Ultralytics is seconds of CPU (the process
    # sets JOB_NICE itself too, `as_job_process`, where no `nice` command exists).
    nice_command = shutil.which("nice")
    nice = [nice_command, "-n", str(settings.job_nice)] if nice_command else []
    return LocalProcessRunner(
        settings.model_root / "jobs",
        [*nice, sys.executable, str(PROJECT_ROOT / "training_pipeline.py")],
        keep_finished=settings.training_jobs_kept,
        max_running=settings.training_max_jobs or (lambda: host_training_slots(settings.device)),
        max_queued=settings.training_max_queued,
        predict_command=[*nice, sys.executable, str(PROJECT_ROOT / "prediction_job.py")],
    )
