"""Requests on one model take turns batch by batch, and get exactly what they would alone."""

from __future__ import annotations

import threading

import pytest

from inference.scheduler import BatchSizer, FairScheduler


class GatedModel:
    """A stand-in model: answers item * 10, records each batch, and can be held inside a batch.

    Its clock (`now`) advances one second per item, so the scheduler measures a device on which
    batching gains nothing, whatever the machine running the test does.
    """

    def __init__(self):
        self.now = 0.0
        self.batches: list[list[int]] = []
        self.lanes: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def __call__(self, batch: list[int], lane: int = 0) -> list[int]:
        self.lanes.append(lane)
        self.batches.append(list(batch))
        self.now += len(batch)
        self.entered.set()
        assert self.release.wait(10), "the test never released the model"
        return [item * 10 for item in batch]


def fixed_sizer(size: int) -> BatchSizer:
    # Every item costs the same, and batching is wanted anyway: batches of `latency_factor` items.
    sizer = BatchSizer(latency_factor=size, min_gain=0.0)
    sizer.observe(1, 1.0)
    return sizer


def run_in_thread(scheduler: FairScheduler, items, model, results: dict, name: str, **kwargs):
    def target():
        results[name] = scheduler.run(items, model, **kwargs)

    thread = threading.Thread(target=target)
    thread.start()
    return thread


def wait_until(condition) -> None:
    event = threading.Event()
    for _ in range(1000):
        if condition():
            return
        event.wait(0.01)
    raise AssertionError("condition never became true")


def test_a_small_request_waits_for_one_batch_only():
    model = GatedModel()
    scheduler = FairScheduler(fixed_sizer(2), clock=lambda: model.now)
    results: dict = {}
    model.release.clear()
    bulk = run_in_thread(scheduler, list(range(100, 108)), model, results, "bulk")
    assert model.entered.wait(10)  # the bulk request's first batch is running
    model.entered.clear()
    single = run_in_thread(scheduler, [1], model, results, "single")
    wait_until(lambda: scheduler.waiting_requests() == 2)
    model.release.set()
    bulk.join(10)
    single.join(10)
    assert model.batches == [[100, 101], [1], [102, 103], [104, 105], [106, 107]]
    assert results == {"bulk": [1000, 1010, 1020, 1030, 1040, 1050, 1060, 1070], "single": [10]}


def test_requests_take_turns_and_get_what_they_would_alone():
    model = GatedModel()
    scheduler = FairScheduler(fixed_sizer(2), clock=lambda: model.now)
    requests = {"a": list(range(5)), "b": list(range(20, 23)), "c": [40]}
    alone = {}
    for name, items in requests.items():
        own = GatedModel()
        alone[name] = FairScheduler(fixed_sizer(2), clock=lambda own=own: own.now).run(items, own)
    results: dict = {}
    model.release.clear()
    threads = [run_in_thread(scheduler, list(range(5)), model, results, "a")]
    assert model.entered.wait(10)
    threads.append(run_in_thread(scheduler, list(range(20, 23)), model, results, "b"))
    wait_until(lambda: scheduler.waiting_requests() == 2)
    threads.append(run_in_thread(scheduler, [40], model, results, "c"))
    wait_until(lambda: scheduler.waiting_requests() == 3)
    model.release.set()
    for thread in threads:
        thread.join(10)
    assert results == alone
    # After a's first batch: the newcomers first (in arrival order), then the least recently served.
    assert model.batches == [[0, 1], [20, 21], [40], [2, 3], [22], [4]]


def test_items_of_different_groups_never_share_a_batch():
    model = GatedModel()
    items = [1, 2, 3, 4, 5, 6, 7]
    results = FairScheduler(fixed_sizer(8), clock=lambda: model.now).run(
        items, model, group_of=lambda item: item % 2
    )
    assert results == [10, 20, 30, 40, 50, 60, 70]
    assert sorted(model.batches) == [[1, 3, 5, 7], [2, 4, 6]]


def test_a_failing_batch_fails_its_own_request_only():
    scheduler = FairScheduler(fixed_sizer(1), clock=lambda: 0.0)
    gate = threading.Event()
    failing_started = threading.Event()

    def failing(batch, lane):
        failing_started.set()
        assert gate.wait(10)
        raise ValueError("broken input")

    results: dict = {}
    errors: list = []

    def run_failing():
        try:
            scheduler.run([1, 2, 3], failing)
        except ValueError as error:
            errors.append(str(error))

    thread = threading.Thread(target=run_failing)
    thread.start()
    assert failing_started.wait(10)
    other = run_in_thread(
        scheduler, [5, 6], lambda batch, lane: [item * 10 for item in batch], results, "other"
    )
    wait_until(lambda: scheduler.waiting_requests() == 2)
    gate.set()
    thread.join(10)
    other.join(10)
    assert errors == ["broken input"]
    assert results == {"other": [50, 60]}
    assert scheduler.waiting_requests() == 0


