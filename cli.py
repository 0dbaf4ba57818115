"""Predict Label Studio tasks in bulk, in this process, and upload the predictions.

For jobs too long for Label Studio's predict timeout (long videos, whole projects): the same pipeline
as the server (`YOLOBackend.predict`), run here, with each prediction uploaded through the Label
Studio SDK as soon as it is made.

    python cli.py --ls-url http://localhost:8080 --ls-api-key KEY --project 1 --tasks 1,2,3
    python cli.py --project 1 --tasks tasks.json          # a list of ids, or of {"id", "data"} objects
    python cli.py --project 1 --all-tasks                 # tasks without a prediction of this model version
    python cli.py --project 1 --tasks 1,2 --dry-run predictions.json   # write, do not upload
    python cli.py export-int8 --project 1 [--control label] [--limit 64]  # INT8 export, calibrated

The environment is read once into the server's `core.settings.Settings`: its `LABEL_STUDIO_URL` and
`LABEL_STUDIO_API_KEY` are the defaults of `--ls-url` and `--ls-api-key` (the key may be a personal
access token or a legacy token), the rest (MODEL_ROOT, DEVICE, ...) is used as the server uses it. A task that fails is reported at the end and does not
stop the others; the exit status is 1 when any task failed, 2 when nothing could run at all.
`--all-tasks` skips tasks that already have a prediction of this model version, so an interrupted run
continues where it stopped when started again.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError
from tqdm import tqdm

from core.errors import BackendError, LabelingConfigError, ModelError
from core.settings import Settings
from core.tasks import PROJECT_TASKS, TASK_IDS, as_dicts
from inference.int8_export import MIN_CALIBRATION_IMAGES
from model import Int8Export, YOLOBackend

logger = logging.getLogger("cli")

EXIT_OK, EXIT_TASKS_FAILED, EXIT_NOTHING_RAN = 0, 1, 2


@dataclass
class Failure:
    task_id: Any
    reason: str


# -- arguments -----------------------------------------------------------------------------------------


def add_label_studio_arguments(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """`--ls-url` and `--ls-api-key`, every command's, defaulting to LABEL_STUDIO_URL and ..._API_KEY."""
    parser.add_argument(
        "--ls-url", default=settings.label_studio_url, help="Label Studio URL (default: $LABEL_STUDIO_URL)"
    )
    parser.add_argument(
        "--ls-api-key",
        default=settings.label_studio_api_key.get_secret_value(),
        help="personal access token or legacy token (default: $LABEL_STUDIO_API_KEY)",
    )


def parse_args(argv: Sequence[str] | None, settings: Settings) -> argparse.Namespace:
    """The command line; `--ls-url` and `--ls-api-key` default to `settings` (LABEL_STUDIO_URL, ..._API_KEY)."""
    parser = argparse.ArgumentParser(
        prog="cli.py",
        description="Run the YOLO backend on Label Studio tasks and upload the predictions.",
    )
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
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    needs_label_studio = not (
        args.dry_run and args.label_config and args.tasks and _holds_task_data(args.tasks)
    )
    if needs_label_studio and not (args.ls_url and args.ls_api_key):
        parser.error("give --ls-url and --ls-api-key (or set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY)")
    return args


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


# -- Label Studio ----------------------------------------------------------------------------------------


class LabelStudioProject:
    """The few Label Studio calls the CLI makes, through the SDK (which also renews access tokens)."""

    def __init__(self, url: str, api_key: str, project_id: int):
        from label_studio_sdk.client import LabelStudio

        self.client = LabelStudio(base_url=url.rstrip("/"), api_key=api_key)
        self.project_id = project_id

    def label_config(self) -> str:
        return self.client.projects.get(id=self.project_id).label_config or ""

    def task(self, task_id: int) -> dict:
        task = self.client.tasks.get(id=str(task_id))
        return {"id": task.id, "data": dict(task.data or {})}

    def tasks_without_prediction(self, model_version: str) -> list[dict]:
        """Every task of the project with no prediction of `model_version`, fetched before any upload.

        Label Studio filters server-side (Data Manager filter on prediction model versions), so a project
        whose tasks are mostly done costs little; collecting the whole list first keeps the pages stable
        while predictions are added.
        """
        query = {
            "filters": {
                "conjunction": "and",
                "items": [
                    {
                        "filter": "filter:tasks:predictions_model_versions",
                        "operator": "not_contains",
                        "type": "List",
                        "value": [model_version],
                    }
                ],
            }
        }
        pages = self.client.tasks.list(
            project=self.project_id, fields="task_only", query=json.dumps(query), page_size=100
        )
        return [{"id": task.id, "data": dict(task.data or {})} for task in pages]

    def all_tasks(self) -> list[dict]:
        """Every task of the project (its data only), paged through the SDK."""
        pages = self.client.tasks.list(project=self.project_id, fields="task_only", page_size=100)
        return [{"id": task.id, "project": self.project_id, "data": dict(task.data or {})} for task in pages]

    def upload(self, prediction: dict) -> None:
        self.client.predictions.create(
            task=int(prediction["task"]),
            result=prediction["result"],
            score=prediction["score"],
            model_version=prediction["model_version"],
        )


