"""Holes found in review (issue 9), each reproduced over HTTP against the real app: a stand-in Label Studio
that wants the API key, and a second server on 127.0.0.1 playing the attacker, which records every
request and its Authorization header. Each test names the hole it closes and fails on the code before."""

from __future__ import annotations

import logging
import re
import socket
import struct
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from tests.label_studio_stand_in import LEGACY_KEY as LEGACY_TOKEN
from tests.label_studio_stand_in import StandInLabelStudio
from tests.local_http import LocalHTTPServer

CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="r" toName="image" '
    'model_score_threshold="0.0001"><Label value="person"/></RectangleLabels></View>'
)


@pytest.fixture
def servers(bus_image):
    with (
        StandInLabelStudio(bus_image.read_bytes()) as label_studio,
        StandInLabelStudio(bus_image.read_bytes()) as attacker,
    ):
        yield label_studio, attacker


def predict_one(client, url: str, project: str = "1.1") -> dict:
    task = {"id": 1, "project": 1, "data": {"image": url}}
    response = client.post("/predict", json={"tasks": [task], "label_config": CONFIG, "project": project})
    assert response.status_code == 200, response.text
    return response.json()["results"][0]


@pytest.mark.parametrize(
    "shape",
    [
        "http://{attacker}\\@{label_studio}/data/upload/1/bus.jpg",  # backslash: two parsers, two hosts
        "http://{attacker}\\\\@{label_studio}/data/upload/1/bus.jpg",
    ],
)
def test_hole_1_the_key_never_follows_a_parser_disagreement(make_client, servers, shape):
    """Hole 1: urllib.parse read Label Studio's host after the backslash and added the key, while requests
    connected to the host before it. The key is decided on the URL that is actually requested."""
    label_studio, attacker = servers
    # The attacker plays a public host here (ALLOW_PRIVATE_MEDIA lets the backend reach 127.0.0.1).
    client = make_client(
        label_studio_url=label_studio.url, label_studio_api_key=LEGACY_TOKEN, allow_private_media=True
    )
    host = lambda server: server.url.removeprefix("http://")  # noqa: E731
    predict_one(client, shape.format(attacker=host(attacker), label_studio=host(label_studio)))
    assert attacker.requests, "the attacker's server was not reached: the test shows nothing"
    assert all(authorization == "" for _, authorization in attacker.requests), attacker.requests


def test_hole_2_label_studio_host_on_another_port_is_another_host(make_client, servers):
    """Hole 2: with ALLOWED_MEDIA_HOSTS set, Label Studio's host was allowed on any port, so a task could
    make the backend fetch another service of that machine. The whole origin is compared now."""
    label_studio, attacker = servers
    client = make_client(
        label_studio_url=label_studio.url,
        label_studio_api_key=LEGACY_TOKEN,
        allowed_media_hosts="media.example.com",
    )
    refused = predict_one(client, attacker.url + "/data/upload/1/bus.jpg")
    assert "result" not in refused and "ALLOWED_MEDIA_HOSTS" in refused["error"]
    assert attacker.requests == []
    assert predict_one(client, label_studio.url + "/data/upload/1/bus.jpg")["result"]


def test_hole_7_half_set_basic_auth_refuses_to_start(make_settings):
    """Hole 7: with only BASIC_AUTH_USER (or only BASIC_AUTH_PASS) set, every route was open."""
    with pytest.raises(ValidationError, match="BASIC_AUTH_USER and BASIC_AUTH_PASS"):
        make_settings(basic_auth_user="annotator")
    with pytest.raises(ValidationError, match="BASIC_AUTH_USER and BASIC_AUTH_PASS"):
        make_settings(basic_auth_pass="secret")
    assert make_settings(basic_auth_user="annotator", basic_auth_pass="secret").basic_auth_user == "annotator"


def test_hole_8_one_projects_setup_never_serves_another_project(make_client, servers):
    """Hole 8: without a key in the environment, a project with no /setup of its own used the latest
    /setup's hostname and token, so anyone's /setup could redirect another project's media."""
    label_studio, attacker = servers
    client = make_client()
    setup = {"project": "2.5", "schema": CONFIG, "hostname": attacker.url, "access_token": LEGACY_TOKEN}
    assert client.post("/setup", json=setup).status_code == 200
    refused = predict_one(client, "/data/upload/1/bus.jpg", project="1.1")
    assert "result" not in refused and "LABEL_STUDIO_URL" in refused["error"]
    assert attacker.requests == []
    own = {"project": "1.1", "schema": CONFIG, "hostname": label_studio.url, "access_token": LEGACY_TOKEN}
    assert client.post("/setup", json=own).status_code == 200
    assert predict_one(client, "/data/upload/1/bus.jpg", project="1.1")["result"]
    assert label_studio.requests == [("/data/upload/1/bus.jpg", f"Token {LEGACY_TOKEN}")]


