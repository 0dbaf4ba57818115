"""Video through HTTP: VideoRectangle tracking with the shapes detector, TimelineLabels with a classifier.

Videos are drawn here with `tools/shapes.py` (320x240, 40 frames, 20 frames/s): a circle moving right
and a square moving left, at known positions, so each track can be checked against the truth.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from label_studio_sdk.label_interface import LabelInterface

from core.errors import MediaError
from tests.conftest import SHAPES_MODEL, assert_nearly_equal
from tests.known_models import build_two_class_classifier
from tools.shapes import draw_scene

W, H, FRAMES, FPS = 320, 240, 40, 20.0
SHAPES = "shapes-yolov8n.pt"
DARK, BRIGHT = 20, 235


def circle_box(i: int) -> tuple[float, float, float, float]:
    x = 20.0 + 5.0 * i
    return (x, 40.0, x + 56.0, 96.0)


def square_box(i: int) -> tuple[float, float, float, float]:
    x = 250.0 - 4.0 * i
    return (x, 140.0, x + 50.0, 190.0)


TRUTH = {"circle": circle_box, "square": square_box}


def write_video(path: Path, frames) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def video_models(model_root: Path) -> Path:
    """MODEL_ROOT (with the shapes detector and `yolov8n.pt`, the VideoRectangle default) and a 2-class classifier."""
    if not (model_root / SHAPES).exists():
        if not SHAPES_MODEL.exists():
            pytest.fail(f"{SHAPES_MODEL} is missing; run tools/train_shapes_model.py")
        shutil.copy(SHAPES_MODEL, model_root / SHAPES)
    if not (model_root / "light-cls.pt").exists():
        build_two_class_classifier(model_root / "light-cls.pt", DARK, BRIGHT, (H, W))
    return model_root


@pytest.fixture(scope="module")
def shapes_video(tmp_path_factory) -> Path:
    frames = (
        draw_scene(
            W, H, [("circle", circle_box(i), (30, 30, 230)), ("square", square_box(i), (230, 60, 20))], 7
        )
        for i in range(FRAMES)
    )
    return write_video(tmp_path_factory.mktemp("videos") / "shapes.mp4", frames)


@pytest.fixture(scope="module")
def light_video(tmp_path_factory) -> Path:
    """Dark for 12 frames, bright for 16, dark again for 12."""
    levels = [DARK] * 12 + [BRIGHT] * 16 + [DARK] * 12
    frames = (np.full((H, W, 3), level, np.uint8) for level in levels)
    return write_video(tmp_path_factory.mktemp("videos") / "light.mp4", frames)


@pytest.fixture
def video_client(make_client, video_models):
    return make_client()


def tracking_config(attrs: str = "", labels: str = "") -> str:
    return f"""
<View>
  <Video name="video" value="$video"/>
  <Labels name="videoLabels" toName="video">
    <Label value="circle"/><Label value="square"/><Label value="triangle"/>{labels}
  </Labels>
  <VideoRectangle name="box" toName="video" model_path="{SHAPES}" {attrs}/>
</View>"""


def timeline_config(attrs: str = "", labels: str = '<Label value="dark"/><Label value="bright"/>') -> str:
    return f"""
<View>
  <Video name="video" value="$video"/>
  <TimelineLabels name="timeline" toName="video" {attrs}>{labels}</TimelineLabels>
</View>"""


def predict(client, config: str, *videos: Path) -> dict:
    tasks = [{"id": i + 1, "data": {"video": str(video)}} for i, video in enumerate(videos)]
    response = client.post("/predict", json={"tasks": tasks, "label_config": config})
    assert response.status_code == 200, response.text
    return response.json()


def assert_valid(config: str, regions: list[dict]) -> None:
    interface = LabelInterface(config)
    assert interface.validate_prediction({"result": regions}, return_errors=True) == []
    labels_tags = [c for c in interface.controls if c.tag == "Labels"]
    for region in regions:  # the SDK leaves VideoRectangle labels unchecked: they live in <Labels>
        if region["type"] == "videorectangle":
            assert set(region["value"]["labels"]) <= set(labels_tags[0].labels)


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def keyframe_xyxy(keyframe: dict) -> tuple[float, float, float, float]:
    x, y = keyframe["x"] * W / 100, keyframe["y"] * H / 100
    return (x, y, x + keyframe["width"] * W / 100, y + keyframe["height"] * H / 100)


def without_ids(regions: list[dict]) -> list[dict]:
    return [{k: v for k, v in region.items() if k != "id"} for region in regions]


def rounded(value):
    """`value` with every float rounded to 4 decimals (lists and dicts walked)."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


