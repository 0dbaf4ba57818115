"""Smoke tests of the Label Studio harness: a real Label Studio 1.23.2 and a stub ML backend.

They also pin down what Label Studio does with an ML backend (the calls it makes, what it stores), so
a change in Label Studio's behaviour shows up here before it shows up as a backend bug.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from .label_studio import (
    LabelStudioAPI,
    LabelStudioNotInstalledError,
    LabelStudioServer,
    LabelStudioStartError,
    RecordingMLBackend,
    check_installation,
    jwt_payload,
)

pytestmark = pytest.mark.e2e

LABEL_CONFIG = """
<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="person"/>
    <Label value="bus"/>
  </RectangleLabels>
</View>
"""


@pytest.fixture(scope="module")
def bus_jpg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ultralytics' bus.jpg (810x1080) copied to a temp dir; a generated JPEG if ultralytics is absent."""
    target = tmp_path_factory.mktemp("images") / "bus.jpg"
    spec = importlib.util.find_spec("ultralytics")  # located, not imported (slow)
    asset = Path(spec.origin).parent / "assets" / "bus.jpg" if spec and spec.origin else None
    if asset is not None and asset.exists():
        shutil.copy(asset, target)
    else:
        from PIL import Image

        Image.new("RGB", (810, 1080), (90, 120, 200)).save(target, quality=90)
    return target


def _box(label: str, **value: float) -> dict:
    return {
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": 810,
        "original_height": 1080,
        "image_rotation": 0,
        "value": {"rotation": 0, **value, "rectanglelabels": [label]},
    }


def test_auth_personal_access_token(label_studio: LabelStudioServer) -> None:
    api = label_studio.api
    assert api.uses_personal_access_token
    assert api.whoami()["email"] == label_studio.username
    pat = label_studio.personal_access_token
    assert jwt_payload(pat)["token_type"] == "refresh"

    # default settings of a fresh 1.23.2: PATs on, legacy tokens off
    assert api.jwt_settings() == {"api_tokens_enabled": True, "legacy_api_tokens_enabled": False}
    whoami = f"{label_studio.url}/api/current-user/whoami"
    for header in (f"Bearer {pat}", f"Token {pat}", f"Token {label_studio.legacy_token}"):
        assert requests.get(whoami, headers={"Authorization": header}, timeout=30).status_code == 401, header
    assert requests.get(whoami, timeout=30).status_code == 401

    # the PAT is exchanged for a 5-minute access token; the exchange does not rotate the PAT
    access = api.refresh_access_token()
    claims = jwt_payload(access)
    assert claims["token_type"] == "access"
    assert claims["exp"] - claims["iat"] == 300
    assert requests.get(whoami, headers={"Authorization": f"Bearer {access}"}, timeout=30).status_code == 200
    assert api.refresh_access_token() != access

    # legacy tokens can be switched on at run time, and off again
    assert api.legacy_token() == label_studio.legacy_token
    legacy = LabelStudioAPI(label_studio.url, label_studio.legacy_token)
    assert not legacy.uses_personal_access_token
    try:
        api.set_jwt_settings(legacy_api_tokens_enabled=True)
        assert legacy.whoami()["email"] == label_studio.username
    finally:
        api.set_jwt_settings(legacy_api_tokens_enabled=False)
    assert legacy.request("GET", "/api/current-user/whoami").status_code == 401


def test_upload_image_and_fetch_it(label_studio: LabelStudioServer, bus_jpg: Path) -> None:
    api = label_studio.api
    project = api.create_project("upload", LABEL_CONFIG)
    second = bus_jpg.with_name("bus2.jpg")
    shutil.copy(bus_jpg, second)
    answer = api.import_files(project["id"], [bus_jpg, second])
    assert answer["task_count"] == 2
    assert len(answer["file_upload_ids"]) == 2

    tasks = api.list_tasks(project["id"])
    assert len(tasks) == 2
    # by file name: the random 8-hex prefix must not decide the order
    urls = sorted((task["data"]["image"] for task in tasks), key=lambda url: url.rsplit("/", 1)[-1][9:])
    for url, name in zip(urls, ["bus.jpg", "bus2.jpg"], strict=True):
        # /data/upload/<project>/<8 hex>-<name>
        assert url.startswith(f"/data/upload/{project['id']}/"), url
        assert url.endswith(f"-{name}"), url

    response = api.fetch(urls[0])
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/jpeg"
    assert response.content == bus_jpg.read_bytes()
    assert api.fetch(urls[0], auth=False).status_code in (401, 403)

    # deleting an upload keeps its task; fetching its URL then answers 500 (Label Studio 1.23.2 bug)
    by_url = {f"/data/{u['file']}": u["id"] for u in api.list_file_uploads(project["id"])}
    api.delete_file_upload(by_url[urls[1]])
    assert len(api.list_tasks(project["id"])) == 2
    assert api.fetch(urls[1]).status_code == 500
    assert api.fetch(urls[0]).status_code == 200


def test_local_storage_urls(label_studio: LabelStudioServer, bus_jpg: Path) -> None:
    api = label_studio.api
    folder = label_studio.document_root / "images"
    folder.mkdir()
    shutil.copy(bus_jpg, folder / "bus.jpg")
    project = api.create_project("local files", LABEL_CONFIG)
    storage = api.create_local_storage(project["id"], folder)
    api.sync_local_storage(storage["id"])
    [task] = api.list_tasks(project["id"])
    url = task["data"]["image"]
    split = urlsplit(url)
    assert split.path == "/data/local-files/"
    assert parse_qs(split.query)["d"] == ["images/bus.jpg"]
    assert api.fetch(url).content == bus_jpg.read_bytes()
    assert api.fetch(url, auth=False).status_code in (401, 403)


