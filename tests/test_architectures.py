"""YOLOv8, YOLO11 and YOLO26 through /predict for every image tag and both video tags, on models of
each architecture (built from Ultralytics' YAMLs) whose output is known by construction.

`tests/known_models.py` sets each model's head so that every cell of the stride-32 grid predicts a
square of side 64 px centred on the cell, of class 0 ("thing"): masks filling the squares, OBB squares
turned by ANGLE, keypoint 0 at each centre and 1 at each top-left corner. The images are 256x192 and
the models predict at 256 px, so there is no letterbox: the truth is the 8 x 6 grid of squares. YOLOv8
and YOLO11 keep them through NMS; YOLO26 predicts NMS-free (its one-to-one head, top-k).
The classifiers are built to tell a dark image from a bright one.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.known_models import (
    build_constant_detect_model,
    build_constant_obb_model,
    build_constant_pose_model,
    build_constant_segment_model,
    build_two_class_classifier,
)
from tests.test_server import assert_valid, expected_corners, percent_box, predict, rotated_corners

ARCHITECTURES = ["yolov8n", "yolo11n", "yolo26n"]
W, H, IMGSZ, HALF_SIDE = 256, 192, 256, 1
ANGLE = 0.3
DARK, BRIGHT = 20, 235
NAMES = {0: "thing", 1: "other"}


def squares() -> list[tuple[float, float, float, float]]:
    """The truth: one 64 px square per 32 px grid cell, centred on it (unclipped)."""
    side = 2 * HALF_SIDE * 32
    centres = [(32 * i + 16, 32 * j + 16) for i in range(W // 32) for j in range(H // 32)]
    return [(x - side / 2, y - side / 2, x + side / 2, y + side / 2) for x, y in centres]


def clipped(box) -> tuple[float, ...]:
    x1, y1, x2, y2 = box
    return (max(x1, 0), max(y1, 0), min(x2, W), min(y2, H))


@pytest.fixture(scope="module", params=ARCHITECTURES)
def arch_models(request, model_root: Path) -> str:
    """Known-output models of one architecture in MODEL_ROOT, named `<arch>-<kind>.pt`; the arch."""
    arch = request.param
    if not (model_root / f"{arch}-known-cls.pt").exists():
        build_constant_detect_model(model_root / f"{arch}-known.pt", NAMES, HALF_SIDE, f"{arch}.yaml", IMGSZ)
        build_constant_obb_model(
            model_root / f"{arch}-known-obb.pt", NAMES, HALF_SIDE, ANGLE, f"{arch}-obb.yaml", IMGSZ
        )
        build_constant_segment_model(
            model_root / f"{arch}-known-seg.pt", NAMES, HALF_SIDE, f"{arch}-seg.yaml", IMGSZ
        )
        build_constant_pose_model(
            model_root / f"{arch}-known-pose.pt", {0: "person"}, HALF_SIDE, f"{arch}-pose.yaml", IMGSZ
        )
        build_two_class_classifier(
            model_root / f"{arch}-known-cls.pt", DARK, BRIGHT, (H, W), f"{arch}-cls.yaml"
        )
    return arch


def every_tag_config(arch: str) -> str:
    labels = '<Label value="Thing" predicted_values="thing"/><Label value="other"/>'
    light = '<Choice value="Dark" predicted_values="dark"/><Choice value="Bright" predicted_values="bright"/>'
    return (
        '<View><Image name="image" value="$image"/>'
        f'<RectangleLabels name="box" toName="image" model_path="{arch}-known.pt">{labels}</RectangleLabels>'
        f'<RectangleLabels name="obb" toName="image" model_obb="true" model_path="{arch}-known-obb.pt">'
        f"{labels}</RectangleLabels>"
        f'<PolygonLabels name="poly" toName="image" model_path="{arch}-known-seg.pt">{labels}</PolygonLabels>'
        f'<BrushLabels name="brush" toName="image" model_path="{arch}-known-seg.pt">{labels}</BrushLabels>'
        f'<KeyPointLabels name="kp" toName="image" model_path="{arch}-known-pose.pt" model_add_bboxes="false"'
        ' model_point_threshold="0.5"><Label value="centre" predicted_values="person" model_index="0"/>'
        '<Label value="corner" predicted_values="person" model_index="1"/></KeyPointLabels>'
        f'<Choices name="cls" toName="image" model_path="{arch}-known-cls.pt">{light}</Choices>'
        f'<Taxonomy name="tax" toName="image" model_path="{arch}-known-cls.pt"><Choice value="Light">{light}'
        "</Choice></Taxonomy></View>"
    )


def test_every_image_tag_gives_the_known_regions(arch_models, make_client, tmp_path):
    from label_studio_sdk.converter.brush import decode_rle

    arch = arch_models
    config = every_tag_config(arch)
    images = []
    for name, level in (("dark", DARK), ("bright", BRIGHT)):
        images.append(tmp_path / f"{name}.png")
        cv2.imwrite(str(images[-1]), np.full((H, W, 3), level, np.uint8))
    client = make_client()
    body = predict(client, config, *images)
    assert "errors" not in body, body
    truth = sorted(clipped(box) for box in squares())
    for prediction, light in zip(body["results"], ("Dark", "Bright"), strict=True):
        assert_valid(config, prediction)
        regions: dict[str, list[dict]] = {}
        for region in prediction["result"]:
            regions.setdefault(region["from_name"], []).append(region)

        boxes = [percent_box(r["value"], W, H) for r in regions["box"]]
        assert {label for r in regions["box"] for label in r["value"]["rectanglelabels"]} == {"Thing"}
        assert sorted(tuple(np.round(b, 2)) for b in boxes) == truth, arch

        oriented = sorted(rotated_corners(r["value"], W, H) for r in regions["obb"])
        assert oriented == sorted(expected_corners(box, ANGLE) for box in squares()), arch

        outlines = []
        for region in regions["poly"]:
            points = np.array(region["value"]["points"]) * [W / 100, H / 100]
            outlines.append((*points.min(axis=0), *(points.max(axis=0) + 1)))
        assert len(outlines) == len(truth), arch
        for found, true in zip(sorted(outlines), truth, strict=True):
            assert found == pytest.approx(true, abs=1.5), (arch, found, true)

        masks = []
        for region in regions["brush"]:
            painted = decode_rle(region["value"]["rle"]).reshape(H, W, 4)[..., 3] > 0
            ys, xs = np.nonzero(painted)
            assert painted.sum() == (np.ptp(xs) + 1) * (np.ptp(ys) + 1), "a filled square"
            masks.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
        assert len(masks) == len(truth), arch
        for found, true in zip(sorted(masks), truth, strict=True):
            assert found == pytest.approx(true, abs=1), (arch, found, true)

        points = sorted(
            (
                r["value"]["keypointlabels"][0],
                round(r["value"]["x"] * W / 100, 1),
                round(r["value"]["y"] * H / 100, 1),
            )
            for r in regions["kp"]
        )
        expected_points = sorted(
            [("centre", (x1 + x2) / 2, (y1 + y2) / 2) for x1, y1, x2, y2 in squares()]
            + [("corner", max(x1, 0.0), max(y1, 0.0)) for x1, y1, _, _ in squares()]
        )
        assert points == expected_points, arch

        (choice,) = regions["cls"]
        assert choice["value"]["choices"] == [light], arch
        (taxonomy,) = regions["tax"]
        assert taxonomy["value"]["taxonomy"] == [["Light", light]], arch


VIDEO_FRAMES, FPS = 12, 10.0


def test_both_video_tags_give_the_known_tracks_and_runs(arch_models, make_client, tmp_path):
    """VideoRectangle: one track per square, standing still in every frame; TimelineLabels: the dark and
    bright runs of the video (6 frames each)."""
    arch = arch_models
    video = tmp_path / "light.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    for index in range(VIDEO_FRAMES):
        writer.write(np.full((H, W, 3), DARK if index < VIDEO_FRAMES // 2 else BRIGHT, np.uint8))
    writer.release()
    config = f"""
