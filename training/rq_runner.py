"""Jobs on an RQ queue in Redis (`REDIS_URL`): the web processes enqueue, `./worker.sh` workers run.

The same `JobRunner` seam as `LocalProcessRunner`, with RQ's own parts doing the work:
- one queue (`yolo-jobs`) for both kinds; a job is enqueued as `worker.run_job(kind)` with our `Job`
  (the same JSON shape as the local state files) in the RQ job's `meta["job"]`, which the job updates as
  it goes (`RQReporter`), so every replica reads the same state from Redis;
- its state is RQ's status read with that meta (`_state`): queued -> started -> finished / failed /
  stopped / canceled; listing reads the queue and RQ's registries;
- a queued job is cancelled with RQ's `cancel` (it never starts); a running prediction job sees a
  cancel key between batches and stops itself; a running training job gets RQ's stop-job command;
- a worker that dies mid-job stops heartbeating: RQ's started-job registry finds the job abandoned and
  retries it once (`Retry(max=1)`), or fails it, at the next registry cleaning (worker.py sets the
  heartbeat and the cleaning interval so that is within minutes). The job's own horse, orphaned by a
  SIGKILLed worker, notices that its parent changed and exits before it does more work.

Locks expire unless their living job renews them (`Lease`): one training job per (project, control)
(taken when the job is enqueued, so a second trigger gets the queued one back), and one prediction
job per project at a time. No secret goes into Redis: a worker reads LABEL_STUDIO_API_KEY from its own
environment (the `env` of `submit` is not used here).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from core.errors import BackendError
from training.jobs import ACTIVE_STATES, Job, JobNotFoundError, JobReporter, Submission
from training.versions import safe_name

QUEUE_NAME = "yolo-jobs"
ENTRY_POINT = "worker.run_job"  # imported by the worker, never here
KEEP_SECONDS = 7 * 24 * 3600  # finished and failed jobs stay listed this long
JOB_TIMEOUT_SECONDS = 7 * 24 * 3600  # RQ's default (180 s) would kill any real job
LEASE_SECONDS = 60  # a lock its job stops renewing (killed) expires after this
RENEW_SECONDS = 15
_CANCEL_KEY = "yolo:jobs:cancel:{}"
_LOCK_KEY = "yolo:jobs:lock:{}"


def training_lock_name(project: str, control: str) -> str:
    return f"train-{safe_name(project)}-{safe_name(control)}"


def connect(redis_url: str) -> Any:
    from redis import Redis

    return Redis.from_url(redis_url)


class RQRunner:
    """Enqueue jobs for `./worker.sh` workers; answer their state from Redis."""

    def __init__(self, redis_url: str):
        from rq import Queue

        self.redis = connect(redis_url)
        self.queue = Queue(QUEUE_NAME, connection=self.redis)

    def submit(
        self,
        project: str,
        control: str,
        trigger: str,
        params: dict[str, Any],
        env: dict[str, str] | None = None,
        kind: str = "train",
    ) -> Submission:
        from rq import Retry

        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        middle = "predict" if kind == "predict" else safe_name(control)
        job = Job(
            id=f"{stamp}-{safe_name(project)}-{middle}-{secrets.token_hex(3)}",
            project=str(project),
            control="" if kind == "predict" else control,
            kind=kind,
            trigger=trigger,
            params=params,
        )
        if kind == "train":
            holder = self._take_training_lock(job)
            if holder is not None:
                return Submission(holder, "already_running")
        self.queue.enqueue(
            ENTRY_POINT,
            kind,
            job_id=job.id,
            meta={"job": asdict(job)},
            job_timeout=JOB_TIMEOUT_SECONDS,
            result_ttl=KEEP_SECONDS,
            failure_ttl=KEEP_SECONDS,
            retry=Retry(max=1),
            description=f"{kind} project {project}" + (f" control {control}" if control else ""),
        )
        return Submission(job, "started")

    def _take_training_lock(self, job: Job) -> Job | None:
        """Take (project, control)'s lock for this queued job; the job holding it instead, if active.

        Held for `KEEP_SECONDS` while queued; the worker renews it every few seconds once the job runs
        and lets it expire (LEASE_SECONDS) if it is killed.
        """
        lease = Lease(self.redis, training_lock_name(job.project, job.control), job.id, KEEP_SECONDS)
        for _ in range(3):
            if lease.take():
                return None
            holder_id = lease.holder()
            if holder_id is None:
                continue  # it expired meanwhile
            with contextlib.suppress(JobNotFoundError):
                holder = self.get(holder_id)
                if holder.state in ACTIVE_STATES:
                    return holder
            lease.release_for(holder_id)  # the holder ended without releasing it
        raise BackendError(f"a training job for control '{job.control}' is starting; try again shortly")

    def get(self, job_id: str) -> Job:
        from rq.exceptions import NoSuchJobError
        from rq.job import Job as RQJob

        try:
            rq_job = RQJob.fetch(str(job_id), connection=self.redis)
        except NoSuchJobError:
            raise JobNotFoundError(f"no job '{job_id}'") from None
        job = _state(rq_job)
        if job is None:
            raise JobNotFoundError(f"no job '{job_id}'")
        return job

    def list(self, project: str | None = None, kind: str | None = None) -> list[Job]:
        from rq.job import Job as RQJob

        ids: set[str] = set(self.queue.get_job_ids())
        for registry in (
            self.queue.started_job_registry,
            self.queue.finished_job_registry,
            self.queue.failed_job_registry,
            self.queue.canceled_job_registry,
            self.queue.scheduled_job_registry,
            self.queue.deferred_job_registry,
        ):
            ids.update(registry.get_job_ids())
        jobs = [_state(rq_job) for rq_job in RQJob.fetch_many(sorted(ids), connection=self.redis) if rq_job]
        chosen = [
            job
            for job in jobs
            if job is not None
            and (project is None or job.project == str(project))
            and (kind is None or job.kind == kind)
        ]
        return sorted(chosen, key=lambda job: job.created_at, reverse=True)

    def cancel(self, job_id: str) -> Job:
        from rq.command import send_stop_job_command
        from rq.exceptions import InvalidJobOperation
        from rq.job import Job as RQJob
        from rq.job import JobStatus

        job = self.get(job_id)
        if job.state not in ACTIVE_STATES:
            return job
        rq_job = RQJob.fetch(job.id, connection=self.redis)
        self.redis.set(_CANCEL_KEY.format(job.id), "1", ex=KEEP_SECONDS)
        status = rq_job.get_status()
        if status != JobStatus.STARTED:
            with contextlib.suppress(InvalidJobOperation):
                rq_job.cancel()  # off the queue: it never starts
        elif job.kind == "train":
            with contextlib.suppress(InvalidJobOperation):  # it ended meanwhile
                send_stop_job_command(self.redis, job.id)  # the horse ends now; nothing was promoted
        if job.kind == "train":
            Lease(self.redis, training_lock_name(job.project, job.control), job.id).release_for(job.id)
        return self.get(job_id)


def _state(rq_job: Any) -> Job | None:
    """Our job from RQ's: the meta the job keeps, its `state` settled by RQ's status."""
    from rq.job import JobStatus

    data = (rq_job.meta or {}).get("job")
    if not isinstance(data, dict):
        return None  # not one of ours
    job = Job.from_json(data)
    status = rq_job.get_status(refresh=False)
    if status in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED):
        if job.state == "running":  # an attempt that died; RQ queued it again
            job.message = "retried: the worker that ran it stopped; stored predictions are skipped"
        job.state, job.phase = "queued", "queued"
    elif status in (JobStatus.CANCELED, JobStatus.STOPPED):
        job.state, job.phase = "cancelled", "done"
        job.finished_at = job.finished_at or time.time()
    elif status == JobStatus.FAILED and job.state in ACTIVE_STATES:
        job.state = "failed"
        job.finished_at = job.finished_at or time.time()
        job.error = job.error or _failure(rq_job, job)
    return job


def _failure(rq_job: Any, job: Job) -> str:
    info = ""
    with contextlib.suppress(Exception):
        result = rq_job.latest_result()
        info = (getattr(result, "exc_string", "") or "").strip()
    if not info or "Abandoned" in info:
        return (
            f"the worker running it stopped during '{job.phase}' (killed or out of memory?) and the retry "
            "did not finish; "
            + (
                "what it stored stays, a new job predicts the rest"
                if job.kind == "predict"
                else "the served model did not change"
            )
        )
    return info.splitlines()[-1][:500]


class Lease:
    """A Redis lock owned by one job id that expires unless renewed (redis-py's `Lock`, token = job id)."""

    def __init__(self, redis: Any, name: str, owner: str, seconds: float = LEASE_SECONDS):
        from redis.lock import Lock

        self.redis = redis
        self.key = _LOCK_KEY.format(name)
        self.owner = owner
        self.lock = Lock(redis, self.key, timeout=seconds, thread_local=False, raise_on_release_error=False)

    def take(self) -> bool:
        """Hold it for this owner: renewed when the owner holds it already, else taken if free."""
        from redis.exceptions import LockError

        self.lock.local.token = self.owner.encode()
        with contextlib.suppress(LockError):
            self.lock.reacquire()
            return True
        return bool(self.lock.acquire(blocking=False, token=self.owner))

    def holder(self) -> str | None:
        value = self.redis.get(self.key)
        return value.decode() if value is not None else None

    def release_for(self, owner: str) -> None:
        """Release it if `owner` holds it (never another job's)."""
        self.lock.local.token = owner.encode()
        with contextlib.suppress(Exception):
            self.lock.release()


class RQReporter(JobReporter):
    """Inside a worker's job: the `JobReporter` steps, saved into the RQ job's meta instead of a file."""

    def __init__(self, rq_job: Any):
        self.rq_job = rq_job
        self.redis = rq_job.connection
        self.job = Job.from_json(rq_job.meta["job"])
        self._parent = os.getppid()  # the worker that forked this horse

    def save(self) -> None:
        self.job.log_tail = []
        self.rq_job.meta["job"] = asdict(self.job)
        self.rq_job.save_meta()

    def cancel_requested(self) -> bool:
        self.exit_if_orphaned()
        return bool(self.redis.exists(_CANCEL_KEY.format(self.job.id)))

    def exit_if_orphaned(self) -> None:
        """A SIGKILLed worker leaves its horse running (RQ puts it in its own session): RQ will retry the
        job elsewhere, so this copy stops before it stores anything more."""
        if os.getppid() != self._parent:
            print(f"[job] the worker of job {self.job.id} is gone; this copy stops", flush=True)
            os._exit(1)

    @contextlib.contextmanager
    def admitted(self, name: str, slots: int = 1) -> Iterator[bool]:
        """Wait until this job holds the lease `name` (renewed while it runs); False if cancelled first."""
        lease = Lease(self.redis, name, self.job.id)
        while not lease.take():
            if self.cancel_requested():
                yield False
                return
            if self.job.phase != "waiting":
                self.job.state, self.job.phase = "queued", "waiting"
                self.save()
            time.sleep(0.5)
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(lease, stop), daemon=True, name="lease")
        renewer.start()
        try:
            yield True
        finally:
            stop.set()
            lease.release_for(self.job.id)

    def _renew(self, lease: Lease, stop: threading.Event) -> None:
        while not stop.wait(RENEW_SECONDS):
            self.exit_if_orphaned()
            with contextlib.suppress(Exception):
                lease.take()