# --- VideoRectangle ---------------------------------------------------------------------------------------


def test_one_track_per_moving_shape_following_its_positions(video_client, shapes_video):
    config = tracking_config()
    body = predict(video_client, config, shapes_video)
    regions = body["results"][0]["result"]
    assert_valid(config, regions)
    assert sorted(r["value"]["labels"][0] for r in regions) == ["circle", "square"]  # one track each

    for region in regions:
        value = region["value"]
        assert region["type"] == "videorectangle"
        assert value["framesCount"] == FRAMES and value["duration"] == pytest.approx(FRAMES / FPS)
        sequence = value["sequence"]
        frames = [k["frame"] for k in sequence]
        assert frames == sorted(frames) and len(frames) >= 0.9 * FRAMES
        assert sequence[-1]["enabled"] is False
        truth = TRUTH[value["labels"][0]]
        overlaps = [iou(keyframe_xyxy(k), truth(k["frame"] - 1)) for k in sequence]
        assert sum(o >= 0.5 for o in overlaps) >= 0.9 * FRAMES, overlaps
        assert all(k["time"] == pytest.approx(k["frame"] / FPS) for k in sequence)
        assert 0.5 <= region["score"] <= 1.0


@pytest.mark.parametrize(
    "tracker",
    [
        'model_tracker="bytetrack" bytetrack_track_buffer="10"',
        # BoT-SORT's camera-motion compensation mistakes big jumps of the shapes for camera motion.
        'botsort_gmc_method="none"',
    ],
)
def test_vid_stride_gives_keyframes_on_processed_frames_only(video_client, shapes_video, tracker):
    config = tracking_config(f'model_vid_stride="4" {tracker}')
    regions = predict(video_client, config, shapes_video)["results"][0]["result"]
    assert_valid(config, regions)
    assert sorted(r["value"]["labels"][0] for r in regions) == ["circle", "square"]
    for region in regions:
        sequence = region["value"]["sequence"]
        assert all((k["frame"] - 1) % 4 == 0 for k in sequence)
        assert len(sequence) >= 9  # 10 processed frames
        assert [k["enabled"] for k in sequence[:-1]] == [True] * (len(sequence) - 1)  # no gaps: interpolated
        assert region["value"]["framesCount"] == FRAMES  # the whole video, not the processed frames


def test_consecutive_and_parallel_videos_never_share_tracks(video_client, shapes_video):
    """Each video gets its own tracker: the same video gives the same tracks, alone or among others."""
    backend = video_client.app.state.backend
    config = tracking_config()
    alone = without_ids(
        backend.predict([{"id": 1, "data": {"video": str(shapes_video)}}], config).tasks[0].regions
    )
    assert len(alone) == 2

    batch = backend.predict([{"id": i, "data": {"video": str(shapes_video)}} for i in range(2)], config)
    assert_nearly_equal([without_ids(t.regions) for t in batch.tasks], [alone, alone])

    start = threading.Barrier(3)

    def one_request(_):
        start.wait()
        run = backend.predict([{"id": 1, "data": {"video": str(shapes_video)}}], config)
        return without_ids(run.tasks[0].regions)

    with ThreadPoolExecutor(3) as pool:
        assert_nearly_equal(list(pool.map(one_request, range(3))), [alone] * 3)


