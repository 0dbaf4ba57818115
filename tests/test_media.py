"""Media URLs as Label Studio puts them in task data, fetched from a local stand-in Label Studio."""

from __future__ import annotations

import base64
import json
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from core.errors import MediaError
from media.label_studio_api import LabelStudioAuth, is_personal_access_token
from media.loader import MediaLoader
from tests.local_http import LocalHTTPServer

LEGACY_TOKEN = "0123456789abcdef0123456789abcdef01234567"


def fake_jwt(claims: dict) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256'})}.{part(claims)}.c2lnbmF0dXJl"


PERSONAL_ACCESS_TOKEN = fake_jwt({"token_type": "refresh", "exp": time.time() + 10**8, "user_id": 1})


class StandInLabelStudio(LocalHTTPServer):
    """Serves one image under /data/upload and /data/local-files, presigns cloud URIs, exchanges PATs."""

    def __init__(self, image: bytes, access_lifetime: float = 300.0):
        self.image = image
        self.access_lifetime = access_lifetime
        self.requests: list[tuple[str, str]] = []  # (path, authorization)
        self.refreshes = 0
        self.access_tokens: set[str] = set()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/api/token/refresh/" and body.get("refresh") == PERSONAL_ACCESS_TOKEN:
                    stand_in.refreshes += 1
                    access = fake_jwt({"token_type": "access", "exp": time.time() + stand_in.access_lifetime})
                    stand_in.access_tokens.add(access)
                    return self._send(200, json.dumps({"access": access}).encode(), "application/json")
                return self._send(401, b"{}", "application/json")

            def do_GET(self):
                authorization = self.headers.get("Authorization", "")
                stand_in.requests.append((self.path, authorization))
                authorized = authorization == f"Token {LEGACY_TOKEN}" or (
                    authorization.startswith("Bearer ") and authorization[7:] in stand_in.access_tokens
                )
                parsed = urlparse(self.path)
                if parsed.path.startswith("/external/"):
                    return self._send(200, stand_in.image, "image/jpeg")
                if not authorized:
                    return self._send(401, b"unauthorized", "text/plain")
                if parsed.path.startswith("/tasks/") and parsed.path.endswith("/presign/"):
                    uri = base64.urlsafe_b64decode(parse_qs(parsed.query)["fileuri"][0]).decode()
                    assert uri.startswith("s3://")
                    self.send_response(303)
                    self.send_header("Location", f"/external/{uri[5:]}?X-Amz-Signature=secret")
                    self.end_headers()
                    return None
                if parsed.path.startswith(("/data/upload/", "/data/local-files")):
                    return self._send(200, stand_in.image, "image/jpeg")
                return self._send(404, b"", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._listen(Handler)


@pytest.fixture
def stand_in(bus_image: Path):
    with StandInLabelStudio(bus_image.read_bytes()) as server:
        yield server


def loader(make_settings, auth: LabelStudioAuth | None, **settings) -> MediaLoader:
    return MediaLoader(make_settings(**settings), lambda project=None: auth)


def test_personal_access_tokens_are_told_from_legacy_ones():
    assert is_personal_access_token(PERSONAL_ACCESS_TOKEN)
    assert not is_personal_access_token(LEGACY_TOKEN)
    assert not is_personal_access_token("a.b.c")


@pytest.mark.parametrize(
    "url",
    ["/data/upload/7/0a1b2c3d-bus.jpg", "/data/local-files/?d=images/bus.jpg", "s3://bucket/images/bus.jpg"],
)
@pytest.mark.parametrize("key", [LEGACY_TOKEN, PERSONAL_ACCESS_TOKEN], ids=["legacy", "personal"])
def test_label_studio_urls_are_fetched_with_the_api_key(make_settings, stand_in, url, key):
    media = loader(make_settings, LabelStudioAuth(stand_in.url, key))
    image = media.load_image(url, task_id=11)
    assert image.shape == (1080, 810, 3)
    authorization = stand_in.requests[0][1]
    assert authorization == (f"Token {LEGACY_TOKEN}" if key == LEGACY_TOKEN else authorization)
    assert authorization.startswith("Token " if key == LEGACY_TOKEN else "Bearer ")
    if url.startswith("s3://"):
        # The presigned URL is fetched on the storage's host without Label Studio's key.
        assert stand_in.requests[0][0].startswith("/tasks/11/presign/?fileuri=")


def test_absolute_label_studio_urls_with_another_loopback_name_get_the_key(make_settings, stand_in):
    url = stand_in.url.replace("127.0.0.1", "localhost") + "/data/upload/7/bus.jpg"
    media = loader(make_settings, LabelStudioAuth(stand_in.url, LEGACY_TOKEN))
    assert media.load_image(url).shape == (1080, 810, 3)


def test_other_hosts_never_see_the_key(make_settings, stand_in):
    # The stand-in is on 127.0.0.1: a private address, opted in for this test.
    media = loader(
        make_settings,
        LabelStudioAuth("http://label-studio.invalid:8080", LEGACY_TOKEN),
        allow_private_media=True,
    )
    assert media.load_image(stand_in.url + "/external/bus.jpg").shape == (1080, 810, 3)
    assert stand_in.requests == [("/external/bus.jpg", "")]


def test_access_tokens_are_renewed_before_they_expire(stand_in):
    stand_in.access_lifetime = 10  # under the renewal margin: every use renews
    auth = LabelStudioAuth(stand_in.url, PERSONAL_ACCESS_TOKEN)
    first = auth.headers()
    second = auth.headers()
    assert stand_in.refreshes == 2 and first != second
    stand_in.access_lifetime = 3600
    auth.headers()
    auth.headers()
    assert stand_in.refreshes == 3  # a long-lived access token is reused


def test_downloads_are_cached(make_settings, stand_in):
    media = loader(make_settings, LabelStudioAuth(stand_in.url, LEGACY_TOKEN))
    first = media.local_path("/data/upload/7/bus.jpg")
    second = media.local_path("/data/upload/7/bus.jpg")
    assert first == second and len(stand_in.requests) == 1


def test_a_refused_key_names_the_problem(make_settings, stand_in):
    media = loader(make_settings, LabelStudioAuth(stand_in.url, "wrong-key"))
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
