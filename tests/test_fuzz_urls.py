"""Property-based fuzzing of media URLs in /predict with the default settings (issue 9, hole 3).

URLs are built from hostile parts: loopback spelled every way (decimal, hex, octal, short, IPv6 literals,
IPv4-mapped, trailing dots, case, percent-encoding), userinfo naming Label Studio or hiding the real host
behind a backslash, and redirects from a public host. The attacker's sink on 127.0.0.1 records every
request: it must never see one, and no answer may be a 5xx. Label Studio (a stand-in, LABEL_STUDIO_URL)
is the only non-public origin the defaults allow. 127.0.0.2 plays a public media host that redirects
wherever the example says (declared public for these tests). Each request has a timeout; `MAX_EXAMPLES`
examples per test keep the file well under a minute.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlparse

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.label_studio_stand_in import LEGACY_KEY as LEGACY_TOKEN
from tests.label_studio_stand_in import StandInLabelStudio
from tests.local_http import LocalHTTPServer
from tests.test_security import Sink

MAX_EXAMPLES = int(os.environ.get("FUZZ_URL_EXAMPLES", "80"))
REQUEST_TIMEOUT_S = 30.0

FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

NOT_AN_IMAGE = b"these bytes are not an image"
CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="r" toName="image">'
    '<Label value="person"/></RectangleLabels></View>'
)


@pytest.fixture(scope="module")
def small_image(tmp_path_factory) -> bytes:
    path: Path = tmp_path_factory.mktemp("fuzz-url-media") / "small.png"
    cv2.imwrite(str(path), np.full((48, 64, 3), 120, np.uint8))
    return path.read_bytes()


class PublicRedirector(LocalHTTPServer):
    """The public media host (on 127.0.0.2): `/to?u=<url>` answers 302 to that URL as it is."""

    def __init__(self, image: bytes):
        self.requests: list[str] = []
        redirector = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                redirector.requests.append(self.path)
                query = parse_qs(urlparse(self.path).query)
                if "u" in query:
                    location = query["u"][0].encode("latin-1", "replace")
                    self.wfile.write(b"HTTP/1.0 302 Found\r\nLocation: " + location + b"\r\n\r\n")
                else:
                    self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(image) + image)

        self.server = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.2:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)


def default_settings(model_root: Path, cache: Path, label_studio_url: str, **overrides):
    from core.settings import Settings

    return Settings(
        _env_file=None,
        model_root=model_root,
        media_cache_dir=cache,
        allow_model_download=False,
        label_studio_url=label_studio_url,
        label_studio_api_key=LEGACY_TOKEN,
        download_connect_timeout=1.0,
        download_read_timeout=1.0,
        download_total_timeout=3.0,
        **overrides,
    )


@pytest.fixture(scope="module")
def world(small_image, model_root, tmp_path_factory):
    """(client, attacker sink, Label Studio stand-in, public redirector, settings) with the default media
    settings: no ALLOWED_MEDIA_HOSTS, no ALLOW_PRIVATE_MEDIA, no ALLOWED_LOCAL_ROOTS."""
    from fastapi.testclient import TestClient

    import media.http_client
    from server.app import create_app

    # The allowed hosts answer bytes that are no image: every example is decided by the fetch alone,
    # without a model call (the fuzzing is about where requests go, and stays fast).
    with (
        pytest.MonkeyPatch.context() as patch,
        Sink(small_image) as attacker,
        StandInLabelStudio(NOT_AN_IMAGE) as label_studio,
        PublicRedirector(NOT_AN_IMAGE) as public,
    ):
        real = media.http_client.is_public_address
        patch.setattr(media.http_client, "is_public_address", lambda a: a == "127.0.0.2" or real(a))
        app_settings = default_settings(
            model_root, tmp_path_factory.mktemp("fuzz-url-cache"), label_studio.url
        )
        assert app_settings.allowed_media_hosts == "" and not app_settings.allow_private_media
        assert app_settings.allowed_local_roots == ""
        with TestClient(create_app(app_settings)) as client:
            yield client, attacker, label_studio, public, app_settings


def loopback_hosts(port: int) -> st.SearchStrategy[str]:
    spellings = [
        "127.0.0.1",
        "localhost",
        "LocalHost",
        "localhost.",
        "127.0.0.1.",
        "2130706433",
        "0x7f000001",
        "0x7F.0.0.1",
        "0177.0.0.1",
        "127.1",
        "127.000.000.001",
        "0.0.0.0",
        "0",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[0:0:0:0:0:ffff:127.0.0.1]",
        "[::127.0.0.1]",
        "%31%32%37.0.0.1",
        "127%2e0%2e0%2e1",
        "169.254.169.254",
        "[fe80::1]",
        "10.0.0.1",
    ]
    return st.sampled_from(spellings).map(lambda host: f"{host}:{port}")


@st.composite
def hostile_urls(draw, attacker_port: int, label_studio: str, public: str) -> str:
    """A URL aimed at the attacker's loopback port, built from parts two parsers may read differently."""
    target = draw(loopback_hosts(attacker_port))
    label_studio_host = label_studio.removeprefix("http://")
    userinfo = draw(st.sampled_from(["", "user:pw@", f"{label_studio_host}@", "a%40b@", ":@", "@"]))
    scheme = draw(st.sampled_from(["http", "HTTP", "https", "hTtP"]))
    separator = draw(st.sampled_from(["/", "\\", "/\\", "\\\\", "//"]))
    path = draw(st.text(st.sampled_from("abc./%@?#\\:;=&~"), max_size=12))
    shape = draw(
        st.sampled_from(["direct", "backslash-userinfo", "label-studio-in-path", "redirect", "relative"])
    )
    if shape == "backslash-userinfo":  # the real host before "\@", Label Studio's after it
        url = f"{scheme}://{target}\\@{label_studio_host}/data/upload/1/x.png"
    elif shape == "label-studio-in-path":
        url = f"{scheme}://{userinfo}{target}{separator}{label_studio_host}/data/upload/{path}"
    elif shape == "relative":  # Label Studio paths get Label Studio's origin in front: never another host
        glue = draw(st.sampled_from(["", "@", "..", "//", "\\\\"]))
        url = f"/data/upload/{glue}{target}/{path}"
    else:
        url = f"{scheme}://{userinfo}{target}{separator}{path}"
    if shape == "redirect":
        encoded = draw(st.sampled_from([url, quote(url, safe=":/@"), url.replace("http", "//", 1)]))
        url = f"{public}/to?u={quote(encoded, safe='')}"
    return url


