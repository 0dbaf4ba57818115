"""Trainable TimelineLabels: annotated videos -> per-frame features and labels -> a trained head -> served.

Videos are drawn here: solid red frames in one part, solid blue in the rest (a few dozen frames), and
annotated the way Label Studio stores TimelineLabels results. The classifier is yolov8n-cls built from
its YAML (random weights): its features still tell solid colours apart, which is all the head needs.
Its ImageNet classes have no "Red" or "Blue", so only a trained head can find these labels.
"""

from __future__ import annotations

import doctest
import json
import pickle
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from label_studio_sdk.label_interface import LabelInterface

import converters.timeline_frames
import inference.features
import training.timeline
from converters.timeline_frames import frame_labels, processed_rows, rows_to_frames
from converters.video_regions import timeline_regions
from tests.conftest import RecordingReporter
from training.versions import VersionStore

PROJECT = "5"
W, H, FPS = 64, 48, 10.0
RED, BLUE = (30, 30, 220), (220, 40, 30)  # BGR
CLASSIFIER = "yolov8n-cls.pt"
# Frames of each training video that are red (1-based, both included); the rest is blue.
RED_SPANS = {1: (1, 12), 2: (10, 24), 3: (18, 30), 4: (5, 16), 5: (20, 30), 6: (1, 6)}
NEW_VIDEO_RED = (8, 19)  # a video no job has seen
FRAMES = 30
EPOCHS = 100  # enough for colours; each epoch is one step over all training windows
# Two torch threads on a CPU shared with other work spin against each other (10x slower here).
ONE_THREAD = 1


def timeline_config(attrs: str = "") -> str:
    return f"""
<View>
  <Video name="video" value="$video" frameRate="{FPS:g}"/>
  <TimelineLabels name="timeline" toName="video" model_trainable="true" model_classifier_epochs="{EPOCHS}" {attrs}>
    <Label value="Red"/><Label value="Blue"/>
  </TimelineLabels>
</View>"""


def write_colour_video(path: Path, red: tuple[int, int], frames: int = FRAMES) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    assert writer.isOpened()
    for frame in range(1, frames + 1):
        writer.write(np.full((H, W, 3), RED if red[0] <= frame <= red[1] else BLUE, np.uint8))
    writer.release()
    return path


def truth_ranges(red: tuple[int, int], frames: int = FRAMES) -> list[tuple[str, int, int]]:
    """(label, start, end) as Label Studio shows them, ordered like `timeline_regions`: by start, then label."""
    ranges = [("Red", red[0], red[1])]
    if red[0] > 1:
        ranges.append(("Blue", 1, red[0] - 1))
    if red[1] < frames:
        ranges.append(("Blue", red[1] + 1, frames))
    order = {"Red": 0, "Blue": 1}
    return sorted(ranges, key=lambda r: (r[1], order[r[0]]))


def timeline_result(label: str, start: int, end: int) -> dict:
    return {
        "id": f"{label}-{start}",
        "from_name": "timeline",
        "to_name": "video",
        "type": "timelinelabels",
        "origin": "manual",
        "value": {"ranges": [{"start": start, "end": end}], "timelinelabels": [label]},
    }


