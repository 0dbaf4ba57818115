"""Fair sharing of one model between concurrent requests.

A plain lock lets whichever thread wins the race run a whole chunk, so a teammate's single task waits
behind every chunk of a bulk request. Here each call (`FairScheduler.run`) puts its items into its own
queue; batches are taken from the queues in turn, least recently served request first, so a request
that arrives while another runs waits for at most the batch in flight. The threads that wait are the
ones that run batches (whoever finds the model idle runs the next batch, for whichever request's turn
it is): no worker thread to start or stop, and each copy of the model is only ever used by one thread
at a time.

Batch size adapts to the device (`BatchSizer`): large where batching pays (a GPU), one item where it
does not (a CPU), which is what bounds the wait of the next request.

With `lanes` above one (a CPU host), up to that many requests run a batch at the same time, each on a
lane of its own (the caller keeps one model replica per lane: an Ultralytics predictor is not
thread-safe); a request never runs two batches at once, so a bulk request alone runs as it would on
one lane, and a task opened meanwhile starts at once on the next lane instead of waiting. On a CPU one
call leaves cores idle at every OpenMP barrier, which the second lane fills (bench/RESULTS.md).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Any


class BatchSizer:
    """How many items the next batch may hold.

    Where batching gains less than `min_gain` per item against a one-item call (a CPU: a batch of n
    costs about n single calls), batches hold one item: a request that arrives meanwhile then waits
    for at most one image, and bulk throughput is the same. Where it gains more (a GPU), a batch may
    take about `latency_factor` times a one-item batch, which is how long another request may wait
    behind it. The gain is measured on the batches the scheduler times: before anything is measured
    the caller's maximum is used, then one single item is timed, and every `probe_every` decisions at
    one item a batch of `latency_factor` items measures the gain again (a device whose load changed, or
    a first batch that paid for the predictor's set-up, is not believed for good).
    """

    def __init__(
        self,
        latency_factor: float = 2.0,
        smoothing: float = 0.3,
        min_gain: float = 0.05,
        probe_every: int = 32,
    ):
        self.latency_factor = latency_factor
        self.min_gain = min_gain
        self.probe_every = probe_every
        self._smoothing = smoothing
        self.single_seconds: float | None = None  # a one-item batch
        self.seconds_per_item: float | None = None  # in batches of more than one item
        self._ones_since_probe = 0

    def size(self, max_size: int) -> int:
        max_size = max(1, max_size)
        if self.single_seconds is None and self.seconds_per_item is None:
            return max_size
        if self.single_seconds is None and self.min_gain > 0:
            return 1  # time one item: whether batching gains enough is unknown without it
        single = self.single_seconds or self.seconds_per_item or 0.0
        # A batch item costs at most a single call, except in a batch that paid for something else
        # (the predictor's set-up, a stall).
        per_item = min(self.seconds_per_item or single, single)
        if per_item <= 0:
            return max_size
        if per_item > single * (1.0 - self.min_gain):
            return self._one_or_probe(max_size)
        return max(1, min(max_size, int(self.latency_factor * single / per_item)))

    def gain(self) -> float | None:
        """What batching saves per item against a single call (0.3: 30 %), once both are measured."""
        if self.single_seconds is None or self.seconds_per_item is None or self.single_seconds <= 0:
            return None
        return 1.0 - min(self.seconds_per_item, self.single_seconds) / self.single_seconds

    def _one_or_probe(self, max_size: int) -> int:
        self._ones_since_probe += 1
        # A batch that cost more per item than a single call paid for something else (a set-up):
        # measure again now rather than keep one item for good on a device where batching pays.
        unbelievable = (self.seconds_per_item or 0.0) > (self.single_seconds or 0.0)
        if self._ones_since_probe < self.probe_every and not unbelievable:
            return 1
        self._ones_since_probe = 0
        return max(1, min(max_size, round(self.latency_factor)))

    def observe(self, items: int, seconds: float) -> None:
        if items <= 0:
            return
        if items == 1:
            self.single_seconds = self._smoothed(self.single_seconds, seconds)
        else:
            average = self.seconds_per_item
            if average is not None and self.single_seconds is not None:
                average = min(average, self.single_seconds)  # forget a batch that paid for a set-up
            self.seconds_per_item = self._smoothed(average, seconds / items)

    def _smoothed(self, average: float | None, value: float) -> float:
        return value if average is None else average + self._smoothing * (value - average)


@dataclass(eq=False)
class _Request:
    run_batch: Callable[[list[int], int], list[Any]]  # (item positions, lane)
    arrival: int
    pending: list[list[int]]  # groups of item positions still to run, each group batchable together
    results: list[Any]
    outstanding: int
    max_batch: int = 8
    last_served: int = -1
    running: bool = False  # a batch of it is in flight: it waits for that one before its next
    error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.outstanding == 0 or self.error is not None


class FairScheduler:
    """Runs the batches of concurrent requests on one model, taking turns between the requests."""

    def __init__(self, sizer: BatchSizer, clock: Callable[[], float] = perf_counter, lanes: int = 1):
        self.sizer = sizer
        self.lanes = max(1, lanes)
        self._clock = clock
        self._condition = threading.Condition()
        self._queue: list[_Request] = []
        self._free_lanes = list(range(self.lanes))
        # Batches in flight, and whether each shared the device with another (its timing says
        # nothing about the device alone then, so the sizer does not learn from it).
        self._in_flight: dict[int, bool] = {}
        self._turns = itertools.count()
        self._arrivals = itertools.count()

    def waiting_requests(self) -> int:
        """Requests with items not yet started (for tests and metrics)."""
        with self._condition:
            return len(self._queue)

    def run(
        self,
        items: Sequence[Any],
        run_batch: Callable[[list[Any], int], list[Any]],
        group_of: Callable[[Any], Hashable] = lambda item: None,
        max_batch: int = 8,
    ) -> list[Any]:
        """`run_batch(batch, lane)` over `items` in batches; one result per item, in item order.

        Only items of one `group_of` value share a batch (e.g. images of one shape); no batch holds
        more than `max_batch` items. No two batches run on one lane at the same time.
        """
        if not items:
            return []
        groups: dict[Hashable, list[int]] = {}
        for position, item in enumerate(items):
            groups.setdefault(group_of(item), []).append(position)
        request = _Request(
            run_batch=lambda positions, lane: run_batch([items[p] for p in positions], lane),
            arrival=next(self._arrivals),
            pending=list(groups.values()),
            results=[None] * len(items),
            outstanding=len(items),
            max_batch=max_batch,
        )
        with self._condition:
            self._queue.append(request)
            while not request.done:
                ready = self._free_lanes and any(not r.running for r in self._queue)
                if not ready:
                    self._condition.wait()
                    continue
                owner, batch, lane = self._start_batch()
                self._condition.release()
                try:
                    outputs, error, seconds = self._run(owner, batch, lane)
                finally:
                    self._condition.acquire()
                    shared = self._in_flight.pop(lane)
                    self._free_lanes.append(lane)
                    owner.running = False
                self._finish(owner, batch, outputs, error, None if shared else seconds)
                self._condition.notify_all()
        if request.error is not None:
            with self._condition:
                if request in self._queue:  # the rest of a failed request is not run
                    self._queue.remove(request)
            raise request.error
        return request.results

    def _start_batch(self) -> tuple[_Request, list[int], int]:
        """The least recently served request without a batch in flight (new ones first) gives the next
        batch, on the lowest free lane."""
        owner = min((r for r in self._queue if not r.running), key=lambda r: (r.last_served, r.arrival))
        size = self.sizer.size(owner.max_batch)
        group = owner.pending[0]
        batch, owner.pending[0] = group[:size], group[size:]
        if not owner.pending[0]:
            owner.pending.pop(0)
        if not owner.pending:
            self._queue.remove(owner)
        owner.last_served = next(self._turns)
        owner.running = True
        self._free_lanes.sort()
        lane = self._free_lanes.pop(0)
        for other in self._in_flight:
            self._in_flight[other] = True
        self._in_flight[lane] = bool(self._in_flight)
        return owner, batch, lane

    def _run(
        self, owner: _Request, batch: list[int], lane: int
    ) -> tuple[list[Any] | None, BaseException | None, float]:
        started = self._clock()
        try:
            outputs = owner.run_batch(batch, lane)
        except BaseException as error:  # handed to the request's own thread, raised there
            return None, error, 0.0
        return outputs, None, self._clock() - started

    def _finish(
        self,
        owner: _Request,
        batch: list[int],
        outputs: list[Any] | None,
        error: BaseException | None,
        seconds: float | None,  # None: the batch shared the device, its time is not the device's
    ) -> None:
        if error is not None:
            owner.error = error
            if owner in self._queue:
                self._queue.remove(owner)
            return
        assert outputs is not None
        if len(outputs) != len(batch):
            owner.error = RuntimeError(f"the model gave {len(outputs)} results for {len(batch)} inputs")
            return
        for position, output in zip(batch, outputs, strict=True):
            owner.results[position] = output
        owner.outstanding -= len(batch)
        if seconds is not None:
            self.sizer.observe(len(batch), seconds)
