"""Holes in the prediction path found in review (issue 9), each reproduced over HTTP against the real app
(or through cli.py, which runs the same `YOLOBackend.predict`). Each test names the hole it closes and
fails on the code before the fix."""

from __future__ import annotations

import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.settings import Settings
from tests.conftest import SHAPES_MODEL

SHAPES_CONTROL = (
    '<RectangleLabels name="{name}" toName="image" model_path="{path}" model_score_threshold="0.0001">'
    '<Label value="circle"/><Label value="square"/><Label value="triangle"/></RectangleLabels>'
)
SHAPES = '<View><Image name="image" value="$image"/>' + SHAPES_CONTROL + "</View>"
GOOD = SHAPES.format(name="label", path=SHAPES_MODEL.name)


def with_control(config: str, control: str) -> str:
    return config.replace("</View>", control + "</View>")


def post_predict(client, config: str, *images: Path, project: str = "1.1"):
    tasks = [{"id": i + 1, "data": {"image": str(image)}} for i, image in enumerate(images)]
    return client.post("/predict", json={"tasks": tasks, "label_config": config, "project": project})


def predict(client, config: str, *images: Path) -> dict:
    response = post_predict(client, config, *images)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def shapes_png(tmp_path_factory) -> Path:
    from tools.shapes import draw_shapes_image

    image, _ = draw_shapes_image(np.random.default_rng(9), n_shapes=3)
    path = tmp_path_factory.mktemp("media") / "shapes.png"
    cv2.imwrite(str(path), image)
    return path


# -- hole 6: the size of a labeling config ------------------------------------------------------------------


def padded(config: str, size: int) -> str:
    """`config` grown to `size` bytes with labels (what a hostile or broken client could send)."""
    label = '<Label value="x{}"/>'
    labels, number = [], 0
    while len(config) + sum(map(len, labels)) < size:
        labels.append(label.format(number))
        number += 1
    return config.replace("</RectangleLabels>", "".join(labels) + "</RectangleLabels>")


def test_hole_6_a_label_config_over_the_limit_is_refused_everywhere(make_client, shapes_png):
    """Hole 6 (rest): a 4.7 MB config cost ~300 MB to parse, and the plan cache kept 64 of them. Over
    MAX_LABEL_CONFIG_BYTES, /predict, /setup and the /ui upload answer 422 naming it, before parsing."""
    client = make_client(max_label_config_bytes=20_000)
    big = padded(GOOD, 30_000)
    refused = post_predict(client, big, shapes_png)
    assert refused.status_code == 422 and "MAX_LABEL_CONFIG_BYTES" in refused.json()["error"]
    setup = client.post("/setup", json={"project": "1.1", "schema": big})
    assert setup.status_code == 422 and "MAX_LABEL_CONFIG_BYTES" in setup.json()["error"]
    files = {"file": ("shapes.png", shapes_png.read_bytes(), "image/png")}
    upload = client.post("/ui/predict", data={"label_config": big}, files=files)
    assert upload.status_code == 422 and "MAX_LABEL_CONFIG_BYTES" in upload.json()["error"]
    assert client.app.state.backend.plans.get.cache_info().currsize == 0  # nothing kept
    fits = padded(GOOD, 19_000)
    assert "result" in predict(client, fits, shapes_png)["results"][0]
    assert client.post("/setup", json={"project": "1.1", "schema": fits}).status_code == 200
    assert Settings(_env_file=None).max_label_config_bytes == 1024**2


# -- hole 9: partial predictions ------------------------------------------------------------------------------

BROKEN_CONTROLS = {
    "missing file": '<PolygonLabels name="poly" toName="image" model_path="missing-seg.pt">'
    '<Label value="circle"/></PolygonLabels>',
    "wrong kind": '<PolygonLabels name="poly" toName="image" model_path="shapes-yolov8n.pt">'
    '<Label value="circle"/></PolygonLabels>',
}


@pytest.mark.parametrize("broken", list(BROKEN_CONTROLS))
def test_hole_9_no_task_gets_a_prediction_without_every_control(client, shapes_png, broken):
    """Hole 9: when one control's model failed and another worked, each task got a prediction with the
    working control's regions only, which Label Studio keeps for good under that model_version. Now each
    task gets an error entry (no `result`: Label Studio asks again) naming the control and the fix."""
    config = with_control(GOOD, BROKEN_CONTROLS[broken])
    body = predict(client, config, shapes_png, shapes_png)
    assert "poly" in body["errors"] and "label" not in body["errors"]
    for entry in body["results"]:
        assert set(entry) == {"task", "error"}, entry
        assert "<poly>" in entry["error"] and body["errors"]["poly"] in entry["error"]
        assert 'model_skip="true"' in entry["error"]
    assert "result" in predict(client, GOOD, shapes_png)["results"][0]  # the working control alone