def test_a_model_that_answers_the_wrong_number_of_results_is_an_error():
    with pytest.raises(RuntimeError, match="2 results for 1 inputs"):
        FairScheduler(fixed_sizer(1)).run([1], lambda batch, lane: [1, 2])


@pytest.mark.parametrize(
    ("single", "per_item", "expected"),
    [
        (0.30, 0.30, 1),  # a CPU: a batch of n costs n single calls; batching gains nothing: one item
        (0.30, 0.29, 1),  # a gain under BATCH_MIN_GAIN (5 %) buys nothing worth a longer wait
        (0.30, 0.15, 4),  # half saved per item: a batch may take two single calls' time
        (0.010, 0.001, 20),  # a GPU: batching pays; batches grow to two single calls' time
        (0.010, 0.0001, 32),  # never above the caller's maximum
    ],
)
def test_batch_size_follows_what_batching_gains(single, per_item, expected):
    sizer = BatchSizer(latency_factor=2.0)
    assert sizer.size(32) == 32  # nothing measured yet: the caller's maximum
    sizer.observe(4, per_item * 4)
    assert sizer.size(32) == 1  # then one item alone, to know what batching gains
    sizer.observe(1, single)
    assert sizer.size(32) == expected


class DeviceClock:
    """A fake device: a call costs `overhead + per_item * n` seconds of a clock only it advances."""

    def __init__(self, overhead: float, per_item: float):
        self.overhead, self.per_item, self.now = overhead, per_item, 0.0
        self.batches: list[int] = []

    def __call__(self, batch: list[int], lane: int = 0) -> list[int]:
        self.batches.append(len(batch))
        self.now += self.overhead + self.per_item * len(batch)
        return list(batch)


@pytest.mark.parametrize(
    ("overhead", "per_item", "expected_batch"),
    [(0.0, 0.25, 1), (0.02, 0.25, 1), (0.20, 0.01, 22)],
    ids=["cpu", "cpu-small-overhead", "gpu"],
)
def test_bulk_requests_are_timed_into_the_batch_size_of_the_device(overhead, per_item, expected_batch):
    """From the scheduler's own timing of a bulk request's batches (no wall clock): a CPU settles on
    batches of one image (with a rare two-image probe), a GPU on large batches."""
    device = DeviceClock(overhead, per_item)
    scheduler = FairScheduler(BatchSizer(latency_factor=2.0), clock=lambda: device.now)
    for _ in range(4):
        assert scheduler.run(list(range(64)), device, max_batch=32) == list(range(64))
    settled = device.batches[-100:] if expected_batch == 1 else device.batches[-3:]
    if expected_batch == 1:
        assert settled.count(1) >= 95 and max(settled) <= 2
    else:  # batches grow until one takes about two single calls (0.2 + 0.01 n = 2 x 0.21: n = 22)
        assert max(settled) in range(expected_batch - 6, expected_batch + 1)
        assert all(overhead + per_item * n <= 2.0 * (overhead + per_item) + 1e-9 for n in settled)


def test_an_opened_task_waits_for_at_most_one_image_on_a_cpu():
    """A one-task request arriving while a 32-task request runs on a CPU-like device: the batch in
    flight holds one image, so the newcomer's image is the next to run."""
    model = GatedModel()  # one second per item: batching gains nothing
    scheduler = FairScheduler(BatchSizer(latency_factor=2.0), clock=lambda: model.now)
    scheduler.run(list(range(4)), model)  # the sizer learns the device: a batch of 4,
    scheduler.run([5], model)  # and one item alone
    model.batches.clear()
    results: dict = {}
    model.release.clear()
    model.entered.clear()
    bulk = run_in_thread(scheduler, list(range(100, 132)), model, results, "bulk", max_batch=8)
    assert model.entered.wait(10)
    single = run_in_thread(scheduler, [7], model, results, "single", max_batch=8)
    wait_until(lambda: scheduler.waiting_requests() == 2)
    model.release.set()
    bulk.join(10)
    single.join(10)
    assert results["single"] == [70]
    assert len(model.batches[0]) == 1  # the batch the newcomer waited behind: one image
    assert model.batches[1] == [7]


@pytest.mark.parametrize(
    ("overhead", "per_item", "settled"),
    [
        (0.10, 0.01, range(8, 13)),  # a GPU: a call costs 0.1 s + 0.01 s per image; 2 x 0.11 s: 12 images
        (0.0, 0.10, range(1, 3)),  # a CPU: batching gains nothing (one item, a two-item probe now and then)
    ],
)
def test_one_slow_batch_does_not_pin_batches_to_one_item(overhead, per_item, settled):
    """The first multi-image batch of a fresh model also pays for Ultralytics' predictor set-up (seconds).
    Measured as seconds per item, it made every later batch one item long, so no batch of more than one
    item was ever measured again: batches stayed at one item for the life of the process (on a GPU,
    a fraction of its speed)."""
    sizer = BatchSizer(latency_factor=2.0)
    sizer.observe(8, 16.0)  # predictor set-up and cold kernels: 2 s per item
    sizer.observe(1, overhead + per_item)  # then a one-image request
    sizes = []
    for _ in range(40):
        size = sizer.size(32)
        sizer.observe(size, overhead + per_item * size)
        sizes.append(size)
    assert sizes[0] >= 2
    assert sizes[-1] in settled


