"""The task score for active learning (`model_task_score` / TASK_SCORE): confidence or uncertainty.

Pure formulas on hand-built confidences and probabilities; every control kind on hand-built model outputs;
the whole /predict path on stand-in models whose candidates (and their confidences) are known and which
drop candidates under `conf` as Ultralytics does; and the shapes detector, whose regions must not change
with the mode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from control_models.labeling_plan import build_plan
from converters.task_score import (
    CANDIDATE_FLOOR,
    binary_entropy,
    classification_uncertainty,
    detection_uncertainty,
    frame_label_uncertainty,
    mean_over_frames,
    task_score,
)
from core.errors import LabelingConfigError
from inference.detections import BoxMask, Classification, Detections
from tests.known_models import KnownOutputModel, classification_result

NAMES = {0: "circle", 1: "square", 2: "star"}  # "star" has no label in the configs below
LABELS = '<Label value="circle"/><Label value="square"/>'


def view(*tags: str) -> str:
    return f'<View><Image name="image" value="$image"/>{"".join(tags)}</View>'


def without_ids(regions: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("id", "parentID")} for r in regions]


# -- the formulas ----------------------------------------------------------------------------------------


def test_docstring_examples():
    import doctest

    import converters.task_score

    result = doctest.testmod(converters.task_score)
    assert result.attempted > 0 and result.failed == 0


def test_binary_entropy_is_highest_at_even_odds_and_zero_when_certain():
    values = binary_entropy(np.array([0.0, 0.05, 0.3, 0.5, 0.7, 0.95, 1.0]))
    assert values[3] == pytest.approx(1.0)
    assert values[0] == pytest.approx(0.0, abs=1e-9) and values[-1] == pytest.approx(0.0, abs=1e-9)
    assert values[2] == pytest.approx(values[4]) and values[1] == pytest.approx(values[5])
    assert values[1] < values[2] < values[3]


def test_detection_uncertainty_orders_sure_below_unsure():
    sure = detection_uncertainty(np.array([0.97, 0.95, 0.06]))  # nothing near the threshold
    one_doubt = detection_uncertainty(np.array([0.97, 0.95, 0.45]))
    all_at_03 = detection_uncertainty(np.array([0.3, 0.3, 0.3]))  # "objects all sit at 0.3": unsure
    assert sure < 0.4 < all_at_03 < one_doubt <= 1.0
    assert detection_uncertainty(np.empty(0)) == 0.0  # no candidate at all: nothing to doubt


def test_classification_uncertainty_is_one_minus_the_top_two_margin():
    assert classification_uncertainty(np.array([0.9, 0.05, 0.05])) == pytest.approx(0.15)
    assert classification_uncertainty(np.array([0.5, 0.5, 0.0])) == pytest.approx(1.0)
    assert classification_uncertainty(np.array([0.6, 0.3, 0.1])) == pytest.approx(0.7)
    # classes of one label add up: 0.45 + 0.45 against 0.1
    assert classification_uncertainty(np.array([0.45, 0.45, 0.1]), [[0, 1]]) == pytest.approx(0.2)
    assert classification_uncertainty(np.array([1.0])) == 0.0
    assert classification_uncertainty(np.empty(0)) == 0.0


def test_frame_label_uncertainty_and_the_mean_over_frames():
    frames = frame_label_uncertainty(np.array([[0.99, 0.01], [0.5, 0.5], [0.5, 0.0]]))
    assert frames.tolist() == pytest.approx([binary_entropy(np.array(0.01)), 1.0, 0.5])
    assert mean_over_frames(frames) == pytest.approx(frames.mean())
    assert mean_over_frames([]) == 0.0


def test_task_score_most_unsure_control_decides_and_confidence_mode_is_the_mean():
    regions = [{"score": 0.5}, {"score": 1.0}]
    assert task_score(regions, []) == 0.75  # confidence: as before (the official example's mean)
    assert task_score([], []) == 0.0
    assert task_score(regions, [0.1, 0.8, 0.3]) == 0.8


# -- parsing ---------------------------------------------------------------------------------------------


def box_control(attrs: str = "", tag: str = "RectangleLabels", model: str = "cand-detect.pt") -> str:
    return f'<{tag} name="c" toName="image" model_path="{model}" {attrs}>{LABELS}</{tag}>'


def test_attribute_overrides_the_environment_default(make_settings):
    settings = make_settings(task_score="uncertainty")
    (control,) = build_plan(view(box_control()), settings).controls
    assert control.task_score == "uncertainty" and control.candidate_conf == CANDIDATE_FLOOR
    (control,) = build_plan(view(box_control('model_task_score="confidence"')), settings).controls
    assert control.task_score == "confidence" and control.predict_options() == {"conf": 0.5}
    (control,) = build_plan(view(box_control('model_task_score="Uncertainty"')), make_settings()).controls
    assert control.predict_options() == {"conf": CANDIDATE_FLOOR}
    # a model_conf under the floor is kept: the model already gives every candidate down to it
    (control,) = build_plan(
        view(box_control('model_task_score="uncertainty" model_conf="0.01"')), settings
    ).controls
    assert control.predict_options() == {"conf": 0.01}


def test_a_wrong_mode_names_the_attribute_and_the_choices(make_settings):
    with pytest.raises(LabelingConfigError) as caught:
        build_plan(view(box_control('model_task_score="entropy"')), make_settings())
    assert 'model_task_score="entropy"' in caught.value.message and "uncertainty" in caught.value.message


# -- every kind on hand-built outputs ---------------------------------------------------------------------

SURE = [0.97, 0.02]  # scores of the two candidates of a sure image; an unsure one has 0.35 for the second
UNSURE = [0.97, 0.35]
BOXES = np.array([[5, 5, 30, 30], [34, 34, 60, 60]], dtype=np.float32)


def detections(scores: list[float], class_ids=(0, 0)) -> Detections:
    count = len(scores)
    keypoints = np.zeros((count, 1, 3), np.float32)
    keypoints[:, 0] = [20, 20, 0.9]
    return Detections(
        image_width=64,
        image_height=64,
        xyxy=BOXES[:count],
        scores=np.array(scores, np.float32),
        class_ids=np.array(class_ids[:count], np.int64),
        xywhr=np.array([[17.5, 17.5, 25, 25, 0.1], [47, 47, 26, 26, 0.1]], np.float32)[:count],
        polygons=[np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float32) for x1, y1, x2, y2 in BOXES][
            :count
        ],
        masks=[BoxMask(5, 5, np.ones((25, 25), bool)), BoxMask(34, 34, np.ones((26, 26), bool))][:count],
        keypoints=keypoints,
    )


IMAGE_KINDS = {
    "rectangle": box_control,
    "obb": lambda attrs="": box_control(f'model_obb="true" {attrs}', model="cand-obb.pt"),
    "polygon": lambda attrs="": box_control(attrs, tag="PolygonLabels", model="cand-seg.pt"),
    "brush": lambda attrs="": box_control(attrs, tag="BrushLabels", model="cand-seg.pt"),
    "keypoints": lambda attrs="": (
        f'<KeyPointLabels name="c" toName="image" model_path="cand-pose.pt" {attrs}>'
        '<Label value="centre" predicted_values="circle" model_index="0"/></KeyPointLabels>'
    ),
}


@pytest.mark.parametrize("kind", sorted(IMAGE_KINDS))
def test_every_detection_kind_scores_its_candidates_and_keeps_its_regions(make_settings, kind):
    """The model ran down to the floor in uncertainty mode: the regions are those confidence mode gives
    (the model there never returned the 0.35 candidate), and the hidden 0.35 makes the task unsure."""
    settings = make_settings()
    (unsure_mode,) = build_plan(view(IMAGE_KINDS[kind]('model_task_score="uncertainty"')), settings).controls
    (confidence_mode,) = build_plan(view(IMAGE_KINDS[kind]()), settings).controls
    sure = unsure_mode.task_uncertainty(detections(SURE), NAMES)
    unsure = unsure_mode.task_uncertainty(detections(UNSURE), NAMES)
    assert sure < 0.25 < 0.9 < unsure
    assert confidence_mode.task_uncertainty(detections(UNSURE), NAMES) is None
    assert without_ids(unsure_mode.regions(detections(UNSURE), NAMES)) == without_ids(
        confidence_mode.regions(detections(UNSURE[:1]), NAMES)
    )


def test_a_model_conf_over_the_threshold_still_cuts_the_regions(make_settings):
    """model_conf="0.6" over a threshold of 0.5: confidence mode never sees a 0.55 box (Ultralytics drops it);
    uncertainty mode gets it from the model and must drop it itself."""
    attrs = 'model_conf="0.6" model_task_score="uncertainty"'
    (control,) = build_plan(view(box_control(attrs)), make_settings()).controls
    assert [round(r["score"], 2) for r in control.regions(detections([0.97, 0.55]), NAMES)] == [0.97]


def test_candidates_of_classes_without_a_label_do_not_count(make_settings):
    (control,) = build_plan(view(box_control('model_task_score="uncertainty"')), make_settings()).controls
    assert control.task_uncertainty(detections([0.97, 0.5], class_ids=(0, 2)), NAMES) < 0.25


def test_candidates_cut_from_the_detections_still_count(make_settings):
    """`from_ultralytics(keep_above=...)` keeps every candidate's score beside the cut detections."""
    (control,) = build_plan(view(box_control('model_task_score="uncertainty"')), make_settings()).controls
    cut = detections(UNSURE[:1])
    cut = Detections(
        **{**cut.__dict__, "candidate_scores": np.array(UNSURE), "candidate_class_ids": np.zeros(2)}
    )
    assert control.task_uncertainty(cut, NAMES) > 0.9
    assert len(control.regions(cut, NAMES)) == 1