def test_hole_9_cli_uploads_no_partial_prediction_and_all_tasks_asks_again(make_settings, tmp_path, capsys):
    """Hole 9 through cli.py: a partial prediction was uploaded, and `--all-tasks` then skipped the task
    for good. Now nothing is uploaded, and once the model file exists the same run predicts every task."""
    from tests.test_cli import PROJECT, project_stand_in, run_cli
    from tools.shapes import draw_shapes_image

    root = tmp_path / "models"
    root.mkdir()
    shutil.copy(SHAPES_MODEL, root / SHAPES_MODEL.name)
    images = []
    for number in range(2):
        image, _ = draw_shapes_image(np.random.default_rng(number), n_shapes=3)
        images.append(tmp_path / f"task{number}.png")
        cv2.imwrite(str(images[-1]), image)
    tasks = [{"id": i + 1, "project": PROJECT, "data": {"image": str(p)}} for i, p in enumerate(images)]
    config = tmp_path / "config.xml"
    config.write_text(with_control(GOOD, SHAPES_CONTROL.format(name="later", path="later.pt")))
    settings = lambda: make_settings(model_root=root)  # noqa: E731
    args = ("--all-tasks", "--label-config", str(config))
    with project_stand_in(tasks, {}) as label_studio:
        assert run_cli(settings, label_studio, *args) == 1
        out = capsys.readouterr().out
        assert label_studio.predictions == []
        assert "task 1: " in out and "task 2: " in out and "<later>" in out and "later.pt" in out

        shutil.copy(SHAPES_MODEL, root / "later.pt")  # the user fixes the model
        assert run_cli(settings, label_studio, *args) == 0
        assert sorted(p["task"] for p in label_studio.predictions) == [1, 2]
        assert all(
            {r["from_name"] for r in p["result"]} == {"label", "later"} for p in label_studio.predictions
        )


# -- hole 12: answers that were 500s, and downloads that custom paths opened --------------------------------

TAXONOMY = (
    '<!DOCTYPE View [<!ENTITY animal "Animal">]>'
    '<View><Image name="image" value="$image"/><Taxonomy name="taxonomy" toName="image">'
    '<Choice value="&animal;"><Choice value="cat"/></Choice></Taxonomy></View>'
)


def test_hole_12_a_taxonomy_with_a_doctype_entity_is_a_422(client, shapes_png):
    """Hole 12: lxml (Label Studio's parser) accepted the entity, then defusedxml raised on it: a 500."""
    response = post_predict(client, TAXONOMY, shapes_png)
    assert response.status_code == 422, response.text
    assert "<Taxonomy" in response.json()["error"] and "DOCTYPE" in response.json()["error"]
    plain = TAXONOMY.split("]>", 1)[1].replace("&animal;", "Animal")
    assert post_predict(client, plain, shapes_png).status_code == 200


@pytest.mark.parametrize("model_path", ["m" * 300 + ".pt", "a/" + "m" * 256 + "/b.pt", "x/" * 600 + "m.pt"])
def test_hole_12_a_model_path_too_long_for_the_file_system_is_a_422(make_client, shapes_png, model_path):
    """Hole 12: a model_path with a part over 255 characters made the file system raise: a 500."""
    client = make_client(allow_model_download=True)
    response = post_predict(client, SHAPES.format(name="label", path=model_path), shapes_png)
    assert response.status_code == 422, response.text
    assert "model_path" in response.json()["error"] and "too long" in response.json()["error"]
    mixed = predict(
        client,
        with_control(GOOD, BROKEN_CONTROLS["missing file"].replace("missing-seg.pt", model_path)),
        shapes_png,
    )
    assert "too long" in mixed["errors"]["poly"]


