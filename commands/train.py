"""`cli.py train`: start (or join) the training job of each trainable control, the same jobs Label
Studio's Start Training starts, and follow them (tqdm over epochs) until they end."""

from __future__ import annotations

import argparse
import time
from typing import Any

from tqdm import tqdm

from commands.common import (
    EXIT_OK,
    EXIT_TASKS_FAILED,
    add_project_arguments,
    with_label_config,
)
from core.settings import Settings
from model import YOLOBackend

NAME = "train"
HELP = "train a new version from the project's annotations and wait for it (tqdm over epochs)"


def add_arguments(parser: argparse.ArgumentParser, settings: Settings) -> None:
    add_project_arguments(parser, settings, "the control's name (default: every trainable control)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    return with_label_config(
        args, settings, lambda backend, config, controls: train(backend, args.project, config, controls)
    )


def train(backend: YOLOBackend, project: int, label_config: str, controls: list[str] | None) -> int:
    """Start (or join) the job of each control, the same jobs Start Training starts; follow them."""
    answer = backend.training.start(project, "cli", controls)  # the config: read from Label Studio again
    failed = 0
    for started in answer["jobs"]:
        if started["submission"] == "refused":  # the host's queue is full (TRAINING_MAX_QUEUED)
            failed += 1
            print(f"{started['control']}: not started: {started['error']}")
            continue
        if started["submission"] in ("queued", "already_queued"):
            print(
                f"{started['control']}: {started['submission'].replace('_', ' ')} ({started['id']}); following it"
            )
        job = follow(backend, started["id"])
        if job.state == "succeeded":
            print(f"{job.control}: {job.version}: {job.message}")
        else:
            failed += 1
            print(f"{job.control}: failed: {job.error}")
    return EXIT_TASKS_FAILED if failed else EXIT_OK


def follow(backend: YOLOBackend, job_id: str, poll_s: float = 1.0) -> Any:
    job = backend.jobs.get(job_id)
    with tqdm(desc=f"{job.control}: {job.phase}", unit="epoch") as bar:
        while True:
            job = backend.jobs.get(job_id)
            bar.set_description(f"{job.control}: {job.phase}")
            if job.epochs and bar.total != job.epochs:
                bar.total = job.epochs
                bar.refresh()
            if job.epoch > bar.n:
                bar.update(job.epoch - bar.n)
                bar.set_postfix({k.split("/")[-1]: v for k, v in job.metrics.items() if "mAP50-95" in k})
            if job.state in ("succeeded", "failed"):
                return job
            time.sleep(poll_s)
