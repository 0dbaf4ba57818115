"""Training jobs: one small runner interface, a local-process runner, job state as JSON files.

A job trains one control of one Label Studio project. Its state lives in `<jobs dir>/<id>.json`
(written atomically by whoever changes it), its output in `<id>.log`; every process (each gunicorn
worker, the CLI) reads the same files, so `GET /jobs` answers the same everywhere.

One job per (project, control) at a time, across processes: the job holds an exclusive `fcntl.flock`
on `<jobs dir>/locks/<project>__<control>.lock` for its whole life; the kernel drops it when the job
process ends however it ends (kill -9 included), so no stale lock survives. At most `max_running` jobs
run on the host (`TRAINING_MAX_JOBS`), the rest wait `queued` (`training/job_slots.py`: slots, the
order of waiting jobs, and the small process a waiting job is). A trigger while the control's job runs
queues one follow-up job; later triggers fold into that waiting job (it has not fetched anything yet, so
it trains on the newest annotations). More than `max_queued` waiting jobs on the host: refused (429).

`JobRunner` is all the web layer and the CLI see. The job itself runs `command + [state file]` (the
caller names the entry point: `training_pipeline.py` for kind "train", `prediction_job.py` for
"predict"), which reads its request from the state file and reports through `JobReporter`. A prediction
job holds a lock of its own for its life (any number may exist) and waits in `JobReporter.admitted` for
its project's turn and a running place. The queue runner (`training/rq_runner.py`, RQ on Redis) keeps
the same `Job` shape in RQ's job meta and reports through a `JobReporter` subclass; the jobs do not
change. Cancel: a `<id>.cancel` file a prediction job checks between batches; a training job's process
group is ended.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from core.errors import BackendError, TooManyJobsError
from core.settings import Settings
from training import job_slots
from training.job_slots import is_held, try_lock
from training.versions import read_json, safe_name, write_json_atomic

ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("succeeded", "failed", "cancelled")
KINDS = ("train", "predict")
_KEPT_ERRORS = 10  # a prediction job keeps its first few task errors
_JOB_ID = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
_LOG_TAIL_LINES = 40
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
logger = logging.getLogger(__name__)


class JobNotFoundError(BackendError):
    status_code = 404


@dataclass
class Job:
    """What `GET /jobs/{id}` shows; also the request the job process reads."""

    id: str
    project: str
    control: str  # the control a training job trains; "" for a prediction job (every control)
    kind: str = "train"  # train | predict
    state: str = "queued"  # queued | running | succeeded | failed | cancelled
    phase: str = "queued"  # fetching annotations | writing dataset | training | evaluating | done
    epoch: int = 0
    epochs: int = 0
    metrics: dict[str, float] = field(default_factory=dict)  # the latest epoch's validation metrics
    message: str = ""  # the outcome in one sentence (promoted or why not)
    error: str = ""  # why it failed, with the cause
    version: str = ""  # the version folder this job trains into
    promoted: bool = False
    trigger: str = ""  # START_TRAINING | ANNOTATION_CREATED | cli
    params: dict[str, Any] = field(default_factory=dict)  # what the entry point needs (label config, ...)
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    pid: int | None = None
    log_tail: list[str] = field(default_factory=list)
    # Tasks for a prediction job, epochs for a training job (filled from `epoch`/`epochs` when shown).
    progress: dict[str, int] = field(
        default_factory=lambda: {"done": 0, "total": 0, "failed": 0, "skipped": 0}
    )
    task_errors: list[str] = field(default_factory=list)  # the first few failing tasks, with why
    model_version: str = ""  # what a prediction job stores its predictions under

    def public(self) -> dict[str, Any]:
        """The job without its params (they hold the whole labeling config), with rate and time left."""
        data = asdict(self)
        data.pop("params")
        if self.kind == "train":
            data["progress"] = {"done": self.epoch, "total": self.epochs, "failed": 0, "skipped": 0}
        data["rate"], data["eta_s"] = self.rate_and_eta(data["progress"])
        return data

    def rate_and_eta(
        self, progress: dict[str, int], now: float | None = None
    ) -> tuple[float | None, float | None]:
        """Items per second since the job started, and the seconds left at that rate (None: not known)."""
        if self.state != "running" or not self.started_at:
            return None, None
        elapsed = (now or time.time()) - self.started_at
        handled = progress.get("done", 0) + progress.get("failed", 0)
        if elapsed <= 0 or handled <= 0:
            return None, None
        rate = handled / elapsed
        left = max(0, progress.get("total", 0) - handled - progress.get("skipped", 0))
        return round(rate, 3), round(left / rate, 1)

    @classmethod
    def from_json(cls, data: dict) -> Job:
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in data.items() if key in known})


@dataclass
class Submission:
    job: Job
    # "started": runs now; "queued": waits for a slot or for the control's running job;
    # "already_queued": folded into the control's waiting job (it trains on the newest annotations too)
    status: str


class JobRunner(Protocol):
    def submit(
        self,
        project: str,
        control: str,
        trigger: str,
        params: dict[str, Any],
        env: dict[str, str] | None = None,
        kind: str = "train",
    ) -> Submission:
        """Start or queue a job, or answer the control's waiting one; `env`: secrets, never stored.

        kind "train": one job per (project, control); raises `TooManyJobsError` (429) when too many jobs
        wait on the host already. kind "predict": every submission is a new job (`control` ""); jobs of
        one project run one after the other, each predicting what is left."""

    def get(self, job_id: str) -> Job: ...

    def list(self, project: str | None = None, kind: str | None = None) -> list[Job]: ...

    def cancel(self, job_id: str) -> Job:
        """A queued job never starts; a running one stops soon (a prediction job after its batch)."""


class JobFiles:
    """Job state files in one folder; readable and writable by any process."""

    def __init__(self, jobs_dir: Path):
        self.dir = Path(jobs_dir)

    def state_path(self, job_id: str) -> Path:
        if not _JOB_ID.match(job_id or ""):
            raise JobNotFoundError(f"no job '{job_id}'")
        return self.dir / f"{job_id}.json"

    def log_path(self, job_id: str) -> Path:
        return self.state_path(job_id).with_suffix(".log")

    def cancel_path(self, job_id: str) -> Path:
        """Present once someone asked the job to stop (a file: the job process owns the state file)."""
        return self.state_path(job_id).with_suffix(".cancel")

    def lock_path(self, project: str, control: str) -> Path:
        return self.dir / "locks" / f"{safe_name(project)}__{safe_name(control)}.lock"

    def alive_path(self, job_id: str) -> Path:
        """Held by the job's process from submission to its end (`training/job_slots.py`)."""
        return self.state_path(job_id).with_suffix(".alive")

    def save(self, job: Job) -> None:
        write_json_atomic(self.state_path(job.id), asdict(job))

    def load(self, job_id: str) -> Job:
        data = read_json(self.state_path(job_id))
        if data is None:
            raise JobNotFoundError(f"no job '{job_id}'")
        job = Job.from_json(data)
        job.log_tail = self.log_tail(job_id)
        with contextlib.suppress(OSError, ValueError):
            job.pid = int(self.state_path(job_id).with_suffix(".pid").read_text())
        return job

    def log_tail(self, job_id: str, lines: int = _LOG_TAIL_LINES) -> list[str]:
        try:
            with self.log_path(job_id).open(errors="replace", newline="\n") as file:
                tail = deque(file, maxlen=lines)
        except OSError:
            return []
        # Progress bars redraw a line with carriage returns and colour codes: keep the last drawing, plain.
        return [_ANSI.sub("", line.rstrip("\n").split("\r")[-1])[-500:] for line in tail]

    def prune(self, project: str, control: str, keep: int) -> list[str]:
        """Remove the files of this control's finished jobs but the newest `keep`; the removed ids.

        Called while holding the control's lock, so no job of it starts or ends meanwhile.
        """
        finished = [
            job
            for job in self.all()
            if job.project == project and job.control == control and job.state not in ACTIVE_STATES
        ]
        removed = [job.id for job in finished[keep:]]  # `all()` is newest first
        for job_id in removed:
            # The state last: a half-removed job stays listed.
            for suffix in (".log", ".pid", ".alive", ".cancel", ".json"):
                with contextlib.suppress(FileNotFoundError):
                    self.state_path(job_id).with_suffix(suffix).unlink()
        return removed

    def all(self) -> list[Job]:
        """Every job, newest first, without log tails (`load` one job for its log)."""
        if not self.dir.is_dir():
            return []
        jobs = []
        for path in self.dir.glob("*.json"):
            data = read_json(path)
            if data is not None:
                job = Job.from_json(data)
                with contextlib.suppress(OSError, ValueError):
                    job.pid = int(path.with_suffix(".pid").read_text())
                jobs.append(job)
        return sorted(jobs, key=lambda job: job.created_at, reverse=True)