def post_predict(client, urls: list[str]):
    tasks = [{"id": i + 1, "data": {"image": url}} for i, url in enumerate(urls)]
    body = {"tasks": tasks, "label_config": CONFIG}
    with ThreadPoolExecutor(1) as pool:  # a per-request timeout: a hang fails the example
        return pool.submit(client.post, "/predict", json=body).result(timeout=REQUEST_TIMEOUT_S)


def test_hostile_media_urls_never_reach_a_non_public_address(world):
    client, attacker, label_studio, public, _ = world

    @FUZZ_SETTINGS
    @given(st.lists(hostile_urls(attacker.port, label_studio.url, public.url), min_size=1, max_size=4))
    def check(urls):
        response = post_predict(client, urls)
        assert response.status_code < 500, response.text
        assert attacker.requests == [], (urls, attacker.requests)
        for result in response.json().get("results", []):
            assert "result" in result or result.get("error"), result

    check()
    assert public.requests, "no example got as far as the public host: the redirects were not tried"


def test_the_fuzzed_targets_are_reachable_when_opted_in(world, tmp_path):
    """The sink is really there: a spelling the fuzzing uses reaches it once loopback is opted in."""
    from fastapi.testclient import TestClient

    from server.app import create_app

    _, attacker, label_studio, public, app_settings = world
    opened = default_settings(app_settings.model_root, tmp_path, label_studio.url, allow_private_media=True)
    with TestClient(create_app(opened)) as client:
        response = post_predict(client, [f"http://2130706433:{attacker.port}/x.png", f"{public.url}/y.png"])
    fetched_from_sink, fetched_from_public = response.json()["results"]
    assert "result" in fetched_from_sink, response.text
    assert "not an image" in fetched_from_public["error"]
    assert [path for _, path, _, _ in attacker.requests] == ["/x.png"]
    attacker.requests.clear()