@pytest.fixture(scope="module")
def colour_videos(tmp_path_factory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("colour-videos")
    videos = {
        task_id: write_colour_video(folder / f"{task_id}.mp4", red) for task_id, red in RED_SPANS.items()
    }
    videos[0] = write_colour_video(folder / "new.mp4", NEW_VIDEO_RED)
    return videos


def annotated_tasks(videos: dict[int, Path]) -> list[dict]:
    """Label Studio tasks with annotations; task 7 was only skipped (left out), like the image tests."""
    tasks = []
    for task_id, red in RED_SPANS.items():
        result = [timeline_result(*r) for r in truth_ranges(red)]
        tasks.append(
            {
                "id": task_id,
                "data": {"video": str(videos[task_id])},
                "annotations": [
                    {"id": 10 + task_id, "result": [], "was_cancelled": False, "updated_at": "2026-01-01"},
                    {
                        "id": 20 + task_id,
                        "result": result,
                        "was_cancelled": False,
                        "updated_at": "2026-02-01",
                    },
                ],
            }
        )
    tasks.append(
        {
            "id": 7,
            "data": {"video": str(videos[0])},
            "annotations": [{"id": 99, "result": [timeline_result("Red", 1, 30)], "was_cancelled": True}],
        }
    )
    return tasks


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    """yolov8n-cls with random weights and two ImageNet names, predicting at 64 px (the frames are 64x48:
    224 would only cost time)."""
    from ultralytics import YOLO

    model = YOLO("yolov8n-cls.yaml")
    model.model.names = {0: "tabby cat", 1: "goldfish"}
    model.model.yaml["nc"] = 2
    model.ckpt = {"train_args": {"imgsz": 64, "task": "classify"}}
    target = tmp_path_factory.mktemp("classifier") / CLASSIFIER
    model.save(str(target))
    return target


@pytest.fixture
def own_root(classifier: Path, tmp_path: Path) -> Path:
    """A MODEL_ROOT of this test's own (training writes into it), with the random-weights classifier."""
    root = tmp_path / "models"
    root.mkdir()
    shutil.copy(classifier, root / CLASSIFIER)
    return root


def train(settings, tasks: list[dict], config: str | None = None, reporter: RecordingReporter | None = None):
    """One training job in this process, on these Label Studio tasks."""
    from training_pipeline import TrainingRun

    run = TrainingRun(
        settings, reporter or RecordingReporter(PROJECT, "timeline"), tasks_source=lambda project: tasks
    )
    return run.run(PROJECT, "timeline", config or timeline_config())


def found_ranges(regions: list[dict]) -> list[tuple[str, int, int]]:
    return [
        (r["value"]["timelinelabels"][0], r["value"]["ranges"][0]["start"], r["value"]["ranges"][0]["end"])
        for r in regions
    ]


# -- pure conversions -------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [converters.timeline_frames, inference.features, training.timeline])
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize(("frames_count", "step"), [(17, 1), (17, 3), (18, 3), (5, 4)])
def test_frames_from_rows_cover_what_the_emitted_ranges_cover(frames_count, step):
    """Evaluation's frames (rows_to_frames) and Label Studio's ranges (timeline_regions read back by
    frame_labels) are the same frames, with and without a stride."""
    rows = -(-frames_count // step)
    probs = np.random.default_rng(frames_count * step).random((rows, 2))
    regions = timeline_regions(
        from_name="t",
        to_name="v",
        probs=probs,
        labels=["A", "B"],
        threshold=0.5,
        frames_count=frames_count,
        step=step,
    )
    assert np.array_equal(
        frame_labels(regions, ["A", "B"], frames_count), rows_to_frames(probs >= 0.5, frames_count, step)
    )


def test_frame_labels_clip_and_skip_what_is_not_a_range():
    regions = [
        timeline_result("Red", 0, 3),  # starts before the video
        timeline_result("Blue", 4, 99),  # ends after it
        timeline_result("Green", 1, 6),  # not a label of the control
        {
            "type": "timelinelabels",
            "value": {"ranges": [{"start": "2", "end": None}], "timelinelabels": ["Red"]},
        },
        {"type": "choices", "value": {"choices": ["Red"]}},
    ]
    assert frame_labels(regions, ["Red", "Blue"], 6).astype(int).tolist() == [
        [1, 0],
        [1, 0],
        [1, 0],
        [0, 1],
        [0, 1],
        [0, 1],
    ]


# -- dataset ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stride", [1, 4])
def test_each_video_gives_features_and_exact_frame_labels(make_settings, own_root, colour_videos, stride):
    from control_models.labeling_plan import build_plan
    from inference.model_registry import ModelRegistry
    from training.timeline import TimelineTraining
    from training_pipeline import annotated_tasks as picked_tasks

    settings = make_settings(model_root=own_root, torch_threads=ONE_THREAD)
    (control,) = build_plan(timeline_config(f'model_vid_stride="{stride}"'), settings).controls
    spec = control.training_spec()
    assert (spec.kind, spec.labels, spec.head.vid_stride) == ("timeline", ("Red", "Blue"), stride)
    job = TimelineTraining(
        settings, ModelRegistry(settings), VersionStore(own_root), RecordingReporter(PROJECT, "timeline")
    )
    picked = picked_tasks(annotated_tasks(colour_videos), "timeline")
    samples = job.samples(spec, picked, lambda url, task_id: Path(url))
    assert [s.task_id for s in samples] == list(RED_SPANS)  # the skipped task left out
    for sample in samples:
        red = RED_SPANS[sample.task_id]
        frames = np.arange(1, FRAMES + 1)
        is_red = (frames >= red[0]) & (frames <= red[1])
        assert sample.truth.tolist() == np.stack([is_red, ~is_red], axis=1).tolist()
        assert sample.targets.tolist() == sample.truth[::stride].tolist()
        assert sample.features.shape == (len(range(0, FRAMES, stride)), 256)


def test_the_split_is_by_task_stable_and_keeps_both_sides(make_settings):
    from training.split import position
    from training.timeline import VAL_FRACTION, VideoSample, split_by_task

    samples = [
        VideoSample(i, np.zeros((1, 1)), np.zeros((1, 1), bool), np.zeros((1, 1), bool)) for i in range(1, 9)
    ]
    train, val = split_by_task(samples)
    again = split_by_task(list(reversed(samples)))
    assert [s.task_id for s in train] == [s.task_id for s in again[0]]
    held = [s.task_id for s in val]
    assert held == [t for t in range(1, 9) if position(t) < VAL_FRACTION] or held == [
        min(range(1, 9), key=position)
    ]
    assert held and not {s.task_id for s in train} & set(held)
    first = samples[0]
    more = split_by_task(
        [*samples, *(VideoSample(i, first.features, first.targets, first.truth) for i in range(9, 30))]
    )
    assert set(held) <= {s.task_id for s in more[1]}  # adding videos moves none held out
    two = split_by_task(samples[:2])
    assert len(two[0]) == len(two[1]) == 1


# -- training -------------------------------------------------------------------------------------------


def test_too_few_videos_or_a_label_never_annotated_is_refused(make_settings, own_root, colour_videos):
    from core.errors import TrainingDataError

    settings = make_settings(model_root=own_root, torch_threads=ONE_THREAD)
    tasks = annotated_tasks(colour_videos)
    with pytest.raises(TrainingDataError, match=r"1 annotated video.*at least 2 are needed"):
        train(settings, tasks[:1])
    only_red = [
        {**task, "annotations": [{"id": 1, "result": [timeline_result("Red", 1, 5)]}]} for task in tasks[:3]
    ]
    with pytest.raises(TrainingDataError, match="no annotated frame of 'Blue'"):
        train(settings, only_red)
    assert VersionStore(own_root).versions(PROJECT, "timeline") == []


def test_a_head_learns_the_colours_and_is_scored_on_held_out_videos(make_settings, own_root, colour_videos):
    """The job end to end in this process: promoted (nothing served before), F1 from held-out videos."""
    settings = make_settings(model_root=own_root, torch_threads=ONE_THREAD)
    reporter = RecordingReporter(PROJECT, "timeline")
    outcome = train(settings, annotated_tasks(colour_videos), reporter=reporter)
    assert outcome.promoted and "the first trained head" in outcome.message, outcome.message
    # Annotations are read page by page while the features are extracted: one phase.
    assert reporter.phases == ["extracting features", "training", "evaluating"]
    assert reporter.epochs[-1] == (EPOCHS, EPOCHS)
    store = VersionStore(own_root)
    assert store.served(PROJECT, "timeline") == outcome.version
    folder = store.control_dir(PROJECT, "timeline") / outcome.version
    assert sorted(p.name for p in folder.iterdir()) == [
        "best.pt",
        "dataset.json",
        "head.json",
        "metrics.json",
    ]
    dataset = json.loads((folder / "dataset.json").read_text())
    assert sorted(dataset["train_task_ids"] + dataset["val_task_ids"]) == list(RED_SPANS)
    assert dataset["val_task_ids"] == [6]  # the stable rule: the one task id whose hash is below a quarter
    metrics = json.loads((folder / "metrics.json").read_text())
    new = metrics["new"]
    assert new["frames"] == FRAMES and set(new["per_label"]) == {"Red", "Blue"}
    assert new["mean_f1"] >= 0.95, new
    assert all(row["f1"] >= 0.9 for row in new["per_label"].values()), new
    red_support = sum(RED_SPANS[t][1] - RED_SPANS[t][0] + 1 for t in dataset["val_task_ids"])
    assert new["per_label"]["Red"]["support"] == red_support
    assert metrics["serving"] == {"model": "none"} and metrics["promoted"] is True

    again = train(settings, annotated_tasks(colour_videos))  # same data, same seed: the same head
    assert not again.promoted and "not better than the served head" in again.message, again.message
    assert store.served(PROJECT, "timeline") == outcome.version
    served_f1 = json.loads((folder.parent / again.version / "metrics.json").read_text())["serving"]["mean_f1"]
    assert served_f1 == pytest.approx(new["mean_f1"])


# -- serving ---------------------------------------------------------------------------------------------


def predict(client, config: str, *videos: Path, project: str | None = f"{PROJECT}.1700000000") -> dict:
    tasks = [{"id": 100 + i, "data": {"video": str(video)}} for i, video in enumerate(videos)]
    response = client.post("/predict", json={"tasks": tasks, "label_config": config, "project": project})
    assert response.status_code == 200, response.text
    return response.json()


def test_before_training_each_task_is_told_to_train_first(make_client, own_root, colour_videos):
    client = make_client(model_root=own_root, torch_threads=ONE_THREAD)
    body = predict(client, timeline_config(), colour_videos[0], colour_videos[1])
    for answer in body["results"]:
        assert "result" not in answer  # Label Studio stores nothing and asks again after training
        assert 'model_trainable="true"' in answer["error"] and "Start Training" in answer["error"]
    assert "timeline" not in body.get("errors", {})


def test_the_served_head_labels_a_new_video_as_annotated(make_client, make_settings, own_root, colour_videos):
    """Start Training's job, then /predict: the ranges come from the trained head (the classifier's own
    classes have no Red or Blue; without the head each task is an error, as the test above shows)."""
    config = timeline_config('model_score_threshold="0.5"')
    client = make_client(model_root=own_root, torch_threads=ONE_THREAD)
    before = predict(client, config, colour_videos[0])
    assert "error" in before["results"][0]

    outcome = train(
        make_settings(model_root=own_root, torch_threads=ONE_THREAD), annotated_tasks(colour_videos), config
    )
    assert outcome.promoted, outcome.message
    body = predict(client, config, colour_videos[0], colour_videos[3])
    assert (
        body["model_version"]
        == client.app.state.backend.setup(config, project=PROJECT)
        != before["model_version"]
    )
    assert f"timeline.{outcome.version.split('-')[0]}" in body["model_version"]
    new_video, trained_video = (answer["result"] for answer in body["results"])
    assert LabelInterface(config).validate_prediction({"result": new_video}, return_errors=True) == []
    assert found_ranges(new_video) == truth_ranges(NEW_VIDEO_RED)
    assert found_ranges(trained_video) == truth_ranges(RED_SPANS[3])
    assert all(0.5 <= region["score"] <= 1.0 for region in new_video)
    # Another project has no head: it is still told to train first.
    other = predict(client, config, colour_videos[0], project="77")
    assert "Start Training" in other["results"][0]["error"]
    # Another classifier gives other features (here: the same numbers, but no one can know that).
    shutil.copy(own_root / CLASSIFIER, own_root / "other-cls.pt")
    swapped = timeline_config('model_score_threshold="0.5" model_path="other-cls.pt"')
    (answer,) = predict(client, swapped, colour_videos[0])["results"]
    assert "model_path 'other-cls.pt'" in answer["error"] and "train again" in answer["error"]


def test_the_head_serves_at_its_stride(make_client, make_settings, own_root, colour_videos):
    """model_vid_stride="3": features (training and serving) on frames 1, 4, 7, ...; the ranges are what a
    perfect head gives on those frames, each row standing for its frame and the two after it."""
    stride = 3
    config = timeline_config(f'model_vid_stride="{stride}"')
    settings = make_settings(model_root=own_root, torch_threads=ONE_THREAD)
    outcome = train(settings, annotated_tasks(colour_videos), config)
    assert outcome.promoted, outcome.message
    client = make_client(model_root=own_root, torch_threads=ONE_THREAD)
    regions = predict(client, config, colour_videos[0])["results"][0]["result"]
    truth = frame_labels([timeline_result(*r) for r in truth_ranges(NEW_VIDEO_RED)], ["Red", "Blue"], FRAMES)
    perfect = rows_to_frames(processed_rows(truth, stride), FRAMES, stride)
    assert frame_labels(regions, ["Red", "Blue"], FRAMES).tolist() == perfect.tolist()


def test_a_head_file_that_is_a_pickle_is_refused_not_run(make_client, own_root, colour_videos, tmp_path):
    """Hole closed: a `best.pt` in a version folder (written by anyone who can write MODEL_ROOT/trained)
    is read with weights_only, so a pickle that runs code when loaded is refused, not executed."""
    store = VersionStore(own_root)
    folder = store.create_version(PROJECT, "timeline")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (folder / "best.pt").write_bytes(pickle.dumps(Payload()))
    meta = {
        "labels": ["Red", "Blue"],
        "feature_dim": 256,
        "hidden_size": 32,
        "num_layers": 1,
        "vid_stride": 1,
        "sequence_size": 64,
    }
    (folder / "head.json").write_text(
        json.dumps({**meta, "feature_model": CLASSIFIER, "format": "timeline-lstm-1"})
    )
    (folder / "metrics.json").write_text("{}")
    store.promote(PROJECT, "timeline", folder.name)
    client = make_client(model_root=own_root, torch_threads=ONE_THREAD)
    (answer,) = predict(client, timeline_config(), colour_videos[0])["results"]
    assert "result" not in answer and "could not be loaded" in answer["error"]
    assert not marker.exists()


def test_a_trainable_timeline_needs_a_pt_classifier(make_client, own_root, colour_videos):
    client = make_client(model_root=own_root)
    tasks = [{"id": 1, "data": {"video": str(colour_videos[0])}}]
    config = timeline_config('model_format="openvino-int8"')
    response = client.post("/predict", json={"tasks": tasks, "label_config": config})
    assert response.status_code == 422 and 'model_format="pt"' in response.json()["error"]


@pytest.mark.slow
def test_start_training_runs_a_timeline_job_in_its_own_process(make_settings, own_root, colour_videos):
    """The webhook's path: START_TRAINING -> a job process (training_pipeline.py) fetching the tasks
    through the SDK from a stand-in Label Studio -> a promoted head that this backend then serves."""
    from tests.test_training import TOKEN, backend_for, label_studio, wait_for

    config = timeline_config()
    project = {"id": 3, "label_config": config}
    with label_studio(annotated_tasks(colour_videos), {}, config) as stand_in:
        one_thread = lambda **values: make_settings(torch_threads=ONE_THREAD, **values)  # noqa: E731
        backend = backend_for(one_thread, own_root, stand_in.url)
        answer = backend.fit("START_TRAINING", {"action": "START_TRAINING", "project": project})
        (started,) = answer["jobs"]
        assert (started["control"], started["submission"]) == ("timeline", "started")
        job = wait_for(backend, started["id"], lambda j: j.state in ("succeeded", "failed"))
        assert job.state == "succeeded" and job.promoted, (job.error, job.log_tail)
        assert "the first trained head" in job.message and job.epoch == job.epochs == EPOCHS
        run = backend.predict([{"id": 1, "data": {"video": str(colour_videos[0])}}], config, project="3")
        assert found_ranges(run.tasks[0].regions) == truth_ranges(NEW_VIDEO_RED)
        # The job fetched the project's tasks itself, with the key on every call (the stand-in refuses
        # others), and wrote the key nowhere: neither in its state file nor in its log.
        assert [query["project"] for query in stand_in.task_queries()][:1] == ["3"]
        assert {authorization for _, authorization in stand_in.requests} == {f"Token {TOKEN}"}
        job_files = sorted((own_root / "jobs").glob(f"{job.id}.*"))
        assert [path.suffix for path in job_files] == [".alive", ".json", ".log", ".pid"]
        assert not [path.name for path in job_files if TOKEN in path.read_text()]
        backend.close()


# -- the head and the decision, without a classifier -------------------------------------------------------


def test_a_long_video_is_read_in_the_windows_the_head_was_trained_on():
    """150 rows with windows of 64: the same probabilities as each window (the last padded) read alone."""
    from training.spec import SequenceHeadParams
    from training.timeline_head import train_head

    rng = np.random.default_rng(0)
    videos = [(rng.random((150, 8)).astype(np.float32), rng.random((150, 2)) > 0.5) for _ in range(2)]
    head = train_head(videos, ("a", "b"), SequenceHeadParams(epochs=5, sequence_size=64), "x.pt")
    features = videos[0][0]
    whole = head.probabilities(features)
    assert whole.shape == (150, 2) and np.all((whole > 0) & (whole < 1))
    alone = np.concatenate([head.probabilities(features[start : start + 64]) for start in (0, 64, 128)])
    assert np.allclose(whole, alone, atol=1e-6)


@pytest.mark.parametrize(
    ("promote", "serving", "new", "promoted", "says"),
    [
        ("better", None, 0.4, True, "the first trained head"),
        ("better", None, 0.0, False, "finds no annotated frame"),
        ("better", 0.5, 0.6, True, "better"),
        ("better", 0.6, 0.6, False, "not better"),
        ("always", 0.9, 0.1, True, "always"),
    ],
)
def test_a_head_is_promoted_when_its_mean_f1_is_higher(promote, serving, new, promoted, says):
    from training.timeline import decide_head

    decision, message = decide_head(promote, serving, new, "v1-20260101T000000")
    assert decision is promoted and says in message and f"{new:.4f}" in message