def test_ml_backend_protocol(label_studio: LabelStudioServer, bus_jpg: Path) -> None:
    """What Label Studio sends to an ML backend, and what it stores from its answers."""
    api = label_studio.api
    box = {**_box("bus", x=10.0, y=20.0, width=30.0, height=40.0), "score": 0.87}
    backend = RecordingMLBackend(
        lambda task: {"result": [box], "score": 0.87, "model_version": "stub-v1"}, model_version="stub-v1"
    )
    with backend:
        project = api.create_project("ml backend", LABEL_CONFIG)
        api.import_files(project["id"], [bus_jpg])
        [task] = api.list_tasks(project["id"])

        # connecting: /health + /setup twice, and a webhook to <url>/webhook for all actions
        ml = api.connect_ml_backend(project["id"], backend.url, title="stub")
        assert ml["readable_state"] == "Connected"
        assert ml["model_version"] == "stub-v1"
        assert [(c["method"], c["path"]) for c in backend.calls()] == [
            ("GET", "/health"),
            ("POST", "/setup"),
        ] * 2
        setup = backend.calls("/setup")[0]
        assert "Authorization" not in setup["headers"]
        assert setup["body"]["project"].startswith(f"{project['id']}.")
        assert "RectangleLabels" in setup["body"]["schema"]
        assert setup["body"]["access_token"] == label_studio.legacy_token
        [webhook] = api.list_webhooks(project["id"])
        assert webhook["url"] == f"{backend.url}/webhook"
        assert webhook["send_for_all_actions"]

        # "Retrieve predictions": /health, /setup, then ONE /predict with the tasks
        backend.clear()
        api.retrieve_predictions(project["id"])
        assert [c["path"] for c in backend.calls()] == ["/health", "/setup", "/predict"]
        predict = backend.calls("/predict")[0]["body"]
        assert [t["id"] for t in predict["tasks"]] == [task["id"]]
        assert predict["tasks"][0]["data"]["image"] == task["data"]["image"]
        assert predict["project"].startswith(f"{project['id']}.")
        assert "RectangleLabels" in predict["label_config"]
        [prediction] = api.list_predictions(task_id=task["id"])
        assert prediction["model_version"] == "stub-v1"
        assert prediction["score"] == pytest.approx(0.87)
        assert prediction["result"][0]["value"]["rectanglelabels"] == ["bus"]
        assert prediction["result"][0]["score"] == pytest.approx(0.87)

        # a task that already has a prediction of the current model_version is not sent again
        backend.clear()
        api.retrieve_predictions(project["id"])
        assert [c["path"] for c in backend.calls()] == ["/health", "/setup"]
        assert len(api.list_predictions(project_id=project["id"])) == 1

        # opening a task without predictions asks the backend; with one, it does not
        api.import_files(project["id"], [bus_jpg])
        new_task = max(api.list_tasks(project["id"]), key=lambda t: t["id"])
        backend.wait_for(lambda calls: any(c["path"] == "/webhook" for c in calls), timeout=10)
        backend.clear()
        opened = api.get_task(new_task["id"])
        assert [c["path"] for c in backend.calls()] == ["/health", "/setup", "/predict"]
        assert len(opened["predictions"]) == 1
        backend.clear()
        api.get_task(new_task["id"])
        assert backend.calls() == []

        # an annotation reaches the backend only as a webhook event
        backend.clear()
        annotation = api.create_annotation(task["id"], [_box("person", x=1.0, y=2.0, width=3.0, height=4.0)])
        calls = backend.wait_for(lambda calls: any(c["path"] == "/webhook" for c in calls), timeout=10)
        [event] = [c["body"] for c in calls if c["path"] == "/webhook"]
        assert event["action"] == "ANNOTATION_CREATED"
        assert event["annotation"]["id"] == annotation["id"]
        assert event["task"]["id"] == task["id"]
        assert event["project"]["id"] == project["id"]
        assert not [c for c in calls if c["path"] == "/predict"]


def listening_port_with_a_free_successor() -> tuple[socket.socket, int]:
    """A socket listening on a port whose next port is free: Label Studio tries the next one only, so a
    taken successor (another server of the session got it by chance) would fail the start instead."""
    for _ in range(50):
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port + 1)) != 0:
                return holder, port
        holder.close()
    raise RuntimeError("no port with a free successor found")


def test_second_server_on_a_taken_port(label_studio: LabelStudioServer) -> None:
    """Label Studio moves to another port when the requested one is taken: the harness must notice.

    Seeded with a copy of the session server's database (no migrations), and stopped completely.
    """
    label_studio.api.create_project("seeded into the copy", LABEL_CONFIG)  # not left to another test
    holder, taken = listening_port_with_a_free_successor()
    server = LabelStudioServer(port=taken, seed_database=label_studio.database)
    with holder, server:
        assert server.port != taken
        assert server.api.whoami()["email"] == server.username
        assert server.personal_access_token != label_studio.personal_access_token
        # the copy holds the session server's projects
        assert "seeded into the copy" in {p["title"] for p in server.api.list_projects()}
        root, process = server.root, server.process
    assert process.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)
    assert not root.exists()


def test_start_failure_shows_the_log(tmp_path: Path) -> None:
    server = LabelStudioServer(extra_env={"DJANGO_SETTINGS_MODULE": "no_such_settings_module"})
    with pytest.raises(LabelStudioStartError, match="no_such_settings_module") as error:
        server.start()
    assert "tail of" in str(error.value)
    assert not server.is_running()
    assert not server.root.exists()


def test_missing_installation_is_reported(tmp_path: Path) -> None:
    with pytest.raises(LabelStudioNotInstalledError, match=r"install_label_studio\.sh"):
        check_installation(tmp_path / "no-venv")
