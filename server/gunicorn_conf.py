"""gunicorn hooks (start.sh passes this file with -c)."""

from prometheus_client import multiprocess


def child_exit(server, worker) -> None:
    """A worker that exits stops counting in `livesum` gauges; its counters stay in the sums."""
    multiprocess.mark_process_dead(worker.pid)
