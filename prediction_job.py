"""One prediction job: pre-label tasks of a Label Studio project in the background, with progress.

Runs where a job runs (its own local process: `python prediction_job.py <job state file> <lock fd>`,
or an RQ worker through `worker.py`), never in a web worker's threads. It finds the tasks that have no
prediction of the model version served now (Label Studio filters server-side; only their ids are kept),
then a batch at a time: fetches those tasks again with the same filter (a task predicted meanwhile, by
Retrieve Predictions or an earlier attempt of this job, is skipped and counted), predicts them through
`YOLOBackend.predict` (the same path as /predict: batching, limits, errors per task) and stores the
batch's predictions in one call (Label Studio's calls on a thread of their own, `StudioCalls`, while the
model predicts). So a job run twice, resumed or retried after a crash never stores a
second prediction for a task. Jobs of one project run one after the other (`reporter.admitted`), so two
of them never predict the same task at once.

A failing task is counted and its error kept (the first few), never stops the job; a labeling config or
model that cannot run fails the job (every task would fail the same way). Cancel is checked between
batches: what was stored stays.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import BackendError, LabelingConfigError, LabelStudioAccessError, ModelError
from core.settings import Settings
from media.label_studio_client import LabelStudioClient, describe
from model import YOLOBackend
from training.jobs import JobReporter, as_job_process, run_reported

logger = logging.getLogger("prediction_job")


@dataclass
class Counts:
    total: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)

    def fail(self, task_id: Any, error: str) -> None:
        self.failed += 1
        if len(self.errors) < 10:
            self.errors.append(f"task {task_id}: {error}")


class PredictionJob:
    """Predict and store the tasks of one project that lack the served model version's prediction."""

    def __init__(self, backend: YOLOBackend, client: LabelStudioClient, reporter: Any, batch_tasks: int = 32):
        self.backend = backend
        self.client = client
        self.reporter = reporter
        self.batch_tasks = batch_tasks  # fetched, predicted and stored together; a cancel waits for one

    def run(self, project: str, label_config: str = "", task_ids: Sequence[int] | None = None) -> Counts:
        self.reporter.phase("finding tasks")
        label_config = label_config or self.client.label_config(project)
        version = self.backend.model_version(label_config, project)
        self.reporter.job.model_version = version
        todo = list(self.client.task_ids(project, without_model_version=version, ids=task_ids))
        asked = len(set(task_ids)) if task_ids is not None else self.client.task_count(project)
        counts = Counts(total=max(asked, len(todo)), skipped=max(0, asked - len(todo)))
        self.reporter.phase("predicting")
        self._report(counts)
        batches = list(_batches(todo, self.batch_tasks))
        with StudioCalls(self.client, project, version, counts) as studio:
            ahead = studio.fetch(batches[0]) if batches else None
            for index, batch in enumerate(batches):
                if self.reporter.cancel_requested():
                    studio.settle()
                    self.reporter.cancelled(f"cancelled: {_summary(counts)}; what was stored stays")
                    return counts
                tasks = studio.fetched(ahead, batch)
                ahead = studio.fetch(batches[index + 1]) if index + 1 < len(batches) else None
                studio.store(self._predict(project, label_config, tasks, counts))
                self._report(counts)
            studio.settle()
        self._report(counts)
        self.reporter.finish(_summary(counts))
        return counts

    def _predict(
        self, project: str, label_config: str, tasks: list[dict], counts: Counts
    ) -> list[dict[str, Any]]:
        """The predictions of `tasks` to store; a task that failed is counted instead."""
        if not tasks:
            return []
        try:
            run = self.backend.predict(tasks, label_config, project=project, missing_key_fails_request=False)
        except (LabelingConfigError, ModelError):
            raise  # every task would fail the same way: the job fails, saying why
        except BackendError as error:
            for task in tasks:
                counts.fail(task["id"], error.message)
            return []
        predictions = []
        for task, result in zip(tasks, run.results(), strict=True):
            if "error" in result:
                counts.fail(task["id"], result["error"])
            else:
                predictions.append({"task": task["id"], **result})
        return predictions

    def _report(self, counts: Counts) -> None:
        self.reporter.progress(counts.done, counts.total, counts.failed, counts.skipped, counts.errors)


