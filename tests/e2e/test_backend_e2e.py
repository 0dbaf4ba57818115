"""Our backend, started with ``./start.sh``, driven through a real Label Studio 1.23.2 as a user would.

Every test creates its own project through Label Studio's API, uploads images as files (tasks then
point at ``/data/upload/...``, which the backend fetches with its personal access token), connects the
backend as the project's model and reads back what Label Studio stored. One Label Studio and one
backend serve the whole session (fixtures ``label_studio`` and ``yolo_backend`` in ``conftest.py``).

The default models are random-weight models with real class names (``model_root`` in
``tests/conftest.py``): their regions are checked for format, names, labels and range, not for
meaning, with thresholds low enough that boxes, keypoints and classes always appear. Geometry is
checked against ground truth with the shipped shapes detector on images drawn by ``tools/shapes.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from label_studio_sdk.label_interface import LabelInterface

from tests.conftest import SHAPES_MODEL, image_size

from .backend_server import PROJECT_ROOT, BackendServer
from .label_studio import LabelStudioAPI, LabelStudioServer

pytestmark = pytest.mark.e2e

SHAPES_SEED = 4242  # the shapes model was trained on seeds 0 and 1
MIN_IOU = 0.5


def image_config(control: str) -> str:
    return f'<View><Image name="image" value="$image"/>{control}</View>'


RECTANGLES = image_config(
    '<RectangleLabels name="label" toName="image" model_score_threshold="0.0001">'
    '<Label value="Person" predicted_values="person"/><Label value="Bus" predicted_values="bus"/>'
    "</RectangleLabels>"
)


CONSTANT_SEGMENT_MODEL = "constant-seg.pt"
CONSTANT_HALF_SIDE = 4  # its squares: 256 px at the 640 px inference size


@dataclass(frozen=True)
class TagCase:
    config: str
    region_type: str
    labels: frozenset[str]
    always_regions: bool  # random weights always give such regions at these thresholds


TAG_CASES = {
    "RectangleLabels": TagCase(RECTANGLES, "rectanglelabels", frozenset({"Person", "Bus"}), True),
    # Random segmentation weights may give no mask at all: these two use the constant-output model
    # (fixture `constant_segment_model`), whose squares always are regions.
    "PolygonLabels": TagCase(
        image_config(
            f'<PolygonLabels name="label" toName="image" model_path="{CONSTANT_SEGMENT_MODEL}" model_iou="0.05">'
            '<Label value="person"/><Label value="Bus" predicted_values="bus"/></PolygonLabels>'
        ),
        "polygonlabels",
        frozenset({"person", "Bus"}),
        True,
    ),
    "BrushLabels": TagCase(
        image_config(
            f'<BrushLabels name="label" toName="image" model_path="{CONSTANT_SEGMENT_MODEL}" model_iou="0.05">'
            '<Label value="person"/><Label value="Bus" predicted_values="bus"/></BrushLabels>'
        ),
        "brushlabels",
        frozenset({"person", "Bus"}),
        True,
    ),
    "Choices": TagCase(
        image_config(
            '<Choices name="label" toName="image" model_score_threshold="0.0">'
            '<Choice value="Bus" predicted_values="school bus,minibus,trolleybus"/>'
            '<Choice value="Jersey" predicted_values="jersey,sweatshirt"/></Choices>'
        ),
        "choices",
        frozenset({"Bus", "Jersey"}),
        True,
    ),
    "KeyPointLabels": TagCase(
        image_config(
            '<KeyPointLabels name="label" toName="image" model_score_threshold="0.0001" '
            'model_point_threshold="0">'
            '<Label value="nose" predicted_values="person" model_index="0"/>'
            '<Label value="left_eye" predicted_values="person" model_index="1"/></KeyPointLabels>'
        ),
        "keypointlabels",
        frozenset({"nose", "left_eye"}),
        True,
    ),
}


# -- helpers -------------------------------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def settled(read: Callable[[], int], quiet: float = 1.5, timeout: float = 20.0) -> int:
    """The value of a counter once it has not changed for `quiet` seconds (late webhooks arrive)."""
    deadline = time.monotonic() + timeout
    value, since = read(), time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        time.sleep(0.3)
        current = read()
        if current != value:
            value, since = current, time.monotonic()
    return value


def create_project(
    api: LabelStudioAPI, title: str, config: str, images: list[Path], data_key: str = "image"
) -> tuple[dict, list[dict]]:
    """A project with `images` (or videos) uploaded as files: (project, its tasks in their order)."""
    project = api.create_project(title, config)
    answer = api.import_files(project["id"], images)
    assert answer["task_count"] == len(images)
    by_name = {}
    for task in api.list_tasks(project["id"], all_fields=False):
        url = task["data"][data_key]
        # /data/upload/<project>/<8 hex>-<file name>
        assert url.startswith(f"/data/upload/{project['id']}/"), url
        by_name[url.rsplit("/", 1)[-1][9:]] = task
    return project, [by_name[image.name] for image in images]


def connect(api: LabelStudioAPI, project: dict, backend: BackendServer) -> str:
    """Connect the backend as the project's model; the model version Label Studio got from /setup."""
    ml = api.connect_ml_backend(project["id"], backend.url, title="YOLO")
    assert ml["readable_state"] == "Connected", ml
    label_config = api.get_project(project["id"])["label_config"]
    assert ml["model_version"] == backend.setup(label_config)
    return ml["model_version"]


