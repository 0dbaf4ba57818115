"""A real `redis-server` (Debian's package) for the tests: one per test session, on a free port of
127.0.0.1, nothing saved to disk, stopped at the end. Never a mock: RQ's registries, heartbeats and
locks are Redis behaviour. `scripts/test.sh` installs the package when it is missing."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    def __init__(self, folder: Path):
        self.folder = folder
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run scripts/test.sh, or apt-get install redis-server")
        for _ in range(5):  # a port taken between choosing and binding: choose again
            self.port = _free_port()
            self.process = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                cwd=self.folder,
                stdout=(self.folder / "redis.log").open("ab"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            if self._wait_until_up():
                return self
            self.stop()
        pytest.fail(f"redis-server did not start:\n{(self.folder / 'redis.log').read_text()[-2000:]}")

    def _wait_until_up(self, timeout: float = 10.0) -> bool:
        import redis

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                return bool(redis.Redis.from_url(self.url).ping())
            except redis.ConnectionError:
                time.sleep(0.05)
        return False

    def flush(self) -> None:
        import redis

        redis.Redis.from_url(self.url).flushall()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