def test_hole_8_setup_hostname_must_be_an_http_origin(make_client):
    client = make_client()
    for hostname in ("file:///etc", "gopher://x", "http://", "not a url"):
        body = {"project": "1.1", "schema": CONFIG, "hostname": hostname, "access_token": LEGACY_TOKEN}
        answer = client.post("/setup", json=body)
        assert answer.status_code == 422 and "hostname" in answer.json()["error"], answer.text


def test_hole_6_no_body_is_read_or_parsed_before_auth(make_client):
    """Hole 6: with basic auth on, an anonymous `{not json` got 400 (parsed) and a body over
    MAX_REQUEST_BYTES 413 (buffered): both are refused from the headers alone now."""
    client = make_client(basic_auth_user="annotator", basic_auth_pass="secret", max_request_bytes=1000)
    for body in (b"{not json", b"x" * 5000):
        answer = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == 401 and answer.headers["WWW-Authenticate"] == "Basic", answer.text
    for route in ("/health", "/ui", "/jobs", "/metrics"):
        assert client.get(route).status_code == 401
    assert client.get("/health", auth=("annotator", "secret")).status_code == 200
    assert client.get("/health", auth=("annotator", "wrong")).status_code == 401


# -- media fetching: holes 3, 4, 5, 10 (cache names) and 12 -------------------------------------------------------


class Sink(LocalHTTPServer):
    """The attacker's (or a hostile media host's) server: records every request, whatever its method.

    `routes` maps a path to a function writing the whole raw answer to the socket (drips included);
    other paths get the image. `finished` is set when a handler returns, `cut_short` records the paths
    whose answer the backend hung up on before it was all written.
    """

    def __init__(self, image: bytes, routes: dict | None = None, host: str = "127.0.0.1"):
        self.image = image
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []  # method, path, headers, body
        self.cut_short: list[str] = []
        self.finished = threading.Event()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                sink.requests.append((self.command, self.path, dict(self.headers.items()), body))
                route = (routes or {}).get(self.path.split("?")[0])
                try:
                    if route is not None:
                        route(self.wfile, sink.image)
                    else:
                        self.wfile.write(_answer(sink.image))
                except (BrokenPipeError, ConnectionResetError):
                    sink.cut_short.append(self.path)
                finally:
                    sink.finished.set()

            do_GET = do_POST = do_HEAD = do_PUT = _any

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)


def _answer(body: bytes, content_type: str = "image/jpeg") -> bytes:
    head = f"HTTP/1.0 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


@pytest.fixture
def sink(bus_image):
    with Sink(bus_image.read_bytes()) as server:
        yield server


def predict_many(client, urls: list[str], config: str = CONFIG, project: str = "1.1") -> list[dict]:
    tasks = [{"id": i + 1, "project": 1, "data": {"image": url}} for i, url in enumerate(urls)]
    response = client.post("/predict", json={"tasks": tasks, "label_config": config, "project": project})
    assert response.status_code == 200, response.text
    return response.json()["results"]


def loopback_spellings(port: int) -> list[str]:
    """One loopback server, spelled every way a URL parser and the resolver accept."""
    return [
        f"http://127.0.0.1:{port}/a.jpg",
        f"http://localhost:{port}/a.jpg",
        f"http://2130706433:{port}/a.jpg",  # decimal
        f"http://0x7f000001:{port}/a.jpg",  # hex
        f"http://0177.0.0.1:{port}/a.jpg",  # octal
        f"http://127.1:{port}/a.jpg",
        f"http://[::ffff:127.0.0.1]:{port}/a.jpg",  # IPv4-mapped IPv6
        f"http://user:pw@127.0.0.1:{port}/a.jpg",
    ]


