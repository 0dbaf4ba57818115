"""Soak test: the real server under a mix of good and hostile requests for minutes; not part of CI.

    python bench/soak.py [--minutes 10] [--warmup 120] [--clients 8] [--threads 8] [--workers 1]

Starts `./start.sh` (gunicorn, uvicorn workers) on a free port with a private MODEL_ROOT (the shapes
detector plus a corrupt weight file) and a private media folder, and a small HTTP media server of its
own. `--clients` threads then send, for `--minutes`, a weighted random mix of requests (good
predictions from local files and over HTTP, broken images, decompression bombs, unsupported schemes,
refused local paths, corrupt and escaping model paths, malformed bodies, bodies over MAX_REQUEST_BYTES,
wrong basic auth, /setup, /webhook, /health, /metrics).

Every kind has the status it must get; anything else counts as an error of its class. Prints requests
served, errors by class, latency (p50, p95, max) per kind and overall, and the server's RSS (master and
workers) after warm-up, every 30 s, and at the end. Exit status 1 when any request got an unexpected
answer or RSS grew by more than 10 %.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import psutil
import requests

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from tools.shapes import draw_shapes_image  # noqa: E402

USER, PASSWORD = "soak", "soak-password"
CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image" '
    'model_path="{model}" model_score_threshold="0.25"><Label value="Circle" predicted_values="circle"/>'
    '<Label value="Square" predicted_values="square"/><Label value="Triangle" predicted_values="triangle"/>'
    "</RectangleLabels></View>"
)
GOOD_CONFIG = CONFIG.format(model="shapes.pt")
TWO_CONTROLS = GOOD_CONFIG.replace(
    "</View>",
    '<PolygonLabels name="broken" toName="image" model_path="garbage.pt"><Label value="x"/></PolygonLabels></View>',
)


def png_header_only(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


# -- the world the server sees -----------------------------------------------------------------------------


@dataclass
class World:
    root: Path
    models: Path
    media: Path
    images: list[Path]
    media_url: str = ""


def build_world(root: Path, image_count: int = 16) -> World:
    models, media = root / "models", root / "media"
    models.mkdir()
    media.mkdir()
    shutil.copy(PROJECT_ROOT / "models" / "shapes-yolov8n.pt", models / "shapes.pt")
    (models / "garbage.pt").write_bytes(os.urandom(4096))
    rng = np.random.default_rng(7)
    images = []
    for i in range(image_count):
        image, _ = draw_shapes_image(rng, width=640, height=480)
        path = media / f"shapes-{i}.jpg"
        cv2.imwrite(str(path), image)
        images.append(path)
    (media / "notes.jpg").write_text("not an image")
    (media / "bomb.png").write_bytes(png_header_only(30_000, 30_000))
    return World(root=root, models=models, media=media, images=images)


class MediaServer:
    """Serves the media folder over HTTP; `/slow/...` waits a second first."""

    def __init__(self, folder: Path):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                if path.startswith("/slow/"):
                    time.sleep(1.0)
                    path = path[5:]
                file = folder / path.lstrip("/")
                if not file.is_file():
                    self.send_response(404)
                    self.end_headers()
                    return
                body = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


# -- the mix --------------------------------------------------------------------------------------------------

Request = tuple[str, str, dict]  # method, path, keyword arguments for requests


def tasks(*urls: str) -> list[dict]:
    return [{"id": i + 1, "data": {"image": url}} for i, url in enumerate(urls)]


class Kind(NamedTuple):
    name: str
    weight: float
    expected: set[int]  # the statuses it may get
    make: Callable[[random.Random], Request]


def good_local(world: World, r: random.Random) -> Request:
    picks = r.sample(world.images, r.randint(1, 4))
    return "POST", "/predict", {"json": {"tasks": tasks(*map(str, picks)), "label_config": GOOD_CONFIG}}


def good_http(world: World, r: random.Random) -> Request:
    picks = [f"{world.media_url}/{p.name}?v={r.randint(0, 3)}" for p in r.sample(world.images, 2)]
    return "POST", "/predict", {"json": {"tasks": tasks(*picks), "label_config": GOOD_CONFIG}}


def bad_media_batch(world: World, r: random.Random) -> Request:
    media = world.media_url
    urls = [
        str(r.choice(world.images)),
        str(world.media / "notes.jpg"),
        str(world.media / "bomb.png"),
        "/etc/passwd",
        "gopher://127.0.0.1/x",
        f"{media}/missing.jpg",
        f"{media}/slow/{world.images[0].name}?n={r.random()}",
        str(r.choice(world.images)),
    ]
    return "POST", "/predict", {"json": {"tasks": tasks(*urls), "label_config": GOOD_CONFIG}}


def two_controls(world: World, r: random.Random) -> Request:
    body = {"tasks": tasks(str(r.choice(world.images))), "label_config": TWO_CONTROLS}
    return "POST", "/predict", {"json": body}


def bad_model(world: World, r: random.Random) -> Request:
    model = r.choice(["garbage.pt", "../models/shapes.pt", "/etc/passwd", "missing.pt"])
    body = {"tasks": tasks(str(world.images[0])), "label_config": CONFIG.format(model=model)}
    return "POST", "/predict", {"json": body}


def bad_body(world: World, r: random.Random) -> Request:
    body = r.choice(
        [
            b"{not json",
            b"[" * 20_000 + b"]" * 20_000,
            json.dumps({"tasks": "x", "label_config": GOOD_CONFIG}).encode(),
            json.dumps({"tasks": [1, 2], "label_config": GOOD_CONFIG}).encode(),
            json.dumps({"tasks": [{"data": []}], "label_config": GOOD_CONFIG}).encode(),
            json.dumps({"tasks": tasks("x"), "label_config": "<View"}).encode(),
            json.dumps({"tasks": tasks("x"), "label_config": 5}).encode(),
        ]
    )
    return "POST", "/predict", {"data": body, "headers": {"Content-Type": "application/json"}}


def too_big(world: World, r: random.Random) -> Request:
    body = {"tasks": tasks(str(world.images[0])), "label_config": GOOD_CONFIG, "pad": "x" * 2_000_000}
    return "POST", "/predict", {"json": body}


def wrong_auth(world: World, r: random.Random) -> Request:
    body = {"tasks": tasks("x"), "label_config": GOOD_CONFIG}
    return "POST", "/predict", {"json": body, "auth": (USER, "no")}


def setup(world: World, r: random.Random) -> Request:
    return "POST", "/setup", {"json": {"project": "1.1", "schema": GOOD_CONFIG, "hostname": "http://ls:8080"}}


def webhook(world: World, r: random.Random) -> Request:
    action = r.choice(["ANNOTATION_CREATED", "SOMETHING"])
    return "POST", "/webhook", {"json": {"action": action, "project": {"id": 1}}}


def training_without_config(world: World, r: random.Random) -> Request:
    # No label_config in the event: the backend cannot tell what to train and says so with a 400.
    return "POST", "/webhook", {"json": {"action": "START_TRAINING", "project": {"id": 1}}}


def health(world: World, r: random.Random) -> Request:
    return "GET", r.choice(["/health", "/metrics"]), {}


def mix(world: World) -> list[Kind]:
    """Every kind of request with its weight in the mix and the statuses it may get."""
    kinds = [
        ("good local", 30, {200}, good_local),
        ("good http", 10, {200}, good_http),
        ("bad media batch", 8, {200}, bad_media_batch),
        ("two controls, one broken", 5, {200}, two_controls),
        ("bad model", 6, {422}, bad_model),
        ("bad body", 10, {400, 422}, bad_body),
        ("too big", 3, {413}, too_big),
        ("wrong auth", 4, {401}, wrong_auth),
        ("setup", 8, {200}, setup),
        ("webhook", 4, {200}, webhook),
        ("training without config", 2, {400}, training_without_config),
        ("health", 10, {200}, health),
    ]
    return [Kind(name, weight, expected, partial(make, world)) for name, weight, expected, make in kinds]


# -- the run ---------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_rss(master: psutil.Process) -> tuple[int, int]:
    """RSS in bytes and thread count, summed over the gunicorn master and its workers."""
    rss = threads = 0
    for process in [master, *master.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # a process that just ended
            rss += process.memory_info().rss
            threads += process.num_threads()
    return rss, threads


def start_server(world: World, args: argparse.Namespace) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WORKERS": str(args.workers),
        "THREADS": str(args.threads),
        "LOG_LEVEL": "WARNING",
        "MODEL_ROOT": str(world.models),
        "ALLOW_CUSTOM_MODEL_PATH": "true",
        "ALLOW_MODEL_DOWNLOAD": "false",
        "YOLO_OFFLINE": "1",
        "MEDIA_CACHE_DIR": str(world.root / "cache"),
        "MEDIA_CACHE_BYTES": str(20 * 1024**2),
        "ALLOWED_LOCAL_ROOTS": str(world.media),
        "ALLOW_PRIVATE_MEDIA": "true",  # the soak's media server is on 127.0.0.1
        "MAX_REQUEST_BYTES": str(1024**2),
        "MAX_IMAGE_PIXELS": str(4_000_000),
        "DOWNLOAD_READ_TIMEOUT": "5",
        "BASIC_AUTH_USER": USER,
        "BASIC_AUTH_PASS": PASSWORD,
        "LABEL_STUDIO_URL": "",
        "LABEL_STUDIO_API_KEY": "",
    }
    log_path = world.root / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            ["./start.sh"], cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit("server exited:\n" + log_path.read_text()[-3000:])
        try:
            if requests.get(f"{url}/health", auth=(USER, PASSWORD), timeout=5).status_code == 200:
                return process, url, log_path
        except requests.RequestException:
            pass
        time.sleep(0.5)
    process.kill()
    sys.exit("server did not start:\n" + log_path.read_text()[-3000:])


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--threads", type=int, default=8, help="THREADS of the server")
    parser.add_argument("--workers", type=int, default=1, help="WORKERS of the server")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--warmup", type=float, default=120.0, help="seconds of the mix before measuring (allocator warm-up)"
    )
    return parser.parse_args()


@dataclass
class Tally:
    """What the measured clients saw: latencies and statuses per kind, unexpected answers by class."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    errors: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, elapsed: float, status: int, outcome: str | None) -> None:
        with self.lock:
            self.latencies[kind].append(elapsed)
            self.statuses[kind][status] += 1
            if outcome:
                self.errors[outcome] += 1


