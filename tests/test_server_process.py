"""The real server, as `./start.sh` runs it (gunicorn, uvicorn workers): shutdown, body limits, logs.

On SIGTERM gunicorn stops accepting connections and lets in-flight requests finish within
GRACEFUL_TIMEOUT; a prediction running at that moment still gets its 200.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
from ultralytics.utils import ASSETS

from tests.conftest import PROJECT_ROOT
from tests.local_http import LocalHTTPServer

CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image" '
    'model_score_threshold="0.0001"><Label value="person"/><Label value="bus"/></RectangleLabels></View>'
)
USER, PASSWORD = "annotator", "server-secret-4e7d1a9b"
AUTH = (USER, PASSWORD)


@pytest.fixture
def server(model_root, tmp_path):
    """./start.sh over its own MODEL_ROOT: the default detector, and `evil.pt`, a weight file whose
    unpickling would create `tmp_path / "code-ran"`."""
    from tests.known_models import write_code_running_weights

    own_root = tmp_path / "models"
    own_root.mkdir()
    shutil.copy(model_root / "yolov8m.pt", own_root / "yolov8m.pt")
    write_code_running_weights(own_root / "evil.pt", tmp_path / "code-ran")
    with serve(own_root, tmp_path) as running:
        yield running


def wait_for_log(log_path: Path, pattern: str, process: subprocess.Popen, timeout: float = 120) -> re.Match:
    """The first match of `pattern` in the server's log, once it is written (the server must stay up)."""
    deadline = time.monotonic() + timeout
    while True:
        match = re.search(pattern, log_path.read_text(errors="replace"))
        if match:
            return match
        assert process.poll() is None, log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, f"no {pattern!r} in the log:\n" + log_path.read_text()[-3000:]
        time.sleep(0.1)


@contextlib.contextmanager
def serve(model_root: Path, tmp_path: Path, workers: int = 1):
    """./start.sh as a user runs it, on a port the system picks (PORT=0: no port can be taken between
    choosing and binding it); yields (process, url, log path) once it answers."""
    log_path = tmp_path / "server.log"
    env = {
        **{k: v for k, v in os.environ.items() if k != "ULTRALYTICS_SAFE_LOAD"},  # start.sh's default
        "PYTHON": sys.executable,
        "HOST": "127.0.0.1",
        "PORT": "0",
        "WORKERS": str(workers),
        "THREADS": "2",
        "GRACEFUL_TIMEOUT": "60",
        "LOG_LEVEL": "DEBUG",
        "MODEL_ROOT": str(model_root),
        "ALLOW_CUSTOM_MODEL_PATH": "true",
        "MEDIA_CACHE_DIR": str(tmp_path / "media-cache"),
        "ALLOWED_LOCAL_ROOTS": f"{ASSETS}:{tmp_path}",  # tasks name sample images and the test's files
        "ALLOW_PRIVATE_MEDIA": "true",  # and HeldImage, a media server on 127.0.0.1
        "ALLOW_MODEL_DOWNLOAD": "false",
        "YOLO_OFFLINE": "1",
        "LABEL_STUDIO_URL": "",
        "LABEL_STUDIO_API_KEY": "",
        "BASIC_AUTH_USER": USER,
        "BASIC_AUTH_PASS": PASSWORD,
        "MAX_REQUEST_BYTES": "200000",
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            ["./start.sh"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: the workers go with the master at the end
        )
    try:
        port = wait_for_log(log_path, r"Listening at: http://127\.0\.0\.1:(\d+)", process).group(1)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                if requests.get(f"{url}/health", auth=AUTH, timeout=5).status_code == 200:
                    break
            except requests.RequestException:  # the worker still imports
                pass
            assert time.monotonic() < deadline, "the server did not start:\n" + log_path.read_text()
            time.sleep(0.5)
        yield process, url, log_path
    finally:
        with contextlib.suppress(ProcessLookupError):  # workers outlive a killed master otherwise
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def predict_body(image: Path | str, count: int, config: str = CONFIG) -> dict:
    return {"tasks": [{"id": i, "data": {"image": str(image)}} for i in range(count)], "label_config": config}


class HeldImage(LocalHTTPServer):
    """Serves one PNG at /held.png, sent only once the test sets `release`: a prediction that fetches it
    stays in flight for exactly as long as the test needs. `requested` is set when the backend asks."""

    def __init__(self):
        self.requested = threading.Event()
        self.release = threading.Event()
        png = cv2.imencode(".png", np.full((64, 96, 3), 90, np.uint8))[1].tobytes()
        held = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                held.requested.set()
                if not held.release.wait(120):
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(png)))
                self.end_headers()
                self.wfile.write(png)

        self._listen(Handler)