def predictions_by_task(api: LabelStudioAPI, project: dict) -> dict[int, list[dict]]:
    by_task: dict[int, list[dict]] = {}
    for prediction in api.list_predictions(project_id=project["id"]):
        by_task.setdefault(prediction["task"], []).append(prediction)
    return by_task


def in_percent(*values: float) -> bool:
    return all(-1e-6 <= value <= 100 + 1e-6 for value in values)


def check_prediction(prediction: dict, case: TagCase, image: Path, model_version: str) -> None:
    """What Label Studio stored: names, labels from the config, geometry in range, the model version."""
    assert prediction["model_version"] == model_version
    errors = LabelInterface(case.config).validate_prediction(
        {"result": prediction["result"], "score": prediction["score"]}, return_errors=True
    )
    assert errors == [], errors[:5]
    width, height = image_size(image)
    for region in prediction["result"]:
        assert (region["from_name"], region["to_name"], region["type"]) == (
            "label",
            "image",
            case.region_type,
        )
        value = region["value"]
        assert set(value[case.region_type]) <= case.labels, value[case.region_type]
        assert 0.0 <= region["score"] <= 1.0
        if case.region_type == "choices":
            continue
        assert (region["original_width"], region["original_height"]) == (width, height)
        if case.region_type == "rectanglelabels":
            assert in_percent(value["x"], value["y"], value["width"], value["height"]), value
            assert in_percent(value["x"] + value["width"], value["y"] + value["height"]), value
        elif case.region_type == "polygonlabels":
            assert len(value["points"]) >= 3
            assert all(in_percent(x, y) for x, y in value["points"]), value["points"]
        elif case.region_type == "brushlabels":
            assert value["format"] == "rle" and value["rle"], value.get("format")
            assert all(isinstance(byte, int) and 0 <= byte <= 255 for byte in value["rle"])
        elif case.region_type == "keypointlabels":
            assert in_percent(value["x"], value["y"]), value


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# -- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory, bus_image: Path, zidane_image: Path) -> list[Path]:
    """Ultralytics' bus.jpg and zidane.jpg, under names of their own."""
    folder = tmp_path_factory.mktemp("photos")
    return [
        Path(shutil.copy(bus_image, folder / "bus.jpg")),
        Path(shutil.copy(zidane_image, folder / "zidane.jpg")),
    ]


@pytest.fixture(scope="module")
def constant_segment_model(model_root: Path) -> str:
    """A segmentation model in the backend's MODEL_ROOT whose every detection is a filled square of
    class 0 ("person"), whatever the image (tests/known_models.py)."""
    from tests.known_models import build_constant_segment_model

    build_constant_segment_model(
        model_root / CONSTANT_SEGMENT_MODEL, {0: "person", 1: "bus"}, CONSTANT_HALF_SIDE
    )
    return CONSTANT_SEGMENT_MODEL


@pytest.fixture(scope="module")
def photo_copies(photos: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], list[Path]]:
    """`n` image files with distinct names (``photo-0.jpg``, ...), cycling through the photos."""
    folder = tmp_path_factory.mktemp("copies")

    def copies(n: int) -> list[Path]:
        return [Path(shutil.copy(photos[i % len(photos)], folder / f"photo-{i}.jpg")) for i in range(n)]

    return copies