def test_tracker_yaml_in_model_root_and_no_files_written_there(make_client, video_models, shapes_video):
    (video_models / "slowtracker.yaml").write_text(
        "tracker_type: bytetrack\ntrack_high_thresh: 0.3\ntrack_low_thresh: 0.1\nnew_track_thresh: 0.3\n"
        "track_buffer: 30\nmatch_thresh: 0.8\nfuse_score: True\n"
    )
    before = sorted(p.relative_to(video_models) for p in video_models.rglob("*"))
    client = make_client()
    config = tracking_config(
        'model_tracker="slowtracker" slowtracker_track_buffer="60" slowtracker_fuse_score="false"'
    )
    regions = predict(client, config, shapes_video)["results"][0]["result"]
    assert sorted(r["value"]["labels"][0] for r in regions) == ["circle", "square"]
    assert sorted(p.relative_to(video_models) for p in video_models.rglob("*")) == before


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ('botsort_nonsense="1"', "no parameter 'nonsense'"),
        ('botsort_track_buffer="many"', "must be a whole number"),
        ('botsort_track_high_thresh="high"', "must be a number"),
        ('botsort_fuse_score="maybe"', "must be true or false"),
        ('bytetrack_track_buffer="50"', "a parameter of the bytetrack tracker"),
        ('model_tracker="../../etc/tracker"', "inside MODEL_ROOT"),
        ('model_tracker="/etc/tracker"', "inside MODEL_ROOT"),
        ('model_tracker="nosuchtracker"', "no nosuchtracker.yaml in MODEL_ROOT"),
        ('botsort_with_reid="true"', "ReID"),
        ('model_vid_stride="0"', "from 1 to 1000"),
        ('model_conf="low"', "not a number"),
        ('model_conf="-1"', "between 0 and 1"),
        ('model_iou="2"', "between 0 and 1"),
    ],
)
def test_bad_tracking_attributes_get_a_4xx_that_says_why(video_client, shapes_video, attrs, message):
    config = tracking_config(attrs)
    tasks = [{"id": 1, "data": {"video": str(shapes_video)}}]
    response = video_client.post("/predict", json={"tasks": tasks, "label_config": config})
    assert 400 <= response.status_code < 500, response.text
    assert message in response.json()["error"]


def test_tracker_yaml_linked_out_of_model_root_is_refused(video_client, video_models, shapes_video, tmp_path):
    outside = tmp_path / "outside.yaml"
    outside.write_text("tracker_type: bytetrack\ntrack_buffer: 30\n")
    link = video_models / "linked.yaml"
    link.symlink_to(outside)
    try:
        tasks = [{"id": 1, "data": {"video": str(shapes_video)}}]
        config = tracking_config('model_tracker="linked"')
        response = video_client.post("/predict", json={"tasks": tasks, "label_config": config})
        assert response.status_code == 422 and "outside MODEL_ROOT" in response.json()["error"]
    finally:
        link.unlink()


def test_video_rectangle_without_labels_tag_says_what_to_add(video_client, shapes_video):
    config = '<View><Video name="video" value="$video"/><VideoRectangle name="box" toName="video"/></View>'
    response = video_client.post(
        "/predict", json={"tasks": [{"id": 1, "data": {"video": str(shapes_video)}}], "label_config": config}
    )
    assert response.status_code == 422
    assert '<Labels toName="video">' in response.json()["error"]


def test_a_broken_video_spoils_its_task_only(video_client, shapes_video, tmp_path):
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("this is not a video")
    config = tracking_config()
    body = predict(video_client, config, shapes_video, not_a_video, tmp_path / "missing.mp4")
    good, broken, missing = body["results"]
    assert len(good["result"]) == 2
    assert "result" not in broken and "video" in broken["error"]
    assert "result" not in missing and "does not exist" in missing["error"]


