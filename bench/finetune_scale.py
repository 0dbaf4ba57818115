"""Training at project size: what one job costs at 2,000 and 10,000 annotated images, and what 7 leave.

A generated project (small PNGs, one annotated square each) is served by a stand-in Label Studio over
HTTP (the task list paged as the SDK reads it, the images as uploads). For each size the script runs
`--jobs` real job processes one after the other (`training_pipeline.py <state file>`, as the server
starts them; every job promotes), and measures for each job:

- wall time per phase, as the job reports it (fetch = annotations and images fetched and placed into
  the dataset, dataset = the split settled and dataset.yaml, train, evaluate = both models);
- peak RSS (VmHWM) and peak open files (/proc/<pid>/fd, sampled every 50 ms) of the job process;
- after the last job: versions kept and bytes left under MODEL_ROOT/trained (MODEL_VERSIONS_KEPT).

    YOLO_OFFLINE=1 python bench/finetune_scale.py [--sizes 2000 10000] [--jobs 7 7] [--epochs 1]
        [--imgsz 64] [--side 32] [--results bench/RESULTS.md]

Not in CI. Writes the table under "## Training at project size" in bench/RESULTS.md, with `uptime`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("YOLO_OFFLINE", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

TOKEN = "0123456789abcdef0123456789abcdef01234567"
PROJECT = "1"
LABELS = ("circle", "square", "triangle")
PHASES = {  # the job's phase -> the column it counts in
    "fetching annotations": "fetch",
    "writing dataset": "dataset",
    "training": "train",
    "evaluating": "evaluate",
}


def project(count: int, side: int) -> tuple[list[dict], dict[str, bytes]]:
    """`count` annotated tasks, each a `side` px PNG with one filled square; the labels take turns."""
    tasks, files = [], {}
    for task_id in range(1, count + 1):
        rng = np.random.default_rng(task_id)
        image = np.full((side, side, 3), rng.integers(0, 255, 3), np.uint8)
        x, y = (int(v) for v in rng.integers(2, side // 2, 2))
        size = side // 3
        cv2.rectangle(image, (x, y), (x + size, y + size), (255, 255, 255), -1)
        path = f"/data/upload/{PROJECT}/{task_id}.png"
        files[path] = cv2.imencode(".png", image)[1].tobytes()
        value = {
            "x": 100 * x / side,
            "y": 100 * y / side,
            "width": 100 * size / side,
            "height": 100 * size / side,
            "rotation": 0,
            "rectanglelabels": [LABELS[task_id % 3]],
        }
        region = {"from_name": "label", "to_name": "image", "type": "rectanglelabels", "value": value}
        annotation = {"id": task_id, "result": [region], "was_cancelled": False, "updated_at": "2026"}
        tasks.append({"id": task_id, "data": {"image": path}, "annotations": [annotation]})
    return tasks, files


def serve(tasks: list[dict], files: dict[str, bytes]) -> ThreadingHTTPServer:
    """A stand-in Label Studio on a free port: the paged task list and the uploaded images."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            parsed = urlparse(self.path)
            query = parse_qs(parsed.query)
            if self.headers.get("Authorization") != f"Token {TOKEN}":
                return self._send(401, b"{}")
            if parsed.path == "/api/tasks/":
                size, page = int(query["page_size"][0]), int(query.get("page", ["1"])[0])
                body = {"tasks": tasks[(page - 1) * size : page * size], "total": len(tasks)}
                return self._send(200, json.dumps(body).encode())
            if parsed.path in files:
                return self._send(200, files[parsed.path], "image/png")
            return self._send(404, b"{}")

        def _send(self, status: int, body: bytes, content_type: str = "application/json"):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def labeling_config(epochs: int, imgsz: int) -> str:
    labels = "".join(f'<Label value="{label}"/>' for label in LABELS)
    return (
        '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image" '
        f'model_path="shapes-yolov8n.pt" model_train_epochs="{epochs}" model_train_imgsz="{imgsz}" '
        f'model_train_batch="32" model_train_promote="always">{labels}</RectangleLabels></View>'
    )


