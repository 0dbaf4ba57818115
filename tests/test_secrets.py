"""Secrets never reach a log line or an answer.

Requests that carry each kind of secret run against a stand-in Label Studio with every logger at DEBUG;
then the captured log (the logging records and whatever reached stdout/stderr) and every answer are
searched for the secret values, as they are and base64-encoded.
"""

from __future__ import annotations

import base64
import logging

import pytest

from tests.label_studio_stand_in import LEGACY_KEY as LEGACY_TOKEN
from tests.label_studio_stand_in import PERSONAL_ACCESS_TOKEN, StandInLabelStudio, fake_jwt

CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="r" toName="image" '
    'model_score_threshold="0.0001"><Label value="person"/></RectangleLabels></View>'
)
BASIC_USER = "annotator"
BASIC_PASSWORD = "basic-pass-7f3e9a1c"
WRONG_PASSWORD = "wrong-pass-2b8d4e6f"
PARAMS_PASSWORD = "params-pass-5c1a9e3b"
SETUP_TOKEN_UNREACHABLE = "setup-token-9d2f7a4c1e"
REFUSED_PAT = fake_jwt({"token_type": "refresh", "exp": 4_102_444_800, "user_id": 666})


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def captured_logs(caplog):
    """Every logger at DEBUG, Ultralytics' own (which does not propagate) included."""
    caplog.set_level(logging.DEBUG)
    ultralytics_logger = logging.getLogger("ultralytics")
    ultralytics_logger.addHandler(caplog.handler)
    yield caplog
    ultralytics_logger.removeHandler(caplog.handler)


def test_no_secret_in_logs_or_answers(make_client, bus_image, captured_logs, capfd, tmp_path):
    answers = []
    clients = 0

    def client(**settings):  # each with its own media cache: every fetch goes to Label Studio
        nonlocal clients
        clients += 1
        return make_client(log_level="DEBUG", media_cache_dir=tmp_path / f"cache-{clients}", **settings)

    def post(client, path, body, headers=None):
        response = client.post(path, json=body, headers=headers or {})
        answers.append(response.text)
        return response

    task = {"id": 1, "data": {"image": "/data/upload/1/bus.jpg"}}
    predict_body = {
        "tasks": [task],
        "label_config": CONFIG,
        "project": "1.1",
        "params": {"login": BASIC_USER, "password": PARAMS_PASSWORD, "context": None},
    }
    with StandInLabelStudio(bus_image.read_bytes()) as label_studio:
        # 1. LABEL_STUDIO_API_KEY is a personal access token: exchanged at /api/token/refresh/.
        env_pat = client(label_studio_url=label_studio.url, label_studio_api_key=PERSONAL_ACCESS_TOKEN)
        assert "result" in post(env_pat, "/predict", predict_body).json()["results"][0]
        assert label_studio.refreshes == 1
        # A cloud URI, presigned by Label Studio: a redirect to a URL with a signature in its query.
        presigned = {**predict_body, "tasks": [{"id": 5, "data": {"image": "s3://bucket/bus.jpg"}}]}
        assert "result" in post(env_pat, "/predict", presigned).json()["results"][0]
        assert any(
            path.startswith("/external/bucket/bus.jpg?X-Amz-Signature") for path, _ in label_studio.requests
        )

        # 2. No key in the environment: /setup brings hostname and access_token; media use them.
        from_setup = client()
        setup = {
            "project": "1.1",
            "schema": CONFIG,
            "hostname": label_studio.url,
            "access_token": LEGACY_TOKEN,
        }
        assert post(from_setup, "/setup", setup).status_code == 200
        assert "result" in post(from_setup, "/predict", predict_body).json()["results"][0]
        assert ("/data/upload/1/bus.jpg", f"Token {LEGACY_TOKEN}") in label_studio.requests

        # 3. Keys Label Studio refuses, and a Label Studio that is not there.
        refused = client(label_studio_url=label_studio.url, label_studio_api_key=REFUSED_PAT)
        assert "refused the personal access token" in post(refused, "/predict", predict_body).text
        unreachable = client()
        setup_elsewhere = {**setup, "hostname": "http://127.0.0.1:9", "access_token": SETUP_TOKEN_UNREACHABLE}
        assert post(unreachable, "/setup", setup_elsewhere).status_code == 200
        assert "could not be downloaded" in post(unreachable, "/predict", predict_body).text
        # A token of the wrong type is refused without being echoed.
        assert (
            post(unreachable, "/setup", {**setup, "access_token": [SETUP_TOKEN_UNREACHABLE]}).status_code
            == 422
        )

    # 4. Basic auth: right and wrong passwords, on every route.
    guarded = client(basic_auth_user=BASIC_USER, basic_auth_pass=BASIC_PASSWORD)
    for headers, status in (
        (basic(BASIC_USER, WRONG_PASSWORD), 401),
        (basic(BASIC_USER, BASIC_PASSWORD), 200),
    ):
        response = guarded.get("/health", headers=headers)
        answers.append(response.text)
        assert response.status_code == status
        image_task = {"id": 2, "data": {"image": str(bus_image)}}
        body = {"tasks": [image_task], "label_config": CONFIG, "params": predict_body["params"]}
        assert post(guarded, "/predict", body, headers).status_code == status
        assert post(guarded, "/setup", setup, headers).status_code == status
        assert (
            post(guarded, "/webhook", {"action": "TASKS_CREATED", "project": {"id": 1}}, headers).status_code
            == status
        )

    output = capfd.readouterr()
    log = "\n".join([captured_logs.text, output.out, output.err])
    assert "Loading model" in log and "HTTP Request: POST http://testserver/predict" in log
    assert any(record.levelno == logging.DEBUG for record in captured_logs.records)
    assert "X-Amz-Signature" not in log  # the presigned URL's signature
    secrets = [
        PERSONAL_ACCESS_TOKEN,
        *label_studio.access_tokens,
        LEGACY_TOKEN,
        REFUSED_PAT,
        SETUP_TOKEN_UNREACHABLE,
        BASIC_PASSWORD,
        WRONG_PASSWORD,
        PARAMS_PASSWORD,
        base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode(),
        base64.b64encode(f"{BASIC_USER}:{WRONG_PASSWORD}".encode()).decode(),
    ]
    assert len(label_studio.access_tokens) == 1
    for secret in secrets:
        assert secret not in log, secret
        for answer in answers:
            assert secret not in answer, (secret, answer)


def test_settings_and_auth_objects_do_not_show_secrets(make_settings):
    from media.label_studio_client import LabelStudioClient
    from server.schemas import PredictRequest, SetupRequest

    settings = make_settings(
        label_studio_api_key=LEGACY_TOKEN, basic_auth_user=BASIC_USER, basic_auth_pass=BASIC_PASSWORD
    )
    setup = SetupRequest(schema="<View/>", access_token=SETUP_TOKEN_UNREACHABLE)
    predict = PredictRequest(
        tasks=[{"data": {}}], label_config="<View/>", params={"login": "u", "password": PARAMS_PASSWORD}
    )
    for text in (
        repr(settings),
        str(settings),
        repr(LabelStudioClient("http://ls", LEGACY_TOKEN)),
        repr(setup),
        repr(predict),
    ):
        for secret in (LEGACY_TOKEN, BASIC_PASSWORD, SETUP_TOKEN_UNREACHABLE, PARAMS_PASSWORD):
            assert secret not in text, (secret, text)