# -- retrieving predictions, per control tag -----------------------------------------------------------


@pytest.mark.parametrize("tag", list(TAG_CASES))
def test_retrieve_predictions_for_all_tasks(
    tag: str,
    label_studio: LabelStudioServer,
    yolo_backend: BackendServer,
    photos: list[Path],
    constant_segment_model: str,
) -> None:
    api = label_studio.api
    case = TAG_CASES[tag]
    project, tasks = create_project(api, f"e2e {tag}", case.config, photos)
    model_version = connect(api, project, yolo_backend)

    api.retrieve_predictions(project["id"])

    stored = predictions_by_task(api, project)
    assert sorted(stored) == sorted(task["id"] for task in tasks), "one prediction per task"
    for task, image in zip(tasks, photos, strict=True):
        [prediction] = stored[task["id"]]
        check_prediction(prediction, case, image, model_version)
        if case.always_regions:
            assert prediction["result"], f"{tag}: no regions for {image.name}"

    # Retrieving again: every task already has a prediction of this model version, so Label Studio
    # does not even call /predict, and stores nothing new.
    predict_calls = yolo_backend.requests_total("/predict")
    api.retrieve_predictions(project["id"])
    assert yolo_backend.requests_total("/predict") == predict_calls
    assert {task: [p["id"] for p in ps] for task, ps in predictions_by_task(api, project).items()} == {
        task: [p["id"] for p in ps] for task, ps in stored.items()
    }


def test_shapes_are_predicted_where_they_are(
    label_studio: LabelStudioServer, yolo_backend: BackendServer, tmp_path: Path
) -> None:
    """The shipped shapes detector through Label Studio: boxes land on the drawn shapes (IoU >= 0.5)."""
    from tools.shapes import draw_shapes_image

    assert SHAPES_MODEL.is_file(), f"missing {SHAPES_MODEL}; run tools/train_shapes_model.py"
    config = image_config(
        '<RectangleLabels name="label" toName="image" model_path="shapes-yolov8n.pt">'
        '<Label value="Circle" predicted_values="circle"/><Label value="Square" predicted_values="square"/>'
        '<Label value="Triangle" predicted_values="triangle"/></RectangleLabels>'
    )
    rng = np.random.default_rng(SHAPES_SEED)
    images, truths = [], []
    for i in range(3):
        image, shapes = draw_shapes_image(rng)
        path = tmp_path / f"shapes-{i}.png"
        cv2.imwrite(str(path), image)
        images.append(path)
        truths.append(shapes)
    api = label_studio.api
    project, tasks = create_project(api, "e2e shapes", config, images)
    model_version = connect(api, project, yolo_backend)

    api.retrieve_predictions(project["id"])

    stored = predictions_by_task(api, project)
    case = TagCase(config, "rectanglelabels", frozenset({"Circle", "Square", "Triangle"}), True)
    for task, image, shapes in zip(tasks, images, truths, strict=True):
        [prediction] = stored[task["id"]]
        check_prediction(prediction, case, image, model_version)
        width, height = image_size(image)
        found = []
        for region in prediction["result"]:
            value = region["value"]
            x1, y1 = value["x"] * width / 100, value["y"] * height / 100
            box = (x1, y1, x1 + value["width"] * width / 100, y1 + value["height"] * height / 100)
            found.append((value["rectanglelabels"][0].lower(), box))
        assert len(found) == len(shapes), (image.name, found, shapes)
        for name, box in shapes:
            best = max((iou(box, other) for label, other in found if label == name), default=0.0)
            assert best >= MIN_IOU, (image.name, name, box, found)


# -- the other ways Label Studio reaches the backend ---------------------------------------------------


def test_opening_a_task_predicts_it(
    label_studio: LabelStudioServer, yolo_backend: BackendServer, photos: list[Path]
) -> None:
    """Opening a task with no prediction (``GET /api/tasks/ID``) makes Label Studio ask /predict."""
    api = label_studio.api
    project, [task] = create_project(api, "e2e open task", RECTANGLES, photos[:1])
    model_version = connect(api, project, yolo_backend)
    assert api.list_predictions(task_id=task["id"]) == []

    predict_calls = yolo_backend.requests_total("/predict")
    opened = api.get_task(task["id"])
    assert yolo_backend.requests_total("/predict") == predict_calls + 1
    [shown] = opened["predictions"]
    [stored] = api.list_predictions(task_id=task["id"])
    assert shown["id"] == stored["id"]
    check_prediction(stored, TAG_CASES["RectangleLabels"], photos[0], model_version)
    assert stored["result"]

    # Opened again: it has a prediction of this model version now, so the backend is not asked.
    api.get_task(task["id"])
    assert yolo_backend.requests_total("/predict") == predict_calls + 1
    assert len(api.list_predictions(task_id=task["id"])) == 1