CLASSIFY_KINDS = {
    "choices": lambda attrs="": (
        f'<Choices name="cls" toName="image" model_path="cand-cls.pt" {attrs}>'
        '<Choice value="circle"/><Choice value="square"/></Choices>'
    ),
    "taxonomy": lambda attrs="": (
        f'<Taxonomy name="cls" toName="image" model_path="cand-cls.pt" {attrs}><Choice value="Shapes">'
        '<Choice value="circle"/><Choice value="square"/></Choice></Taxonomy>'
    ),
}
SURE_PROBS = [0.9, 0.06, 0.04]
UNSURE_PROBS = [0.48, 0.42, 0.10]


@pytest.mark.parametrize("kind", sorted(CLASSIFY_KINDS))
def test_classification_kinds_score_the_margin_of_the_top_two(make_settings, kind):
    settings = make_settings()
    (control,) = build_plan(view(CLASSIFY_KINDS[kind]('model_task_score="uncertainty"')), settings).controls
    sure = control.task_uncertainty(Classification(64, 64, np.array(SURE_PROBS, np.float32)), NAMES)
    unsure = control.task_uncertainty(Classification(64, 64, np.array(UNSURE_PROBS, np.float32)), NAMES)
    assert sure == pytest.approx(1 - (0.9 - 0.06)) and unsure == pytest.approx(1 - (0.48 - 0.42))
    (plain,) = build_plan(view(CLASSIFY_KINDS[kind]()), settings).controls
    assert plain.task_uncertainty(Classification(64, 64, np.array(UNSURE_PROBS, np.float32)), NAMES) is None