class LocalProcessRunner:
    """Runs each job as its own process on this machine (never in a web worker's threads).

    Admission (`submit`): at most `max_running` jobs run on the host and at most `max_queued` wait; a
    trigger for a control whose job waits already folds into it. `max_running` may be a callable (the
    host's default, decided at the first submission, e.g. one per GPU).
    """

    def __init__(
        self,
        jobs_dir: Path,
        command: list[str],
        env: dict[str, str] | None = None,
        keep_finished: int = 20,
        max_running: int | Callable[[], int] = 1,
        max_queued: int = 8,
        predict_command: list[str] | None = None,
    ):
        self.files = JobFiles(jobs_dir)
        self.command = command  # the entry point; the state file's path is appended
        self.predict_command = predict_command  # the prediction job's entry point, the same way
        self.env = env
        self.keep_finished = keep_finished  # per (project, control): older finished jobs' files go
        self._max_running = max_running
        self.max_queued = max_queued
        self._submit_lock = threading.Lock()

    @property
    def max_running(self) -> int:
        if callable(self._max_running):
            self._max_running = max(1, int(self._max_running()))
        return self._max_running

    def submit(
        self,
        project: str,
        control: str,
        trigger: str,
        params: dict[str, Any],
        env: dict[str, str] | None = None,
        kind: str = "train",
    ) -> Submission:
        if kind == "predict":
            return self._submit_prediction(project, trigger, params, env or {})
        # Threads of one worker meet at the thread lock, other processes at the host's admission flock.
        with self._submit_lock, job_slots.admission(self.files.dir):
            active = [job for job in map(self._settled, self.files.all()) if job.state in ACTIVE_STATES]
            mine = [job for job in active if job.project == project and job.control == control]
            waiting = [job for job in mine if job.state == "queued"]
            if waiting:
                return Submission(waiting[0], "already_queued")
            queued = sum(job.state == "queued" for job in active)
            control_busy = is_held(self.files.lock_path(project, control))
            if queued >= self.max_queued and not control_busy:  # a control's one follow-up always waits
                raise TooManyJobsError(
                    f"{queued} jobs already wait on this host (TRAINING_MAX_QUEUED={self.max_queued}, "
                    f"TRAINING_MAX_JOBS={self.max_running} at a time); try again when some have run"
                )
            runs_now = (
                not control_busy and not queued and job_slots.free_slots(self.files.dir, self.max_running)
            )
            self.files.prune(project, control, self.keep_finished - 1)  # the new one makes `keep`
            job = self._new_job(project, control, trigger, params)
            self._start(job, env or {})
        return Submission(job, "started" if runs_now else "queued")

    def _new_job(self, project: str, control: str, trigger: str, params: dict[str, Any]) -> Job:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        job_id = f"{stamp}-{safe_name(project)}-{safe_name(control)}-{secrets.token_hex(3)}"
        return Job(id=job_id, project=project, control=control, trigger=trigger, params=params)

    def _submit_prediction(
        self, project: str, trigger: str, params: dict[str, Any], env: dict[str, str]
    ) -> Submission:
        """A new prediction job every time; it holds a lock of its own for its life (see `_settled`)."""
        if not self.predict_command:
            raise BackendError("this runner has no prediction job entry point")
        with self._submit_lock:
            self.files.prune(project, "", self.keep_finished - 1)
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            job_id = f"{stamp}-{safe_name(project)}-predict-{secrets.token_hex(3)}"
            job = Job(id=job_id, project=project, control="", kind="predict", trigger=trigger, params=params)
            self.files.save(job)
            descriptor = try_lock(self._lock_path(job))
            if descriptor is None:  # a fresh id: only a broken jobs folder gets here
                raise BackendError(f"the lock of job {job_id} is taken")
            try:
                self._start_direct(job, descriptor, env, self.predict_command)
            finally:
                os.close(descriptor)
        return Submission(job, "started")

    def _lock_path(self, job: Job) -> Path:
        """Held by the job's process while it lives: a training job's `.alive` file (from its start, while
        it waits too; its control's lock for jobs started before those files), a prediction job's own lock."""
        if job.kind == "predict":
            return self.files.dir / "locks" / f"{job.id}.lock"
        alive = self.files.alive_path(job.id)
        return alive if alive.exists() else self.files.lock_path(job.project, job.control)

    def cancel(self, job_id: str) -> Job:
        """A prediction job sees the marker between batches (and while it waits) and stops itself; a
        training job's process group is ended (the served model changes only at its very end)."""
        job = self.get(job_id)
        if job.state not in ACTIVE_STATES:
            return job
        self.files.cancel_path(job_id).touch()
        if job.kind == "predict":
            return job
        if job.pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(job.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            descriptor = try_lock(self._lock_path(job))
            if descriptor is not None:
                try:
                    current = self.files.load(job_id)
                    if current.state in ACTIVE_STATES:
                        current.state, current.finished_at = "cancelled", time.time()
                        current.message = "cancelled; the served model did not change"
                        self.files.save(current)
                    return current
                finally:
                    os.close(descriptor)
            time.sleep(0.1)
        return self.files.load(job_id)

    def _start(self, job: Job, env: dict[str, str]) -> None:
        """Start the job's process: it waits for its control and a slot (`job_slots`), then runs the job."""
        alive = try_lock(self.files.alive_path(job.id))  # a new job's own file: never held by another
        assert alive is not None
        log = None
        try:
            self.files.save(job)
            log = self.files.log_path(job.id).open("ab")
            launcher = [
                sys.executable,
                "-I",  # the standard library only: no site-packages, not even this folder's modules
                job_slots.__file__,
                str(self.files.dir),
                str(self.max_running),
                str(self.files.lock_path(job.project, job.control)),
                job_slots.ready_name(job.created_at, job.id),
                "--",
                *self.command,
                str(self.files.state_path(job.id)),
            ]
            process = self._popen(job, launcher, alive, env, log)
        finally:
            os.close(alive)  # the job's process keeps its inherited copy
            if log is not None:
                log.close()
        self._started(job, process)

    def _start_direct(self, job: Job, lock_descriptor: int, env: dict[str, str], command: list[str]) -> None:
        """A prediction job's process, holding `lock_descriptor` (its own lock); it waits for its turn and a
        JOBS_MAX_RUNNING slot itself (`JobReporter.admitted`)."""
        log = self.files.log_path(job.id).open("ab")
        try:
            argv = [*command, str(self.files.state_path(job.id)), str(lock_descriptor)]
            process = self._popen(job, argv, lock_descriptor, env, log)
        finally:
            log.close()
        self._started(job, process)

    def _popen(self, job: Job, argv: list[str], held: int, env: dict[str, str], log: Any) -> subprocess.Popen:
        """The job's process in a session of its own, inheriting the descriptor `held` (its lock)."""
        try:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(held,),
                start_new_session=True,  # a signal to the web worker's group does not reach the job
                env={**os.environ, **(self.env or {}), **env},
                close_fds=True,
            )
        except OSError as error:
            job.state, job.phase, job.finished_at = "failed", "done", time.time()
            job.error = f"the job's process could not start: {error}"
            self.files.save(job)
            raise BackendError(job.error) from None

    def _started(self, job: Job, process: subprocess.Popen) -> None:
        job.pid = process.pid  # the same process once the job runs (exec)
        # A file of its own: the job process may already be rewriting the state file.
        self.files.state_path(job.id).with_suffix(".pid").write_text(str(process.pid))
        # Reap the child when it ends (no zombie); the thread only waits, it never trains.
        threading.Thread(target=process.wait, name=f"reap-{job.id}", daemon=True).start()

    def get(self, job_id: str) -> Job:
        return self._settled(self.files.load(job_id))

    def list(self, project: str | None = None, kind: str | None = None) -> list[Job]:
        jobs = [
            job
            for job in self.files.all()
            if (project is None or job.project == str(project)) and (kind is None or job.kind == kind)
        ]
        return [self._settled(job) for job in jobs]

    def _settled(self, job: Job) -> Job:
        """A job that says it waits or runs but whose process is gone (killed) is reported as failed."""
        if job.state not in ACTIVE_STATES:
            return job
        descriptor = try_lock(self._lock_path(job))
        if descriptor is None:
            return job  # its process holds it: it waits or runs
        try:
            current = self.files.load(job.id)  # it may have finished between our two reads
            if current.state in ACTIVE_STATES:
                current.state, current.finished_at = "failed", time.time()
                current.error = (
                    f"the job's process ended during '{current.phase}' without reporting "
                    "(killed or out of memory?); "
                    + (
                        "what it uploaded stays, a new job predicts the rest"
                        if current.kind == "predict"
                        else "the served model did not change"
                    )
                )
                self.files.save(current)
            current.log_tail = self.files.log_tail(job.id)
            return current
        finally:
            os.close(descriptor)