def test_a_video_decoder_crash_spoils_its_task_only(video_client, shapes_video, tmp_path, monkeypatch):
    """The video reader raising a plain RuntimeError on one video: that task gets an error, the other
    video its tracks, the request a 200."""
    import prediction.videos

    crashing = tmp_path / "crash.mp4"
    crashing.write_bytes(shapes_video.read_bytes())
    real_reader = prediction.videos.VideoReader
    calls = []

    def counting_reader(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 1:
            raise RuntimeError("demuxer exploded")
        return real_reader(path, *args, **kwargs)

    monkeypatch.setattr(prediction.videos, "VideoReader", counting_reader)
    crashed, good = predict(video_client, tracking_config(), crashing, shapes_video)["results"]
    assert len(calls) == 2
    assert (
        "result" not in crashed and "RuntimeError" in crashed["error"] and "exploded" not in crashed["error"]
    )
    assert len(good["result"]) == 2


# --- TimelineLabels ---------------------------------------------------------------------------------------


def expected_runs(model_path: Path, video: Path, labels: list[str], threshold: float, step: int = 1):
    """(label, start, end) from calling the classifier directly on every step-th decoded frame."""
    from ultralytics import YOLO

    model = YOLO(str(model_path))
    capture = cv2.VideoCapture(str(video))
    rows = []
    index = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index % step == 0:
            probs = model.predict(frame, verbose=False)[0].probs.data.cpu().numpy()
            rows.append([probs[next(k for k, n in model.names.items() if n == label)] for label in labels])
        index += 1
    capture.release()
    runs = []
    for column, label in enumerate(labels):
        active = [row[column] >= threshold for row in rows] + [False]
        start = None
        for i, on in enumerate(active):
            if on and start is None:
                start = i
            if not on and start is not None:
                runs.append((start * step + 1, column, min(i * step, index), label))
                start = None
    return [(label, start, end) for start, _, end, label in sorted(runs)]


@pytest.mark.parametrize("stride", [1, 3])
def test_timeline_labels_are_the_runs_of_the_classifier(video_client, video_models, light_video, stride):
    config = timeline_config(
        f'model_path="light-cls.pt" model_score_threshold="0.5" model_vid_stride="{stride}"'
    )
    regions = predict(video_client, config, light_video)["results"][0]["result"]
    assert_valid(config, regions)
    found = [
        (r["value"]["timelinelabels"][0], r["value"]["ranges"][0]["start"], r["value"]["ranges"][0]["end"])
        for r in regions
    ]
    assert found == expected_runs(video_models / "light-cls.pt", light_video, ["dark", "bright"], 0.5, stride)
    if stride == 1:
        assert found == [("dark", 1, 12), ("bright", 13, 28), ("dark", 29, 40)]
    covered = sorted(f for _, start, end in found for f in range(start, end + 1))
    assert covered == list(range(1, FRAMES + 1))


def test_timeline_labels_with_the_default_imagenet_classifier(video_client, light_video):
    labels = '<Label value="Cat" predicted_values="tabby cat"/><Label value="goldfish"/><Label value="nope"/>'
    config = timeline_config('model_score_threshold="0"', labels)
    regions = predict(video_client, config, light_video)["results"][0]["result"]
    assert_valid(config, regions)
    assert [(r["value"]["timelinelabels"], r["value"]["ranges"]) for r in regions] == [
        (["Cat"], [{"start": 1, "end": FRAMES}]),
        (["goldfish"], [{"start": 1, "end": FRAMES}]),
    ]


def test_timeline_and_tracking_together(video_client, shapes_video):
    config = """
<View>
  <Video name="video" value="$video"/>
  <Labels name="videoLabels" toName="video"><Label value="circle"/><Label value="square"/></Labels>
  <VideoRectangle name="box" toName="video" model_path="shapes-yolov8n.pt"/>
  <TimelineLabels name="timeline" toName="video" model_score_threshold="0">
    <Label value="Cat" predicted_values="tabby cat"/>
  </TimelineLabels>
</View>"""
    regions = predict(video_client, config, shapes_video)["results"][0]["result"]
    assert_valid(config, regions)
    assert sorted(r["type"] for r in regions) == ["timelinelabels", "videorectangle", "videorectangle"]


@pytest.mark.parametrize("kind", ["tracking", "timeline"])
def test_uncertainty_mode_gives_the_regions_of_confidence_mode(video_client, shapes_video, light_video, kind):
    """In uncertainty mode the detector runs down to the candidate floor, but the tracker sees what
    model_conf gives (the same tracks); the classifier's runs are the same too. The task's score is the
    mean frame uncertainty instead of the mean region score."""
    if kind == "tracking":
        video, config = shapes_video, tracking_config
    else:
        video, config = light_video, lambda attrs: timeline_config(f'model_path="light-cls.pt" {attrs}')
    plain = predict(video_client, config(""), video)["results"][0]
    unsure = predict(video_client, config('model_task_score="uncertainty"'), video)["results"][0]
    # Equal to 1e-4 percent: batches of frames are sized by timing, and a batch's size moves a box by 1e-5 px.
    assert plain["result"] and rounded(without_ids(unsure["result"])) == rounded(without_ids(plain["result"]))
    assert unsure["model_version"].endswith("-uncertainty")
    assert not plain["model_version"].endswith("-uncertainty")
    assert 0.0 <= unsure["score"] < 0.5 < plain["score"]  # the model is sure of these easy videos


# --- frame rate ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("video_attrs", "task_data", "warns"),
    [
        ("", {}, True),  # Label Studio's default 24 frames/s for a 20 frames/s video
        ('frameRate="20"', {}, False),
        ('frameRate="$fps"', {"fps": 20}, False),
        ('frameRate="$fps"', {"fps": "30"}, True),
        ('frameRate="$fps"', {}, False),  # unknown: nothing to compare
    ],
)
def test_a_frame_rate_label_studio_would_get_wrong_is_logged(
    make_settings, caplog, video_attrs, task_data, warns
):
    from control_models.labeling_plan import build_plan

    config = tracking_config().replace(
        '<Video name="video" value="$video"/>', f'<Video name="video" value="$video" {video_attrs}/>'
    )
    (control,) = build_plan(config, make_settings()).controls
    with caplog.at_level("WARNING"):
        control.check_frame_rate(FPS, task_data)
    assert ("frameRate" in caplog.text) is warns