def test_classes_of_one_label_count_as_one(make_settings):
    config = view(
        '<Choices name="cls" toName="image" model_path="cand-cls.pt" model_task_score="uncertainty">'
        '<Choice value="round" predicted_values="circle,star"/><Choice value="square"/></Choices>'
    )
    (control,) = build_plan(config, make_settings()).controls
    probs = Classification(64, 64, np.array([0.45, 0.1, 0.45], np.float32))  # circle, square, star
    assert control.task_uncertainty(probs, NAMES) == pytest.approx(1 - (0.9 - 0.1))


# -- video sessions on hand-built frames ----------------------------------------------------------------


def video_view(*tags: str) -> str:
    return f'<View><Video name="video" value="$video"/>{"".join(tags)}</View>'


def tracking_tags(attrs: str = "") -> str:
    return (
        f'<Labels name="videoLabels" toName="video">{LABELS}</Labels>'
        f'<VideoRectangle name="box" toName="video" model_tracker="bytetrack" {attrs}/>'
    )


def test_video_rectangle_is_the_mean_over_frames_and_tracks_as_in_confidence_mode(make_settings):
    settings = make_settings()
    (unsure_mode,) = build_plan(
        video_view(tracking_tags('model_task_score="uncertainty"')), settings
    ).controls
    (plain,) = build_plan(video_view(tracking_tags()), settings).controls
    image = np.zeros((64, 64, 3), np.uint8)
    # The model ran at the floor: the 0.35 candidate comes too, and in frame 2 the box at 0.2, under
    # model_conf (0.25) but over ByteTrack's low threshold (0.1): fed to the tracker it would extend the track.
    frames = [UNSURE, [0.2, 0.02], SURE, UNSURE]
    session, plain_session = unsure_mode.start_video(NAMES), plain.start_video(NAMES)
    for number, scores in enumerate(frames, start=1):
        session.add(number, detections(scores), image)
        shown = [s for s in scores if s > plain.conf]  # what the model gives at model_conf (0.25)
        plain_session.add(number, detections(shown), image)
    regions, plain_regions = session.regions(4, 24.0), plain_session.regions(4, 24.0)
    assert regions and without_ids(regions) == without_ids(plain_regions)
    expected = np.mean([detection_uncertainty(np.array(s)) for s in frames])
    assert session.uncertainty() == pytest.approx(expected)
    assert plain_session.uncertainty() is None