def describe(error: Exception) -> str:
    """A one-line reason for an error from the SDK, httpx or the backend."""
    if isinstance(error, BackendError):
        return error.message
    status = getattr(error, "status_code", None)
    if status is not None:
        body = getattr(error, "body", None)
        detail = body.get("detail") or body if isinstance(body, dict) else body
        return f"Label Studio answered HTTP {status}: {str(detail)[:300]}"
    return f"{type(error).__name__}: {str(error)[:300]}"


# -- the run ---------------------------------------------------------------------------------------------


def batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def predict_and_deliver(
    backend: YOLOBackend,
    label_config: str,
    tasks: list[dict],
    deliver,
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


@dataclass
class Work:
    """What a run predicts, found before the first prediction; `failures`: tasks that could not be fetched."""

    label_config: str
    model_version: str
    tasks: list[dict]
    failures: list[Failure]
    project: LabelStudioProject | None


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    settings = settings or Settings()
    if argv and argv[0] in TRAINING_COMMANDS:
        return training_main(argv, settings)
    if argv and argv[0] == EXPORT_INT8_COMMAND:
        return export_int8_main(argv[1:], settings)
    args = parse_args(argv, settings)
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


def prepare_process() -> None:
    """As start.sh does for the server: load weight files without unpickling arbitrary code, and never
    pip-install at run time. Ultralytics reads both when it is first imported, which happens later."""
    os.environ.setdefault("ULTRALYTICS_SAFE_LOAD", "true")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def with_label_studio(settings: Settings, url: str, api_key: str) -> Settings:
    """`settings` with the Label Studio address and key of the command line (whose defaults they are)."""
    return settings.model_copy(
        update={"label_studio_url": url.rstrip("/"), "label_studio_api_key": SecretStr(api_key)}
    )


def find_work(backend: YOLOBackend, args: argparse.Namespace, spec: list[int] | list[dict] | None) -> Work:
    """The labeling config, the model version and the tasks: from the command line or Label Studio."""
    project = None
    if args.ls_url and args.ls_api_key:
        project = LabelStudioProject(args.ls_url, args.ls_api_key, args.project)
    if args.label_config:
        label_config = args.label_config.read_text(encoding="utf-8")
    else:
        label_config = project.label_config()
    model_version = backend.model_version(label_config)
    work = Work(label_config, model_version, tasks=[], failures=[], project=project)
    if args.all_tasks:
        work.tasks = project.tasks_without_prediction(model_version)
    elif spec and isinstance(spec[0], dict):
        work.tasks = spec
    else:
        for task_id in tqdm(spec, desc="Fetching tasks", unit="task", leave=False):
            try:
                work.tasks.append(project.task(task_id))
            except Exception as error:
                work.failures.append(Failure(task_id, f"could not be fetched: {describe(error)}"))
    return work


def predict_work(backend: YOLOBackend, work: Work, batch_size: int, dry_run: Path | None) -> list[Failure]:
    """Predict and upload (or, for a dry run, write to `dry_run`) every task; the backend is closed after."""
    predictions: list[dict] = []
    deliver = predictions.append if dry_run else work.project.upload
    try:
        with tqdm(total=len(work.tasks), desc="Predicting", unit="task") as progress:
            return predict_and_deliver(backend, work.label_config, work.tasks, deliver, batch_size, progress)
    finally:
        backend.close()
        if dry_run:
            dry_run.write_text(json.dumps(predictions, indent=1), encoding="utf-8")
            print(f"Wrote {len(predictions)} prediction(s) to {dry_run}", file=sys.stderr)


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


# -- training: train, evaluate, models ----------------------------------------------------------------

TRAINING_COMMANDS = ("train", "evaluate", "models")


def parse_training_args(argv: Sequence[str], settings: Settings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cli.py", description="Train, evaluate and switch models.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("train", "train a new version from the project's annotations and wait for it (tqdm over epochs)"),
        ("evaluate", "how good a model is on the project's annotated tasks, without training"),
        ("models", "list the trained versions with their metrics; --use switches (roll back)"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("--project", type=int, required=True, help="Label Studio project id")
        command.add_argument("--control", help="the control's name (default: every trainable control)")
        add_label_studio_arguments(command, settings)
        if name == "evaluate":
            command.add_argument("--model-path", default="", help="weights in MODEL_ROOT (default: served)")
        if name == "models":
            command.add_argument(
                "--use", metavar="VERSION", help='serve this version ("base": the configured model)'
            )
    return parser.parse_args(argv)


def training_main(argv: Sequence[str], settings: Settings) -> int:
    args = parse_training_args(argv, settings)
    prepare_process()
    settings = with_label_studio(settings, args.ls_url, args.ls_api_key)
    backend = YOLOBackend(settings)
    try:
        if args.command == "models":
            return list_or_use_models(backend, args)
        if not (args.ls_url and args.ls_api_key):
            print("error: give --ls-url and --ls-api-key (or set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY)")
            return EXIT_NOTHING_RAN
        label_config = LabelStudioProject(args.ls_url, args.ls_api_key, args.project).label_config()
        controls = [args.control] if args.control else None
        if args.command == "train":
            return train(backend, args.project, label_config, controls)
        return evaluate_models(backend, args, label_config, controls)
    except Exception as error:
        print(f"error: {describe(error)}", file=sys.stderr)
        return EXIT_NOTHING_RAN
    finally:
        backend.close()


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
    import time

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


def list_or_use_models(backend: YOLOBackend, args: argparse.Namespace) -> int:
    store, project = backend.versions, str(args.project)
    controls = [args.control] if args.control else store.controls(project)
    if args.use:
        if len(controls) != 1:
            print(
                f"error: name the control with --control (this project has: {', '.join(controls) or 'none'})"
            )
            return EXIT_NOTHING_RAN
        if args.use == "base":
            store.unserve(project, controls[0])
        else:
            store.promote(project, controls[0], args.use)
        print(f"{controls[0]}: now serving {args.use}")
        return EXIT_OK
    if not controls:
        print(f"no trained versions for project {project}")
    for control in controls:
        served = store.served(project, control)
        print(f"{control} (serving: {served or 'the configured model'})")
        print(f"  {'version':24} {'metric':>14} {'new':>7} {'before':>7}  decision")
        for version in store.versions(project, control):
            metrics = version.metrics or {}
            new, old = metrics.get("new") or {}, metrics.get("serving") or {}
            metric = main_metric(metrics)
            mark = "*" if version.served else " "
            print(
                f"{mark} {version.name:24} {METRIC_LABELS.get(metric, metric):>14} {_figure(new.get(metric)):>7} "
                f"{_figure(old.get(metric)):>7}  {metrics.get('decision', 'incomplete (failed or running)')}"
            )
    return EXIT_OK


# The figure each kind of version is promoted on, as metrics.json names it, and as the listing shows it.
METRIC_LABELS = {"map50_95": "mAP50-95", "top1_accuracy": "top-1 accuracy", "mean_f1": "mean frame F1"}


def main_metric(metrics: dict[str, Any]) -> str:
    """The key of a version's metrics.json figure that decided its promotion."""
    if metrics.get("kind") == "timeline":
        return "mean_f1"
    return str(metrics.get("metric") or "map50_95")


def _figure(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


def evaluate_models(
    backend: YOLOBackend, args: argparse.Namespace, label_config: str, controls: list[str] | None
) -> int:
    from training_pipeline import TrainingRun, evaluate_project

    for spec in backend.training.specs(label_config, controls):
        run = TrainingRun(backend.settings, _QuietReporter())
        result = evaluate_project(run, str(args.project), spec.from_name, label_config, args.model_path)
        print(f"\n{spec.from_name}: {result.model}")
        print(report_table(result.evaluation))
        worst_missed = sorted((t for t in result.tasks if t.missed), key=lambda t: -t.missed)[:10]
        worst_false = sorted((t for t in result.tasks if t.false), key=lambda t: -t.false)[:10]
        print(
            "most missed regions (task: count): "
            + (", ".join(f"{t.task_id}: {t.missed}" for t in worst_missed) or "none")
        )
        print(
            "most false regions (task: count):  "
            + (", ".join(f"{t.task_id}: {t.false}" for t in worst_false) or "none")
        )
    return EXIT_OK


def report_table(evaluation: Any) -> str:
    """A classification-report-like table: one row per label, then all labels together."""
    lines = [f"{'label':>20} {'precision':>9} {'recall':>7} {'mAP50':>7} {'mAP50-95':>9} {'support':>8}"]
    for label, row in evaluation.per_class.items():
        lines.append(
            f"{label:>20} {row.get('precision', 0):9.3f} {row.get('recall', 0):7.3f} {_figure(row.get('map50')):>7} "
            f"{_figure(row.get('map50_95')):>9} {int(row.get('support', 0)):8d}"
        )
    support = sum(int(row.get("support", 0)) for row in evaluation.per_class.values())
    lines.append(
        f"{'all':>20} {evaluation.precision:9.3f} {evaluation.recall:7.3f} {_figure(evaluation.map50):>7} "
        f"{_figure(evaluation.map50_95):>9} {support:8d}"
    )
    if evaluation.metric != "map50_95":  # classify: no mAP, its figure is top-1 accuracy
        lines.append(f"{evaluation.metric}: {evaluation.score:.3f}")
    return "\n".join(lines)


class _QuietReporter:
    def __init__(self):
        from training.jobs import Job

        self.job = Job(id="evaluate", project="", control="")

    def phase(self, name: str) -> None:
        print(f"{name} ...", file=sys.stderr)

    def epoch(self, *args: Any) -> None:
        pass


# -- INT8: export-int8 ------------------------------------------------------------------------------------

EXPORT_INT8_COMMAND = "export-int8"
EXPORT_INT8_HELP = (
    "calibrate and check the INT8 (OpenVINO) export of each image control's model on the project's own "
    'images, into the cache that model_format="openvino-int8" is served from'
)


def add_export_int8_arguments(parser: argparse.ArgumentParser, settings: Settings) -> argparse.ArgumentParser:
    """The options of `export-int8` (on its own parser, or on a subparser of a larger CLI)."""
    parser.add_argument("--project", type=int, required=True, help="Label Studio project id")
    parser.add_argument("--control", help="the control's name (default: every control on an <Image>)")
    parser.add_argument(
        "--limit",
        type=int,
        default=64,
        help="most of the project's images per model (default 64); a fifth are held out for the check",
    )
    add_label_studio_arguments(parser, settings)
    return parser


def parse_export_int8_args(argv: Sequence[str], settings: Settings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"cli.py {EXPORT_INT8_COMMAND}", description=EXPORT_INT8_HELP[0].upper() + EXPORT_INT8_HELP[1:]
    )
    args = add_export_int8_arguments(parser, settings).parse_args(argv)
    if args.limit < MIN_CALIBRATION_IMAGES:
        parser.error(f"--limit must be at least {MIN_CALIBRATION_IMAGES} (images to calibrate and check on)")
    if not (args.ls_url and args.ls_api_key):
        parser.error("give --ls-url and --ls-api-key (or set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY)")
    return args


def export_int8_main(argv: Sequence[str], settings: Settings | None = None) -> int:
    """`cli.py export-int8`: 0 when every model has its checked export, 1 when one was refused or failed,
    2 when nothing could run (Label Studio unreachable, key refused, config without image controls)."""
    settings = settings or Settings()
    args = parse_export_int8_args(argv, settings)
    prepare_process()
    settings = with_label_studio(settings, args.ls_url, args.ls_api_key)
    backend = YOLOBackend(settings)
    try:
        project = LabelStudioProject(args.ls_url, args.ls_api_key, args.project)
        label_config = project.label_config()
        tasks = project.all_tasks()
        print(f"Project {args.project}: {len(tasks)} task(s)", file=sys.stderr)
        # The images are needed only while the export is made: it keeps its accuracy check, not them.
        with tempfile.TemporaryDirectory(prefix="int8-calibration-") as folder:
            exports = backend.export_int8(
                label_config,
                tasks,
                Path(folder),
                project=args.project,
                controls=[args.control] if args.control else None,
                limit=args.limit,
            )
    except Exception as error:
        print(f"error: {describe(error)}", file=sys.stderr)
        return EXIT_NOTHING_RAN
    finally:
        backend.close()
    for export in exports:
        print(describe_int8_export(export))
    return EXIT_TASKS_FAILED if any(export.error for export in exports) else EXIT_OK


def describe_int8_export(export: Int8Export) -> str:
    """One line (and the tasks left out) per model for `export-int8`."""
    head = f"{', '.join(export.controls)} ({export.model_path}):"
    skipped = "".join(f"\n  left out: {reason}" for reason in export.skipped[:10])
    if len(export.skipped) > 10:
        skipped += f"\n  ... and {len(export.skipped) - 10} more"
    if export.error or export.check is None or export.folder is None:
        return f"{head} no INT8 export: {export.error}{skipped}"
    check = export.check
    how = (
        f"made now from {export.images} of the project's images"
        if export.made_now
        else "already made before (kept as it is)"
    )
    return (
        f"{head} INT8 export {how}, checked on {check.held_out_images} held-out images: {check.metric} "
        f".pt {check.pt_score:.3f}, INT8 {check.int8_score:.3f} ({check.drop_points:.2f} points lost)\n"
        f'  {export.folder}\n  served where the control has model_format="openvino-int8" '
        f"(or MODEL_FORMAT=openvino-int8){skipped}"
    )


if __name__ == "__main__":
    os.environ.setdefault("YOLO_VERBOSE", "false")
    sys.exit(main())