def test_an_annotation_reaches_the_webhook(
    label_studio: LabelStudioServer, yolo_backend: BackendServer, photos: list[Path]
) -> None:
    api = label_studio.api
    project, [task] = create_project(api, "e2e webhook", RECTANGLES, photos[:1])
    connect(api, project, yolo_backend)
    [webhook] = api.list_webhooks(project["id"])
    assert webhook["url"] == f"{yolo_backend.url}/webhook"

    def webhooks() -> int:
        return yolo_backend.requests_total("/webhook")

    before = settled(webhooks)
    width, height = image_size(photos[0])
    region = {
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": {
            "x": 10.0,
            "y": 20.0,
            "width": 30.0,
            "height": 40.0,
            "rotation": 0,
            "rectanglelabels": ["Bus"],
        },
    }
    api.create_annotation(task["id"], [region])
    wait_until(lambda: webhooks() > before, what="the ANNOTATION_CREATED webhook")
    assert settled(webhooks) == before + 1, "one event for one annotation"
    assert yolo_backend.requests_total("/webhook", 422) == 0
    assert yolo_backend.requests_total("/webhook", 500) == 0


# -- a failing backend case, as Label Studio sees it ---------------------------------------------------


def test_a_deleted_image_spoils_only_its_task(
    label_studio: LabelStudioServer, yolo_backend: BackendServer, photo_copies
) -> None:
    """One of three uploaded files is deleted (Label Studio then answers 500 for its URL).

    The other two tasks get their predictions; Label Studio stores nothing for the broken one (no
    empty prediction that would hide it), so the next retrieve asks for that task again.
    """
    api = label_studio.api
    images = photo_copies(3)
    project, tasks = create_project(api, "e2e deleted image", RECTANGLES, images)
    broken = tasks[1]
    uploads = {f"/data/{upload['file']}": upload["id"] for upload in api.list_file_uploads(project["id"])}
    api.delete_file_upload(uploads[broken["data"]["image"]])
    # Label Studio 1.23.2 answers 500 for the URL of a deleted upload (the task stays)
    assert api.fetch(broken["data"]["image"]).status_code != 200
    model_version = connect(api, project, yolo_backend)

    before = yolo_backend.metrics()
    api.retrieve_predictions(project["id"])
    after = yolo_backend.metrics()

    assert after["yolo_backend_tasks_total"] - before["yolo_backend_tasks_total"] == 3
    assert after["yolo_backend_task_failures_total"] - before["yolo_backend_task_failures_total"] == 1
    stored = predictions_by_task(api, project)
    assert sorted(stored) == sorted([tasks[0]["id"], tasks[2]["id"]])
    for task, image in ((tasks[0], images[0]), (tasks[2], images[2])):
        [prediction] = stored[task["id"]]
        check_prediction(prediction, TAG_CASES["RectangleLabels"], image, model_version)
        assert prediction["result"]
    assert api.list_predictions(task_id=broken["id"]) == []

    # Retrieving again sends only the broken task, which still gets nothing stored.
    api.retrieve_predictions(project["id"])
    again = yolo_backend.metrics()
    assert again["yolo_backend_tasks_total"] - after["yolo_backend_tasks_total"] == 1
    assert again["yolo_backend_task_failures_total"] - after["yolo_backend_task_failures_total"] == 1
    assert {task: len(ps) for task, ps in predictions_by_task(api, project).items()} == {
        tasks[0]["id"]: 1,
        tasks[2]["id"]: 1,
    }
    assert "Unhandled error" not in yolo_backend.log_text()


# -- cli.py against the same Label Studio --------------------------------------------------------------


