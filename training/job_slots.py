"""How many local job processes run at once on this host, and the order in which waiting ones start.

Everything is an `fcntl.flock` on a file under the jobs folder, so every process on the host (each
gunicorn worker, the CLI) sees the same slots, and the kernel drops a lock when its process ends however
it ends (kill -9 included): no stale slot, no stranded queue.

- `admission.lock`: held for a moment by a submitter while it decides (fold, queue, refuse) and starts
  the job's process.
- `<job id>.alive`: taken by the submitter and inherited by the job's process, held from submission to
  the end of the job, waiting included. A job that says it is queued or running while nobody holds it
  was killed.
- `slots/<i>.lock` (i < TRAINING_MAX_JOBS): held by a running job for its life.
- `ready/<created>-<job id>`: held by a waiting job that already holds its control's lock; the oldest
  such job takes the next free slot (first come, first served across controls).

A waiting job is a small process of this module (the standard library only, a few MB): it waits for its
control's lock (the previous job of the control), then for its turn and a slot, then `exec`s the job's
command with those locks inherited. It keeps the job's environment (the Label Studio key is never
written anywhere), and a slot freed by any process is seen within a poll, so no queued job waits for a
web request to be started.

Run as `python job_slots.py <jobs dir> <slots> <control lock> <ready name> -- <command...>`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

POLL_S = 0.2


def try_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive flock on `path`, or None when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


def is_held(path: Path) -> bool:
    """Whether some process holds the flock on `path` (an absent file is not held)."""
    if not path.exists():
        return False
    descriptor = try_lock(path)
    if descriptor is None:
        return True
    os.close(descriptor)
    return False


@contextlib.contextmanager
def admission(jobs_dir: Path) -> Iterator[None]:
    """The host-wide lock of submitters (blocking, held for milliseconds)."""
    path = Path(jobs_dir) / "admission.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        yield


def free_slots(jobs_dir: Path, slots: int) -> int:
    return sum(not is_held(Path(jobs_dir) / "slots" / f"{i}.lock") for i in range(slots))


def ready_name(created_at: float, job_id: str) -> str:
    """Sorts by submission time: the oldest waiting job goes first."""
    return f"{created_at:017.6f}-{job_id}"


def waiting_ready(jobs_dir: Path) -> list[str]:
    """Names of the jobs waiting for a slot (their control's lock held), oldest first; stale ones go."""
    folder = Path(jobs_dir) / "ready"
    names = []
    for path in sorted(folder.glob("*")) if folder.is_dir() else []:
        if path.name.startswith("."):
            continue  # being created (locked before it gets its name)
        if is_held(path):
            names.append(path.name)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # its process died while waiting
    return names


def _hold_ready(jobs_dir: Path, name: str) -> int:
    """Join the ready line: the file is locked before it gets its name, so nobody sees it unlocked."""
    folder = Path(jobs_dir) / "ready"
    hidden = folder / f".{name}"
    descriptor = try_lock(hidden)
    assert descriptor is not None  # a fresh name of our own
    os.replace(hidden, folder / name)
    return descriptor


def _take_slot(jobs_dir: Path, slots: int, name: str) -> int | None:
    """A slot's locked descriptor when this job is the oldest ready one and a slot is free."""
    ready = waiting_ready(jobs_dir)
    if ready and ready[0] != name:
        return None
    for index in range(slots):
        descriptor = try_lock(Path(jobs_dir) / "slots" / f"{index}.lock")
        if descriptor is not None:
            return descriptor
    return None


def _wait_for(take: Callable[[], int | None]) -> int:
    while (descriptor := take()) is None:
        time.sleep(POLL_S)
    return descriptor


def wait_and_exec(jobs_dir: Path, slots: int, control_lock: Path, name: str, command: list[str]) -> None:
    """The waiting job: its control's lock, then its turn and a slot; then the job itself, in this process."""
    control = _wait_for(lambda: try_lock(control_lock))
    ready = _hold_ready(jobs_dir, name)
    slot = _wait_for(lambda: _take_slot(jobs_dir, slots, name))
    with contextlib.suppress(FileNotFoundError):
        (Path(jobs_dir) / "ready" / name).unlink()
    os.close(ready)
    for descriptor in (control, slot):
        os.set_inheritable(descriptor, True)  # the job's process holds both until it ends
    sys.stdout.flush()
    os.execv(command[0], [*command, str(control)])


def main(argv: list[str]) -> None:
    jobs_dir, slots, control_lock, name, separator, *command = argv
    if separator != "--" or not command:
        raise SystemExit("usage: job_slots.py <jobs dir> <slots> <control lock> <ready name> -- <command...>")
    wait_and_exec(Path(jobs_dir), int(slots), Path(control_lock), name, command)


if __name__ == "__main__":
    main(sys.argv[1:])