def test_timeline_labels_is_the_mean_label_entropy_over_frames(make_settings):
    config = video_view(
        '<TimelineLabels name="tl" toName="video" model_path="cand-cls.pt" model_task_score="uncertainty">'
        f"{LABELS}</TimelineLabels>"
    )
    (control,) = build_plan(config, make_settings()).controls
    session = control.start_video(NAMES)
    rows = [[0.95, 0.03, 0.02], [0.5, 0.45, 0.05]]
    for number, probs in enumerate(rows, start=1):
        session.add(
            number, Classification(64, 64, np.array(probs, np.float32)), np.zeros((2, 2, 3), np.uint8)
        )
    session.regions(2, 24.0)
    labels = np.array([row[:2] for row in rows])  # circle and square; "star" is no label
    assert session.uncertainty() == pytest.approx(frame_label_uncertainty(labels).mean())


# -- through /predict, on stand-in models that drop candidates under conf as Ultralytics does --------------


@dataclass
class CandidateModel:
    """Stands in for `ultralytics.YOLO`: each image's candidates are known; `predict` keeps those over
    `conf` (strictly, as Ultralytics' NMS) and records the `conf` it was asked for."""

    task: str
    names: dict[int, str]
    candidates_of: Callable[[np.ndarray], list[tuple[int, np.ndarray, float]]]
    confs: list[float] = field(default_factory=list)

    def predict(self, images: list[np.ndarray], conf: float = 0.25, **_options: Any) -> list[Any]:
        self.confs.append(conf)
        return [self.result(image, [c for c in self.candidates_of(image) if c[2] > conf]) for image in images]

    def result(self, image: np.ndarray, candidates: list) -> Any:
        import torch
        from ultralytics.engine.results import Results

        rows = torch.tensor([[*box, score, cls] for cls, box, score in candidates], dtype=torch.float32)
        rows = rows.reshape(-1, 6)
        height, width = image.shape[:2]
        if self.task == "obb":
            xywhr = [
                [(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0], b[3] - b[1], 0.2]
                for _, b, _ in candidates
            ]
            obb = torch.cat([torch.tensor(xywhr).reshape(-1, 5), rows[:, 4:]], dim=1)
            return Results(image, "c.png", self.names, obb=obb)
        extra: dict[str, Any] = {}
        if self.task == "segment":
            masks = torch.zeros((len(candidates), height, width))
            for i, (_, (x1, y1, x2, y2), _) in enumerate(candidates):
                masks[i, int(y1) : int(y2), int(x1) : int(x2)] = 1.0
            extra["masks"] = masks
        if self.task == "pose":
            extra["keypoints"] = torch.tensor(
                [[[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, 0.9]] for _, b, _ in candidates]
            )
            extra["keypoints"] = extra["keypoints"].reshape(-1, 1, 3)
        return Results(image, "c.png", self.names, boxes=rows, **extra)


def scene_images(tmp_path: Path) -> dict[str, Path]:
    """Two 64x64 images told apart by their grey level: the model is sure of one, unsure of the other."""
    paths = {}
    for name, level in (("sure", 40), ("unsure", 200)):
        paths[name] = tmp_path / f"{name}.png"
        cv2.imwrite(str(paths[name]), np.full((64, 64, 3), level, np.uint8))
    return paths


def candidates_of(image: np.ndarray) -> list[tuple[int, np.ndarray, float]]:
    scores = SURE if image.mean() < 128 else UNSURE
    return [(0, BOXES[i], score) for i, score in enumerate(scores)]