def test_cli_uploads_predictions(
    label_studio: LabelStudioServer,
    yolo_backend: BackendServer,
    model_root: Path,
    photos: list[Path],
    tmp_path: Path,
) -> None:
    """``python cli.py --ls-url --ls-api-key --project --tasks`` stores one prediction per task.

    Its predictions carry the model version the server reports, so connecting the server afterwards
    and retrieving predictions asks it for nothing: no task is predicted twice.
    """
    api = label_studio.api
    project, tasks = create_project(api, "e2e cli", RECTANGLES, photos)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "MODEL_"))}
    env.update(
        {
            "MODEL_ROOT": str(model_root),
            "MEDIA_CACHE_DIR": str(tmp_path / "media-cache"),
            "ALLOW_MODEL_DOWNLOAD": "false",
            "YOLO_OFFLINE": "1",
        }
    )
    command = [
        sys.executable,
        "cli.py",
        "--ls-url",
        label_studio.url,
        "--ls-api-key",
        label_studio.personal_access_token,
        "--project",
        str(project["id"]),
        "--tasks",
        ",".join(str(task["id"]) for task in tasks),
    ]
    done = subprocess.run(
        command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"cli.py exited {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"

    model_version = yolo_backend.setup(api.get_project(project["id"])["label_config"])
    stored = predictions_by_task(api, project)
    assert sorted(stored) == sorted(task["id"] for task in tasks)
    for task, image in zip(tasks, photos, strict=True):
        [prediction] = stored[task["id"]]
        check_prediction(prediction, TAG_CASES["RectangleLabels"], image, model_version)
        assert prediction["result"]

    assert connect(api, project, yolo_backend) == model_version
    predict_calls = yolo_backend.requests_total("/predict")
    api.retrieve_predictions(project["id"])
    assert yolo_backend.requests_total("/predict") == predict_calls
    assert {task: len(ps) for task, ps in predictions_by_task(api, project).items()} == {
        task["id"]: 1 for task in tasks
    }


# -- the other tags, on models whose output is known -------------------------------------------------------

DARK, BRIGHT = 20, 235


def retrieved(api: LabelStudioAPI, project: dict, tasks: list[dict], config: str, model_version: str) -> list:
    """Retrieve predictions; one stored per task, valid for `config`, non-empty: their results in task order."""
    api.retrieve_predictions(project["id"])
    stored = predictions_by_task(api, project)
    assert sorted(stored) == sorted(task["id"] for task in tasks), "one prediction per task"
    results = []
    for task in tasks:
        [prediction] = stored[task["id"]]
        assert prediction["model_version"] == model_version
        errors = LabelInterface(config).validate_prediction(
            {"result": prediction["result"], "score": prediction["score"]}, return_errors=True
        )
        assert errors == [], errors[:5]
        assert prediction["result"], f"no regions for task {task['id']}"
        results.append(prediction["result"])
    return results


@pytest.fixture(scope="module")
def light_classifier(model_root: Path) -> str:
    """`light-cls.pt` in MODEL_ROOT: classes "dark" and "bright", built to tell grey frames apart."""
    from tests.known_models import build_two_class_classifier

    if not (model_root / "light-cls.pt").exists():
        build_two_class_classifier(model_root / "light-cls.pt", DARK, BRIGHT, (240, 320))
    return "light-cls.pt"


def stored_regions(
    label_studio: LabelStudioServer, backend: BackendServer, title: str, config: str, photos: list[Path]
) -> Iterator[tuple[list[dict], int, int]]:
    """A project of `photos` connected to `backend`: per photo, the regions Label Studio stored, and its size."""
    api = label_studio.api
    project, tasks = create_project(api, title, config, photos)
    model_version = connect(api, project, backend)
    for regions, image in zip(retrieved(api, project, tasks, config, model_version), photos, strict=True):
        yield regions, *image_size(image)


def constant_square_side(half_side: int, width: int, height: int) -> float:
    """The side in image pixels of a `tests.known_models` constant square: the image is letterboxed to
    640 px on its longer side, where the square is 2 * half_side * 32 px."""
    return 2 * half_side * 32 * max(width, height) / 640


def test_oriented_boxes_from_a_model_with_known_output(
    label_studio: LabelStudioServer, yolo_backend: BackendServer, model_root: Path, photos: list[Path]
) -> None:
    """RectangleLabels model_obb="true" on an OBB model whose every box is a square of 256 px (at the
    640 px inference size) turned by 0.2 rad: Label Studio stores squares of that size and rotation."""
    from tests.known_models import build_constant_obb_model

    angle, half_side = 0.2, 4
    build_constant_obb_model(model_root / "constant-obb.pt", {0: "plane", 1: "ship"}, half_side, angle)
    config = image_config(
        '<RectangleLabels name="label" toName="image" model_obb="true" model_path="constant-obb.pt">'
        '<Label value="Plane" predicted_values="plane"/><Label value="ship"/></RectangleLabels>'
    )
    for regions, width, height in stored_regions(label_studio, yolo_backend, "e2e obb", config, photos):
        side = constant_square_side(half_side, width, height)
        for region in regions:
            value = region["value"]
            assert value["rectanglelabels"] == ["Plane"] and region["type"] == "rectanglelabels"
            # One square, four descriptions (a pivot per corner): the rotation is the angle modulo 90 degrees.
            assert value["rotation"] % 90 == pytest.approx(np.degrees(angle), abs=0.1), value
            assert value["width"] * width / 100 == pytest.approx(side, rel=0.01), (value, side)
            assert value["height"] * height / 100 == pytest.approx(side, rel=0.01), (value, side)
            assert in_percent(value["x"], value["y"]), value


def test_polygons_and_brush_masks_from_a_model_with_known_output(
    label_studio: LabelStudioServer,
    yolo_backend: BackendServer,
    constant_segment_model: str,
    photos: list[Path],
) -> None:
    """PolygonLabels and BrushLabels on one segmentation model whose every detection is a square of
    256 px (at the 640 px inference size) with a mask filling it: Label Studio stores, for each region,
    a polygon that is that square and a brush mask that is a filled square of that size."""
    from label_studio_sdk.converter.brush import decode_rle

    half_side = CONSTANT_HALF_SIDE
    config = image_config(
        f'<PolygonLabels name="outline" toName="image" model_path="{CONSTANT_SEGMENT_MODEL}" model_iou="0.05">'
        '<Label value="Person" predicted_values="person"/><Label value="bus"/></PolygonLabels>'
        f'<BrushLabels name="mask" toName="image" model_path="{CONSTANT_SEGMENT_MODEL}" model_iou="0.05">'
        '<Label value="Person" predicted_values="person"/><Label value="bus"/></BrushLabels>'
    )
    for regions, width, height in stored_regions(label_studio, yolo_backend, "e2e segment", config, photos):
        side = constant_square_side(half_side, width, height)
        polygons = [r for r in regions if r["type"] == "polygonlabels"]
        masks = [r for r in regions if r["type"] == "brushlabels"]
        assert polygons and len(polygons) == len(masks), [r["type"] for r in regions]
        outlines = []  # each polygon's box in pixels (x0, y0, x1, y1)
        for region in polygons:
            assert region["value"]["polygonlabels"] == ["Person"]
            points = np.array(region["value"]["points"]) * [width / 100, height / 100]
            assert in_percent(*np.ravel(region["value"]["points"])), region["value"]
            spans = points.max(axis=0) - points.min(axis=0) + 1  # boxes at the image edge are cut
            assert (spans <= side + 2).all() and spans.max() >= min(side, width, height) / 2, (spans, side)
            assert len({round(x) for x in points[:, 0]}) == 2 and len({round(y) for y in points[:, 1]}) == 2
            outlines.append((*points.min(axis=0), *points.max(axis=0)))
        for region in masks:
            assert region["value"]["brushlabels"] == ["Person"] and region["value"]["format"] == "rle"
            alpha = decode_rle(region["value"]["rle"]).reshape(height, width, 4)[:, :, 3] > 0
            rows, columns = np.nonzero(alpha)
            box_area = (np.ptp(rows) + 1) * (np.ptp(columns) + 1)
            assert alpha.sum() == box_area, "the mask is one filled square"  # fills its box
            assert np.ptp(rows) + 1 <= side + 2 and np.ptp(columns) + 1 <= side + 2
            square = (columns.min(), rows.min(), columns.max(), rows.max())
            assert any(np.allclose(square, outline, atol=2) for outline in outlines), square  # same place


def test_taxonomy_from_a_classifier_built_to_tell_dark_from_bright(
    label_studio: LabelStudioServer, yolo_backend: BackendServer, light_classifier: str, tmp_path: Path
) -> None:
    images = []
    for name, level in (("dark", DARK), ("bright", BRIGHT)):
        images.append(tmp_path / f"{name}.png")
        cv2.imwrite(str(images[-1]), np.full((240, 320, 3), level, np.uint8))
    config = image_config(
        f'<Taxonomy name="label" toName="image" model_path="{light_classifier}"><Choice value="Light">'
        '<Choice value="Dark" predicted_values="dark"/><Choice value="Bright" predicted_values="bright"/>'
        "</Choice></Taxonomy>"
    )
    api = label_studio.api
    project, tasks = create_project(api, "e2e taxonomy", config, images)
    model_version = connect(api, project, yolo_backend)
    results = retrieved(api, project, tasks, config, model_version)
    assert [[r["value"]["taxonomy"] for r in regions] for regions in results] == [
        [[["Light", "Dark"]]],
        [[["Light", "Bright"]]],
    ]


def write_video(path: Path, frames: list[np.ndarray], fps: float = 20.0) -> Path:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def test_video_rectangles_track_the_moving_shapes(
    label_studio: LabelStudioServer, yolo_backend: BackendServer, tmp_path: Path
) -> None:
    """VideoRectangle with the shapes detector on a video of a circle moving right and a square moving
    left: Label Studio stores one track per shape, following it."""
    from tools.shapes import draw_scene

    def boxes(i: int) -> dict[str, tuple[float, float, float, float]]:
        return {
            "circle": (20.0 + 5 * i, 40.0, 76.0 + 5 * i, 96.0),
            "square": (250.0 - 4 * i, 140.0, 300.0 - 4 * i, 190.0),
        }

    colours = {"circle": (30, 30, 230), "square": (230, 60, 20)}
    frames = [
        draw_scene(320, 240, [(name, box, colours[name]) for name, box in boxes(i).items()], 7)
        for i in range(30)
    ]
    video = write_video(tmp_path / "shapes.mp4", frames)
    config = (
        '<View><Video name="video" value="$video" frameRate="20"/>'
        '<Labels name="videoLabels" toName="video"><Label value="circle"/><Label value="square"/>'
        '<Label value="triangle"/></Labels>'
        '<VideoRectangle name="box" toName="video" model_path="shapes-yolov8n.pt"/></View>'
    )
    api = label_studio.api
    project, tasks = create_project(api, "e2e video rectangles", config, [video], data_key="video")
    model_version = connect(api, project, yolo_backend)
    [regions] = retrieved(api, project, tasks, config, model_version)
    assert sorted(r["value"]["labels"][0] for r in regions) == ["circle", "square"]
    for region in regions:
        assert region["type"] == "videorectangle" and region["value"]["framesCount"] == len(frames)
        truth = region["value"]["labels"][0]
        overlaps = []
        for keyframe in region["value"]["sequence"]:
            x, y = keyframe["x"] * 320 / 100, keyframe["y"] * 240 / 100
            box = (x, y, x + keyframe["width"] * 320 / 100, y + keyframe["height"] * 240 / 100)
            overlaps.append(iou(box, boxes(keyframe["frame"] - 1)[truth]))
        assert sum(o >= MIN_IOU for o in overlaps) >= 0.9 * len(frames), (truth, overlaps)


def test_timeline_labels_are_the_dark_and_bright_runs(
    label_studio: LabelStudioServer, yolo_backend: BackendServer, light_classifier: str, tmp_path: Path
) -> None:
    levels = [DARK] * 10 + [BRIGHT] * 12 + [DARK] * 8
    video = write_video(tmp_path / "light.mp4", [np.full((240, 320, 3), level, np.uint8) for level in levels])
    config = (
        '<View><Video name="video" value="$video" frameRate="20"/>'
        f'<TimelineLabels name="timeline" toName="video" model_path="{light_classifier}" '
        'model_score_threshold="0.5"><Label value="dark"/><Label value="bright"/></TimelineLabels></View>'
    )
    api = label_studio.api
    project, tasks = create_project(api, "e2e timeline", config, [video], data_key="video")
    model_version = connect(api, project, yolo_backend)
    [regions] = retrieved(api, project, tasks, config, model_version)
    found = sorted(
        (r["value"]["ranges"][0]["start"], r["value"]["ranges"][0]["end"], r["value"]["timelinelabels"][0])
        for r in regions
    )
    assert found == [(1, 10, "dark"), (11, 22, "bright"), (23, 30, "dark")]
