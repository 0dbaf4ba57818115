"""Project-wide prediction jobs on RQ workers against raw Ultralytics, measured in one run (not in CI).

    python bench/prelabel.py [--tasks 500] [--singles 20] [--media label-studio|local]

Starts what the e2e tests start: a real Label Studio 1.23 (its venv from .ci/install_label_studio.sh),
a redis-server, the backend (`./start.sh`, REDIS_URL) and `./worker.sh` workers, with the shapes model
(models/shapes-yolov8n.pt) on 320x240 images in two projects of tasks/2 each. `--media label-studio`
uploads the images to Label Studio (the jobs download each one from it); `--media local` imports tasks
whose images are files the backend reads itself (as from cloud storage, Label Studio only lists tasks
and stores predictions). Prints:
- raw Ultralytics on the same image files, batches of 8, with every core and with JOB_TORCH_THREADS'
  default (one job's threads), images/s. Ultralytics sets OMP_NUM_THREADS=1 when it is imported first,
  so the threads are set explicitly here, as the backend does;
- the two projects' prediction jobs with one worker, then with two (one job each), images/s from the
  first job's start to the last one's end, nothing else running: downloads and bulk uploads included;
  with the CPU seconds Label Studio and the workers spent per task meanwhile (on this 2-core host
  Label Studio serves the images and stores the predictions on the same cores);
- single-task `/predict` latency (p50/p90) idle and while the jobs run again, for an image fetched from
  Label Studio and for one the backend reads from a local folder. `--label-studio-nice 10` runs Label
  Studio below normal priority. JOB_NICE and JOB_TORCH_THREADS in the environment reach the workers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2
import numpy as np
import psutil
import requests

from tests.e2e.backend_server import BackendServer
from tests.e2e.label_studio import LabelStudioServer, default_venv
from tests.e2e.test_prediction_jobs_e2e import CONFIG, WorkerProcess
from tests.redis_server import RedisServer
from tools.shapes import draw_shapes_image

ROOT = Path(__file__).resolve().parent.parent
SHAPES = ROOT / "models" / "shapes-yolov8n.pt"
BATCH = 8  # INFERENCE_BATCH_SIZE's CPU default


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--singles", type=int, default=20, help="single-task /predict calls per phase")
    parser.add_argument(
        "--media",
        choices=("label-studio", "local"),
        default="label-studio",
        help="images uploaded to Label Studio (jobs download them), or local files the backend reads",
    )
    parser.add_argument(
        "--label-studio-nice",
        type=int,
        default=0,
        help="run Label Studio this much below normal priority: it stands for a server on another host, "
        "so its work for the jobs (serving images, storing predictions) does not take the backend's cores",
    )
    parser.add_argument(
        "--omp-wait-policy",
        default=None,
        help='OMP_WAIT_POLICY of the backend and its workers; default start.sh\'s (PASSIVE), "" for '
        "libgomp's spinning (see docs/performance.md)",
    )
    return parser.parse_args()


def make_images(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        image, _ = draw_shapes_image(rng, 320, 240)
        paths.append(folder / f"shape-{i:04d}.jpg")
        cv2.imwrite(str(paths[-1]), image)
    return paths


def raw_images_per_second(paths: list[Path], threads: int) -> float:
    import torch
    from ultralytics import YOLO

    model = YOLO(str(SHAPES))
    torch.set_num_threads(threads)
    for _ in range(2):  # warm-up: the first calls import and set up the predictor
        model.predict([str(p) for p in paths[:BATCH]], batch=BATCH, verbose=False)
    torch.set_num_threads(threads)  # Ultralytics caps torch's threads when it sets up a predictor
    started = time.perf_counter()
    for start in range(0, len(paths), BATCH):
        model.predict([str(p) for p in paths[start : start + BATCH]], batch=BATCH, verbose=False, conf=0.05)
    return len(paths) / (time.perf_counter() - started)


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU seconds of these processes and all their children, living ones."""
    total = 0.0
    for pid in pids:
        try:
            parent = psutil.Process(pid)
            for process in [parent, *parent.children(recursive=True)]:
                times = process.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
        except psutil.NoSuchProcess:
            continue
    return total


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def single_latencies(backend: BackendServer, tasks: dict[str, dict], count: int, until=None) -> dict:
    """Seconds per single-task /predict, for each of `tasks` in turn (name -> its latencies): an image
    fetched from Label Studio, and one the backend reads from a local folder (media apart)."""
    seconds: dict[str, list[float]] = {name: [] for name in tasks}
    for _ in range(count):
        for name, task in tasks.items():
            if until is not None and until():
                return seconds
            started = time.perf_counter()
            response = requests.post(
                f"{backend.url}/predict",
                json={"tasks": [task], "label_config": CONFIG, "project": task["project"]},
                timeout=300,
            )
            response.raise_for_status()
            seconds[name].append(time.perf_counter() - started)
            time.sleep(0.2)
    return seconds