def test_hole_12_concurrent_load_errors_are_4xx(make_settings, tmp_path):
    """Hole 12: requests failing on model paths at once raced on the registry's list of load errors (one
    evicted what another was evicting: KeyError, or "dictionary changed size"), answering 500. Through
    the registry, where the race shows within seconds; /predict answers its ModelLoadError as 422."""
    import sys

    from core.errors import ModelLoadError
    from inference.model_registry import ModelRegistry

    registry = ModelRegistry(make_settings(model_root=tmp_path))
    barrier = threading.Barrier(8)
    unexpected: list[str] = []

    def fail_to_load(worker: int) -> None:
        barrier.wait()
        for call in range(6000):
            try:
                registry.get(f"m{(worker * 13 + call) % 120}.pt")
            except ModelLoadError:
                pass
            except Exception as error:  # what became a 500
                unexpected.append(repr(error))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: the race shows in every run, not once in a while
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(fail_to_load, range(8)))
    finally:
        sys.setswitchinterval(interval)
    assert unexpected == []
    assert len(registry.last_errors) == 50


def test_hole_12_custom_model_paths_turn_downloads_off_by_default(
    model_root, tmp_path, shapes_png, monkeypatch
):
    """Hole 12: with ALLOW_CUSTOM_MODEL_PATH on, any config could make the server download any of ~200
    official weight files (ALLOW_MODEL_DOWNLOAD was on by default). Now it is off unless set."""
    import ultralytics.utils.downloads
    from fastapi.testclient import TestClient

    from server.app import create_app

    for name in ("ALLOW_MODEL_DOWNLOAD", "ALLOW_CUSTOM_MODEL_PATH"):
        monkeypatch.delenv(name, raising=False)
    downloads = []
    monkeypatch.setattr(
        ultralytics.utils.downloads, "attempt_download_asset", lambda f, *a, **k: downloads.append(f) or f
    )
    assert Settings(_env_file=None).allow_model_download is True  # the default models still download
    assert Settings(
        _env_file=None, allow_custom_model_path=True, allow_model_download=True
    ).allow_model_download
    root = tmp_path / "models"
    root.mkdir()
    settings = Settings(
        _env_file=None, model_root=root, media_cache_dir=tmp_path / "cache", allow_custom_model_path=True
    )
    assert settings.allow_model_download is False
    with TestClient(create_app(settings)) as client:
        response = post_predict(client, SHAPES.format(name="label", path="yolo11x.pt"), shapes_png)
    assert response.status_code == 422 and "not found in MODEL_ROOT" in response.json()["error"]
    assert downloads == []


# -- hole 4: what FFmpeg may read for a task's video ---------------------------------------------------------

VIDEO = (
    '<View><Video name="video" value="$video"/><Labels name="labels" toName="video">'
    '<Label value="circle"/><Label value="square"/><Label value="triangle"/></Labels>'
    f'<VideoRectangle name="box" toName="video" model_path="{SHAPES_MODEL.name}"/></View>'
)


def write_video(path: Path, frames: int = 12) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 12.0, (96, 64))
    for number in range(frames):
        writer.write(np.full((64, 96, 3), 10 * number % 256, np.uint8))
    writer.release()
    return path


def predict_video(client, video: Path) -> dict:
    task = {"id": 1, "data": {"video": str(video)}}
    response = client.post("/predict", json={"tasks": [task], "label_config": VIDEO})
    assert response.status_code == 200, response.text
    (entry,) = response.json()["results"]
    return entry


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("task.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:1.0,\n{secret}\n#EXT-X-ENDLIST\n"),
        ("task.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:1.0,\nfile:{secret}\n#EXT-X-ENDLIST\n"),
        ("task.mp4", "ffconcat version 1.0\nfile {relative}\n"),
    ],
    ids=["hls", "hls-file-url", "ffconcat"],
)
def test_hole_4_a_playlist_cannot_make_ffmpeg_read_another_local_file(make_client, tmp_path, name, text):
    """Hole 4 (part): a task's "video" that was an HLS playlist or an ffconcat list made FFmpeg (through
    OpenCV) read the local file it named, e.g. another project's video. Only plain video containers read
    from the file itself are decoded now (FFmpeg protocol and format whitelists)."""
    secret = write_video(tmp_path / "other-project.mp4")
    playlist = tmp_path / name
    playlist.write_text(text.format(secret=secret, relative=secret.name))
    client = make_client()
    refused = predict_video(client, playlist)
    assert "result" not in refused and "not a video that can be decoded" in refused["error"], refused
    assert "result" in predict_video(client, secret)  # a plain video still works


# -- hole 11: memory and time bombs ----------------------------------------------------------------------------


LONG_VIDEO_FRAMES = 120
SECONDS_PER_FRAME = 0.05  # so the whole long video takes at least 6 s, three times the budget, anywhere