def send(http: requests.Session, url: str, kind: Kind, rng: random.Random) -> tuple[float, int, str | None]:
    """One request of `kind`: seconds it took, its status, what was wrong with the answer (None: nothing)."""
    method, path, kwargs = kind.make(rng)
    kwargs.setdefault("auth", (USER, PASSWORD))
    started = time.perf_counter()
    try:
        response = http.request(method, url + path, timeout=120, **kwargs)
        status, outcome = response.status_code, None
        if status not in kind.expected:
            outcome = f"unexpected {status} for {kind.name}"
        elif status >= 400 and "error" not in response.json():
            outcome = f"{status} without an error message for {kind.name}"
    except requests.RequestException as error:
        status, outcome = 0, f"{type(error).__name__} for {kind.name}"
    return time.perf_counter() - started, status, outcome


def start_clients(
    kinds: list[Kind], url: str, seeds: list[int], stop_at: float, tally: Tally | None
) -> list[threading.Thread]:
    """One thread per seed sending the mix until `stop_at` (monotonic); counted in `tally` if given."""

    def client(seed: int) -> None:
        rng = random.Random(seed)
        http = requests.Session()
        weights = [kind.weight for kind in kinds]
        while time.monotonic() < stop_at:
            kind = rng.choices(kinds, weights)[0]
            elapsed, status, outcome = send(http, url, kind, rng)
            if tally is not None:
                tally.record(kind.name, elapsed, status, outcome)

    threads = [threading.Thread(target=client, args=(seed,), daemon=True) for seed in seeds]
    for thread in threads:
        thread.start()
    return threads