@pytest.mark.slow
def test_sigterm_lets_an_inflight_prediction_finish(server):
    """A prediction in flight when SIGTERM arrives (held there: its image is sent only after the worker
    has begun shutting down) still gets its 200 with a prediction, and the server exits cleanly."""
    process, url, log_path = server
    answer: dict = {}
    with HeldImage() as media:

        def in_flight_predict():
            try:
                answer["response"] = requests.post(
                    f"{url}/predict", json=predict_body(f"{media.url}/held.png", 1), auth=AUTH, timeout=120
                )
            except Exception as error:  # reported below
                answer["error"] = error
            answer["finished"] = time.monotonic()

        client = threading.Thread(target=in_flight_predict)
        client.start()
        assert media.requested.wait(120), log_path.read_text()[-3000:]
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        wait_for_log(log_path, "Handling signal: term", process)
        wait_for_log(log_path, "Waiting for connections to close", process)
        media.release.set()
        client.join(timeout=120)
    code = process.wait(timeout=90)
    log = log_path.read_text()
    assert "error" not in answer, (answer.get("error"), log[-3000:])
    assert answer["finished"] > signalled
    response = answer["response"]
    assert response.status_code == 200, response.text
    assert "result" in response.json()["results"][0], response.text
    assert code == 0, log[-3000:]
    assert PASSWORD not in log


@pytest.mark.slow
def test_start_sh_refuses_a_weight_file_that_runs_code(server, tmp_path):
    """start.sh turns ULTRALYTICS_SAFE_LOAD on (the test leaves the environment without it): a `.pt`
    whose unpickling would run code gets a 422 naming the file, its code never runs, and the real
    checkpoint beside it still loads."""
    _, url, _ = server
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.full((64, 96, 3), 90, np.uint8))
    evil_config = CONFIG.replace('name="label"', 'name="label" model_path="evil.pt"')
    refused = requests.post(
        f"{url}/predict", json=predict_body(small, 1, evil_config), auth=AUTH, timeout=120
    )
    assert refused.status_code == 422, refused.text
    assert "'evil.pt' could not be loaded as an Ultralytics YOLO model" in refused.json()["error"]
    assert not (tmp_path / "code-ran").exists(), "unpickling the weight file ran its code"
    ok = requests.post(f"{url}/predict", json=predict_body(small, 1), auth=AUTH, timeout=120)
    assert ok.status_code == 200 and "result" in ok.json()["results"][0], ok.text


@pytest.mark.slow
def test_body_limit_and_auth_on_the_real_server(server, bus_image):
    process, url, log_path = server
    host, port = url.removeprefix("http://").split(":")
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    # Declared length over the limit: the client sends it all and still reads the 413.
    big = predict_body(bus_image, 1)
    big["tasks"][0]["data"]["padding"] = "x" * 300_000
    declared = requests.post(f"{url}/predict", json=big, auth=AUTH, timeout=60)
    assert declared.status_code == 413 and "MAX_REQUEST_BYTES" in declared.json()["error"]

    # Chunked, no Content-Length: counted as it arrives.
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    chunks = [json.dumps(predict_body(bus_image, 1))[:-1].encode() + b', "padding": "']
    chunks += [b"y" * 50_000] * 6 + [b'"}']
    connection.request(
        "POST",
        "/predict",
        body=iter(chunks),
        headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
        encode_chunked=True,
    )
    chunked = connection.getresponse()
    assert chunked.status == 413 and b"MAX_REQUEST_BYTES" in chunked.read()
    connection.close()

    # Wrong credentials: 401, and neither password reaches the log.
    wrong = requests.post(
        f"{url}/predict", json=predict_body(bus_image, 1), auth=(USER, "wrong-pw-8c2e"), timeout=60
    )
    assert wrong.status_code == 401
    ok = requests.post(f"{url}/predict", json=predict_body(bus_image, 1), auth=AUTH, timeout=120)
    assert ok.status_code == 200 and "result" in ok.json()["results"][0]
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=90)
    log = log_path.read_text()
    assert '"POST /predict HTTP/1.1" 413' in log and '"POST /predict HTTP/1.1" 401' in log
    for secret in (PASSWORD, "wrong-pw-8c2e", token):
        assert secret not in log


