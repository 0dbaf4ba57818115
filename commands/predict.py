"""`cli.py predict` (also the bare `cli.py --project ...` form): predict tasks in this process and
upload each prediction through the Label Studio SDK as soon as it is made.

A task that fails is reported at the end and does not stop the others; the exit status is 1 when any
task failed, 2 when nothing could run at all. `--all-tasks` skips tasks that already have a prediction
of this model version, so an interrupted run continues where it stopped when started again.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from tqdm import tqdm

from commands.common import (
    EXIT_NOTHING_RAN,
    EXIT_OK,
    EXIT_TASKS_FAILED,
    NEEDS_LABEL_STUDIO,
    add_label_studio_arguments,
    describe,
    has_label_studio,
    label_studio,
    prepare_process,
    with_label_studio,
)
from core.errors import BackendError, LabelingConfigError, ModelError
from core.settings import Settings
from core.tasks import PROJECT_TASKS, TASK_IDS, as_dicts
from media.label_studio_client import LabelStudioClient
from model import YOLOBackend

logger = logging.getLogger("cli")

NAME = "predict"
HELP = "predict tasks (ids, a tasks file, or every task without this model version's prediction) and upload"


@dataclass
class Failure:
    task_id: Any
    reason: str


@dataclass
class Work:
    """What a run predicts, found before the first prediction; `failures`: tasks that could not be fetched."""

    label_config: str
    model_version: str
    tasks: list[dict]
    failures: list[Failure]
    project: LabelStudioClient | None


def add_arguments(parser: argparse.ArgumentParser, settings: Settings) -> None:
    add_label_studio_arguments(parser, settings)
    parser.add_argument("--project", type=int, required=True, help="Label Studio project id")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--tasks", help='task ids "1,2,3", or a JSON file holding a list of ids or of {"id", "data"} objects'
    )
    which.add_argument(
        "--all-tasks",
        action="store_true",
        help="every task of the project without a prediction of this model version (resumable)",
    )
    parser.add_argument(
        "--dry-run",
        metavar="OUT.json",
        type=Path,
        help="write the predictions to this file instead of uploading",
    )
    parser.add_argument(
        "--label-config",
        metavar="CONFIG.xml",
        type=Path,
        help="use this labeling config instead of the project's (e.g. to try one with --dry-run)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=1, help="tasks per prediction call (default 1; more helps images)"
    )


def check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    needs_label_studio = not (
        args.dry_run and args.label_config and args.tasks and _holds_task_data(args.tasks)
    )
    if needs_label_studio and not has_label_studio(args):
        parser.error(NEEDS_LABEL_STUDIO)


def run(args: argparse.Namespace, settings: Settings) -> int:
    prepare_process()
    settings = with_label_studio(settings, args.ls_url, args.ls_api_key)
    try:
        spec = read_task_spec(args.tasks) if args.tasks else None
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_NOTHING_RAN

    backend = YOLOBackend(settings)
    try:
        work = find_work(backend, args, spec)
    except Exception as error:
        print(f"error: {describe(error)}", file=sys.stderr)
        backend.close()
        return EXIT_NOTHING_RAN
    print(f"Model version {work.model_version}: {len(work.tasks)} task(s) to predict", file=sys.stderr)
    failures = work.failures + predict_work(backend, work, args.batch_size, args.dry_run)
    return report(len(work.tasks) + len(work.failures), failures, dry_run=bool(args.dry_run))


def read_task_spec(spec: str) -> list[int] | list[dict]:
    """`--tasks`: "1,2,3", or a JSON file with [1, 2] or [{"id": 1, "data": {...}}, ...]."""
    path = Path(spec)
    if path.suffix.lower() == ".json" or path.is_file():
        try:
            items = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"{spec} cannot be read as JSON: {error}") from None
    else:
        try:
            items = [int(part) for part in spec.split(",") if part.strip()]
        except ValueError:
            raise ValueError(f'--tasks "{spec}" is neither a file nor task ids like 1,2,3') from None
    if not isinstance(items, list) or not items:
        raise ValueError(f"{spec} holds no tasks (expected a non-empty list)")
    try:
        return TASK_IDS.validate_python(items)
    except ValidationError:
        pass
    try:
        return as_dicts(PROJECT_TASKS.validate_python(items))
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ValueError(
            f'{spec}: every item must be a task id, or every item an object with "id" and "data" '
            f"(item {where}: {first['msg']})"
        ) from None


def _holds_task_data(spec: str) -> bool:
    try:
        return isinstance(read_task_spec(spec)[0], dict)
    except ValueError:
        return False


def find_work(backend: YOLOBackend, args: argparse.Namespace, spec: list[int] | list[dict] | None) -> Work:
    """The labeling config, the model version and the tasks: from the command line or Label Studio."""
    project = label_studio(args) if has_label_studio(args) else None
    if args.label_config:
        label_config = args.label_config.read_text(encoding="utf-8")
    else:
        label_config = project.label_config(args.project)
    model_version = backend.model_version(label_config)
    work = Work(label_config, model_version, tasks=[], failures=[], project=project)
    if args.all_tasks:
        # The whole list before any upload: the pages stay stable while predictions are added.
        work.tasks = [_data_only(t) for t in project.tasks(args.project, without_model_version=model_version)]
    elif spec and isinstance(spec[0], dict):
        work.tasks = spec
    else:
        for task_id in tqdm(spec, desc="Fetching tasks", unit="task", leave=False):
            try:
                work.tasks.append(_data_only(project.task(task_id)))
            except Exception as error:
                work.failures.append(Failure(task_id, f"could not be fetched: {describe(error)}"))
    return work


def _data_only(task: dict) -> dict:
    """The task as the command predicts it: its id and data (the configured models, as before)."""
    return {"id": task["id"], "data": task["data"]}


def predict_work(backend: YOLOBackend, work: Work, batch_size: int, dry_run: Path | None) -> list[Failure]:
    """Predict and upload (or, for a dry run, write to `dry_run`) every task; the backend is closed after."""
    predictions: list[dict] = []
    deliver = predictions.append if dry_run else (lambda prediction: upload(work.project, prediction))
    try:
        with tqdm(total=len(work.tasks), desc="Predicting", unit="task") as progress:
            return predict_and_deliver(backend, work.label_config, work.tasks, deliver, batch_size, progress)
    finally:
        backend.close()
        if dry_run:
            dry_run.write_text(json.dumps(predictions, indent=1), encoding="utf-8")
            print(f"Wrote {len(predictions)} prediction(s) to {dry_run}", file=sys.stderr)


def upload(project: LabelStudioClient, prediction: dict) -> None:
    project.create_prediction(
        prediction["task"], prediction["result"], prediction["score"], prediction["model_version"]
    )


def batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def predict_and_deliver(
    backend: YOLOBackend,
    label_config: str,
    tasks: list[dict],
    deliver: Callable[[dict], None],
    batch_size: int,
    progress: tqdm,
) -> list[Failure]:
    """Predict `tasks` a batch at a time and hand each prediction to `deliver`; return the failures.

    A task-level problem (its media, its upload) spoils that task only. A problem with the labeling
    config or the models would spoil every task the same way, so the run stops there.
    """
    failures: list[Failure] = []
    for position, batch in enumerate(batches(tasks, batch_size)):
        try:
            run = backend.predict(batch, label_config, missing_key_fails_request=False)
        except (LabelingConfigError, ModelError) as error:
            remaining = tasks[position * batch_size :]
            failures.extend(Failure(task["id"], error.message) for task in remaining)
            progress.update(len(remaining))
            break
        except BackendError as error:
            failures.extend(Failure(task["id"], error.message) for task in batch)
            progress.update(len(batch))
            continue
        for name, message in run.control_errors.items():
            logger.warning("Control %s made no predictions: %s", name, message)
        for task, result in zip(batch, run.results(), strict=True):
            if "error" in result:
                failures.append(Failure(task["id"], result["error"]))
                continue
            try:
                deliver({"task": task["id"], **result})
            except Exception as error:  # an upload refused or cut off spoils this task only
                failures.append(Failure(task["id"], f"upload failed: {describe(error)}"))
        progress.update(len(batch))
        progress.set_postfix(failed=len(failures))
    return failures


def report(total: int, failures: list[Failure], dry_run: bool) -> int:
    """Print how many tasks were predicted and why the others failed; return the exit status."""
    done = total - len(failures)
    print(f"{done} of {total} task(s) predicted" + (", not uploaded (dry run)" if dry_run else ""))
    if not failures:
        return EXIT_OK
    print(f"{len(failures)} task(s) failed:")
    for failure in failures:
        print(f"  task {failure.task_id}: {failure.reason}")
    return EXIT_TASKS_FAILED