@dataclass
class JobsRun:
    rate: float  # images/s, first job's start to last job's end
    latencies: dict[str, list[float]]  # single-task /predict seconds meanwhile (none without singles)
    label_studio_ms: float  # Label Studio's CPU milliseconds per task meanwhile
    workers_ms: float  # the workers' (their work horses included)


def run_jobs(
    backend: BackendServer,
    projects: list[int],
    single_tasks: dict[str, dict],
    singles: int,
    pids: dict[str, list[int]],
) -> JobsRun:
    """Start a prediction job per project and wait for them: images/s over all of them, single-task
    latencies meanwhile (`singles` calls of each kind; 0: none), CPU time per task by process."""
    before = {name: cpu_seconds(group) for name, group in pids.items()}
    ids = []
    for project in projects:
        response = requests.post(
            f"{backend.url}/jobs", json={"kind": "predict", "project": project}, timeout=30
        )
        response.raise_for_status()
        ids.append(response.json()["id"])

    def jobs() -> list[dict]:
        return [requests.get(f"{backend.url}/jobs/{i}", timeout=30).json() for i in ids]

    def all_done() -> bool:
        return all(j["state"] in ("succeeded", "failed", "cancelled") for j in jobs())

    while not any(j["state"] == "running" for j in jobs()):
        time.sleep(0.2)
    latencies = single_latencies(backend, single_tasks, singles, until=all_done) if singles else {}
    while not all_done():
        time.sleep(0.5)
    final = jobs()
    assert all(j["state"] == "succeeded" for j in final), final
    done = sum(j["progress"]["done"] for j in final)
    seconds = max(j["finished_at"] for j in final) - min(j["started_at"] for j in final)
    used = {name: (cpu_seconds(group) - before[name]) * 1000 / done for name, group in pids.items()}
    return JobsRun(done / seconds, latencies, used["label_studio"], used["workers"])


def delete_predictions(api, project: int) -> None:
    api.call(
        "POST",
        "/api/dm/actions",
        params={"id": "delete_tasks_predictions", "project": project},
        json={"selectedItems": {"all": True, "excluded": []}},
    )


