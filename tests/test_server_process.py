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
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from ultralytics.utils import ASSETS

from tests.conftest import PROJECT_ROOT

CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image" '
    'model_score_threshold="0.0001"><Label value="person"/><Label value="bus"/></RectangleLabels></View>'
)
USER, PASSWORD = "annotator", "server-secret-4e7d1a9b"
AUTH = (USER, PASSWORD)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(model_root, tmp_path):
    with serve(model_root, tmp_path) as running:
        yield running


@contextlib.contextmanager
def serve(model_root: Path, tmp_path: Path, workers: int = 1):
    """./start.sh on a free port, as a user runs it; yields (process, url, log path) once it answers."""
    port = free_port()
    log_path = tmp_path / "server.log"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WORKERS": str(workers),
        "THREADS": "2",
        "GRACEFUL_TIMEOUT": "60",
        "LOG_LEVEL": "DEBUG",
        "MODEL_ROOT": str(model_root),
        "MEDIA_CACHE_DIR": str(tmp_path / "media-cache"),
        "ALLOWED_LOCAL_ROOTS": str(ASSETS),  # the tasks name Ultralytics' sample images by path
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
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                if requests.get(f"{url}/health", auth=AUTH, timeout=5).status_code == 200:
                    break
            except requests.RequestException:  # not bound yet, or the worker still imports
                pass
            assert time.monotonic() < deadline, "the server did not start:\n" + log_path.read_text()
            time.sleep(0.5)
        yield process, url, log_path
    finally:
        with contextlib.suppress(ProcessLookupError):  # workers outlive a killed master otherwise
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def predict_body(image: Path, count: int) -> dict:
    return {"tasks": [{"id": i, "data": {"image": str(image)}} for i in range(count)], "label_config": CONFIG}


@pytest.mark.slow
def test_sigterm_lets_an_inflight_prediction_finish(server, bus_image):
    process, url, log_path = server
    warm = requests.post(f"{url}/predict", json=predict_body(bus_image, 1), auth=AUTH, timeout=120)
    assert warm.status_code == 200, warm.text  # the model is loaded: what follows is inference only

    answer: dict = {}

    def long_predict():
        try:
            answer["response"] = requests.post(
                f"{url}/predict", json=predict_body(bus_image, 64), auth=AUTH, timeout=120
            )
        except Exception as error:  # reported below
            answer["error"] = error

    started = time.monotonic()
    client = threading.Thread(target=long_predict)
    client.start()
    time.sleep(1.5)  # the request is in, inference runs
    process.send_signal(signal.SIGTERM)
    client.join(timeout=120)
    code = process.wait(timeout=90)
    log = log_path.read_text()
    assert "error" not in answer, (answer.get("error"), log[-3000:])
    response = answer["response"]
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 64 and all("result" in r for r in response.json()["results"])
    assert time.monotonic() - started > 2.0, "the prediction was too short to be cut off; use more tasks"
    assert code == 0, log[-3000:]
    assert "Handling signal: term" in log
    assert PASSWORD not in log


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
