"""Issue 24 item 3: the recommended set-up is authenticated. Label Studio's model connection with its
basic-auth fields sends the credentials on every call it makes to the backend, the training webhook
included (what docs/security.md "Who may call the backend" tells users to set)."""

from __future__ import annotations

import base64

import pytest

from .label_studio import LabelStudioServer, RecordingMLBackend

pytestmark = pytest.mark.e2e

CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    '<Label value="Car"/></RectangleLabels></View>'
)


def test_label_studio_sends_the_basic_auth_fields_on_setup_predict_and_the_training_webhook(
    label_studio: LabelStudioServer, recording_ml_backend: RecordingMLBackend
) -> None:
    api = label_studio.api
    project = api.create_project("e2e basic auth", CONFIG)
    ml = api.connect_ml_backend(
        project["id"],
        recording_ml_backend.url,
        auth_method="BASIC_AUTH",
        basic_auth_user="labelstudio",
        basic_auth_pass="s3cret-pass",
    )
    api.train_ml_backend(ml["id"])
    expected = "Basic " + base64.b64encode(b"labelstudio:s3cret-pass").decode()
    seen = {
        (r["method"], r["path"]): r["headers"].get("Authorization") for r in recording_ml_backend.requests
    }
    assert seen.get(("POST", "/setup")) == expected, seen
    assert seen.get(("POST", "/webhook")) == expected, seen
