"""Latency of single-task requests while a bulk request runs on the same model, measured in one run.

    python bench/fairness.py [--arch yolov8m] [--bulk 32] [--singles 5] [--think 1.0] [--rounds 3]
                             [--format pt|openvino-int8]

A teammate opens one task at a time (a single-task /predict, then `--think` seconds of looking at it)
while another client's bulk request of `--bulk` tasks runs (Retrieve Predictions), back to back, on
the same model, in rounds of (idle singles, bulk alone, bulk with singles). Requests go through `YOLOBackend.predict` from their own threads, as the server's
request threads call it. Prints:
- the single-task latency p50/p90/p95 on an idle server and under the bulk load, and their ratios
  (target: p90 under load <= 2x idle);
- the bulk request's images/s alone and under load, their ratio (target: at least 0.95), and the share
  of the model's time the singles took (what the bulk request cannot have, however fair the scheduler);
- the images/s of bulk and singles together under load against the bulk alone: whether the scheduler
  loses work by serving singles first.
Weights are random (built from the YAML): speed depends on the architecture, not the weights.
`--format openvino-int8` serves the model's calibrated INT8 export (made during the warm-up, calibrated
on the bulk images; its accuracy check is waived, as random weights have none), as `MODEL_FORMAT=auto`
serves a trained model on a CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_predict import backend_settings, detector_config, workspace


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def describe(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 0.5):6.3f} s  p90 {percentile(values, 0.9):6.3f} s  "
        f"p95 {percentile(values, 0.95):6.3f} s  (n={len(values)})"
    )


def loaded_phase(request, single, bulk_tasks: list[dict], think: float) -> tuple[list[float], float]:
    """One bulk request, and a teammate's single-task requests (`think` seconds apart) while it runs."""
    latencies: list[float] = []
    bulk_seconds: list[float] = []
    bulk_thread = threading.Thread(target=lambda: bulk_seconds.append(request(bulk_tasks)))
    bulk_thread.start()
    pause = threading.Event()
    pause.wait(min(think, 0.5))  # the bulk request starts first
    number = 0
    while bulk_thread.is_alive():
        latencies.append(single(number))
        number += 1
        pause.wait(think)
    bulk_thread.join()
    return latencies, bulk_seconds[0]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default="yolov8m")
    parser.add_argument("--bulk", type=int, default=32, help="tasks in the bulk request")
    parser.add_argument("--singles", type=int, default=5, help="single-task requests per idle phase")
    parser.add_argument("--think", type=float, default=1.0, help="seconds between a teammate's requests")
    parser.add_argument("--rounds", type=int, default=3, help="idle phase, bulk alone, bulk under load")
    parser.add_argument("--format", default="pt", choices=["pt", "openvino-int8"], help="model_format")
    return parser.parse_args()


@dataclass
class Requests:
    """Predictions on one backend and model, timed; task errors collected in `errors`."""

    backend: Any
    config: str
    paths: list[Path]
    errors: list[str] = field(default_factory=list)

    def request(self, tasks: list[dict]) -> float:
        started = time.perf_counter()
        run = self.backend.predict(tasks, self.config)
        if run.failed_tasks():
            self.errors.extend(o.error for o in run.tasks if o.error)
        return time.perf_counter() - started

    def single(self, number: int) -> float:
        path = self.paths[number % len(self.paths)]
        return self.request([{"id": 1000 + number, "data": {"image": str(path)}}])


@dataclass
class Figures:
    """Seconds per request: singles idle and under load, the bulk request alone and under load."""

    idle: list[float] = field(default_factory=list)
    under_load: list[float] = field(default_factory=list)
    bulk_alone: list[float] = field(default_factory=list)
    bulk_loaded: list[float] = field(default_factory=list)


def measure(requests: Requests, rounds: int, singles: int, think: float) -> Figures:
    bulk_tasks = [{"id": i, "data": {"image": str(path)}} for i, path in enumerate(requests.paths)]
    # Warm-up: predictor set-up, and oneDNN's kernels for every image shape and batch size used.
    requests.request(bulk_tasks)
    for number in range(4):
        requests.single(number)

    # Rounds alternate idle and loaded phases, so a change in the machine's load (it may be shared)
    # falls on both sides of each ratio.
    figures = Figures()
    for _ in range(rounds):
        figures.idle.extend(requests.single(n) for n in range(singles))
        figures.bulk_alone.append(requests.request(bulk_tasks))
        loaded_singles, loaded_bulk = loaded_phase(requests.request, requests.single, bulk_tasks, think)
        figures.under_load.extend(loaded_singles)
        figures.bulk_loaded.append(loaded_bulk)
    return figures


def print_report(args: argparse.Namespace, figures: Figures, errors: list[str]) -> None:
    import torch

    idle, under_load = figures.idle, figures.under_load
    if os.environ.get("FAIRNESS_VERBOSE"):
        print("idle", [round(x, 3) for x in idle], "\nloaded", [round(x, 3) for x in under_load])
    idle_p90, load_p90 = percentile(idle, 0.9), percentile(under_load, 0.9)
    alone_rate = args.bulk / statistics.mean(figures.bulk_alone)
    loaded_rate = args.bulk / statistics.mean(figures.bulk_loaded)
    # upper bound: a single's latency includes waiting
    singles_share = sum(under_load) / sum(figures.bulk_loaded)
    print(
        f"\n{args.arch} (random weights, {args.format}), {args.bulk}-task bulk request, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, think time {args.think} s, load average {os.getloadavg()[0]:.2f}, "
        f"MODEL_LANES {os.environ.get('MODEL_LANES', 'auto')}, "
        f"OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', '(libgomp default)')}"
    )
    print(f"single task, idle server:       {describe(idle)}")
    print(f"single task, during bulk:       {describe(under_load)}")
    print(
        f"p50 ratio {percentile(under_load, 0.5) / percentile(idle, 0.5):.2f}x, "
        f"p90 ratio {load_p90 / idle_p90:.2f}x (target <= 2x), "
        f"p95 ratio {percentile(under_load, 0.95) / percentile(idle, 0.95):.2f}x"
    )
    print(f"bulk alone:        {alone_rate:6.2f} images/s (mean of {len(figures.bulk_alone)})")
    print(
        f"bulk under load:   {loaded_rate:6.2f} images/s (mean of {len(figures.bulk_loaded)}), "
        f"ratio {loaded_rate / alone_rate:.2f} (target >= 0.95); singles' latency was "
        f"{singles_share:.0%} of the bulk time"
    )
    # The model's work while the bulk ran, bulk and singles together: what a work-conserving scheduler
    # keeps at the "alone" rate (batches of one lose none of it on a CPU).
    all_rate = (args.bulk * len(figures.bulk_loaded) + len(under_load)) / sum(figures.bulk_loaded)
    print(
        f"all images under load: {all_rate:6.2f} images/s (bulk and singles), ratio {all_rate / alone_rate:.2f} "
        "of bulk alone"
    )
    print(f"errors: {len(errors)}" + (f" ({errors[0]})" if errors else ""))


def main() -> None:
    args = parse_args()
    from model import YOLOBackend

    with workspace(args.arch, args.bulk) as (work, weights, paths):
        int8 = {"int8_calibration_dir": paths[0].parent, "int8_max_drop": 100.0}
        settings = backend_settings(work, weights.parent, **(int8 if args.format != "pt" else {}))
        config = detector_config(weights.name, args.format)
        requests = Requests(YOLOBackend(settings), config, paths)
        figures = measure(requests, args.rounds, args.singles, args.think)
        requests.backend.close()
    print_report(args, figures, requests.errors)


if __name__ == "__main__":
    main()