<View>
  <Video name="video" value="$video"/>
  <Labels name="videoLabels" toName="video"><Label value="Thing" predicted_values="thing"/></Labels>
  <VideoRectangle name="box" toName="video" model_path="{arch}-known.pt"/>
  <TimelineLabels name="timeline" toName="video" model_path="{arch}-known-cls.pt" model_score_threshold="0.5">
    <Label value="dark"/><Label value="bright"/>
  </TimelineLabels>
</View>"""
    response = make_client().post(
        "/predict", json={"tasks": [{"id": 1, "data": {"video": str(video)}}], "label_config": config}
    )
    assert response.status_code == 200, response.text
    regions = response.json()["results"][0]["result"]
    assert_valid(config, {"result": regions})
    tracks = [r for r in regions if r["type"] == "videorectangle"]
    tracked = []
    for track in tracks:
        sequence = [k for k in track["value"]["sequence"] if k["enabled"]]
        assert len(sequence) >= VIDEO_FRAMES - 1, (arch, len(sequence))
        keyframes = {
            tuple(np.round(percent_box(k, W, H), 1)) for k in track["value"]["sequence"]
        }  # one square, standing still
        assert len(keyframes) == 1, (arch, keyframes)
        tracked.append(keyframes.pop())
    assert sorted(tracked) == sorted(tuple(np.round(b, 1)) for b in map(clipped, squares())), arch
    runs = [
        (r["value"]["timelinelabels"][0], r["value"]["ranges"][0]["start"], r["value"]["ranges"][0]["end"])
        for r in regions
        if r["type"] == "timelinelabels"
    ]
    assert runs == [("dark", 1, 6), ("bright", 7, 12)], arch


def test_yolo26_serves_its_nms_free_head_even_when_its_file_says_otherwise(model_root, make_client, tmp_path):
    """Ultralytics' trainer saves fine-tuned YOLO26 weights with the one-to-many (NMS) head selected.
    Here the two heads disagree (one-to-one: "thing", one-to-many: "other"): the backend serves the
    one-to-one head, as the released model it was fine-tuned from does (inference/heads.py)."""
    import torch
    from ultralytics import YOLO

    target = build_constant_detect_model(
        model_root / "yolo26n-nms-saved.pt", NAMES, HALF_SIDE, "yolo26n.yaml", IMGSZ
    )
    model = YOLO(str(target))
    head = model.model.model[-1]
    with torch.no_grad():
        head.cv3[head.nl - 1][-1].bias.copy_(torch.tensor([-20.0, 5.0]))  # one-to-many: class 1
    model.model.end2end = False
    model.save(str(target))
    image = tmp_path / "grey.png"
    cv2.imwrite(str(image), np.full((H, W, 3), 127, np.uint8))
    raw = YOLO(str(target)).predict(str(image), verbose=False)[0]
    assert set(raw.boxes.cls.tolist()) == {1.0}  # the file alone predicts through NMS
    config = (
        '<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image" '
        'model_path="yolo26n-nms-saved.pt"><Label value="thing"/><Label value="other"/></RectangleLabels></View>'
    )
    (prediction,) = predict(make_client(), config, image)["results"]
    assert {r["value"]["rectanglelabels"][0] for r in prediction["result"]} == {"thing"}
    assert len(prediction["result"]) == 48
