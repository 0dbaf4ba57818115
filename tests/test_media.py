"""Media URLs as Label Studio puts them in task data, fetched from the shared stand-in Label Studio
(tests/label_studio_stand_in.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from core.errors import MediaError
from media.label_studio_client import LabelStudioClient
from media.loader import MediaLoader
from tests.label_studio_stand_in import LEGACY_KEY as LEGACY_TOKEN
from tests.label_studio_stand_in import PERSONAL_ACCESS_TOKEN, StandInLabelStudio
from tests.local_http import LocalHTTPServer


def loader(make_settings, auth: LabelStudioClient | None, **settings) -> MediaLoader:
    return MediaLoader(make_settings(**settings), lambda project=None: auth)


@pytest.mark.parametrize(
    "url",
    ["/data/upload/7/0a1b2c3d-bus.jpg", "/data/local-files/?d=images/bus.jpg", "s3://bucket/images/bus.jpg"],
)
@pytest.mark.parametrize("key", [LEGACY_TOKEN, PERSONAL_ACCESS_TOKEN], ids=["legacy", "personal"])
def test_label_studio_urls_are_fetched_with_the_api_key(make_settings, stand_in, bus_image, url, key):
    with StandInLabelStudio(bus_image.read_bytes()) as storage:
        stand_in.storage_url = storage.url  # presigned URLs lead to another origin, as S3's do
        media = loader(make_settings, LabelStudioClient(stand_in.url, key))
        image = media.load_image(url, task_id=11)
    assert image.shape == (1080, 810, 3)
    path, authorization = stand_in.requests[0]
    if key == LEGACY_TOKEN:
        assert authorization == f"Token {LEGACY_TOKEN}"
    else:  # the personal access token itself never goes out: an access token made from it does
        assert authorization.removeprefix("Bearer ") in stand_in.access_tokens
    if url.startswith("s3://"):
        # Label Studio presigns with the key; the storage's host gets the presigned URL without it.
        assert path.startswith("/tasks/11/presign/?fileuri=")
        assert [authorization for _, authorization in storage.requests] == [""]
        assert storage.requests[0][0].startswith("/external/bucket/images/bus.jpg?X-Amz-Signature=")
    else:
        assert storage.requests == []


def test_absolute_label_studio_urls_with_another_loopback_name_get_the_key(make_settings, stand_in):
    url = stand_in.url.replace("127.0.0.1", "localhost") + "/data/upload/7/bus.jpg"
    media = loader(make_settings, LabelStudioClient(stand_in.url, LEGACY_TOKEN))
    assert media.load_image(url).shape == (1080, 810, 3)


def test_other_hosts_never_see_the_key(make_settings, stand_in):
    # The stand-in is on 127.0.0.1: a private address, opted in for this test.
    media = loader(
        make_settings,
        LabelStudioClient("http://label-studio.invalid:8080", LEGACY_TOKEN),
        allow_private_media=True,
    )
    assert media.load_image(stand_in.url + "/external/bus.jpg").shape == (1080, 810, 3)
    assert stand_in.requests == [("/external/bus.jpg", "")]


def test_access_tokens_are_renewed_once_they_expire(stand_in):
    stand_in.access_lifetime = -1  # expired as it is made: every use renews
    auth = LabelStudioClient(stand_in.url, PERSONAL_ACCESS_TOKEN)
    first = auth.headers()
    second = auth.headers()
    assert stand_in.refreshes == 2 and first != second
    assert first["Authorization"].removeprefix("Bearer ") in stand_in.access_tokens
    stand_in.access_lifetime = 3600
    auth.headers()
    auth.headers()
    assert stand_in.refreshes == 3  # a long-lived access token is reused


def test_downloads_are_cached(make_settings, stand_in):
    media = loader(make_settings, LabelStudioClient(stand_in.url, LEGACY_TOKEN))
    first = media.local_path("/data/upload/7/bus.jpg")
    second = media.local_path("/data/upload/7/bus.jpg")
    assert first == second and len(stand_in.requests) == 1


def test_a_refused_key_names_the_problem(make_settings, stand_in):
    media = loader(make_settings, LabelStudioClient(stand_in.url, "wrong-key"))
    with pytest.raises(MediaError, match="answered HTTP 401"):
        media.load_image("/data/upload/7/bus.jpg")


def test_label_studio_urls_need_label_studio_url(make_settings):
    with pytest.raises(MediaError, match="LABEL_STUDIO_URL"):
        loader(make_settings, None).load_image("/data/upload/7/bus.jpg")


def test_setup_credentials_are_used_when_the_environment_has_none(make_client, stand_in, bus_image):
    client = make_client()
    setup = {"project": "1.1", "schema": "<View/>", "hostname": stand_in.url, "access_token": LEGACY_TOKEN}
    assert client.post("/setup", json=setup).status_code == 200
    config = (
        '<View><Image name="image" value="$image"/><RectangleLabels name="r" toName="image" '
        'model_score_threshold="0.0001"><Label value="person"/></RectangleLabels></View>'
    )
    task = {"id": 3, "data": {"image": "/data/upload/1/bus.jpg"}}
    body = client.post("/predict", json={"tasks": [task], "label_config": config, "project": "1.1"}).json()
    assert body["results"][0]["result"]
    assert stand_in.requests[0] == ("/data/upload/1/bus.jpg", f"Token {LEGACY_TOKEN}")


def test_each_project_uses_the_label_studio_its_setup_named(make_client, bus_image):
    """Two Label Studio projects (here: two instances) behind one backend without LABEL_STUDIO_URL."""
    config = (
        '<View><Image name="image" value="$image"/><RectangleLabels name="r" toName="image" '
        'model_score_threshold="0.0001"><Label value="person"/></RectangleLabels></View>'
    )
    client = make_client()
    with (
        StandInLabelStudio(bus_image.read_bytes()) as first,
        StandInLabelStudio(bus_image.read_bytes()) as second,
    ):
        for project, server in (("1.100", first), ("2.200", second)):
            setup = {
                "project": project,
                "schema": config,
                "hostname": server.url,
                "access_token": LEGACY_TOKEN,
            }
            assert client.post("/setup", json=setup).status_code == 200
        for project in ("1.100", "2.200"):
            task = {
                "id": 5,
                "project": int(project.split(".")[0]),
                "data": {"image": f"/data/upload/{project}/bus.jpg"},
            }
            body = client.post(
                "/predict", json={"tasks": [task], "label_config": config, "project": project}
            ).json()
            assert body["results"][0]["result"]
        assert [path for path, _ in first.requests] == ["/data/upload/1.100/bus.jpg"]
        assert [path for path, _ in second.requests] == ["/data/upload/2.200/bus.jpg"]


# -- the download cache (issue 9, hole 10) ------------------------------------------------------------------


def cached_files(media: MediaLoader) -> list[Path]:
    folder = media._settings.media_cache_dir
    return [p for p in folder.iterdir() if not p.name.endswith(".part")] if folder.is_dir() else []


def test_a_cache_of_zero_bytes_still_serves_every_image(make_client, stand_in):
    """Hole 10: with MEDIA_CACHE_BYTES=0 the file just downloaded was evicted before it was read."""
    client = make_client(
        media_cache_bytes=0, label_studio_url=stand_in.url, label_studio_api_key=LEGACY_TOKEN
    )
    config = (
        '<View><Image name="image" value="$image"/><RectangleLabels name="r" toName="image" '
        'model_score_threshold="0.0001"><Label value="person"/></RectangleLabels></View>'
    )
    tasks = [{"id": i, "data": {"image": f"/data/upload/1/{i}.jpg"}} for i in range(3)]
    results = client.post("/predict", json={"tasks": tasks, "label_config": config}).json()["results"]
    assert all("result" in r for r in results), results
    assert cached_files(client.app.state.backend.media) == []


def test_the_cache_stays_within_its_byte_budget(make_settings, stand_in, bus_image):
    size = bus_image.stat().st_size
    media = loader(make_settings, LabelStudioClient(stand_in.url, LEGACY_TOKEN), media_cache_bytes=2 * size)
    for i in range(5):
        media.load_image(f"/data/upload/1/{i}.jpg")
        assert sum(p.stat().st_size for p in cached_files(media)) <= 2 * size
    assert len(cached_files(media)) == 2  # the two most recently used
    media.load_image("/data/upload/1/4.jpg")
    assert len(stand_in.requests) == 5  # the newest is served from the cache


def test_files_in_use_are_never_evicted(make_settings, stand_in):
    """Hole 10: another thread's download could evict a file that was being read."""
    media = loader(make_settings, LabelStudioClient(stand_in.url, LEGACY_TOKEN), media_cache_bytes=0)
    with media.fetched("/data/upload/1/held.jpg") as held:
        for i in range(3):
            media.load_image(f"/data/upload/1/{i}.jpg")
        assert held.is_file() and cached_files(media) == [held]
    assert cached_files(media) == []  # released: the budget holds again


