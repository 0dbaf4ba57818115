"""The SSRF guard (`media/http_client.py`) leans on urllib3's private connection internals
(`HTTPConnection._new_conn`, `_dns_host`, the pool's `ConnectionCls` and `conn_kw`), so urllib3 is
pinned in requirements.txt. These tests run the guard on the installed urllib3 and fail when that is
not the pinned version: an upgrade must pass through here, on purpose."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import urllib3
from urllib3.connection import HTTPConnection

from media.http_client import MediaHTTP, NonPublicAddress
from tests.local_http import LocalHTTPServer

REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements.txt"


def pinned_urllib3() -> str:
    found = re.search(r"^urllib3==(\S+)\s*$", REQUIREMENTS.read_text(), re.MULTILINE)
    assert found, "requirements.txt must pin urllib3 (the SSRF guard subclasses its internals)"
    return found.group(1)


def test_the_installed_urllib3_is_the_pinned_one() -> None:
    assert urllib3.__version__ == pinned_urllib3()


def test_the_internals_the_guard_overrides_are_there() -> None:
    assert callable(HTTPConnection._new_conn)
    assert HTTPConnection("example.com", 80)._dns_host == "example.com"


@pytest.fixture
def loopback_server():
    from http.server import BaseHTTPRequestHandler

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    server = LocalHTTPServer()
    server._listen(Handler)
    with server:
        yield server


def test_the_guard_refuses_loopback_and_lets_an_allowed_connection_through(loopback_server) -> None:
    http = MediaHTTP(retries=0)
    url = loopback_server.url + "/a.jpg"
    with http.deadline(10), pytest.raises(NonPublicAddress) as refused:
        http.get(url, headers={}, timeout=(2, 2), public_only=True)
    assert refused.value.addresses == ["127.0.0.1"]
    with http.deadline(10):
        response = http.get(url, headers={}, timeout=(2, 2), public_only=False)
        assert response.status_code == 200 and response.raw.read() == b"ok"
