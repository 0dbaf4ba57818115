"""Hostile and broken input through HTTP: model files, media, request bodies, and what answers leak.

Each bad input gets its status and a message that names the problem, and a normal request still works
afterwards. Media comes from `MediaServer`, a local HTTP server on 127.0.0.1 that can lie about sizes,
hang, drip bytes and redirect.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.errors import MediaError
from media.loader import MediaLoader
from media.video import check_frame_pixels, check_video_frames
from tests.conftest import PROJECT_ROOT, SHAPES_MODEL
from tests.local_http import LocalHTTPServer

CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image" model_score_threshold="0.0001">'
    '<Label value="Person" predicted_values="person"/><Label value="Bus" predicted_values="bus"/>'
    "</RectangleLabels></View>"
)


def config_with(model_path: str, name: str = "label") -> str:
    return CONFIG.replace('name="label"', f'name="{name}" model_path="{model_path}"')


def predict(client, *urls, config: str = CONFIG, status: int = 200) -> dict:
    tasks = [{"id": i + 1, "data": {"image": url}} for i, url in enumerate(urls)]
    response = client.post("/predict", json={"tasks": tasks, "label_config": config})
    assert response.status_code == status, response.text
    return response.json()


def assert_still_serving(client, image: Path) -> None:
    assert "result" in predict(client, str(image))["results"][0]


@pytest.fixture(scope="module")
def small_png(tmp_path_factory) -> Path:
    """A 96x64 PNG of ~200 bytes: under every size limit the tests set."""
    path = tmp_path_factory.mktemp("media") / "small.png"
    cv2.imwrite(str(path), np.full((64, 96, 3), 90, np.uint8))
    return path


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR declaring `width` x `height`, with almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


# -- a media server that misbehaves on request ---------------------------------------------------------


class MediaServer(LocalHTTPServer):
    """Serves `routes[path](handler)`; handlers below send honest, lying, endless or dripping bodies."""

    def __init__(self, routes: dict[str, Callable[[BaseHTTPRequestHandler], None]]):
        self.hits: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # no Content-Length means: the body ends when the socket closes

            def log_message(self, *args):
                pass

            def do_GET(self):
                server.hits.append(self.path)
                route = routes.get(self.path.split("?")[0])
                if route is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                # The backend hangs up on endless bodies, as it should.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    route(self)

        self._listen(Handler)


def send(body: bytes, length: int | None = None):
    def route(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        if length is not None:
            handler.send_header("Content-Length", str(length))
        handler.end_headers()
        handler.wfile.write(body)

    return route


def endless(handler):
    handler.send_response(200)
    handler.end_headers()
    block = b"\0" * 65536
    for _ in range(10_000):  # 640 MiB at most, should the backend not stop reading
        handler.wfile.write(block)


def hang(handler):
    time.sleep(5)


def drip(handler):
    handler.send_response(200)
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    for _ in range(200):  # one byte every 50 ms: never a read timeout, a 10 s download
        handler.wfile.write(b"\0")
        handler.wfile.flush()
        time.sleep(0.05)


def redirect(location: str):
    def route(handler):
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.end_headers()

    return route


@pytest.fixture
def media_server(small_png):
    image = small_png.read_bytes()
    routes = {
        "/small.png": send(image, len(image)),
        "/no-length.png": send(image),
        "/declares-huge.png": send(image, 10**12),
        "/declares-small.png": send(image + b"\0" * 500_000, 100),
        "/endless.png": endless,
        "/hang.png": hang,
        "/drip.png": drip,
        "/bomb.png": send(png_header_only(30_000, 30_000)),
        "/to-ftp.png": redirect("ftp://127.0.0.1/small.png"),
        "/loop.png": redirect("/loop.png"),
    }
    with MediaServer(routes) as server:
        yield server


# -- model files ------------------------------------------------------------------------------------------


@pytest.fixture
def own_model_root(tmp_path, model_root) -> Path:
    """A private MODEL_ROOT with a working model, broken files and symlinks; the shared one stays clean."""
    root = tmp_path / "models"
    root.mkdir()
    (root / "good.pt").write_bytes(SHAPES_MODEL.read_bytes())
    (root / "garbage.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    (root / "notes.pt").write_text("these are notes, not weights\n")
    (root / "empty.pt").write_bytes(b"")
    (root / "truncated.pt").write_bytes(SHAPES_MODEL.read_bytes()[:20_000])
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.pt").write_bytes(SHAPES_MODEL.read_bytes())
    (root / "escape.pt").symlink_to(outside / "evil.pt")
    (root / "linked-dir").symlink_to(outside, target_is_directory=True)
    (root / "alias.pt").symlink_to(root / "good.pt")  # a link that stays inside is fine
    return root


SHAPES_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="{name}" toName="image" model_path="{path}" model_score_threshold="0.0001">'
    '<Label value="circle"/><Label value="square"/><Label value="triangle"/></RectangleLabels></View>'
)


@pytest.mark.parametrize(
    ("model_path", "message"),
    [
        ("garbage.pt", "could not be loaded as an Ultralytics YOLO model"),
        ("notes.pt", "could not be loaded as an Ultralytics YOLO model"),
        ("empty.pt", "could not be loaded as an Ultralytics YOLO model"),
        ("truncated.pt", "could not be loaded as an Ultralytics YOLO model"),
        ("escape.pt", "resolves outside MODEL_ROOT"),
        ("linked-dir/evil.pt", "resolves outside MODEL_ROOT"),
        ("linked-dir/../../outside/evil.pt", "'..' is not allowed"),
        ("missing.pt", "not found in MODEL_ROOT"),
        (".", "is not a model"),  # a folder: named neither as weights nor as an export
    ],
)
def test_bad_model_files_get_a_4xx_naming_the_file(
    make_client, own_model_root, small_png, model_path, message
):
    client = make_client(model_root=own_model_root)
    config = SHAPES_CONFIG.format(name="label", path=model_path)
    body = predict(client, str(small_png), config=config, status=422)
    assert message in body["error"] and f"'{model_path}'" in body["error"]
    assert str(own_model_root) not in body["error"] and str(own_model_root.parent) not in body["error"]
    assert client.get("/health").json()["model_errors"][model_path] == body["error"].split(": ", 1)[1]
    good = SHAPES_CONFIG.format(name="label", path="good.pt")
    assert "result" in predict(client, str(small_png), config=good)["results"][0]


def test_a_link_that_stays_inside_model_root_loads(make_client, own_model_root, small_png):
    client = make_client(model_root=own_model_root)
    body = predict(client, str(small_png), config=SHAPES_CONFIG.format(name="label", path="alias.pt"))
    assert "errors" not in body and "result" in body["results"][0]


def test_a_corrupt_model_spoils_no_other_project(make_client, own_model_root, small_png):
    client = make_client(model_root=own_model_root)
    both = SHAPES_CONFIG.format(name="good", path="good.pt").replace(
        "</View>",
        '<RectangleLabels name="broken" toName="image" model_path="garbage.pt"><Label value="circle"/>'
        "</RectangleLabels></View>",
    )
    other_project = SHAPES_CONFIG.format(name="other", path="good.pt")
    broken_project = SHAPES_CONFIG.format(name="label", path="notes.pt")
    with ThreadPoolExecutor(6) as pool:
        futures = [
            pool.submit(
                client.post,
                "/predict",
                json={"tasks": [{"id": i, "data": {"image": str(small_png)}}], "label_config": c},
            )
            for i, c in enumerate([both, other_project, broken_project] * 2)
        ]
        answers = [f.result() for f in futures]
    for mixed, other, broken in (answers[0:3], answers[3:6]):
        assert mixed.status_code == 200 and "<broken>" in mixed.json()["results"][0]["error"]
        assert "garbage.pt" in mixed.json()["errors"]["broken"] and "good" not in mixed.json()["errors"]
        assert other.status_code == 200 and "errors" not in other.json()
        assert broken.status_code == 422 and "notes.pt" in broken.json()["error"]
    health = client.get("/health").json()
    assert set(health["model_errors"]) == {"garbage.pt", "notes.pt"}
    assert health["loaded_models"] == {"good.pt": "detect"}


# -- media: schemes, local roots, hosts ---------------------------------------------------------------------


def test_only_http_label_studio_and_local_media_is_fetched(client, small_png):
    urls = [
        "ftp://127.0.0.1/small.png",
        "gopher://127.0.0.1:70/1",
        "dict://127.0.0.1:11211/stat",
        "data:image/png;base64,iVBORw0KGgo=",
        "javascript:alert(1)",
        "file://another-host/etc/hosts",
        "images/relative.png",
        str(small_png),
    ]
    results = predict(client, *urls)["results"]
    for url, result in zip(urls[:5], results, strict=False):
        assert "result" not in result and "is not supported" in result["error"], (url, result)
    assert "a file URL must be local" in results[5]["error"]
    assert "neither a URL nor an absolute path" in results[6]["error"]
    assert "result" in results[7]


@pytest.fixture
def local_roots(tmp_path, small_png):
    """allowed/ (reached through a symlinked root), with links and look-alike folders around it."""
    real = tmp_path / "real-allowed"
    real.mkdir()
    (real / "ok.png").write_bytes(small_png.read_bytes())
    (tmp_path / "allowed").symlink_to(real, target_is_directory=True)
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "private.png").write_bytes(small_png.read_bytes())
    (real / "link-out.png").symlink_to(secret / "private.png")
    (real / "dir-out").symlink_to(secret, target_is_directory=True)
    lookalike = tmp_path / "real-allowed-not"
    lookalike.mkdir()
    (lookalike / "ok.png").write_bytes(small_png.read_bytes())
    return tmp_path


def test_allowed_local_roots_see_through_symlinks(make_client, local_roots, small_png):
    client = make_client(allowed_local_roots=f"{local_roots / 'allowed'}:{local_roots / 'nonexistent'}")
    allowed, real = local_roots / "allowed", local_roots / "real-allowed"
    inside = [
        str(allowed / "ok.png"),
        str(real / "ok.png"),
        f"file://{allowed}/ok.png",
        f"file://localhost{real}/ok.png",
    ]
    outside = [
        str(allowed / "link-out.png"),
        str(allowed / "dir-out" / "private.png"),
        str(allowed / ".." / "secret" / "private.png"),
        f"file://{allowed}/%2e%2e/secret/private.png",
        str(local_roots / "real-allowed-not" / "ok.png"),
        str(local_roots / "secret" / "private.png"),
        str(small_png),
        "/etc/passwd",
    ]
    results = predict(client, *inside, *outside)["results"]
    for url, result in zip(inside, results[: len(inside)], strict=True):
        assert "result" in result, (url, result)
    for url, result in zip(outside, results[len(inside) :], strict=True):
        assert "outside ALLOWED_LOCAL_ROOTS" in result.get("error", ""), (url, result)


def test_allowed_media_hosts(make_client, media_server, small_png):
    # 127.0.0.1 and localhost reach the same server, but only "localhost" is allowed.
    local = media_server.url.replace("127.0.0.1", "localhost")
    client = make_client(allowed_media_hosts="localhost, *.example.org")
    results = predict(
        client,
        f"{local}/small.png",
        f"{media_server.url}/small.png",
    )["results"]
    assert "result" in results[0]
    assert "host '127.0.0.1', which is not in ALLOWED_MEDIA_HOSTS" in results[1]["error"]
    assert media_server.hits == ["/small.png"]  # the refused URL was never requested


def test_redirects_are_checked_hop_by_hop(make_client, media_server, small_png):
    local = media_server.url.replace("127.0.0.1", "localhost")
    with MediaServer(
        {
            "/out.png": redirect(f"{media_server.url}/small.png"),
            "/in.png": redirect(f"{local}/small.png"),
        }
    ) as hops:
        hop_url = hops.url.replace("127.0.0.1", "localhost")
        client = make_client(allowed_media_hosts="localhost")
        results = predict(
            client,
            f"{hop_url}/out.png",
            f"{hop_url}/in.png",
            f"{local}/to-ftp.png",
            f"{local}/loop.png",
        )["results"]
    assert "'127.0.0.1', which is not in ALLOWED_MEDIA_HOSTS" in results[0]["error"]
    assert "result" in results[1]
    assert "redirects to a URL that is not http(s)" in results[2]["error"]
    assert "redirects more than" in results[3]["error"]
    assert media_server.hits.count("/small.png") == 1  # only the allowed hop reached it


def test_host_patterns(make_settings):
    media = MediaLoader(
        make_settings(
            allowed_media_hosts="*.example.org,cdn.example.com,media.example.net:8443,[fd00::7]:81"
        ),
        lambda project=None: None,
    )
    for url in (
        "https://a.example.org/x.jpg",
        "http://b.a.example.org/x.jpg",
        "https://CDN.example.com/x",
        "https://cdn.example.com:9000/x",
        "https://media.example.net:8443/x",
        "http://[fd00::7]:81/x",
    ):
        assert media._may_reach_private(url, None)  # listed: may be on a private network too
    for url in (
        "https://example.org/x",
        "https://evil-example.org/x",
        "https://cdn.example.com.evil/x",
        "https://media.example.net/x",
        "http://[fd00::7]/x",
    ):
        with pytest.raises(MediaError, match="not in ALLOWED_MEDIA_HOSTS"):
            media._may_reach_private(url, None)


def test_host_entries_are_checked_at_start_up(make_settings):
    for entry in ("host:port", "host:99999", "[::1", ":80"):
        with pytest.raises(ValueError, match="ALLOWED_MEDIA_HOSTS entry"):
            make_settings(allowed_media_hosts=entry)


def test_label_studio_host_is_always_allowed(make_client, bus_image):
    from tests.label_studio_stand_in import LEGACY_KEY as LEGACY_TOKEN
    from tests.label_studio_stand_in import StandInLabelStudio

    with StandInLabelStudio(bus_image.read_bytes()) as label_studio:
        client = make_client(
            allowed_media_hosts="media.example.org",
            label_studio_url=label_studio.url,
            label_studio_api_key=LEGACY_TOKEN,
        )
        results = predict(client, "/data/upload/1/bus.jpg", f"{label_studio.url}/data/upload/1/bus.jpg")[
            "results"
        ]
    assert all("result" in r for r in results), results


# -- media: sizes, pixels, time -------------------------------------------------------------------------------


def test_download_size_caps_hold_whatever_the_server_declares(make_client, media_server, small_png):
    client = make_client(max_image_bytes=50_000, allow_private_media=True)  # media_server is on 127.0.0.1
    results = predict(
        client,
        f"{media_server.url}/small.png",
        f"{media_server.url}/no-length.png",
        f"{media_server.url}/declares-huge.png",
        f"{media_server.url}/endless.png",
        f"{media_server.url}/declares-small.png",
    )["results"]
    assert "result" in results[0] and "result" in results[1]
    assert "is 1000000000000 bytes, over the limit of 50000" in results[2]["error"]
    assert "over the size limit of 50000 bytes" in results[3]["error"]
    # A server declaring less than it sends is read only as far as it declared: a broken image.
    assert "not an image that can be decoded" in results[4]["error"]
    cache = client.app.state.backend.settings.media_cache_dir
    assert all(p.stat().st_size <= 50_000 for p in cache.iterdir())
    assert not list(cache.glob("*.part"))


def test_local_files_have_the_same_size_cap(make_client, small_png, tmp_path):
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.random.default_rng(1).integers(0, 255, (300, 300, 3), np.uint8))
    client = make_client(max_image_bytes=10_000)
    results = predict(client, str(big), str(small_png))["results"]
    assert "over the limit of 10000" in results[0]["error"] and "result" in results[1]


def test_decompression_bombs_are_refused_from_the_header(
    make_client, media_server, small_png, tmp_path, monkeypatch
):
    import media.loader

    big_but_small_file = tmp_path / "2000x2000.png"
    cv2.imwrite(str(big_but_small_file), np.zeros((2000, 2000, 3), np.uint8))
    assert big_but_small_file.stat().st_size < 50_000
    bomb_file = tmp_path / "bomb.png"
    bomb_file.write_bytes(png_header_only(30_000, 30_000))
    decoded: list[str] = []
    real_imread = media.loader.cv2.imread

    def recording_imread(path, *args):
        decoded.append(str(path))
        return real_imread(path, *args)

    monkeypatch.setattr(media.loader.cv2, "imread", recording_imread)
    client = make_client(max_image_pixels=1_000_000, allow_private_media=True)
    results = predict(
        client, str(big_but_small_file), str(bomb_file), f"{media_server.url}/bomb.png", str(small_png)
    )["results"]
    assert len(decoded) == 1 and decoded[0] == str(small_png), decoded  # only the small image was decoded
    assert "is 2000x2000 pixels, over the limit of 1000000" in results[0]["error"]
    assert "too many pixels" in results[1]["error"] and "too many pixels" in results[2]["error"]
    assert "result" in results[3]


def test_read_timeout_and_total_download_time(make_client, media_server, small_png):
    client = make_client(download_read_timeout=0.5, download_total_timeout=1.5, allow_private_media=True)
    results = predict(client, f"{media_server.url}/hang.png", f"{media_server.url}/drip.png", str(small_png))[
        "results"
    ]
    assert "could not be downloaded (ReadTimeout" in results[0]["error"]
    assert "took longer than 1.5 s" in results[1]["error"] and "DOWNLOAD_TOTAL_TIMEOUT" in results[1]["error"]
    assert "result" in results[2]


def test_connect_timeout(make_client, small_png):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname())  # fills the backlog: the next SYN is dropped
    try:
        client = make_client(download_connect_timeout=0.5, allow_private_media=True)
        (result,) = predict(client, f"http://127.0.0.1:{listener.getsockname()[1]}/x.png")["results"]
    finally:
        filler.close()
        listener.close()
    assert "could not be downloaded (ConnectTimeout)" in result["error"]
    assert_still_serving(client, small_png)


def test_video_limits():
    check_video_frames(100, 100)
    with pytest.raises(MediaError, match=r"more than 100 frames.*MAX_VIDEO_FRAMES"):
        check_video_frames(101, 100, name="'clip.mp4'")
    check_frame_pixels(1920, 1080, 1920 * 1080)
    with pytest.raises(MediaError, match="frames of 30000x30000 pixels"):
        check_frame_pixels(30_000, 30_000, 100_000_000)


def test_one_batch_of_every_bad_media_spoils_no_good_task(make_client, media_server, small_png, tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(30_000, 30_000))
    client = make_client(
        max_image_bytes=50_000, download_read_timeout=0.5, inference_batch_size=2, allow_private_media=True
    )
    tasks = [
        {"id": 1, "data": {"image": str(small_png)}},
        {"id": 2, "data": {"image": "gopher://x/"}},
        {"id": 3, "data": {"image": str(bomb)}},
        {"id": 4, "data": {"image": 42}},
        {"id": 5, "data": {"image": ["a", "list"]}},
        {"id": 6, "data": {"image": {"an": "object"}}},
        {"id": 7, "data": {"image": None}},
        {"id": 8, "data": {"image": f"{media_server.url}/endless.png"}},
        {"id": 9, "data": {"image": f"{media_server.url}/hang.png"}},
        {"id": 10, "data": {"image": f"{media_server.url}/small.png"}},
        {"id": 11, "data": {"other": "no image key"}},
        {"id": 12, "data": {"image": str(small_png)}},
    ]
    body = client.post("/predict", json={"tasks": tasks, "label_config": CONFIG}).json()
    results = body["results"]
    good = {1, 10, 12}
    for task, result in zip(tasks, results, strict=True):
        if task["id"] in good:
            assert "result" in result, (task, result)
        else:
            assert "result" not in result and result["task"] == task["id"] and result["error"], (task, result)


# -- request bodies ---------------------------------------------------------------------------------------------


def test_request_body_limit_with_content_length_and_chunked(make_client, small_png):
    client = make_client(max_request_bytes=4000)
    padding = {"id": 1, "data": {"image": str(small_png), "padding": "x" * 5000}}
    declared = client.post("/predict", json={"tasks": [padding], "label_config": CONFIG})
    assert declared.status_code == 413
    assert declared.json() == {"error": "request body over the limit of 4000 bytes (MAX_REQUEST_BYTES)"}

    def chunks():
        yield b'{"tasks": [{"id": 1, "data": {"image": "' + str(small_png).encode() + b'", "p": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}}], "label_config": "<View/>"}'

    chunked = client.post("/predict", content=chunks(), headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413 and "MAX_REQUEST_BYTES" in chunked.json()["error"]
    for path in ("/setup", "/webhook"):
        assert client.post(path, content=b"{" + b" " * 5000 + b"}").status_code == 413
    assert_still_serving(client, small_png)  # a body under the limit, also chunked:

    def small_chunks():
        yield b'{"tasks": [{"id": 1, "data": {"image": "' + str(small_png).encode() + b'"}}], '
        yield b'"label_config": ' + json.dumps(CONFIG).encode() + b"}"

    ok = client.post("/predict", content=small_chunks(), headers={"Content-Type": "application/json"})
    assert ok.status_code == 200 and "result" in ok.json()["results"][0]


BILLION_LAUGHS = (
    "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol0 'lol'>"
    + "".join(f"<!ENTITY lol{i} '{f'&lol{i - 1};' * 10}'>" for i in range(1, 10))
    + "]><View><Text name='t' value='&lol9;'/></View>"
)
XXE = (
    "<?xml version='1.0'?><!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><View>"
    "<Image name='i' value='$image'/><RectangleLabels name='r' toName='i'><Label value='&e;'/>"
    "</RectangleLabels></View>"
)


def _bodies(image: str) -> list[tuple[str, object, int, str]]:
    task = {"id": 1, "data": {"image": image}}
    return [
        (
            "/predict",
            {"tasks": {"id": 1}, "label_config": CONFIG},
            422,
            "tasks: Input should be a valid list",
        ),
        ("/predict", {"tasks": "[...]", "label_config": CONFIG}, 422, "tasks: Input should be a valid list"),
        (
            "/predict",
            {"tasks": [task, 7], "label_config": CONFIG},
            422,
            "tasks.1: Input should be a valid dictionary",
        ),
        (
            "/predict",
            {"tasks": [[task]], "label_config": CONFIG},
            422,
            "tasks.0: Input should be a valid dictionary",
        ),
        (
            "/predict",
            {"tasks": [{"id": 1, "data": [image]}], "label_config": CONFIG},
            422,
            "tasks.0.data: Input should be a valid dictionary",
        ),
        (
            "/predict",
            {"tasks": [{"id": 1, "data": image}], "label_config": CONFIG},
            422,
            "tasks.0.data: Input should be a valid dictionary",
        ),
        (
            "/predict",
            {"tasks": [{"id": 1, "data": None}], "label_config": CONFIG},
            422,
            "tasks.0.data: Input should be a valid dictionary",
        ),
        (
            "/predict",
            {"tasks": [task], "label_config": 5},
            422,
            "label_config: Input should be a valid string",
        ),
        (
            "/predict",
            {"tasks": [task], "label_config": ["<View/>"]},
            422,
            "label_config: Input should be a valid string",
        ),
        (
            "/predict",
            {"tasks": [task], "label_config": {"xml": CONFIG}},
            422,
            "label_config: Input should be a valid string",
        ),
        (
            "/predict",
            {"tasks": [task], "label_config": "rectangles please"},
            422,
            "not a valid labeling config",
        ),
        (
            "/predict",
            {"tasks": [task], "label_config": "<View><Image name='i' value='$image'>"},
            422,
            "not a valid labeling config",
        ),
        ("/predict", {"tasks": [task], "label_config": BILLION_LAUGHS}, 422, "not a valid labeling config"),
        (
            "/predict",
            {"tasks": [task], "label_config": CONFIG.replace('"0.0001"', '"2"')},
            422,
            'model_score_threshold="2"; it must be between 0 and 1',
        ),
        (
            "/predict",
            {"tasks": [task], "label_config": CONFIG.replace('"0.0001"', '"nan"')},
            422,
            'model_score_threshold="nan", which is not a number',
        ),
        ("/predict", {"tasks": [task], "label_config": XXE}, 422, "not a valid labeling config"),
        ("/predict", {"tasks": [task], "label_config": "   "}, 422, "label_config is empty"),
        (
            "/predict",
            {"tasks": [task], "label_config": CONFIG, "params": "fast"},
            422,
            "params: Input should be a valid dictionary",
        ),
        ("/predict", {"tasks": [task], "label_config": CONFIG, "project": ["1"]}, 422, "project"),
        ("/predict", [task], 422, "body: Input should be a valid dictionary"),
        ("/predict", "tasks", 422, "body: Input should be a valid dictionary"),
        ("/predict", None, 422, "body: Field required"),
        ("/setup", {"schema": 5}, 422, "schema: Input should be a valid string"),
        (
            "/setup",
            {"schema": CONFIG, "hostname": ["http://x"]},
            422,
            "hostname: Input should be a valid string",
        ),
        (
            "/setup",
            {"schema": CONFIG, "access_token": {"t": 1}},
            422,
            "access_token: Input should be a valid string",
        ),
        ("/setup", ["schema"], 422, "body: Input should be a valid dictionary"),
        ("/webhook", {"action": 5}, 422, "action: Input should be a valid string"),
        ("/webhook", {"action": ""}, 422, "action: String should have at least 1 character"),
        ("/webhook", {"project": {"id": 1}}, 422, "action: Field required"),
        (
            "/webhook",
            {"action": "START_TRAINING", "project": "1"},
            422,
            "project: Input should be a valid dictionary",
        ),
    ]


def test_wrong_types_anywhere_get_a_4xx_that_says_where(client, small_png):
    for path, body, status, message in _bodies(str(small_png)):
        response = client.post(path, json=body)
        assert response.status_code == status, (path, body, response.text)
        assert message in response.json()["error"], (path, body, response.text)
        assert "root:" not in response.text  # the XXE entity was not resolved
    assert_still_serving(client, small_png)


@pytest.mark.parametrize(
    ("request_args", "status", "message"),
    [
        (("POST", "/predict", {"content": b"{not json"}), 400, "JSON decode error"),
        (("POST", "/predict", {"content": b"[" * 50_000 + b"]" * 50_000}), 400, "error parsing the body"),
        (("POST", "/predict", {"content": b"\xff\xfe\x00garbage"}), 400, "invalid request body"),
        (("GET", "/no-such-route", {}), 404, "Not Found"),
        (("PUT", "/predict", {}), 405, "Method Not Allowed"),
    ],
)
def test_unparseable_requests_answer_in_the_same_shape(client, small_png, request_args, status, message):
    method, path, kwargs = request_args
    response = client.request(method, path, headers={"Content-Type": "application/json"}, **kwargs)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert_still_serving(client, small_png)


def test_no_answer_shows_a_traceback_or_a_server_path(make_client, own_model_root, media_server, small_png):
    client = make_client(model_root=own_model_root, max_image_bytes=50_000, allow_private_media=True)
    cache_dir = client.app.state.backend.settings.media_cache_dir
    answers = [client.post(path, json=body) for path, body, _, _ in _bodies(str(small_png))]
    for model_path in ("garbage.pt", "notes.pt", "escape.pt", "missing.pt", "linked-dir/evil.pt"):
        config = SHAPES_CONFIG.format(name="label", path=model_path)
        answers.append(
            client.post(
                "/predict", json={"tasks": [{"data": {"image": str(small_png)}}], "label_config": config}
            )
        )
    answers.append(
        client.post(
            "/predict",
            json={
                "tasks": [
                    {"data": {"image": f"{media_server.url}/{name}"}}
                    for name in ("endless.png", "declares-small.png", "bomb.png")
                ],
                "label_config": SHAPES_CONFIG.format(name="label", path="good.pt"),
            },
        )
    )
    answers.append(client.get("/health"))
    for answer in answers:
        text = answer.text
        assert answer.status_code < 500, text
        for leak in (
            str(own_model_root),
            str(cache_dir),
            str(PROJECT_ROOT),
            "Traceback",
            'File "',
            "site-packages",
        ):
            assert leak not in text, (leak, text)


# -- /health under load -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 2])
def test_health_answers_while_a_prediction_holds_every_thread(make_settings, bus_image, threads):
    """/health is answered on the event loop: it never waits for the threads that run predictions
    (Label Studio's ML_TIMEOUT_HEALTH is 1 s), even with THREADS predictions in flight."""
    from fastapi.testclient import TestClient

    from model import YOLOBackend
    from server.app import create_app
    from tests.known_models import BlockingRegistry

    settings = make_settings(threads=threads)
    registry = BlockingRegistry(settings)
    backend = YOLOBackend(settings, registry=registry)
    tasks = [{"id": 1, "data": {"image": str(bus_image)}}]
    with TestClient(create_app(settings, backend)) as client, ThreadPoolExecutor(threads) as pool:
        answers = [
            pool.submit(client.post, "/predict", json={"tasks": tasks, "label_config": CONFIG})
            for _ in range(threads)
        ]
        assert registry.entered.wait(60)
        for _ in range(3):
            health = client.get("/health")
            assert health.status_code == 200 and health.json()["loaded_models"] == {"yolov8m.pt": "detect"}
        assert not any(answer.done() for answer in answers)  # the predictions were in flight throughout
        registry.release.set()
        for answer in answers:
            assert answer.result(timeout=120).status_code == 200