def main() -> None:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-prelabel-"))
    root = work / "models"
    root.mkdir()
    shutil.copy(SHAPES, root / SHAPES.name)
    images = make_images(work, args.tasks)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    cores = os.cpu_count() or 1
    raw = {threads: raw_images_per_second(images, threads) for threads in sorted({cores, max(1, cores // 2)})}

    label_studio = LabelStudioServer(default_venv()).start()
    if args.label_studio_nice:  # its own process group (start_new_session): the server and its children
        os.setpriority(os.PRIO_PGRP, label_studio.process.pid, args.label_studio_nice)
    redis = RedisServer(work).start()
    backend = None
    try:
        api = label_studio.api
        projects = two_projects(api, images, args.media)
        env = backend_env(work, root, redis, label_studio)
        if args.omp_wait_policy is not None:
            env["OMP_WAIT_POLICY"] = args.omp_wait_policy
        backend = BackendServer(work / "backend.log", env).start()
        singles = single_tasks(api, projects, images[0], args.media)
        idle = single_latencies(backend, singles, args.singles)
        figures = {
            count: jobs_with_workers(count, args, work, backend, label_studio, projects, singles)
            for count in (1, 2)
        }
    finally:
        if backend is not None:
            backend.stop()
        redis.stop()
        label_studio.stop()

    report(args, load, raw, figures, idle)


def single_tasks(api, projects: list[int], local_image: Path, media: str) -> dict[str, dict]:
    """The single /predict calls' tasks: an image fetched from Label Studio (not with local media) and a
    local file."""
    first = api.list_tasks(projects[0], all_fields=False)[0]
    singles = {
        "from Label Studio": {"id": first["id"], "project": projects[0], "data": first["data"]},
        "local file": {"id": 1, "project": projects[0], "data": {"image": str(local_image)}},
    }
    if media == "local":
        singles.pop("from Label Studio")
    return singles


def jobs_with_workers(
    count: int, args, work: Path, backend: BackendServer, label_studio, projects: list[int], singles: dict
) -> list[JobsRun]:
    """With `count` workers: the jobs alone (throughput), then again beside single /predict calls."""
    workers = [
        WorkerProcess(backend.environment(), work / f"worker-{count}-{i}.log").start() for i in range(count)
    ]
    try:
        for worker in workers:
            worker.wait_ready()  # its imports are not the jobs' CPU time
        pids = {"label_studio": [label_studio.process.pid], "workers": [w.process.pid for w in workers]}
        runs = []
        for with_singles in (0, args.singles):
            for project in projects:
                delete_predictions(label_studio.api, project)
            shutil.rmtree(work / "media-cache", ignore_errors=True)  # every image fetched again
            runs.append(run_jobs(backend, projects, singles, with_singles, pids))
        return runs
    finally:
        for worker in workers:
            worker.stop()


def two_projects(api, images: list[Path], media: str) -> list[int]:
    """The images split over two projects (one prediction job each): uploaded, or as local paths."""
    projects = []
    half = len(images) // 2
    for part in (images[:half], images[half:]):
        project = api.create_project(f"bench {len(projects)}", CONFIG)
        for start in range(0, len(part), 100):
            if media == "local":
                api.import_tasks(project["id"], [{"image": str(p)} for p in part[start : start + 100]])
            else:
                api.import_files(project["id"], part[start : start + 100])
        projects.append(project["id"])
    return projects


def backend_env(work: Path, root: Path, redis, label_studio) -> dict[str, str]:
    return {
        "REDIS_URL": redis.url,
        "MODEL_ROOT": str(root),
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.personal_access_token,
        "ALLOW_CUSTOM_MODEL_PATH": "true",
        "ALLOW_MODEL_DOWNLOAD": "false",
        "MEDIA_CACHE_DIR": str(work / "media-cache"),
        "ALLOWED_LOCAL_ROOTS": str(work),  # the "local file" singles
        "WORKERS": "1",
        "THREADS": "4",
    }


def report(args, load: str, raw: dict[int, float], figures: dict[int, list[JobsRun]], idle: dict) -> None:
    print(
        f"\n{args.tasks} tasks (320x240, shapes-yolov8n.pt), media {args.media}, Label Studio at nice "
        f"{args.label_studio_nice}, OMP_WAIT_POLICY "
        f"{'start.sh default' if args.omp_wait_policy is None else repr(args.omp_wait_policy)}, "
        f"JOB_NICE {os.environ.get('JOB_NICE', '10 (default)')}, JOB_TORCH_THREADS "
        f"{os.environ.get('JOB_TORCH_THREADS', 'half the cores (default)')}, load before: {load}"
    )
    best = max(raw.values())
    for threads, rate in raw.items():
        print(f"raw Ultralytics, batches of {BATCH}, {threads} torch thread(s): {rate:.1f} images/s")
    print("single /predict idle: " + latency_line(idle))
    for count, (alone, during) in figures.items():
        print(
            f"{count} worker(s), 2 jobs: {alone.rate:.1f} images/s ({alone.rate / best:.2f}x raw); CPU per "
            f"task: Label Studio {alone.label_studio_ms:.1f} ms, workers {alone.workers_ms:.1f} ms"
        )
        print(
            f"  again with single /predict calls: {during.rate:.1f} images/s; "
            + latency_line(during.latencies, idle)
        )
    print(f"after: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")


def latency_line(latencies: dict[str, list[float]], idle: dict[str, list[float]] | None = None) -> str:
    parts = []
    for name, seconds in latencies.items():
        if not seconds:
            parts.append(f"{name}: no call while they ran")
            continue
        p90 = percentile(seconds, 0.9)
        ratio = f", p90 {p90 / percentile(idle[name], 0.9):.1f}x idle" if idle and seconds else ""
        parts.append(
            f"{name}: p50 {statistics.median(seconds) * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms "
            f"({len(seconds)} calls{ratio})"
        )
    return "; ".join(parts)


if __name__ == "__main__":
    main()
