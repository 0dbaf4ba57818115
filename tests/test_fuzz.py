"""Property-based fuzzing of /predict, /setup and /webhook bodies: never a 5xx, never a hang.

Bodies are random JSON shapes, random bytes, labeling configs built from Label Studio's tags with
random attributes (model paths that escape, thresholds that are not numbers, ...) and task data with
every kind of media URL. Nothing reaches the network: ALLOWED_MEDIA_HOSTS names a host no example
uses, LABEL_STUDIO_URL is unset, and local media is limited to a folder with one small image and one
small video. Each endpoint gets `MAX_EXAMPLES` examples. Each test has its own server, which must still
find a square in a shapes image after its examples; counts are of answers that hold a prediction, not of
200s, and the video examples must reach the decoder.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))  # e.g. FUZZ_EXAMPLES=2000 for a deeper run
# The share of examples that must get through (a prediction, decoded frames): about a quarter do, a tenth
# leaves room for the randomness of the examples (each run draws new ones).
MIN_SHARE = 10
# Not a speed target: a hung request fails its test after this long instead of stalling CI.
REQUEST_TIMEOUT_S = 120.0

FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,  # no .hypothesis folder in the checkout; failures print their example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
STILL_PREDICTS_CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="r" toName="image" '
    'model_path="shapes-yolov8n.pt"><Label value="square"/></RectangleLabels></View>'
)


@pytest.fixture(scope="module")
def media_root(tmp_path_factory) -> Path:
    """One small image, one small video, and a shapes image the shapes detector finds a square in."""
    from tools.shapes import draw_scene

    root = tmp_path_factory.mktemp("fuzz-media")
    cv2.imwrite(str(root / "small.png"), np.full((48, 64, 3), 120, np.uint8))
    writer = cv2.VideoWriter(str(root / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    for i in range(2):  # two frames: enough to go through the decoder, the model and the tracker
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    square = draw_scene(320, 240, [("square", (100.0, 60.0, 170.0, 130.0), (230, 200, 30))], 3)
    cv2.imwrite(str(root / "square.png"), square)
    return root


def fuzz_settings(model_root: Path, media_root: Path, cache: Path, **overrides):
    """Settings that keep every example off the network and out of other folders."""
    from core.settings import Settings

    values = {
        "model_root": model_root,
        "media_cache_dir": cache,
        "allow_custom_model_path": True,
        "allow_model_download": False,
        "label_studio_url": "",
        "label_studio_api_key": "",
        "allowed_local_roots": str(media_root),
        "allowed_media_hosts": "only-this-host.invalid",
        "download_connect_timeout": 1.0,
        "download_read_timeout": 1.0,
        "max_request_bytes": 1024 * 1024,
        "inference_batch_size": 2,
        **overrides,
    }
    return Settings(_env_file=None, **values)


@pytest.fixture
def fuzz_client(model_root, media_root, tmp_path):
    """A fresh client per test: no test depends on what another one's examples did to the server."""
    from fastapi.testclient import TestClient

    from server.app import create_app

    with TestClient(create_app(fuzz_settings(model_root, media_root, tmp_path / "cache"))) as client:
        yield client
        assert_still_predicts(client, media_root)


@pytest.fixture
def default_client(model_root, media_root, tmp_path):
    """The settings a user starts with (no allowed hosts, default timeouts and limits); only the model
    root, the cache folder, Label Studio's address (none) and, as a user naming local files must, the
    folder of the tasks' files (ALLOWED_LOCAL_ROOTS; local files are refused without it) are set."""
    from fastapi.testclient import TestClient

    from core.settings import Settings
    from server.app import create_app

    app_settings = Settings(
        _env_file=None,
        model_root=model_root,
        media_cache_dir=tmp_path / "cache",
        allow_model_download=False,
        label_studio_url="",
        label_studio_api_key="",
        allowed_local_roots=str(media_root),
    )
    with TestClient(create_app(app_settings)) as client:
        yield client