def test_videos_over_the_frame_or_pixel_limit_are_refused_per_task(make_client, video_models, shapes_video):
    client = make_client(max_video_frames=10)
    body = predict(client, tracking_config(), shapes_video)
    (refused,) = body["results"]
    assert "result" not in refused and "more than 10 frames" in refused["error"]
    client = make_client(max_image_pixels=100 * 100)
    (refused,) = predict(client, tracking_config(), shapes_video)["results"]
    assert "result" not in refused and "pixels, over the limit" in refused["error"]
    (accepted,) = predict(make_client(), tracking_config(), shapes_video)["results"]
    assert len(accepted["result"]) == 2


def test_a_header_that_under_reports_frames_cannot_make_the_reader_decode_more(shapes_video, monkeypatch):
    """A container saying 0 frames, read with a stride larger than the video (so no batch is yielded
    until the end): the reader stops at the first frame over MAX_VIDEO_FRAMES, it does not decode on."""
    import media.video

    real_probe = media.video.probe_video
    monkeypatch.setattr(
        media.video, "probe_video", lambda path: dataclasses.replace(real_probe(path), frames_count=0)
    )
    reader = media.video.VideoReader(shapes_video, stride=1000, max_frames=10, name="'shapes.mp4'")
    assert reader.info.frames_count == 0
    with pytest.raises(MediaError, match="more than 10 frames"):
        list(reader.batches(8))
    assert reader.frames_count == 11


def test_a_video_over_the_frame_limit_is_refused_through_predict_even_with_a_lying_header(
    make_client, video_models, shapes_video, monkeypatch
):
    import media.video

    real_probe = media.video.probe_video
    monkeypatch.setattr(
        media.video, "probe_video", lambda path: dataclasses.replace(real_probe(path), frames_count=0)
    )
    client = make_client(max_video_frames=10)
    (refused,) = predict(client, tracking_config('model_vid_stride="1000"'), shapes_video)["results"]
    assert "result" not in refused and "more than 10 frames" in refused["error"]