def test_files_another_process_reads_are_never_evicted(make_settings, stand_in):
    """The cache folder is shared by gunicorn workers and training jobs: their reads count as in use."""
    media = loader(make_settings, LabelStudioClient(stand_in.url, LEGACY_TOKEN), media_cache_bytes=0)
    path = media.local_path("/data/upload/1/other.jpg")
    reader = subprocess.Popen(
        [sys.executable, "-c", HOLD_SHARED_LOCK, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert reader.stdout.readline() == b"held\n"
        media.load_image("/data/upload/1/next.jpg")
        assert path.is_file()
    finally:
        reader.communicate(b"")
    media.load_image("/data/upload/1/last.jpg")
    assert not path.exists()


HOLD_SHARED_LOCK = """
import fcntl, os, sys
descriptor = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(descriptor, fcntl.LOCK_SH)
print("held", flush=True)
sys.stdin.read()
"""


def test_temporary_files_are_unique_and_stale_ones_are_swept(make_settings, stand_in):
    """Hole 10: `.part` names used the thread id, which forked workers share; one left by a process that
    died stayed for ever. Temporary names come from mkstemp, and stale ones go at the next eviction."""
    media = loader(make_settings, LabelStudioClient(stand_in.url, LEGACY_TOKEN))
    folder = media._settings.media_cache_dir
    folder.mkdir(parents=True)
    stale, fresh = folder / "left-by-a-dead-worker.part", folder / "being-written.part"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    old = time.time() - media._settings.media_wait_timeout - 3600
    os.utime(stale, (old, old))
    names: list[str] = []
    original = media._download

    def recording(url, auth, destination, max_bytes):
        names.append(destination.name)
        original(url, auth, destination, max_bytes)

    media._download = recording
    media.load_image("/data/upload/1/a.jpg")
    media.load_image("/data/upload/1/b.jpg")
    assert not stale.exists() and fresh.exists()
    assert len(set(names)) == 2 and all(str(threading.get_ident()) not in name for name in names)


# -- HTTP: sessions and retries -------------------------------------------------------------------------------


class KeepAliveMediaHost(LocalHTTPServer):
    """HTTP/1.1 with keep-alive; answers the first `failures` requests 503. Records client ports."""

    def __init__(self, image: bytes, failures: int = 0):
        self.client_ports: list[int] = []
        self.statuses: list[int] = []
        host = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                host.client_ports.append(self.client_address[1])
                status = 503 if len(host.statuses) < failures else 200
                host.statuses.append(status)
                body = image if status == 200 else b"busy"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._listen(Handler)


def test_downloads_from_one_host_reuse_a_connection(make_settings, bus_image):
    with KeepAliveMediaHost(bus_image.read_bytes()) as host:
        media = loader(make_settings, None, allow_private_media=True)  # the host is on 127.0.0.1
        for i in range(3):
            media.load_image(f"{host.url}/{i}.jpg")
    assert len(host.client_ports) == 3 and len(set(host.client_ports)) == 1


def test_busy_answers_are_retried_with_backoff(make_settings, bus_image):
    with KeepAliveMediaHost(bus_image.read_bytes(), failures=2) as host:
        media = loader(make_settings, None, allow_private_media=True)
        assert media.load_image(f"{host.url}/busy.jpg").shape == (1080, 810, 3)
    assert host.statuses == [503, 503, 200]
    with KeepAliveMediaHost(bus_image.read_bytes(), failures=10) as host:
        media = loader(
            make_settings, None, allow_private_media=True, media_cache_dir=make_settings().media_cache_dir
        )
        with pytest.raises(MediaError, match="answered HTTP 503"):
            media.load_image(f"{host.url}/down.jpg")
    assert host.statuses == [503] * 4  # three retries, then the answer is reported