class StudioCalls:
    """Label Studio's side of a job on a thread of its own: the next batch's tasks are fetched and the
    last batch's predictions stored while the model predicts the current batch (done in turn, these
    calls were a third of a job's time; bench/RESULTS.md). One thread, so calls keep their order; at most
    one fetch and one store in flight. `counts` is only changed in the job's own thread."""

    def __init__(self, client: LabelStudioClient, project: str, version: str, counts: Counts):
        self.client, self.project, self.version, self.counts = client, project, version, counts
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="label-studio")
        self._stored: tuple[Future, list[dict[str, Any]]] | None = None

    def __enter__(self) -> StudioCalls:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)

    def fetch(self, batch: list[int]) -> Future:
        """Fetch `batch` again, without the tasks predicted since the job listed them."""
        return self._thread.submit(
            lambda: list(self.client.tasks(self.project, without_model_version=self.version, ids=batch))
        )

    def fetched(self, future: Future, batch: list[int]) -> list[dict]:
        """The tasks of `batch` to predict: a task predicted meanwhile is skipped, a failed fetch counted."""
        try:
            tasks = future.result()
        except LabelStudioAccessError as error:
            for task_id in batch:
                self.counts.fail(task_id, error.message)
            return []
        self.counts.skipped += len(batch) - len(tasks)  # predicted since the job listed them
        return tasks

    def store(self, predictions: list[dict[str, Any]]) -> None:
        """Store `predictions` in one call, after the store before it is settled."""
        self.settle()
        if predictions:
            call = self._thread.submit(self.client.create_predictions, self.project, predictions)
            self._stored = (call, predictions)

    def settle(self) -> None:
        """Wait for the store in flight and count its tasks as done or failed."""
        if self._stored is None:
            return
        call, predictions = self._stored
        self._stored = None
        try:
            call.result()
        except BackendError as error:
            for prediction in predictions:
                self.counts.fail(prediction["task"], f"upload failed: {describe(error)}")
            return
        self.counts.done += len(predictions)


def _batches(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _summary(counts: Counts) -> str:
    return (
        f"{counts.done} of {counts.total} task(s) predicted, {counts.failed} failed, "
        f"{counts.skipped} skipped (already predicted)"
    )


def execute(reporter: Any, settings: Settings) -> int:
    """Run the job `reporter` holds, once admitted (one job per project at a time); 0 when it succeeded."""
    job = reporter.job
    with reporter.admitted(f"predict-{job.project}", settings.jobs_max_running) as admitted:
        if not admitted:
            reporter.cancelled("cancelled before it started")
            return 0
        backend = YOLOBackend(settings)
        try:
            run_reported(reporter, lambda: _predict_project(backend, reporter, settings))
        finally:
            backend.close()
    return 0 if reporter.job.state in ("succeeded", "cancelled") else 1


def _predict_project(backend: YOLOBackend, reporter: Any, settings: Settings) -> None:
    client = LabelStudioClient(settings.label_studio_url, settings.label_studio_api_key.get_secret_value())
    if not client.configured:
        raise LabelStudioAccessError(
            "a prediction job needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY in the environment "
            "of the process that runs it (the worker's own, never stored with the job)"
        )
    job = reporter.job
    PredictionJob(backend, client, reporter, settings.prediction_job_batch).run(
        job.project, job.params.get("label_config") or "", job.params.get("task_ids")
    )


def main(state_file: Path) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return execute(JobReporter(state_file), as_job_process(Settings()))


if __name__ == "__main__":
    os.environ.setdefault("ULTRALYTICS_SAFE_LOAD", "true")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    sys.exit(main(Path(sys.argv[1])))
