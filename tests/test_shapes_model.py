"""The shipped shapes detector (``models/shapes-yolov8n.pt``) really finds the shapes drawn by ``tools/shapes.py``.

Images are drawn with seeds never used for training (train: 0, val: 1, see tools/train_shapes_model.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tools.shapes import CLASS_NAMES, draw_scene, draw_shapes_image  # noqa: E402

MODEL_PATH = REPO_ROOT / "models" / "shapes-yolov8n.pt"
TEST_SEED = 20240607
N_IMAGES = 12
CONF = 0.25  # boxes below this are not "confident"
MIN_IOU = 0.5


def iou(a, b) -> float:
    ix1, iy1, ix2, iy2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, ix2 - ix1) * max(0.0, iy2 - iy1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@pytest.fixture(scope="module")
def model():
    from ultralytics import YOLO

    assert MODEL_PATH.is_file(), f"missing {MODEL_PATH}; run tools/train_shapes_model.py"
    return YOLO(str(MODEL_PATH), task="detect")


def predict(model, image: np.ndarray) -> list[tuple[str, tuple[float, float, float, float], float]]:
    result = model.predict(image, conf=CONF, device="cpu", verbose=False)[0]
    names = result.names
    return [
        (names[int(c)], tuple(float(v) for v in xyxy), float(s))
        for xyxy, c, s in zip(
            result.boxes.xyxy.tolist(), result.boxes.cls.tolist(), result.boxes.conf.tolist(), strict=True
        )
    ]


def assert_matches(truth, preds, context: str) -> None:
    """Every true shape has a same-class prediction with IoU >= MIN_IOU; no unmatched confident boxes."""
    unmatched = list(range(len(preds)))
    for name, box in truth:
        candidates = [(iou(box, preds[j][1]), j) for j in unmatched if preds[j][0] == name]
        best_iou, best_j = max(candidates, default=(0.0, -1))
        assert best_iou >= MIN_IOU, (
            f"{context}: {name} at {box} not found (best IoU {best_iou:.2f}); {preds=}"
        )
        unmatched.remove(best_j)
    extras = [preds[j] for j in unmatched]
    assert not extras, f"{context}: extra confident boxes {extras}; {truth=}"


def test_model_metadata(model):
    assert MODEL_PATH.stat().st_size < 10_000_000
    assert model.task == "detect"
    assert dict(model.names) == dict(enumerate(CLASS_NAMES))


def test_detects_random_shapes(model):
    rng = np.random.default_rng(TEST_SEED)
    n_shapes = 0
    for i in range(N_IMAGES):
        image, truth = draw_shapes_image(rng)
        assert image.shape == (240, 320, 3)
        n_shapes += len(truth)
        assert_matches(truth, predict(model, image), f"image {i}")
    assert n_shapes >= N_IMAGES


def test_detects_each_class_in_explicit_scene(model):
    shapes = [
        ("circle", (30.0, 40.0, 100.0, 110.0), (40, 40, 220)),
        ("square", (140.0, 120.0, 200.0, 180.0), (230, 200, 30)),
        ("triangle", (220.0, 30.0, 300.0, 100.0), (20, 160, 20)),
    ]
    image = draw_scene(320, 240, shapes, background_seed=TEST_SEED)
    assert np.array_equal(image, draw_scene(320, 240, shapes, background_seed=TEST_SEED))  # deterministic
    assert_matches([(name, box) for name, box, _ in shapes], predict(model, image), "explicit scene")


def test_background_only_has_no_detections(model):
    image = draw_scene(320, 240, [], background_seed=TEST_SEED + 1)
    assert predict(model, image) == []