def count_event(jobs_dir: Path, project: str, control: str, every: int) -> bool:
    """Count one annotation event for (project, control); True (and back to 0) on every `every`-th.

    The count is a file changed under an exclusive flock, so all gunicorn workers count together.
    """
    path = JobFiles(jobs_dir).lock_path(project, control).with_suffix(".count")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        file.seek(0)
        text = file.read().strip()
        count = (int(text) if text.isdigit() else 0) + 1
        reached = count >= every
        file.seek(0)
        file.truncate()
        file.write("0" if reached else str(count))
        file.flush()
    return reached


class JobReporter:
    """Used inside the job process: updates the job's state file as the work goes on."""

    def __init__(self, state_file: Path):
        self.state_file = Path(state_file)
        self.files = JobFiles(self.state_file.parent)
        data = read_json(self.state_file)
        if data is None:
            raise JobNotFoundError(f"no job state at {state_file}")
        self.job = Job.from_json(data)

    def save(self) -> None:
        self.job.log_tail = []
        self.files.save(self.job)

    def phase(self, phase: str) -> None:
        if self.job.started_at is None:
            self.job.started_at = time.time()
        self.job.state, self.job.phase = "running", phase
        self.save()
        print(f"[job] {phase}", flush=True)

    def epoch(self, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        self.job.epoch, self.job.epochs, self.job.metrics = epoch, epochs, metrics
        self.save()

    def finish(self, message: str, version: str = "", promoted: bool = False) -> None:
        self.job.state, self.job.phase, self.job.finished_at = "succeeded", "done", time.time()
        self.job.message, self.job.version, self.job.promoted = message, version or self.job.version, promoted
        self.save()
        print(f"[job] succeeded: {message}", flush=True)

    def fail(self, error: str) -> None:
        self.job.state, self.job.phase, self.job.finished_at = "failed", self.job.phase, time.time()
        self.job.error = error
        self.save()
        print(f"[job] failed: {error}", file=sys.stderr, flush=True)

    def progress(self, done: int, total: int, failed: int, skipped: int, errors: list[str]) -> None:
        self.job.progress = {"done": done, "total": total, "failed": failed, "skipped": skipped}
        self.job.task_errors = errors[:_KEPT_ERRORS]
        self.save()

    def cancel_requested(self) -> bool:
        return self.files.cancel_path(self.job.id).exists()

    def cancelled(self, message: str) -> None:
        self.job.state, self.job.phase, self.job.finished_at = "cancelled", "done", time.time()
        self.job.message = message
        self.save()
        print(f"[job] cancelled: {message}", flush=True)

    @contextlib.contextmanager
    def admitted(self, name: str, slots: int) -> Iterator[bool]:
        """Wait (state `queued`) until this job holds the lock `name` and one of `slots` running places
        on this machine (JOBS_MAX_RUNNING); yields False when it was cancelled while waiting."""
        held: list[int] = []
        try:
            while True:
                if not held:
                    descriptor = try_lock(self.files.dir / "locks" / f"{safe_name(name)}.lock")
                    held += [descriptor] if descriptor is not None else []
                if held and len(held) == 1:
                    for slot in range(max(1, slots)):
                        descriptor = try_lock(self.files.dir / "locks" / f"running-slot-{slot}.lock")
                        if descriptor is not None:
                            held.append(descriptor)
                            break
                if len(held) == 2 or self.cancel_requested():
                    break
                if self.job.phase != "waiting":
                    self.job.phase = "waiting"
                    self.save()
                time.sleep(0.5)
            yield len(held) == 2
        finally:
            for descriptor in held:
                os.close(descriptor)


def as_job_process(settings: Settings) -> Settings:
    """Make this process a job's: niceness JOB_NICE (the web server runs at 0) and JOB_TORCH_THREADS torch
    threads, so an opened task on a shared host is not starved by it. Called once by each entry point of
    a job's own process (`prediction_job.main`, `training_pipeline.run_job`, `worker.run_job` in RQ's work
    horse), as early as it can: importing torch is seconds of CPU. The settings its models then use."""
    with contextlib.suppress(OSError):
        os.nice(max(0, settings.job_nice - os.nice(0)))
    import torch

    settings = settings.for_job_process()
    torch.set_num_threads(settings.torch_threads)
    logger.info("job process: nice %d, %d torch thread(s)", os.nice(0), settings.torch_threads)
    return settings


def run_reported(reporter: Any, work: Callable[[], Any]) -> int:
    """Run a job's `work`; a failure is reported as the job's error (with its cause), never raised.

    0 when the work ran through, 1 when it failed (the job process's exit status)."""
    try:
        work()
    except BackendError as error:
        reporter.fail(error.message)
        return 1
    except Exception as error:
        traceback.print_exc()
        reporter.fail(f"{type(error).__name__}: {error}")
        return 1
    return 0
