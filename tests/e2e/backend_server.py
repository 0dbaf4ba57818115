"""Run OUR backend for the end-to-end tests the way the README tells users to: ``./start.sh`` (gunicorn).

:class:`BackendServer` starts ``start.sh`` as a subprocess in its own process group on a free port of
127.0.0.1, with the backend's settings in the environment (``MODEL_ROOT``, ``LABEL_STUDIO_URL``,
``LABEL_STUDIO_API_KEY``, ...), writes its output (gunicorn's access log and the backend's log) to a
file, waits for ``GET /health``, and stops the whole group at the end (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import requests

from .label_studio import stop_process_group

PROJECT_ROOT = Path(__file__).resolve().parents[2]
START_SCRIPT = PROJECT_ROOT / "start.sh"

_LISTENING_LINE = re.compile(r"Listening at: http://[^:/\s]+:(\d+) ")
_COUNTER_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (?P<value>\S+)$")


class BackendStartError(RuntimeError):
    """The backend did not come up; the message holds the tail of its log."""


class BackendServer:
    """``./start.sh`` on 127.0.0.1, on a port gunicorn gets from the system (PORT=0: nothing can take it
    between choosing and binding; the port is read from gunicorn's "Listening at" line); ``url``,
    ``log_path``, ``log_tail()``, ``metrics()``."""

    def __init__(
        self,
        log_path: Path,
        env: Mapping[str, str],
        *,
        python: str = sys.executable,
        startup_timeout: float = 300.0,
    ):
        self.log_path = Path(log_path)
        self.extra_env = dict(env)
        self.python = python
        self.startup_timeout = startup_timeout
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self.startup_seconds: float | None = None
        self._log_file = None

    @property
    def url(self) -> str:
        assert self.port is not None, "not started"
        return f"http://{self.host}:{self.port}"

    def environment(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LABEL_STUDIO_", "MODEL_", "ALLOW_", "BASIC_AUTH_"))
        }
        for key in ("VENV_DIR", "WORKERS", "THREADS", "PYTHONPATH"):
            env.pop(key, None)
        env.update(
            {
                "HOST": self.host,
                "PORT": "0",
                "PYTHON": self.python,
                "YOLO_OFFLINE": "1",
                "YOLO_VERBOSE": "false",
                "LOG_LEVEL": "INFO",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self) -> BackendServer:
        if self.process is not None:
            raise RuntimeError("already started")
        self.port = None
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        started = time.monotonic()
        self.process = subprocess.Popen(
            [str(START_SCRIPT)],
            cwd=PROJECT_ROOT,
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: gunicorn's master and its workers stop together
        )
        try:
            self._wait_until_healthy(started)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _wait_until_healthy(self, started: float) -> None:
        assert self.process is not None
        while time.monotonic() < started + self.startup_timeout:
            if self.process.poll() is not None:
                raise BackendStartError(
                    f"start.sh exited with code {self.process.returncode} during startup\n"
                    f"--- tail of {self.log_path} ---\n{self.log_tail()}"
                )
            if self.port is None:
                match = _LISTENING_LINE.search(self.log_path.read_text(errors="replace"))
                self.port = int(match.group(1)) if match else None
            if self.port is not None:
                with contextlib.suppress(requests.RequestException):
                    response = requests.get(f"{self.url}/health", timeout=2)
                    if response.status_code == 200 and response.json().get("status") == "UP":
                        return
            time.sleep(0.5)
        raise BackendStartError(
            f"the backend did not answer /health within {self.startup_timeout:.0f} s\n"
            f"--- tail of {self.log_path} ---\n{self.log_tail()}"
        )

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process_group(process, grace_seconds=30)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> BackendServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- looking inside ---------------------------------------------------------------------------
    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:]) or "(empty log)"

    def setup(self, label_config: str) -> str:
        """``POST /setup`` as Label Studio sends it; the model version the backend reports for the config."""
        response = requests.post(
            f"{self.url}/setup",
            json={"project": "1.0", "schema": label_config, "hostname": "", "access_token": ""},
            timeout=10,
        )
        response.raise_for_status()
        return response.json()["model_version"]

    def metrics(self) -> dict[str, float]:
        """``GET /metrics`` as ``{'name{labels}': value}``."""
        response = requests.get(f"{self.url}/metrics", timeout=10)
        response.raise_for_status()
        values = {}
        for line in response.text.splitlines():
            match = _COUNTER_LINE.match(line.strip())
            if match and not line.startswith("#"):
                values[match["name"]] = float(match["value"])
        return values

    def requests_total(self, route: str, status: int = 200) -> int:
        return int(self.metrics().get(f'yolo_backend_requests_total{{route="{route}",status="{status}"}}', 0))