def test_hole_3_non_public_addresses_are_refused_by_default(make_client, sink):
    """Hole 3: with ALLOWED_MEDIA_HOSTS empty, loopback (and any private address, in any spelling) was
    fetched. Now the address the connection would open is checked, after DNS, and refused."""
    client = make_client(true_defaults=True, download_connect_timeout=1.0)
    urls = [
        *loopback_spellings(sink.port),
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/x.jpg",
    ]
    results = predict_many(client, urls)
    assert sink.requests == []
    for url, result in zip(urls, results, strict=True):
        assert "result" not in result, url
        assert "ALLOW_PRIVATE_MEDIA" in result["error"] and "ALLOWED_MEDIA_HOSTS" in result["error"], result


def test_hole_3_a_name_that_resolves_to_loopback_is_refused(make_client, sink, monkeypatch):
    """Hole 3, after DNS: a public-looking name whose DNS answer is loopback, also when the answer
    changes between lookups (DNS rebinding: first a harmless address, then the sink's)."""
    real_getaddrinfo = socket.getaddrinfo
    answers = {"rebind.example": ["127.0.0.1"], "flip.example": ["93.184.216.34", "127.0.0.1"]}
    asked: list[str] = []

    def fake_getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            address = answers[host][min(asked.count(host), len(answers[host]) - 1)]
            asked.append(host)
            return real_getaddrinfo(address, port, *args, **kwargs)
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    client = make_client(true_defaults=True, download_connect_timeout=0.5)
    results = predict_many(client, [f"http://rebind.example:{sink.port}/a.jpg"])
    assert sink.requests == [] and "ALLOW_PRIVATE_MEDIA" in results[0]["error"]
    # The rebinding name: each connection goes to the address its own lookup checked, never to a
    # second answer (here the first, public, address is unreachable: a retry looks up again, is refused).
    predict_many(client, [f"http://flip.example:{sink.port}/b.jpg"])
    assert sink.requests == [] and "flip.example" in asked


def test_hole_3_redirects_to_non_public_addresses_are_refused(make_client, bus_image, monkeypatch):
    """Hole 3, per hop: a public media host that redirects to loopback or cloud metadata. 127.0.0.2 plays
    the public host here (declared public for this test); the sink on 127.0.0.1 must see nothing."""
    import media.http_client

    real = media.http_client.is_public_address
    monkeypatch.setattr(media.http_client, "is_public_address", lambda a: a == "127.0.0.2" or real(a))
    with Sink(bus_image.read_bytes()) as sink:
        targets = [*loopback_spellings(sink.port), "http://169.254.169.254/latest/meta-data/"]

        def redirect_to(target):
            return lambda out, _image: out.write(f"HTTP/1.0 302 Found\r\nLocation: {target}\r\n\r\n".encode())

        routes = {f"/r{i}": redirect_to(target) for i, target in enumerate(targets)}
        with Sink(bus_image.read_bytes(), routes, host="127.0.0.2") as public:
            client = make_client(true_defaults=True, download_connect_timeout=0.5)
            assert "result" in predict_many(client, [f"{public.url}/direct.jpg"])[0]  # the public host works
            results = predict_many(client, [f"{public.url}/r{i}" for i in range(len(targets))])
        assert len(public.requests) == 1 + len(targets)
        assert sink.requests == []
        assert all("ALLOW_PRIVATE_MEDIA" in r["error"] for r in results), results


def test_hole_3_private_media_on_purpose(make_client, sink):
    """The opt-ins: a host:port in ALLOWED_MEDIA_HOSTS (that port only), or ALLOW_PRIVATE_MEDIA."""
    listed = make_client(true_defaults=True, allowed_media_hosts=f"127.0.0.1:{sink.port}")
    assert "result" in predict_many(listed, [f"{sink.url}/a.jpg"])[0]
    with Sink(b"") as other_port:
        refused = predict_many(listed, [f"{other_port.url}/a.jpg"])[0]
        assert "not in ALLOWED_MEDIA_HOSTS" in refused["error"] and other_port.requests == []
    anywhere = make_client(true_defaults=True, allow_private_media=True)
    assert "result" in predict_many(anywhere, [f"http://localhost:{sink.port}/b.jpg"])[0]
    assert [path for _, path, _, _ in sink.requests] == ["/a.jpg", "/b.jpg"]