@pytest.mark.slow
def test_metrics_add_up_over_two_workers(model_root, tmp_path):
    """With WORKERS=2 every scrape, whichever worker answers it, counts the requests of both workers
    (per-process counters gave each scrape one worker's share). Each worker in turn is paused
    (SIGSTOP) while the other serves 10 requests, so both are known to have served some."""
    import psutil
    from prometheus_client.parser import text_string_to_metric_families

    def get(url: str) -> requests.Response:  # a connection per request: any running worker may accept it
        return requests.get(url, auth=AUTH, timeout=30, headers={"Connection": "close"})

    def health_count(url: str) -> float:
        families = text_string_to_metric_families(get(f"{url}/metrics").text)
        return sum(
            sample.value
            for family in families
            for sample in family.samples
            if sample.name == "yolo_backend_requests_total" and sample.labels["route"] == "/health"
        )

    with serve(model_root, tmp_path, workers=2) as (process, url, _log):
        workers = psutil.Process(process.pid).children()
        assert len(workers) == 2
        before = [health_count(url) for _ in range(4)]
        for paused in workers:
            paused.suspend()
            try:
                assert {get(f"{url}/health").status_code for _ in range(10)} == {200}
            finally:
                paused.resume()
        after = [health_count(url) for _ in range(6)]
        assert len(set(before)) == 1 and after == [before[0] + 20] * 6


@pytest.mark.slow
def test_docker_healthcheck_works_with_basic_auth_on(server):
    """Hole 7's other half: the image's HEALTHCHECK sends the configured credentials (it got 401 before)."""
    _, url, _ = server
    env = {**os.environ, "PORT": url.rsplit(":", 1)[1], "BASIC_AUTH_USER": USER, "BASIC_AUTH_PASS": PASSWORD}
    check = [sys.executable, "scripts/healthcheck.py"]
    assert subprocess.run(check, cwd=PROJECT_ROOT, env=env, timeout=30).returncode == 0
    env["BASIC_AUTH_PASS"] = "wrong"
    assert subprocess.run(check, cwd=PROJECT_ROOT, env=env, timeout=30).returncode == 1


@pytest.mark.parametrize("script", ["start.sh", "worker.sh"])
@pytest.mark.parametrize(
    ("given", "served_with"),
    [(None, "PASSIVE"), ("ACTIVE", "ACTIVE"), ("", "(unset)")],
)
def test_start_sh_lets_torch_threads_sleep_unless_told_otherwise(tmp_path, script, given, served_with):
    """start.sh's and worker.sh's OMP_WAIT_POLICY: PASSIVE by default (a job on the same host must not slow
    an opened task 7-14x, nor spin its own threads against the web server's), the user's value when set,
    libgomp's own default when set empty."""
    stand_in = tmp_path / "python"  # what the script execs as "$PYTHON ...": prints the policy
    stand_in.write_text('#!/bin/sh\necho "policy=${OMP_WAIT_POLICY-(unset)}"\n')
    stand_in.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    env["PYTHON"] = str(stand_in)
    env.setdefault("REDIS_URL", "redis://127.0.0.1:1/0")  # worker.sh asks for one
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    done = subprocess.run(
        [str(PROJECT_ROOT / script)], env=env, capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.strip() == f"policy={served_with}"
