"""What a newcomer meets first, through HTTP (issue 21): the try-it page's examples on a fresh MODEL_ROOT
holding only the bundled model, and the answers to the first mistakes (a /setup without a config,
malformed JSON, a form instead of JSON, training without Label Studio settings, a missing model while
downloads are off)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import PROJECT_ROOT
from server.ui_examples import EXAMPLES

SAMPLE = PROJECT_ROOT / "server" / "static" / "examples" / "shapes.jpg"
RECT_CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    '<Label value="circle"/></RectangleLabels></View>'
)


@pytest.fixture
def fresh_client(make_client, own_model_root):
    """The server's defaults: custom model paths off, downloads on (they fail offline)."""
    return make_client(model_root=own_model_root, allow_custom_model_path=False, allow_model_download=None)


def upload(client, config: str, path: Path = SAMPLE):
    files = {"file": (path.name, path.read_bytes(), "image/jpeg")}
    return client.post("/ui/predict", data={"label_config": config}, files=files)


def test_first_example_is_the_bundled_model_with_its_sample_and_predicts_offline(fresh_client):
    examples = fresh_client.get("/ui/examples").json()["examples"]
    first = examples[0]
    assert first["weights"] == ["shapes-yolov8n.pt"] and first["ready"] and first["note"] == ""
    sample = fresh_client.get(first["sample"])
    assert sample.status_code == 200 and sample.headers["content-type"] == "image/jpeg"
    assert sample.content == SAMPLE.read_bytes()
    # The example names the bundled model with model_path, and custom model paths are off: it is trusted
    # because its text is the server's own (a browser's form may send it with CRLF line ends).
    answer = upload(fresh_client, first["config"].replace("\n", "\r\n"))
    assert answer.status_code == 200, answer.text
    labels = sorted(region["value"]["rectanglelabels"][0] for region in answer.json()["result"])
    assert labels == ["circle", "square", "triangle"]


def test_an_edited_example_and_predict_follow_the_servers_setting(fresh_client):
    edited = EXAMPLES[0].config.replace('model_score_threshold="0.25"', 'model_score_threshold="0.3"')
    answer = upload(fresh_client, edited)
    assert answer.status_code == 422 and "ALLOW_CUSTOM_MODEL_PATH" in answer.json()["error"]
    body = {"tasks": [{"id": 1, "data": {"image": str(SAMPLE)}}], "label_config": EXAMPLES[0].config}
    predicted = fresh_client.post("/predict", json=body)
    assert predicted.status_code == 422 and "ALLOW_CUSTOM_MODEL_PATH" in predicted.json()["error"]


def test_other_examples_say_which_weights_they_need_and_where(fresh_client, own_model_root):
    examples = {e["name"]: e for e in fresh_client.get("/ui/examples").json()["examples"]}
    assert len(examples) == len(EXAMPLES) == 10
    rect = examples["RectangleLabels"]
    assert rect["weights"] == ["yolov8m.pt"] and not rect["ready"] and rect["sample"] is None
    assert "yolov8m.pt" in rect["note"] and str(own_model_root) in rect["note"] and "online" in rect["note"]
    assert examples["KeyPointLabels"]["weights"] == ["yolov8m.pt", "yolov8n-pose.pt"]
    # The page offers the weight files it finds, and tells whether a config may name them.
    models = fresh_client.get("/ui/models").json()
    assert [f["name"] for f in models["files"]] == ["shapes-yolov8n.pt"]
    assert models["allow_custom_model_path"] is False


def test_only_the_examples_samples_are_served(fresh_client):
    for name in ("ui.js", "..%2Fui.html", "shapes.png", "x.jpg"):
        assert fresh_client.get(f"/ui/examples/{name}").status_code == 404


def test_example_note_for_a_missing_bundled_model_and_for_downloads_off(make_client, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    client = make_client(model_root=empty, allow_model_download=False)
    examples = client.get("/ui/examples").json()["examples"]
    assert not examples[0]["ready"] and "comes with the repository" in examples[0]["note"]
    assert "downloads are off (ALLOW_MODEL_DOWNLOAD)" in examples[1]["note"]


def test_setup_without_a_config_is_a_422_that_says_so(client):
    for body in ({}, {"schema": ""}, {"schema": "  "}, {"project": 1}):
        answer = client.post("/setup", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert "needs the project's labeling config in 'schema'" in answer.json()["error"]
    wrong_name = client.post("/setup", json={"label_config": RECT_CONFIG})
    assert wrong_name.status_code == 422 and "'label_config'" in wrong_name.json()["error"]
    assert client.post("/setup", json={"schema": RECT_CONFIG}).status_code == 200


@pytest.mark.parametrize(
    ("body", "where", "what"),
    [
        (b'{"tasks": [1,}', "line 1, column 14 (character 13)", "Expecting value"),
        (b'{\n  "tasks": [\n    {"id": 1,}\n  ]\n}', "line 3, column 14", "Expecting property name"),
        (b'{"label_config": "<View>\n', "line 1, column 25", "must be written as \\n"),
    ],
)
def test_malformed_json_says_where_and_what(client, body, where, what):
    answer = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert where in error and what in error, error


def test_a_form_body_is_told_to_send_json(client):
    answer = client.post("/predict", data={"tasks": "[]"})  # what curl -d sends without -H
    assert answer.status_code == 422
    assert "Content-Type: application/json" in answer.json()["error"]
    assert "application/x-www-form-urlencoded" in answer.json()["error"]


def test_start_training_without_label_studio_settings_is_a_503_naming_them(client):
    project = {"id": 1, "label_config": RECT_CONFIG}
    answer = client.post("/webhook", json={"action": "START_TRAINING", "project": project})
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert "LABEL_STUDIO_URL" in error and "LABEL_STUDIO_API_KEY" in error
    # No training job of this project was made (the model root, and its jobs folder, is the session's).
    assert client.get("/jobs", params={"project": 1, "kind": "train"}).json()["jobs"] == []


@pytest.mark.parametrize(
    ("custom_paths", "download", "why"),
    [
        (True, None, "ALLOW_CUSTOM_MODEL_PATH=true turns them off unless ALLOW_MODEL_DOWNLOAD=true"),
        (False, False, "ALLOW_MODEL_DOWNLOAD=false"),
    ],
)
def test_a_missing_official_model_with_downloads_off_says_so_and_why(
    make_client, own_model_root, custom_paths, download, why
):
    client = make_client(
        model_root=own_model_root, allow_custom_model_path=custom_paths, allow_model_download=download
    )
    answer = upload(client, RECT_CONFIG)  # RectangleLabels' default: yolov8m.pt, not in MODEL_ROOT
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert "'yolov8m.pt' not found in MODEL_ROOT, and downloads are off" in error and why in error, error