def backend_for(settings, models: dict[str, Any]):
    from model import YOLOBackend
    from tests.known_models import KnownOutputRegistry

    return YOLOBackend(settings, registry=KnownOutputRegistry(settings, models))


def stand_ins() -> dict[str, Any]:
    names = {0: "circle", 1: "square", 2: "star"}
    return {
        "cand-detect.pt": CandidateModel("detect", names, candidates_of),
        "cand-obb.pt": CandidateModel("obb", names, candidates_of),
        "cand-seg.pt": CandidateModel("segment", names, candidates_of),
        "cand-pose.pt": CandidateModel("pose", names, candidates_of),
        "cand-cls.pt": KnownOutputModel(
            "classify",
            names,
            lambda image: classification_result(
                image, SURE_PROBS if image.mean() < 128 else UNSURE_PROBS, names
            ),
        ),
    }


def predict(settings, config: str, images: dict[str, Path], models=None) -> tuple[dict[str, dict], str]:
    backend = backend_for(settings, models or stand_ins())
    tasks = [{"id": i, "data": {"image": str(path)}} for i, path in enumerate(images.values())]
    try:
        run = backend.predict(tasks, config, project="3")
    finally:
        backend.close()
    assert not run.control_errors and run.failed_tasks() == 0
    return dict(zip(images, run.results(), strict=True)), run.model_version


STAND_IN_OF = {
    "rectangle": "cand-detect.pt",
    "obb": "cand-obb.pt",
    "polygon": "cand-seg.pt",
    "brush": "cand-seg.pt",
    "keypoints": "cand-pose.pt",
}


@pytest.mark.parametrize("kind", sorted(IMAGE_KINDS) + sorted(CLASSIFY_KINDS))
def test_predict_puts_the_unsure_task_above_the_sure_one_with_the_same_regions(make_settings, tmp_path, kind):
    tag = {**IMAGE_KINDS, **CLASSIFY_KINDS}[kind]
    images = scene_images(tmp_path)
    settings = make_settings()
    models = stand_ins()
    plain, plain_version = predict(settings, view(tag()), images, models)
    model = models.get(STAND_IN_OF.get(kind, "cand-cls.pt"))
    confs_before = list(getattr(model, "confs", []))
    unsure, version = predict(settings, view(tag('model_task_score="uncertainty"')), images, models)
    assert unsure["unsure"]["score"] > unsure["sure"]["score"]
    for name in images:
        assert without_ids(unsure[name]["result"]) == without_ids(plain[name]["result"]), name
    if kind in IMAGE_KINDS:  # confidence mode asked the model for conf only; uncertainty for the floor
        assert confs_before and set(confs_before) == {0.5}
        assert set(model.confs[len(confs_before) :]) == {CANDIDATE_FLOOR}
        # confidence mode: the mean region score, blind to the hidden 0.35 (both tasks look alike)
        assert plain["sure"]["score"] == plain["unsure"]["score"]
        assert plain["sure"]["score"] == pytest.approx(np.mean([r["score"] for r in plain["sure"]["result"]]))
    assert version.endswith("-uncertainty") and not plain_version.endswith("-uncertainty")
    assert version.removesuffix("-uncertainty").rsplit("-", 1)[0] == plain_version.rsplit("-", 1)[0]


def test_uncertainty_mode_decodes_no_more_masks_than_confidence_mode(make_settings, tmp_path):
    """Brush masks are decoded only for the detections over model_conf: a mask budget (MAX_MASK_BYTES) that
    fits confidence mode's one mask fits uncertainty mode too, although the model gave two candidates."""
    unsure = {"unsure": scene_images(tmp_path)["unsure"]}
    settings = make_settings(max_mask_bytes=6000)  # one 64x64 image's mask: 4096 + 25 x 25 bytes
    for attrs in ("", 'model_task_score="uncertainty"'):
        results, _ = predict(settings, view(IMAGE_KINDS["brush"](attrs)), unsure)
        assert len(results["unsure"]["result"]) == 1


def test_the_environment_default_switches_every_control_and_the_version(make_settings, tmp_path):
    images = scene_images(tmp_path)
    results, version = predict(make_settings(task_score="uncertainty"), view(box_control()), images)
    assert version.endswith("-uncertainty")
    assert results["unsure"]["score"] > 0.9 > 0.25 > results["sure"]["score"]