def proc_peak(pid: int) -> tuple[int, int]:
    """(VmHWM bytes, open descriptors) of a live process; (0, 0) once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        hwm = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM"))
        return hwm, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return 0, 0


def run_job(jobs_dir: Path, config: str, env: dict[str, str], number: int) -> dict:
    """One job process, watched: phases (wall time), peak RSS and open files; its outcome."""
    from training.jobs import Job, JobFiles

    files = JobFiles(jobs_dir)
    jobs_dir.mkdir(parents=True, exist_ok=True)
    job = Job(id=f"bench-{number}", project=PROJECT, control="label", params={"label_config": config})
    files.save(job)
    with files.log_path(job.id).open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "training_pipeline.py"), str(files.state_path(job.id))],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    started = time.perf_counter()
    phase, phase_started, seconds = "start", started, {}
    peak_rss = peak_files = 0
    while process.poll() is None:
        rss, open_files = proc_peak(process.pid)
        peak_rss, peak_files = max(peak_rss, rss), max(peak_files, open_files)
        state = files.load(job.id)
        if state.phase != phase:
            now = time.perf_counter()
            seconds[phase] = seconds.get(phase, 0.0) + now - phase_started
            phase, phase_started = state.phase, now
        time.sleep(0.05)
    now = time.perf_counter()
    seconds[phase] = seconds.get(phase, 0.0) + now - phase_started
    state = files.load(job.id)
    if state.state != "succeeded":
        raise SystemExit(f"job {job.id} {state.state}: {state.error}\n" + "\n".join(state.log_tail[-15:]))
    columns = {column: round(seconds.get(name, 0.0), 1) for name, column in PHASES.items()}
    startup = seconds.get("start", 0.0) + seconds.get("queued", 0.0)
    return {
        **columns,
        "startup": round(startup, 1),
        "total": round(now - started, 1),
        "peak_rss_mb": round(peak_rss / 2**20),
        "peak_open_files": peak_files,
        "version": state.version,
        "message": state.message,
    }


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def bench_size(count: int, jobs_count: int, args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="finetune-scale-"))
    try:
        model_root = work / "models"
        model_root.mkdir()
        shutil.copy(ROOT / "models" / "shapes-yolov8n.pt", model_root / "shapes-yolov8n.pt")
        tasks, files = project(count, args.side)
        server = serve(tasks, files)
        env = {
            **os.environ,
            "MODEL_ROOT": str(model_root),
            "MEDIA_CACHE_DIR": str(work / "cache"),
            "LABEL_STUDIO_URL": f"http://127.0.0.1:{server.server_address[1]}",
            "LABEL_STUDIO_API_KEY": TOKEN,
            "ALLOW_CUSTOM_MODEL_PATH": "true",
            "ALLOW_MODEL_DOWNLOAD": "false",
            "YOLO_OFFLINE": "1",
        }
        config = labeling_config(args.epochs, args.imgsz)
        jobs = []
        for number in range(1, jobs_count + 1):
            jobs.append(run_job(model_root / "jobs", config, env, number))
            print(f"{count} images, job {number}: {jobs[-1]}", flush=True)
        server.shutdown()
        trained = model_root / "trained"
        versions = [p.name for p in (trained / PROJECT / "label").iterdir() if p.is_dir()]
        return {"images": count, "jobs": jobs, "versions": sorted(versions), "bytes": folder_bytes(trained)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def results_section(results: list[dict], args: argparse.Namespace, load: str) -> str:
    lines = [
        "## Training at project size (`bench/finetune_scale.py`)",
        "",
        f"`YOLO_OFFLINE=1 python bench/finetune_scale.py --sizes {' '.join(map(str, args.sizes))} "
        f"--jobs {' '.join(map(str, args.jobs))} --epochs {args.epochs} --imgsz {args.imgsz} --side {args.side}`, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}, {os.cpu_count()} cores, CPU. Load when it ran "
        f"(`uptime`): {load}",
        "",
        "Each job: a real job process, annotations paged from a stand-in Label Studio over HTTP, every image "
        f"downloaded ({args.side} px PNG) and placed into the dataset, {args.epochs} epoch(s) at "
        f"{args.imgsz} px, both models evaluated on the held-out fifth, promoted. Seconds per phase; "
        "`fetch` includes placing the images; job 1 downloads, later jobs find the media cache filled.",
        "",
        "| images | job | fetch s | dataset s | train s | evaluate s | total s | peak RSS MB | peak open files |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for number, job in enumerate(result["jobs"], start=1):
            lines.append(
                f"| {result['images']} | {number} | {job['fetch']} | {job['dataset']} | {job['train']} | "
                f"{job['evaluate']} | {job['total']} | {job['peak_rss_mb']} | {job['peak_open_files']} |"
            )
    lines.append("")
    for result in results:
        lines.append(
            f"- {result['images']} images, after {len(result['jobs'])} jobs: {len(result['versions'])} "
            f"version(s) kept (MODEL_VERSIONS_KEPT=5), {result['bytes'] / 2**20:.1f} MiB under "
            "MODEL_ROOT/trained"
        )
    return "\n".join(lines) + "\n"


def write_results(path: Path, section: str) -> None:
    """Replace (or add) this section; other sections stay as they are."""
    title = section.splitlines()[0]
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start = text.find(title)
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--jobs", type=int, nargs="+", default=[7], help="jobs per size (the last repeats)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--imgsz", type=int, default=64)
    parser.add_argument("--side", type=int, default=32)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args()
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    counts = [args.jobs[min(i, len(args.jobs) - 1)] for i in range(len(args.sizes))]
    results = []
    for size, jobs in zip(args.sizes, counts, strict=True):
        results.append(bench_size(size, jobs, args))
        section = results_section(results, args, load)  # written after each size: a long run keeps its part
        write_results(args.results, section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