def test_a_job_process_batches_a_small_model_on_a_cpu_fully_where_the_web_server_keeps_batches_short():
    """A small model on a CPU (yolov8n at 320 px on 2 cores: a batch item costs ~0.55 of a single call,
    bench/RESULTS.md): the web server's batches take about BATCH_LATENCY_FACTOR single calls, so an
    opened task waits little; a job's process serves one request and takes the largest batch."""
    from core.settings import Settings

    web = Settings(_env_file=None)
    job = web.for_job_process()
    sizes = {}
    for name, settings in (("web", web), ("job", job)):
        device = DeviceClock(overhead=0.0055, per_item=0.0068)
        sizer = BatchSizer(settings.batch_latency_factor, min_gain=settings.batch_min_gain)
        scheduler = FairScheduler(sizer, clock=lambda device=device: device.now)
        for _ in range(3):
            scheduler.run(list(range(64)), device, max_batch=8)
        sizes[name] = device.batches[-4:]
    assert sizes == {"web": [2, 2, 2, 2], "job": [8, 8, 8, 8]}
    assert job.torch_threads == job.effective_job_torch_threads


class HeldBulkModel:
    """Answers item * 10 on whichever lane it is called; holds items >= 100 (a bulk request's) until
    released, and records what ran at once."""

    def __init__(self):
        self.release = threading.Event()
        self.bulk_entered = threading.Event()
        self.calls: list[tuple[int, list[int]]] = []
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def __call__(self, batch: list[int], lane: int) -> list[int]:
        with self._lock:
            self.calls.append((lane, list(batch)))
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        if batch[0] >= 100:
            self.bulk_entered.set()
            assert self.release.wait(10), "the test never released the bulk request"
        with self._lock:
            self.running -= 1
        return [item * 10 for item in batch]


def test_with_two_lanes_an_opened_task_runs_beside_the_bulk_batch_in_flight():
    model = HeldBulkModel()
    scheduler = FairScheduler(fixed_sizer(1), clock=lambda: 0.0, lanes=2)
    results: dict = {}
    bulk = run_in_thread(scheduler, list(range(100, 104)), model, results, "bulk")
    assert model.bulk_entered.wait(10)
    # Two images of one opened task: the second runs on lane 1 too, not a second bulk batch beside the first.
    single = run_in_thread(scheduler, [7, 8], model, results, "single")
    single.join(5)
    assert results.get("single") == [70, 80]  # answered while the bulk request's batch is still held
    assert model.calls == [(0, [100]), (1, [7]), (1, [8])]
    model.release.set()
    bulk.join(10)
    assert results["bulk"] == [1000, 1010, 1020, 1030]
    assert model.most_at_once == 2


def test_a_request_alone_never_runs_two_batches_at_once_whatever_the_lanes():
    model = HeldBulkModel()
    model.release.set()
    scheduler = FairScheduler(fixed_sizer(1), clock=lambda: 0.0, lanes=4)
    assert scheduler.run(list(range(100, 110)), model) == [item * 10 for item in range(100, 110)]
    assert model.most_at_once == 1
    assert {lane for lane, _ in model.calls} == {0}


class RecordingSizer(BatchSizer):
    def __init__(self):
        super().__init__(latency_factor=1.0, min_gain=0.0)
        super().observe(1, 1.0)  # known: batches of one item
        self.observed: list[tuple[int, float]] = []

    def observe(self, items: int, seconds: float) -> None:
        self.observed.append((items, seconds))
        super().observe(items, seconds)


def test_batches_that_shared_the_device_do_not_teach_the_sizer():
    """Two batches at once each take longer than alone: timed as the device's, they would make batching
    look like it gains (a slow one-item call) and grow the batches an opened task waits behind."""
    model = HeldBulkModel()
    sizer = RecordingSizer()
    scheduler = FairScheduler(sizer, clock=lambda: 0.0, lanes=2)
    results: dict = {}
    bulk = run_in_thread(scheduler, [100, 101], model, results, "bulk")
    assert model.bulk_entered.wait(10)
    run_in_thread(scheduler, [7], model, results, "single").join(10)
    model.release.set()
    bulk.join(10)
    # The single and the bulk batch in flight beside it shared the device; the bulk's last batch ran alone.
    assert model.calls == [(0, [100]), (1, [7]), (0, [101])]
    assert [items for items, _ in sizer.observed] == [1]