def test_several_controls_the_most_unsure_decides(make_settings, tmp_path):
    """Boxes sure and class unsure on one image, the other way round on the other: each task's score is
    its most unsure control's; a control in confidence mode does not take part."""
    images = scene_images(tmp_path)
    flipped = stand_ins()
    flipped["cand-cls.pt"].result_of = lambda image: classification_result(
        image, UNSURE_PROBS if image.mean() < 128 else SURE_PROBS, NAMES
    )
    config = view(
        box_control('model_task_score="uncertainty"'),
        CLASSIFY_KINDS["choices"]('model_task_score="uncertainty"'),
    )
    results, _ = predict(make_settings(), config, images, flipped)
    box_unsure = detection_uncertainty(np.array(UNSURE))
    class_unsure = classification_uncertainty(np.array(UNSURE_PROBS))
    assert results["unsure"]["score"] == pytest.approx(box_unsure)  # boxes unsure, class sure
    assert results["sure"]["score"] == pytest.approx(class_unsure)  # boxes sure, class unsure
    mixed = view(box_control(), CLASSIFY_KINDS["choices"]('model_task_score="uncertainty"'))
    results, _ = predict(make_settings(), mixed, images, flipped)
    assert results["unsure"]["score"] == pytest.approx(classification_uncertainty(np.array(SURE_PROBS)))


def test_the_shapes_detector_gives_the_same_regions_in_both_modes(make_settings, tmp_path):
    """Ultralytics' own NMS at the floor, then cut at model_conf: the regions confidence mode gives."""
    from tools.shapes import draw_shapes_image

    rng = np.random.default_rng(11)
    images = {}
    for index in range(4):
        image, _ = draw_shapes_image(rng, 160, 160)
        images[f"img{index}"] = tmp_path / f"{index}.png"
        cv2.imwrite(str(images[f"img{index}"]), image)
    labels = '<Label value="circle"/><Label value="square"/><Label value="triangle"/>'
    for model_conf in ("", 'model_conf="0.25"'):
        tag = f'<RectangleLabels name="c" toName="image" model_path="shapes-yolov8n.pt" {model_conf} {{}}>{labels}</RectangleLabels>'
        settings = make_settings()
        plain, _ = predict(settings, view(tag.format("")), images, {})
        unsure, _ = predict(settings, view(tag.format('model_task_score="uncertainty"')), images, {})
        assert sum(len(p["result"]) for p in plain.values()) >= 4
        for name in images:
            assert without_ids(unsure[name]["result"]) == without_ids(plain[name]["result"]), (
                model_conf,
                name,
            )
            assert 0.0 <= unsure[name]["score"] <= 1.0


class FixedHead:
    """Stands in for a trained timeline head: fixed per-frame probabilities for its labels."""

    labels = ("square", "circle")

    def __init__(self, probs: np.ndarray):
        self.probs = probs

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return self.probs[: len(features)]


def test_a_trained_timeline_head_is_scored_on_its_probabilities(make_settings):
    from control_models.timeline_labels import HeadSession

    config = video_view(
        '<TimelineLabels name="tl" toName="video" model_path="cand-cls.pt" model_task_score="uncertainty">'
        f"{LABELS}</TimelineLabels>"
    )
    (control,) = build_plan(config, make_settings()).controls
    head_probs = np.array([[0.9, 0.5], [0.1, 0.02]])  # (frames, head labels: square, circle)
    session = HeadSession(control, FixedHead(head_probs), ["circle", "square"])
    for number in (1, 2):
        session.add(number, np.zeros(8, np.float32), np.zeros((2, 2, 3), np.uint8))
    session.regions(2, 24.0)
    in_config_order = head_probs[:, [1, 0]]  # circle, square
    assert session.uncertainty() == pytest.approx(frame_label_uncertainty(in_config_order).mean())


def test_setup_of_a_config_with_nothing_to_predict_still_answers_a_version(make_settings):
    """/setup must not fail on such a config (Label Studio connects first); the environment decides."""
    from model import YOLOBackend

    text_only = '<View><Text name="t" value="$text"/><TextArea name="a" toName="t"/></View>'
    versions = {}
    for mode in ("confidence", "uncertainty"):
        backend = YOLOBackend(make_settings(task_score=mode))
        try:
            versions[mode] = backend.setup(text_only)
        finally:
            backend.close()
    assert versions["uncertainty"] == versions["confidence"] + "-uncertainty"