def test_hole_4_no_local_files_by_default_and_no_existence_oracle(make_client, bus_image, tmp_path):
    """Hole 4: with ALLOWED_LOCAL_ROOTS empty, any local path was read, and the errors told whether a file
    exists and its size. Now no local path is read without a root, and every refusal reads the same."""
    copy = tmp_path / "bus.jpg"
    copy.write_bytes(bus_image.read_bytes())
    client = make_client(true_defaults=True)
    names = [str(copy), f"file://{copy}", "/etc/passwd", str(tmp_path / "missing.jpg"), str(tmp_path)]
    results = predict_many(client, names)
    errors = [r.get("error", "") for r in results]
    assert all("ALLOWED_LOCAL_ROOTS" in e for e in errors), errors
    assert len({re.sub("'[^']*'", "<path>", e) for e in errors}) == 1, errors
    assert not any(word in e for e in errors for word in ("exist", "bytes", "not an image"))
    allowed = make_client(true_defaults=True, allowed_local_roots=str(tmp_path))
    assert "result" in predict_many(allowed, [str(copy)])[0]


def test_hole_4_cached_media_never_keeps_the_url_suffix(make_client, servers):
    """Hole 4 (cache names): a download was stored as `<hash>.m3u8` when the URL ended so, and FFmpeg
    opens such a file as an HLS playlist, which may pull `file:` URLs. Only plain image and video
    suffixes are kept (Ultralytics reads files by path only with one)."""
    label_studio, _ = servers
    client = make_client(
        true_defaults=True, label_studio_url=label_studio.url, label_studio_api_key=LEGACY_TOKEN
    )
    urls = ["/data/upload/1/playlist.m3u8", "/data/upload/1/list.M3U", "/data/upload/1/x.m3u8%3F.jpg?.m3u8"]
    predict_many(client, [*urls, "/data/upload/1/bus.jpg"])
    cache = client.app.state.backend.settings.media_cache_dir
    suffixes = sorted(path.suffix for path in cache.iterdir())
    assert suffixes == ["", "", ".jpg", ".jpg"], suffixes


def _drip(head: bytes, drip: bytes, tail: bytes):
    """An answer whose `drip` part comes one byte every 0.1 s: never a read timeout, 6 s in all."""

    def route(out, _image):
        out.write(head)
        out.flush()
        for byte in drip:
            out.write(bytes([byte]))
            out.flush()
            threading.Event().wait(0.1)
        out.write(tail)

    return route


def _gzip_with_comment(body: bytes, comment_bytes: int) -> tuple[bytes, bytes, bytes]:
    """A gzip stream of `body` split as (header start, comment to drip, rest): FLG.FCOMMENT set."""
    deflated = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = deflated.compress(body) + deflated.flush()
    trailer = struct.pack("<II", zlib.crc32(body), len(body) & 0xFFFFFFFF)
    return b"\x1f\x8b\x08\x10\x00\x00\x00\x00\x00\xff", b"c" * comment_bytes, b"\x00" + data + trailer


@pytest.mark.parametrize("kind", ["gzip-comment", "chunk-size-line", "header-line"])
def test_hole_5_the_download_deadline_holds_on_the_socket(make_client, bus_image, kind):
    """Hole 5: a server answering `Content-Encoding: gzip` with a gzip comment dripped a byte at a time
    kept urllib3's decoder reading, and DOWNLOAD_TOTAL_TIMEOUT was only checked between chunks; a
    chunk-size line or a header line dripped the same way did too. The backend now asks for identity,
    refuses encodings, and shuts the socket down at the deadline: it hangs up before the drip ends."""
    image = bus_image.read_bytes()
    if kind == "gzip-comment":
        start, comment, rest = _gzip_with_comment(image, 60)
        head = b"HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\nContent-Encoding: gzip\r\n\r\n" + start
        route = _drip(head, comment, rest)
    elif kind == "chunk-size-line":
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + b"%x;" % len(
            image
        )
        route = _drip(head, b"x" * 60, b"\r\n" + image + b"\r\n0\r\n\r\n")
    else:
        head = b"HTTP/1.0 200 OK\r\nX-Slow: "
        route = _drip(head, b"x" * 60, b"\r\nContent-Length: %d\r\n\r\n" % len(image) + image)
    with Sink(image, {"/drip.jpg": route}) as server:
        client = make_client(
            allow_private_media=True,
            download_read_timeout=0.5,
            download_total_timeout=1.0,
            download_workers=1,
        )
        result = predict_many(client, [f"{server.url}/drip.jpg"])[0]
        assert server.finished.wait(30), "the drip did not end"
    assert "result" not in result
    assert "DOWNLOAD_TOTAL_TIMEOUT" in result["error"] or "Content-Encoding 'gzip'" in result["error"], result
    assert server.cut_short == ["/drip.jpg"], "the backend read the whole drip: no deadline on the socket"
    assert server.requests[0][2].get("Accept-Encoding") == "identity"


