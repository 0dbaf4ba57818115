"""Holes found in review (issue 9), each reproduced over HTTP against the real app: a stand-in Label Studio
that wants the API key, and a second server on 127.0.0.1 playing the attacker, which records every
request and its Authorization header. Each test names the hole it closes and fails on the code before."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tests.test_media import LEGACY_TOKEN, StandInLabelStudio

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
    client = make_client(label_studio_url=label_studio.url, label_studio_api_key=LEGACY_TOKEN)
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