def assert_still_predicts(client, media_root: Path) -> None:
    """After its examples the server still finds the square in square.png."""
    body = {
        "tasks": [{"id": 1, "data": {"image": str(media_root / "square.png")}}],
        "label_config": STILL_PREDICTS_CONFIG,
    }
    response = client.post("/predict", content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    (region,) = response.json()["results"][0]["result"]
    assert region["value"]["rectanglelabels"] == ["square"]


@dataclass
class Outcomes:
    """What the examples of one test got: statuses, and how many answers held a prediction."""

    statuses: Counter = field(default_factory=Counter)
    with_result: int = 0  # answers in which at least one task has a `result` (it reached the converters)
    with_regions: int = 0  # ... and at least one region

    def __str__(self) -> str:
        return f"{dict(self.statuses)}, {self.with_result} with a result, {self.with_regions} with regions"


def check_answer(response) -> None:
    assert response.status_code < 500, response.text
    body = response.json()
    if response.status_code >= 400:
        assert isinstance(body.get("error"), str) and body["error"], body
    assert "Traceback" not in response.text


def post(client, path: str, body, outcomes: Outcomes | None = None) -> None:
    """POST `body`, failing if no answer comes within REQUEST_TIMEOUT_S (the request's thread is a daemon:
    a hang fails this example and does not keep the test process alive)."""
    answer: dict = {}

    def send() -> None:
        try:
            if isinstance(body, bytes):
                answer["response"] = client.post(
                    path, content=body, headers={"Content-Type": "application/json"}
                )
            else:
                answer["response"] = client.post(path, json=body)
        except BaseException as error:  # re-raised in the test's thread
            answer["error"] = error

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    sender.join(REQUEST_TIMEOUT_S)
    if sender.is_alive():
        pytest.fail(f"no answer to {path} within {REQUEST_TIMEOUT_S} s for {body!r:.500}")
    if "error" in answer:
        raise answer["error"]
    response = answer["response"]
    check_answer(response)
    if outcomes is not None:
        outcomes.statuses[response.status_code] += 1
        results = response.json().get("results") if response.status_code == 200 else None
        predicted = [r for r in results or [] if isinstance(r, dict) and "result" in r]
        outcomes.with_result += bool(predicted)
        outcomes.with_regions += any(r["result"] for r in predicted)


# -- strategies ---------------------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=15,
)

CONTROL_TAGS = [
    "RectangleLabels",
    "PolygonLabels",
    "BrushLabels",
    "KeyPointLabels",
    "Choices",
    "Taxonomy",
    "VideoRectangle",
    "TimelineLabels",
    "Labels",
    "TextArea",
]
OBJECT_TAGS = ["Image", "Video", "Text", "Audio", "HyperText"]
names = st.sampled_from(["image", "video", "label", "x", "", "image video"]) | st.text(max_size=8)
attribute_values = {
    "name": names,
    "toName": names,
    "value": st.sampled_from(["$image", "$video", "$x", "image", "$", ""]) | st.text(max_size=10),
    "model_path": st.sampled_from(
        [
            "yolov8m.pt",
            "yolov8n-cls.pt",
            "yolov8n-seg.pt",
            "yolov8n-pose.pt",
            "yolov8n-obb.pt",
            "shapes-yolov8n.pt",
            "missing.pt",
            "../outside.pt",
            "/etc/passwd",
            "a/../../b.pt",
            ".",
            "",
            "C:\\models\\x.pt",
            "models/../yolov8m.pt",
        ]
    )
    | st.text(max_size=12),
    "model_score_threshold": st.sampled_from(["0.5", "0", "1", "-1", "2", "nan", "inf", "abc", ""]),
    "model_point_threshold": st.sampled_from(["0.5", "-3", "x"]),
    "model_obb": st.sampled_from(["true", "false", "yes", "maybe", ""]),
    "model_skip": st.sampled_from(["true", "false", "1", ""]),
    "model_add_bboxes": st.sampled_from(["true", "false", "?"]),
    "model_index": st.sampled_from(["0", "1", "-1", "99999", "x", ""]),
    "model_vid_stride": st.sampled_from(["1", "0", "-2", "1e9", "x"]),
    "model_tracker": st.sampled_from(["botsort", "bytetrack", "../../etc/passwd", "missing", ""]),
    "choice": st.sampled_from(["single", "multiple", "other"]),
    "predicted_values": st.sampled_from(["person", "bus,car", "", ",,,"]) | st.text(max_size=12),
    "frameRate": st.sampled_from(["24", "0", "-1", "abc"]),
}


def element(tag: str, attributes: dict[str, str], children: list[str]) -> str:
    attrs = "".join(f" {key}={quoteattr(value)}" for key, value in attributes.items())
    return f"<{tag}{attrs}>{''.join(children)}</{tag}>" if children else f"<{tag}{attrs}/>"


def tag_with_attributes(tags, children=st.just([])):
    return st.builds(
        element,
        tags,
        st.dictionaries(st.sampled_from(sorted(attribute_values)), st.just(None), max_size=5).flatmap(
            lambda keys: st.fixed_dictionaries({k: attribute_values[k] for k in keys})
        ),
        children,
    )