def test_hole_5_a_request_waits_for_its_media_at_most_the_download_deadline(make_client, bus_image):
    """Hole 5 (the wait): with every download worker held, a request waited on its futures for ever.
    It now waits DOWNLOAD_TOTAL_TIMEOUT + DOWNLOAD_CONNECT_TIMEOUT at most, and the other tasks go on."""
    client = make_client(download_total_timeout=0.3, download_connect_timeout=0.2, download_workers=2)
    media = client.app.state.backend.media
    release = threading.Event()
    load_image = media.load_image

    def stuck(url, *args, **kwargs):  # a download that never ends (the test releases it afterwards)
        if "stuck" in url:
            release.wait(20)
        return load_image(url, *args, **kwargs)

    media.load_image = stuck
    try:
        results = predict_many(client, ["http://stuck.example/x.jpg", str(bus_image)])
    finally:
        release.set()
    assert "DOWNLOAD_TOTAL_TIMEOUT" in results[0]["error"], results[0]
    assert "result" in results[1]


def test_hole_12_video_messages_and_logs_never_show_the_query(make_client, tmp_path, caplog):
    """Hole 12: the video reader's messages named the task's URL with its query string, so a presigned
    URL's signature reached the answer and the log. URLs in messages lose their query (and userinfo)."""
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    config = (
        '<View><Video name="video" value="$video"/><Labels name="l" toName="video"><Label value="circle"/>'
        '</Labels><VideoRectangle name="box" toName="video" model_path="shapes-yolov8n.pt"/></View>'
    )
    with Sink(b"", {"/clip.mp4": lambda out, _: out.write(_answer(clip.read_bytes(), "video/mp4"))}) as host:
        client = make_client(allow_private_media=True, max_video_frames=2)
        url = f"http://user:hunter2@127.0.0.1:{host.port}/clip.mp4?X-Amz-Signature=secret-signature"
        task = {"id": 1, "data": {"video": url}}
        with caplog.at_level(logging.DEBUG):
            response = client.post("/predict", json={"tasks": [task], "label_config": config})
    (result,) = response.json()["results"]
    assert "MAX_VIDEO_FRAMES" in result["error"] and "/clip.mp4" in result["error"], result
    for text in (response.text, caplog.text):
        assert "secret-signature" not in text and "hunter2" not in text


def test_hole_12_token_refresh_never_follows_a_redirect_with_the_key(bus_image):
    """Hole 12: the personal access token exchange followed redirects, so a 307 sent the token (in the
    POST body) to whatever host the answer named."""
    from core.errors import LabelStudioAccessError
    from media.label_studio_client import LabelStudioClient
    from tests.label_studio_stand_in import PERSONAL_ACCESS_TOKEN

    with Sink(b"") as attacker:
        moved = f"HTTP/1.0 307 Temporary Redirect\r\nLocation: {attacker.url}/api/token/refresh/\r\n\r\n"
        moved_project = f"HTTP/1.0 308 Permanent Redirect\r\nLocation: {attacker.url}/api/projects/1/\r\n\r\n"
        routes = {
            "/api/token/refresh/": lambda out, _: out.write(moved.encode()),
            "/api/projects/1/": lambda out, _: out.write(moved_project.encode()),
        }
        with Sink(b"", routes) as label_studio:
            auth = LabelStudioClient(label_studio.url, PERSONAL_ACCESS_TOKEN)
            with pytest.raises(LabelStudioAccessError, match="redirect"):
                auth.headers()
            # An API call with a legacy token (sent in the header) is not followed either.
            with pytest.raises(LabelStudioAccessError, match="redirect"):
                LabelStudioClient(label_studio.url, LEGACY_TOKEN).label_config(1)
        assert [(method, path) for method, path, *_ in label_studio.requests] == [
            ("POST", "/api/token/refresh/"),
            ("GET", "/api/projects/1/"),
        ]
        assert attacker.requests == []