@pytest.fixture
def slow_model(monkeypatch):
    """Every model call takes SECONDS_PER_FRAME per frame more than the model itself (on any hardware)."""
    from inference.model_registry import LoadedModel

    predict = LoadedModel.predict

    def slow_predict(self, images, **options):
        time.sleep(SECONDS_PER_FRAME * len(images))
        return predict(self, images, **options)

    monkeypatch.setattr(LoadedModel, "predict", slow_predict)


def test_hole_11_a_video_task_has_a_time_budget(make_client, tmp_path, slow_model):
    """Hole 11: a video task could decode and predict for as long as the video lasted (with a huge stride
    on a long video, hours); now it stops at MAX_VIDEO_TASK_SECONDS with a per-task error naming it.
    The budget is checked at every frame: a long video is cut off mid-way, after some frames."""
    long_video = write_video(tmp_path / "long.mp4", frames=LONG_VIDEO_FRAMES)
    refused = predict_video(make_client(max_video_task_seconds=2), long_video)
    assert "result" not in refused and "MAX_VIDEO_TASK_SECONDS" in refused["error"], refused
    stopped_after = int(
        re.search(r"took more than 2 s to predict \(stopped after (\d+) frames\)", refused["error"])[1]
    )
    assert 1 < stopped_after < LONG_VIDEO_FRAMES, refused
    assert "result" in predict_video(make_client(), write_video(tmp_path / "short.mp4"))
    assert Settings(_env_file=None).max_video_task_seconds == 3600


BRUSH = (
    '<View><Image name="image" value="$image"/><BrushLabels name="brush" toName="image" '
    'model_score_threshold="0.1"><Label value="person"/></BrushLabels></View>'
)
BIG_W, BIG_H = 2000, 1500  # letterboxed to 640x480 for the model: masks live at that size


@pytest.fixture
def ten_masks_per_image(monkeypatch):
    """The segmentation model answers 10 person instances per image, each a known rectangle with its
    mask at the inference size (as Ultralytics gives them), without running the network."""
    import torch
    from ultralytics.engine.results import Results

    from inference.model_registry import LoadedModel

    def predict(self, images, **options):
        results = []
        for image in images:
            height, width = image.shape[:2]
            boxes = torch.tensor(
                [[10.0 * i, 20.0 * i, width - 10.0 * i, height / 2, 0.9, 0.0] for i in range(10)]
            )
            masks = torch.zeros((10, 480, 640))
            for i, (x1, y1, x2, y2, *_) in enumerate(boxes.tolist()):
                scale = 640 / width
                masks[i, round(y1 * scale) : round(y2 * scale), round(x1 * scale) : round(x2 * scale)] = 1.0
            results.append(Results(image, "task.png", self.class_names, boxes=boxes, masks=masks))
        return results

    monkeypatch.setattr(LoadedModel, "predict", predict)


def test_hole_11_brush_masks_have_a_decode_budget_per_request(make_client, tmp_path, ten_masks_per_image):
    """Hole 11: BrushLabels scaled every mask (up to 300) to the full image as float32 at once (a 100 MP
    image: tens of GB). Each mask is now scaled inside its box only, and a request may decode at most
    MAX_MASK_BYTES of masks (each: its box, plus the image once for its RLE): the task over it gets an
    error naming the setting; the tasks before it keep their masks."""
    from label_studio_sdk.converter.brush import decode_rle

    image = tmp_path / "big.png"
    cv2.imwrite(str(image), np.full((BIG_H, BIG_W, 3), 128, np.uint8))
    # ten masks: each its box (see the fixture), and the image once more for its RLE
    one_image = sum((BIG_W - 20 * i) * (BIG_H // 2 - 20 * i) + BIG_W * BIG_H for i in range(10))
    client = make_client(max_mask_bytes=int(1.5 * one_image))
    first, second = predict(client, BRUSH, image, image)["results"]
    assert "result" not in second and "MAX_MASK_BYTES" in second["error"], second
    assert len(first["result"]) == 10
    for i, region in enumerate(first["result"]):  # in the model's order: the i-th rectangle
        painted = decode_rle(region["value"]["rle"]).reshape(BIG_H, BIG_W, 4)[..., 3] > 0
        ys, xs = np.nonzero(painted)
        assert abs(xs.min() - 10 * i) <= 4 and abs(xs.max() + 1 - (BIG_W - 10 * i)) <= 4
        assert abs(ys.min() - 20 * i) <= 4 and abs(ys.max() + 1 - BIG_H / 2) <= 4
    assert all(len(r["result"]) == 10 for r in predict(make_client(), BRUSH, image, image)["results"])
    assert Settings(_env_file=None).max_mask_bytes == 4 * 1024**3