def stop_server(process: subprocess.Popen, log_path: Path) -> int:
    """SIGTERM (then kill) the server; the number of 'Unhandled error' lines (5xx) in its log."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
    return log_path.read_text().count("Unhandled error")


def print_report(args: argparse.Namespace, kinds: list[Kind], tally: Tally, duration: float) -> None:
    every = [value for values in tally.latencies.values() for value in values]
    served = sum(sum(counter.values()) for counter in tally.statuses.values())
    print(
        f"\nsoak: {args.clients} clients, {duration / 60:.1f} min, THREADS={args.threads}, WORKERS={args.workers}"
    )
    print(f"requests served: {served} ({served / duration:.1f}/s)")
    print(f"{'kind':28} {'count':>6} {'statuses':28} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for kind in kinds:
        values = tally.latencies.get(kind.name, [])
        status_text = ", ".join(f"{code}: {n}" for code, n in sorted(tally.statuses[kind.name].items()))
        print(
            f"{kind.name:28} {len(values):6d} {status_text:28} {percentile(values, 50) * 1000:8.0f} "
            f"{percentile(values, 95) * 1000:8.0f} {max(values, default=0) * 1000:8.0f}"
        )
    print(
        f"{'all':28} {len(every):6d} {'':28} {percentile(every, 50) * 1000:8.0f} {percentile(every, 95) * 1000:8.0f}"
    )
    expected_errors = sum(
        n
        for kind in kinds
        for code, n in tally.statuses[kind.name].items()
        if code in kind.expected and code >= 400
    )
    print(f"answers with the expected 4xx: {expected_errors}")
    print("errors by class (unexpected answers):", dict(tally.errors) or "none")


def main() -> int:
    args = parse_args()
    root = Path(tempfile.mkdtemp(prefix="soak-"))
    world = build_world(root)
    world.media_url = MediaServer(world.media).url
    process, url, log_path = start_server(world, args)
    master = psutil.Process(process.pid)
    kinds = mix(world)

    # Warm-up with the same mix and concurrency: models loaded, caches and thread pools at full size.
    warm_seeds = [args.seed * 1000 - i - 1 for i in range(args.clients)]
    for thread in start_clients(kinds, url, warm_seeds, time.monotonic() + args.warmup, tally=None):
        thread.join()
    rss_start, _ = server_rss(master)
    rss_samples = [(0.0, *server_rss(master))]

    tally = Tally()
    stop_at = time.monotonic() + args.minutes * 60
    began = time.monotonic()
    seeds = [args.seed * 1000 + i for i in range(args.clients)]
    threads = start_clients(kinds, url, seeds, stop_at, tally)
    while any(thread.is_alive() for thread in threads):
        time.sleep(min(30.0, max(1.0, stop_at - time.monotonic())))
        rss_samples.append((time.monotonic() - began, *server_rss(master)))
    for thread in threads:
        thread.join()
    duration = time.monotonic() - began
    rss_end, _ = server_rss(master)
    server_errors = stop_server(process, log_path)

    print_report(args, kinds, tally, duration)
    print(f"'Unhandled error' (5xx) in the server log: {server_errors}")
    growth = (rss_end - rss_start) / rss_start
    print(
        "server RSS MiB (threads): "
        + ", ".join(f"{t / 60:.1f} min {rss / 2**20:.0f} ({threads})" for t, rss, threads in rss_samples)
        + f"; start {rss_start / 2**20:.0f}, end {rss_end / 2**20:.0f} ({growth:+.1%})"
    )
    shutil.rmtree(root, ignore_errors=True)
    return 1 if tally.errors or server_errors or growth > 0.10 else 0


if __name__ == "__main__":
    sys.exit(main())
