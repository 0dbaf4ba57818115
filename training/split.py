"""Which annotated tasks are held out for evaluation: decided by a stable hash of each task's id.

A seeded shuffle of the whole task list reshuffles when tasks are added, so images held out in one job
were trained on in the next, and the served model was judged on images it had learnt. Here a task's
side depends on its id alone (`position`, a number in [0, 1) from SHA-256): the same task is on the
same side in every job, whatever else the project holds.

Two rules keep that true in small projects too:
- a task held out by the previous version of the control (its `dataset.json`) stays held out (`sticky`);
- when the hash holds out no task at all, the task whose position comes closest is held out (and,
  through `sticky`, stays so). Nothing is ever moved from held-out to train, not even to give a class
  a held-out example: a class without one is reported, and the decision rests on the others.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from core.errors import TrainingDataError

VAL_FRACTION = 0.2  # images: about a fifth held out
_SALT = b"yolo-ls-backend:held-out:"


def position(task_id: int) -> float:
    """Where a task falls in [0, 1): the first 8 bytes of SHA-256 of its id, as a fraction.

    >>> position(1) == position(1) and 0 <= position(1) < 1
    True
    """
    digest = hashlib.sha256(_SALT + str(int(task_id)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class Split:
    """`held_out(task)` for one job; `sticky`: the task ids the control's previous version held out."""

    fraction: float = VAL_FRACTION
    sticky: frozenset[int] = field(default_factory=frozenset)

    def held_out(self, task_id: int) -> bool:
        return self.fraction >= 1.0 or int(task_id) in self.sticky or position(task_id) < self.fraction

    def settle(self, train: Collection[int], val: Collection[int]) -> list[int]:
        """Task ids to move from train to held-out: the closest one when nothing is held out (empty
        otherwise). Refuses a split with nothing left to train on."""
        if not val and len(train) >= 2:
            return [min(train, key=position)]
        if not train and self.fraction < 1.0:
            raise TrainingDataError(
                f"all {len(val)} annotated task(s) are held out for evaluation (the same tasks in every "
                "job); annotate more tasks to train on"
            )
        return []


def split_ids(task_ids: Iterable[int], split: Split) -> tuple[list[int], list[int]]:
    """(train ids, held-out ids), each in the order given, after `settle`.

    >>> train, val = split_ids(range(1, 11), Split(0.2))
    >>> sorted(train + val) == list(range(1, 11)) and len(val) >= 1
    True
    """
    ids = list(task_ids)
    val = [task_id for task_id in ids if split.held_out(task_id)]
    train = [task_id for task_id in ids if not split.held_out(task_id)]
    moved = set(split.settle(train, val))
    held = set(val) | moved
    return [t for t in train if t not in moved], [t for t in ids if t in held]
