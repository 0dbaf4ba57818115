"""Unit tests for converters/video_regions.py: hand-made tracks and probabilities in, Label Studio regions out."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from label_studio_sdk.label_interface import LabelInterface

from converters import video_regions
from converters.video_regions import (
    active_runs,
    keyframe_sequence,
    span_ends,
    timeline_regions,
    video_rectangle_regions,
)

W, H = 320, 240
CONFIG = """
<View>
  <Video name="video" value="$video"/>
  <Labels name="videoLabels" toName="video"><Label value="Car"/><Label value="Person"/></Labels>
  <VideoRectangle name="box" toName="video"/>
  <TimelineLabels name="timeline" toName="video"><Label value="Run"/><Label value="Walk"/></TimelineLabels>
</View>
"""


@pytest.fixture(scope="module")
def interface() -> LabelInterface:
    return LabelInterface(CONFIG)


def assert_valid(interface: LabelInterface, regions: list[dict]) -> None:
    assert interface.validate_prediction({"result": regions}, return_errors=True) == []
    for region in regions:  # the SDK does not check VideoRectangle labels against the <Labels> tag
        if region["type"] == "videorectangle":
            assert set(region["value"]["labels"]) <= {"Car", "Person"}


def tracks(*observations: tuple[int, int, tuple, float, str]) -> dict:
    """Observations (frame, track id, xyxy, score, label) -> keyword arguments of video_rectangle_regions."""
    frames, ids, boxes, scores, labels = zip(*observations, strict=True)
    return {
        "frames": np.array(frames),
        "track_ids": np.array(ids),
        "xyxy": np.array(boxes, dtype=float),
        "scores": np.array(scores),
        "labels": list(labels),
    }


def rect_regions(frames_count: int = 20, fps: float = 10.0, step: int = 1, **arrays) -> list[dict]:
    return video_rectangle_regions(
        from_name="box",
        to_name="video",
        frame_width=W,
        frame_height=H,
        frames_count=frames_count,
        fps=fps,
        step=step,
        **arrays,
    )


def test_docstring_examples():
    result = doctest.testmod(video_regions)
    assert result.attempted > 0
    assert result.failed == 0


# --- spans and keyframes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frames", "step", "expected"),
    [
        ([5], 1, [True]),  # a single-frame track: its only box ends it
        ([1, 2, 3], 1, [False, False, True]),
        ([1, 3], 1, [True, True]),  # a one-frame gap is a gap
        ([1, 2, 4, 5, 9], 1, [False, True, False, True, True]),
        ([1, 4, 7, 10], 3, [False, False, False, True]),  # stride: 3 apart is contiguous
        ([1, 4, 10, 13], 3, [False, True, False, True]),
        ([], 1, []),
    ],
)
def test_span_ends(frames, step, expected):
    assert span_ends(np.array(frames, dtype=int), step).tolist() == expected


def test_keyframe_sequence_fields_order_and_time():
    sequence = keyframe_sequence(
        np.array([3, 1, 2]), np.array([[3, 3, 1, 1], [1, 1, 1, 1], [2, 2, 1, 1]]), fps=25.0
    )
    assert [k["frame"] for k in sequence] == [1, 2, 3]
    assert [k["x"] for k in sequence] == [1.0, 2.0, 3.0]
    assert sequence[0] == {
        "frame": 1,
        "x": 1.0,
        "y": 1.0,
        "width": 1.0,
        "height": 1.0,
        "time": 0.04,
        "enabled": True,
        "rotation": 0,
    }
    assert [k["enabled"] for k in sequence] == [True, True, False]
    assert all(type(k["frame"]) is int and type(k["enabled"]) is bool for k in sequence)


def test_keyframe_sequence_keeps_first_box_of_a_repeated_frame():
    sequence = keyframe_sequence(
        np.array([1, 1, 2]), np.array([[1, 0, 1, 1], [9, 0, 1, 1], [2, 0, 1, 1]]), 10
    )
    assert [(k["frame"], k["x"]) for k in sequence] == [(1, 1.0), (2, 2.0)]


# --- videorectangle regions ---------------------------------------------------------------------------


def test_one_region_per_track_with_gap_and_label_vote(interface):
    arrays = tracks(
        (1, 4, (0, 0, 32, 24), 0.6, "Car"),
        (2, 4, (32, 24, 64, 48), 0.9, "Car"),
        (3, 4, (64, 48, 96, 72), 0.3, "Person"),  # flicker: Car still wins by summed score
        (6, 4, (96, 72, 128, 96), 0.7, "Car"),  # after a gap
        (2, 9, (0, 0, 320, 240), 0.8, "Person"),  # a single-frame track
    )
    regions = rect_regions(**arrays)
    assert_valid(interface, regions)
    assert [r["value"]["labels"] for r in regions] == [["Car"], ["Person"]]  # by first appearance

    car = regions[0]
    assert car["type"] == "videorectangle" and car["from_name"] == "box" and car["to_name"] == "video"
    assert car["score"] == pytest.approx(0.9)
    assert car["value"]["framesCount"] == 20 and car["value"]["duration"] == pytest.approx(2.0)
    sequence = car["value"]["sequence"]
    assert [k["frame"] for k in sequence] == [1, 2, 3, 6]
    assert [k["enabled"] for k in sequence] == [True, True, False, False]
    assert sequence[1]["x"] == pytest.approx(10.0) and sequence[1]["y"] == pytest.approx(10.0)
    assert sequence[1]["width"] == pytest.approx(10.0) and sequence[1]["height"] == pytest.approx(10.0)
    assert sequence[3]["time"] == pytest.approx(0.6)

    person = regions[1]
    assert [(k["frame"], k["enabled"]) for k in person["value"]["sequence"]] == [(2, False)]
    assert person["value"]["sequence"][0]["width"] == pytest.approx(100.0)
    assert len({r["id"] for r in regions}) == 2


def test_track_running_to_the_last_frame():
    arrays = tracks(*[(f, 1, (10, 10, 50, 50), 0.5, "Car") for f in range(1, 6)])
    (region,) = rect_regions(frames_count=5, fps=5.0, **arrays)
    sequence = region["value"]["sequence"]
    assert [k["frame"] for k in sequence] == [1, 2, 3, 4, 5]
    assert sequence[-1]["enabled"] is False and all(k["enabled"] for k in sequence[:-1])
    assert sequence[-1]["time"] == pytest.approx(region["value"]["duration"])


def test_boxes_outside_the_frame_are_clipped(interface):
    arrays = tracks((1, 1, (-20, -10, 40, 30), 0.5, "Car"), (2, 1, (300, 200, 400, 300), 0.5, "Car"))
    (region,) = rect_regions(**arrays)
    assert_valid(interface, [region])
    for keyframe in region["value"]["sequence"]:
        assert 0 <= keyframe["x"] <= 100 and 0 <= keyframe["y"] <= 100
        assert keyframe["x"] + keyframe["width"] <= 100 + 1e-9
        assert keyframe["y"] + keyframe["height"] <= 100 + 1e-9


def test_strided_keyframes_stay_enabled_between_processed_frames():
    arrays = tracks(*[(f, 1, (10, 10, 50, 50), 0.5, "Car") for f in (1, 4, 7, 13, 16)])
    (region,) = rect_regions(step=3, **arrays)
    assert [(k["frame"], k["enabled"]) for k in region["value"]["sequence"]] == [
        (1, True),
        (4, True),
        (7, False),  # frame 10 missing: gap
        (13, True),
        (16, False),
    ]


def test_no_observations_no_regions():
    empty = {"frames": [], "track_ids": [], "xyxy": np.empty((0, 4)), "scores": [], "labels": []}
    assert rect_regions(**empty) == []


def test_mismatched_lengths_are_refused():
    arrays = tracks((1, 1, (0, 0, 1, 1), 0.5, "Car"))
    arrays["labels"] = []
    with pytest.raises(ValueError, match="differ in length"):
        rect_regions(**arrays)


@pytest.mark.parametrize(("frames_count", "fps"), [(0, 25.0), (10, 0.0), (10, float("nan"))])
def test_bad_video_properties_are_refused(frames_count, fps):
    with pytest.raises(ValueError):
        rect_regions(frames_count=frames_count, fps=fps, **tracks((1, 1, (0, 0, 1, 1), 0.5, "Car")))


# --- timelinelabels regions ---------------------------------------------------------------------------


def ranges_by_label(regions: list[dict]) -> list[tuple[str, int, int]]:
    return [
        (r["value"]["timelinelabels"][0], r["value"]["ranges"][0]["start"], r["value"]["ranges"][0]["end"])
        for r in regions
    ]


def test_active_runs_edges():
    assert active_runs(np.array([True])) == [(0, 0)]
    assert active_runs(np.array([False, False])) == []
    assert active_runs(np.array([True, True, True])) == [(0, 2)]
    assert active_runs(np.array([False, True, False, True])) == [(1, 1), (3, 3)]


def test_timeline_runs_single_frames_and_run_at_the_end(interface):
    run = [0.9, 0.8, 0.1, 0.7, 0.2, 0.2, 0.6, 0.6]
    walk = [0.1, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0]  # exactly the threshold counts
    regions = timeline_regions(
        from_name="timeline",
        to_name="video",
        probs=np.array([run, walk]).T,
        labels=["Run", "Walk"],
        threshold=0.5,
        frames_count=8,
    )
    assert_valid(interface, regions)
    assert ranges_by_label(regions) == [("Run", 1, 2), ("Walk", 2, 3), ("Run", 4, 4), ("Run", 7, 8)]
    assert regions[0]["score"] == pytest.approx(0.85)
    assert all(type(r["value"]["ranges"][0]["start"]) is int for r in regions)
    assert all(r["type"] == "timelinelabels" and r["from_name"] == "timeline" for r in regions)


def test_timeline_with_stride_covers_skipped_frames_and_stops_at_the_video_end():
    # Rows are frames 1, 4, 7, 10 of a 11-frame video.
    regions = timeline_regions(
        from_name="timeline",
        to_name="video",
        probs=np.array([[0.9], [0.1], [0.9], [0.9]]),
        labels=["Run"],
        threshold=0.5,
        frames_count=11,
        step=3,
    )
    assert ranges_by_label(regions) == [("Run", 1, 3), ("Run", 7, 11)]


def test_timeline_nothing_over_threshold_and_empty_input():
    kwargs = {"from_name": "timeline", "to_name": "video", "labels": ["Run"], "threshold": 0.5}
    assert timeline_regions(probs=np.full((5, 1), 0.2), frames_count=5, **kwargs) == []
    assert timeline_regions(probs=np.empty((0, 1)), frames_count=5, **kwargs) == []


def test_timeline_label_count_must_match_columns():
    with pytest.raises(ValueError, match="columns"):
        timeline_regions(
            from_name="t", to_name="v", probs=np.ones((2, 2)), labels=["Run"], threshold=0.5, frames_count=2
        )
