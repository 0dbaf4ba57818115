"""One training job, the same skeleton for every kind of control (as Ultralytics' `BaseTrainer`).

    sweep -> base -> free disk -> draft version -> collect -> train -> evaluate -> decide
          -> serving extras (when promoting) -> publish -> prune

`TrainingJob.run` is the skeleton; a kind (`training/image_job.py` for YOLO image models,
`training/timeline.py` for a TimelineLabels head) fills in the named steps. Progress goes through the
`reporter` the job is given (`phase`, `epoch`; the job state file today, a queue's job meta tomorrow).

What every kind gets from the skeleton:
- the version is written as a partial folder and renamed when complete (`VersionStore.draft`), and
  whatever the job leaves in it (the dataset's image links) is removed however the job ends;
- a stable split by task id (`training/split.py`), held-out tasks of the previous version kept;
- one "publish a version" step: metrics.json, the rename and, when the decision is to promote and the
  served version is still the one the job compared against, the pointer switch (compare-and-swap);
- pruning to MODEL_VERSIONS_KEPT, never the served version.

A kind may add what serving the new version needs before it is published (`serving_extras`, only when
promoting: the image kind's checked INT8 export), so the version is served at its best from its first
request; its figures join metrics.json and the job's message.
"""

from __future__ import annotations

import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from training.spec import TrainingSpec
from training.split import Split
from training.versions import DATASET, Draft, VersionStore, check_free_disk, write_json_atomic

Picked = Iterable[tuple[dict, list[dict]]]  # (task, its latest annotation's result items of the control)


class Reporter(Protocol):
    """What a job reports through; `job.version` names the version it writes."""

    job: Any

    def phase(self, name: str) -> None: ...

    def epoch(self, epoch: int, epochs: int, metrics: dict[str, float]) -> None: ...


@dataclass
class Outcome:
    version: str
    promoted: bool
    message: str


@dataclass
class Base:
    """What a job starts from and compares against."""

    name: str  # the served version's name, or the configured model_path
    served: str | None  # the pointer at the job's start (None: the configured model): the swap's compare
    size: int = 0  # bytes of its weights (the free-disk check)
    model: Any = None  # the kind's handle: weights path, a loaded head


@dataclass
class Extras:
    """What `serving_extras` made: its metrics.json entries and the sentence for the job's message."""

    metrics: dict
    sentence: str


@dataclass
class Collected:
    """What `collect` made: the kind's training data, and dataset.json's content."""

    data: Any
    summary: dict
    notes: list[str]  # said in the job's message and metrics.json (classes that cannot be scored)


class TrainingJob(ABC):
    """One job of one control; subclasses fill in the steps."""

    val_fraction: float = 0.2
    collect_phase = "fetching annotations"

    def __init__(self, settings: Any, store: VersionStore, reporter: Reporter, log: Callable = print):
        self.settings = settings
        self.store = store
        self.reporter = reporter
        self.log = log

    def run(self, project: str, spec: TrainingSpec, picked: Picked) -> Outcome:
        """The skeleton: every kind's job, from the annotations to a published version."""
        control = spec.from_name
        swept = self.store.sweep(project, control)  # what a killed job of this control left
        if swept:
            self.log(f"removed {len(swept)} partial version(s) left by a killed job")
        base = self.base(project, spec, self.store.served(project, control))
        check_free_disk(self.store.model_root, max(self.settings.training_min_free_bytes, 4 * base.size))
        split = Split(self.val_fraction, self.store.held_out_before(project, control))
        with self.store.draft(project, control) as draft:
            self.reporter.job.version = draft.name
            try:
                self.reporter.phase(self.collect_phase)
                collected = self.collect(project, spec, picked, draft, split)
                write_json_atomic(draft.path / DATASET, collected.summary)
                self.reporter.phase("training")
                self.train(spec, collected.data, base, draft)
                self.reporter.phase("evaluating")
                before, after = self.evaluate(spec, collected.data, base, draft)
                promote, decision = self.decide(spec, before, after, base)
                extras = self.serving_extras(spec, collected.data, draft) if promote else None
            finally:
                self.cleanup(draft)
            decision = "; ".join([decision, *collected.notes, *([extras.sentence] if extras else [])])
            metrics = {
                **self.metrics(spec, base, before, after, draft),
                **(extras.metrics if extras else {}),
                "served_at_start": base.served or "base",
                "notes": collected.notes,
                "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            published = self.store.publish(draft, base.served, metrics, promote, decision)
        pruned = self.store.prune(project, control, self.settings.model_versions_kept)
        if pruned:
            self.log(f"removed old version(s) {', '.join(pruned)} (MODEL_VERSIONS_KEPT)")
        return Outcome(published.version, published.promoted, published.decision)

    # -- the steps of a kind --------------------------------------------------------------------------

    @abstractmethod
    def base(self, project: str, spec: TrainingSpec, served: str | None) -> Base:
        """The model the job starts from and compares against (`served`: the pointer now)."""

    @abstractmethod
    def collect(
        self, project: str, spec: TrainingSpec, picked: Picked, draft: Draft, split: Split
    ) -> Collected:
        """Fetch what the annotated tasks name and make the training data (in `draft.path`)."""

    @abstractmethod
    def train(self, spec: TrainingSpec, data: Any, base: Base, draft: Draft) -> None:
        """Write the new weights into `draft.path` (WEIGHTS)."""

    @abstractmethod
    def evaluate(self, spec: TrainingSpec, data: Any, base: Base, draft: Draft) -> tuple[Any, Any]:
        """(served model's scores or None, new model's scores) on the same held-out tasks."""

    @abstractmethod
    def decide(self, spec: TrainingSpec, before: Any, after: Any, base: Base) -> tuple[bool, str]:
        """Whether to promote, and the sentence that says why."""

    @abstractmethod
    def metrics(self, spec: TrainingSpec, base: Base, before: Any, after: Any, draft: Draft) -> dict:
        """metrics.json's figures (the skeleton adds the decision)."""

    def serving_extras(self, spec: TrainingSpec, data: Any, draft: Draft) -> Extras | None:
        """What serving the version to be promoted needs, made while the job's data is at hand (none)."""
        return None

    def cleanup(self, draft: Draft) -> None:
        """Remove what only the run needed (however it ended); the summary stays."""
        shutil.rmtree(draft.path / "dataset", ignore_errors=True)


def held_out_note(labels: list[str]) -> list[str]:
    """The message part for classes the held-out tasks do not show."""
    if not labels:
        return []
    return [
        f"no held-out example of {', '.join(repr(label) for label in labels)}: not scored (the split "
        "stays the same in every job; annotate more tasks to score it)"
    ]


def file_size(path: Path | None) -> int:
    try:
        return path.stat().st_size if path is not None else 0
    except OSError:
        return 0