labels = tag_with_attributes(st.sampled_from(["Label", "Choice"]))
controls = tag_with_attributes(st.sampled_from(CONTROL_TAGS), st.lists(labels, max_size=4))
objects = tag_with_attributes(st.sampled_from(OBJECT_TAGS))
xml_configs = st.lists(objects | controls, max_size=5).map(lambda parts: f"<View>{''.join(parts)}</View>")
label_configs = (
    xml_configs
    | st.text(max_size=60)
    | st.text(alphabet="<>/=\"' ViewImagRctLbs$", max_size=80)
    | xml_configs.map(lambda c: c[: len(c) // 2])  # cut off
)


def media_urls(media_root: Path):
    return st.sampled_from(
        [
            str(media_root / "small.png"),
            str(media_root / "clip.mp4"),
            f"file://{media_root}/small.png",
            str(media_root / ".." / "outside.png"),
            "/etc/passwd",
            "/data/upload/1/a.jpg",
            "/data/local-files/?d=x/y.png",
            "s3://bucket/key.jpg",
            "gs://b/k",
            "ftp://h/x.png",
            "gopher://h/",
            "file://other-host/x.png",
            "http://[::1",
            "http://127.0.0.1:99999/x",
            "http://127.0.0.1:1/x.png",
            "https://example.com/x.jpg",
            "data:image/png;base64,AAAA",
            "",
            "   ",
        ]
    ) | st.text(max_size=40)


def tasks(media_root: Path):
    data = st.dictionaries(
        st.sampled_from(["image", "video", "x", "text"]) | st.text(max_size=6),
        media_urls(media_root) | json_values,
        max_size=3,
    )
    task = st.fixed_dictionaries(
        {"data": data | json_values},
        optional={"id": scalars, "meta": json_values, "annotations": json_values, "predictions": json_values},
    )
    return st.lists(task | json_values, max_size=4)


def well_formed_tasks(media_root: Path):
    """Objects with a `data.image`, half of them an image that decodes: the requests that reach media and
    models."""
    usable = st.sampled_from([str(media_root / "small.png"), str(media_root / "square.png")])
    task = st.fixed_dictionaries(
        {
            "id": st.integers(min_value=1, max_value=10**9) | scalars,
            "data": st.fixed_dictionaries(
                {"image": st.one_of(usable, usable, media_urls(media_root), scalars)},
                optional={"video": media_urls(media_root), "x": json_values},
            ),
        }
    )
    return st.lists(task, min_size=1, max_size=3)


# -- the properties -----------------------------------------------------------------------------------------


def test_predict_never_answers_5xx(fuzz_client, media_root):
    @FUZZ_SETTINGS
    @given(
        body=st.fixed_dictionaries(
            {"tasks": tasks(media_root) | json_values, "label_config": label_configs | json_values},
            optional={"project": json_values, "params": json_values},
        )
        | json_values
        | st.binary(max_size=200)
    )
    def run(body):
        post(fuzz_client, "/predict", body)

    run()


MODEL_ATTRIBUTES = ["model_path", "model_score_threshold", "model_obb", "model_index", "model_add_bboxes"]


def valid_image_configs(attributes: list[str]):
    """Configs that parse: one image tag with up to three of the fuzzed `attributes`."""
    image_control = st.sampled_from(
        ["RectangleLabels", "PolygonLabels", "BrushLabels", "KeyPointLabels", "Choices"]
    )
    return st.builds(
        lambda tag, attrs, label: element(
            "View",
            {},
            [
                '<Image name="image" value="$image"/>',
                element(tag, {"name": "c", "toName": "image", **attrs}, [label]),
            ],
        ),
        image_control,
        st.dictionaries(st.sampled_from(attributes), st.just(None), max_size=3).flatmap(
            lambda keys: st.fixed_dictionaries({k: attribute_values[k] for k in keys})
        ),
        st.sampled_from(
            [
                '<Label value="person"/>',
                '<Label value="square"/>',
                '<Choice value="bus" predicted_values="minibus"/>',
                "<Label/>",
            ]
        ),
    )


@pytest.mark.parametrize(
    ("client_fixture", "attributes", "examples"),
    [
        ("fuzz_client", MODEL_ATTRIBUTES, MAX_EXAMPLES),
        # Custom model paths are off by default (every one a 422), so these configs name none.
        ("default_client", MODEL_ATTRIBUTES[1:], max(MAX_EXAMPLES // 8, 1)),
    ],
)
def test_predict_with_valid_configs_never_answers_5xx(
    request, media_root, client_fixture, attributes, examples
):
    """Configs that parse, so the examples reach the models, the media and the converters: with the
    fuzz settings (media only from one folder) and with the settings a user starts with."""
    client = request.getfixturevalue(client_fixture)
    outcomes = Outcomes()

    @settings(FUZZ_SETTINGS, max_examples=examples)
    @given(config=valid_image_configs(attributes), tasks=well_formed_tasks(media_root))
    def run(config, tasks):
        post(client, "/predict", {"tasks": tasks, "label_config": config}, outcomes)

    run()
    print(outcomes)
    assert outcomes.with_result >= examples // MIN_SHARE, (
        f"too few examples reached the converters: {outcomes}"
    )


def test_predict_with_valid_video_configs_never_answers_5xx(fuzz_client, media_root, monkeypatch):
    """Video configs that parse, with tasks naming videos, images and worse as their video; enough of
    them reach the decoder (frames decoded) and come back with a result."""
    import prediction.videos
    from media.video import VideoReader

    decoded = Counter()

    class CountingReader(VideoReader):
        def batches(self, batch_size):
            for numbers, frames in super().batches(batch_size):
                decoded["frames"] += len(frames)
                yield numbers, frames

    monkeypatch.setattr(prediction.videos, "VideoReader", CountingReader)

    def video_config(tag: str, attrs: dict, label: str) -> str:
        if tag == "VideoRectangle":  # its labels live in a <Labels> beside it
            parts = [
                element("Labels", {"name": "labels", "toName": "video"}, [label]),
                element(tag, {"name": "c", "toName": "video", **attrs}, []),
            ]
        else:
            parts = [element(tag, {"name": "c", "toName": "video", **attrs}, [label])]
        return element("View", {}, ['<Video name="video" value="$video"/>', *parts])

    config = st.builds(
        video_config,
        st.sampled_from(["VideoRectangle", "TimelineLabels"]),
        st.dictionaries(
            st.sampled_from(
                ["model_path", "model_score_threshold", "model_tracker", "model_vid_stride", "frameRate"]
            ),
            st.just(None),
            max_size=3,
        ).flatmap(lambda keys: st.fixed_dictionaries({k: attribute_values[k] for k in keys})),
        st.sampled_from(
            ['<Label value="person"/>', '<Label value="dark" predicted_values="x"/>', "<Label/>"]
        ),
    )
    clip = st.just(str(media_root / "clip.mp4"))
    task = st.fixed_dictionaries(
        {
            "id": st.integers(min_value=1, max_value=10**9) | scalars,
            "data": st.fixed_dictionaries(
                {"video": st.one_of(clip, clip, media_urls(media_root), scalars)},
                optional={"frameRate": scalars},
            ),
        }
    )
    outcomes = Outcomes()
    decoding_examples = Counter()

    @FUZZ_SETTINGS
    @given(config=config, tasks=st.lists(task, min_size=1, max_size=3))
    def run(config, tasks):
        before = decoded["frames"]
        post(fuzz_client, "/predict", {"tasks": tasks, "label_config": config}, outcomes)
        decoding_examples["decoded"] += decoded["frames"] > before

    run()
    print(outcomes, f"{decoding_examples['decoded']} decoded frames")
    assert decoding_examples["decoded"] >= MAX_EXAMPLES // MIN_SHARE, (
        f"too few examples reached the decoder: {outcomes}"
    )
    assert outcomes.with_result >= MAX_EXAMPLES // MIN_SHARE, f"too few examples got a result: {outcomes}"


def test_setup_never_answers_5xx(fuzz_client):
    @FUZZ_SETTINGS
    @given(
        body=st.fixed_dictionaries(
            {},
            optional={
                "project": json_values,
                "schema": label_configs | json_values,
                "hostname": st.sampled_from(["http://localhost:8080", "http://[::1", "", "not a url"])
                | st.text(max_size=20)
                | json_values,
                "access_token": st.text(max_size=20) | json_values,
                "extra_params": json_values,
            },
        )
        | json_values
        | st.binary(max_size=200)
    )
    def run(body):
        post(fuzz_client, "/setup", body)

    run()


def test_webhook_never_answers_5xx(fuzz_client):
    actions = st.sampled_from(
        [
            "ANNOTATION_CREATED",
            "ANNOTATION_UPDATED",
            "ANNOTATIONS_DELETED",
            "START_TRAINING",
            "PROJECT_UPDATED",
        ]
    )

    @FUZZ_SETTINGS
    @given(
        body=st.fixed_dictionaries(
            {},
            optional={
                "action": actions | st.text(max_size=20) | json_values,
                "project": st.fixed_dictionaries({}, optional={"id": scalars, "label_config": label_configs})
                | json_values,
                "annotation": json_values,
                "task": json_values,
            },
        )
        | json_values
        | st.binary(max_size=200)
    )
    def run(body):
        post(fuzz_client, "/webhook", body)

    run()
