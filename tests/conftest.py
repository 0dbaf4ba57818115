"""Shared fixtures: offline-built models with real class names, test images, an app to call.

No weights can be downloaded here, so every model is built from its Ultralytics YAML (the real
architecture, random weights) and saved under the default file name the backend asks for.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")  # before Ultralytics is imported anywhere
os.environ.setdefault("YOLO_AUTOINSTALL", "false")  # as start.sh and cli.py: never pip-install from a test

import cv2
import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHAPES_MODEL = PROJECT_ROOT / "models" / "shapes-yolov8n.pt"


def _dataset_names(file_name: str) -> dict[int, str]:
    from ultralytics.utils import ROOT

    data = yaml.safe_load((ROOT / "cfg" / "datasets" / file_name).read_text())
    return {int(k): str(v) for k, v in data["names"].items()}


def build_model(yaml_name: str, names: dict[int, str], target: Path) -> Path:
    """Save a randomly initialised YOLO of architecture `yaml_name` with class `names` at `target`."""
    from ultralytics import YOLO

    model = YOLO(yaml_name)
    model.model.names = names
    model.model.yaml["nc"] = len(names)
    # Released weights remember their training size (classifiers 224, others 640); predict uses it.
    model.ckpt = {"train_args": {"imgsz": 224 if model.task == "classify" else 640, "task": model.task}}
    target.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(target))
    return target


# File name the backend asks for by default -> (architecture, class names file)
DEFAULT_MODELS = {
    "yolov8m.pt": ("yolov8n.yaml", "coco.yaml"),  # the real default is yolov8m; n builds faster
    "yolov8n-seg.pt": ("yolov8n-seg.yaml", "coco.yaml"),
    "yolov8n-cls.pt": ("yolov8n-cls.yaml", "ImageNet.yaml"),
    "yolov8n-obb.pt": ("yolov8n-obb.yaml", "DOTAv1.yaml"),
    "yolov8n-pose.pt": ("yolov8n-pose.yaml", "coco-pose.yaml"),
}


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MODEL_ROOT holding every default model (random weights, real names) and the shapes model."""
    root = tmp_path_factory.mktemp("models")
    for file_name, (architecture, names_file) in DEFAULT_MODELS.items():
        build_model(architecture, _dataset_names(names_file), root / file_name)
    # VideoRectangle's default: the same n architecture and COCO names as the yolov8m.pt built above.
    shutil.copy(root / "yolov8m.pt", root / "yolov8n.pt")
    shutil.copy(SHAPES_MODEL, root / SHAPES_MODEL.name)
    return root


@pytest.fixture
def own_model_root(tmp_path: Path) -> Path:
    """A MODEL_ROOT of the test's own holding the shapes model: training tests publish versions there."""
    root = tmp_path / "models"
    root.mkdir()
    shutil.copy(SHAPES_MODEL, root / SHAPES_MODEL.name)
    return root


@pytest.fixture(scope="session")
def assets() -> Path:
    from ultralytics.utils import ASSETS

    return Path(ASSETS)


@pytest.fixture(scope="session")
def bus_image(assets: Path) -> Path:
    return assets / "bus.jpg"


@pytest.fixture
def stand_in(bus_image: Path):
    """The shared stand-in Label Studio (tests/label_studio_stand_in.py), serving bus.jpg as every upload."""
    from tests.label_studio_stand_in import StandInLabelStudio

    with StandInLabelStudio(bus_image.read_bytes()) as server:
        yield server


@pytest.fixture(scope="session")
def zidane_image(assets: Path) -> Path:
    return assets / "zidane.jpg"


@pytest.fixture
def make_settings(model_root: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, assets: Path):
    """Settings for tests: the offline model root, a private media cache, no env leaking in.

    Local media is refused by default; tests name files under pytest's temporary folders and Ultralytics'
    sample images, so those are ALLOWED_LOCAL_ROOTS here, unless `true_defaults=True` (security tests).
    """
    from core.settings import Settings

    test_roots = f"{tmp_path_factory.getbasetemp()}:{PROJECT_ROOT / 'tests' / 'fixtures'}:{assets}"

    def make(*, true_defaults: bool = False, **overrides):
        values = {
            "allowed_local_roots": "" if true_defaults else test_roots,
            "allowed_media_hosts": "",
            "allow_private_media": False,
            "model_root": model_root,
            "media_cache_dir": tmp_path / "media-cache",
            "allow_custom_model_path": True,
            "allow_model_download": False,
            "label_studio_url": "",
            "label_studio_api_key": "",
            "basic_auth_user": "",
            "basic_auth_pass": "",
            "torch_threads": 0,
            # Every core for the suite's job processes, as before JOB_TORCH_THREADS (its default, half of
            # them, would slow the training tests); test_jobs checks that the setting reaches a job.
            "job_torch_threads": os.cpu_count() or 1,
            "redis_url": "",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    """A real redis-server for the session (tests/redis_server.py)."""
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    """The session's Redis, emptied for this test."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def make_client(make_settings):
    """A TestClient over a fresh app; keyword arguments override settings."""
    from fastapi.testclient import TestClient

    from server.app import create_app

    clients = []

    def make(**overrides):
        client = TestClient(create_app(make_settings(**overrides)))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()


def image_size(path: Path) -> tuple[int, int]:
    height, width = cv2.imread(str(path)).shape[:2]
    return width, height


def assert_nearly_equal(actual, expected, tolerance: float = 1e-3, where: str = "") -> None:
    """Equal structures whose floats may differ by `tolerance` (several torch threads vary the last bits)."""
    if isinstance(expected, float) or isinstance(actual, float):
        assert abs(actual - expected) <= tolerance, f"{where}: {actual} != {expected}"
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), f"{where}: keys differ"
        for key in expected:
            assert_nearly_equal(actual[key], expected[key], tolerance, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: lengths differ"
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_nearly_equal(a, e, tolerance, f"{where}[{index}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def rectangle_annotation(
    label: str, box, width: int, height: int, from_name: str = "label", rotation: float = 0.0
) -> dict:
    """A Label Studio `rectanglelabels` result item for a pixel box (x1, y1, x2, y2) on a width x height image."""
    x1, y1, x2, y2 = box
    return {
        "from_name": from_name,
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": width,
        "original_height": height,
        "value": {
            "x": 100 * x1 / width,
            "y": 100 * y1 / height,
            "width": 100 * (x2 - x1) / width,
            "height": 100 * (y2 - y1) / height,
            "rotation": rotation,
            "rectanglelabels": [label],
        },
    }


class RecordingReporter:
    """A training job's reporter that keeps what the job said, for tests that run `TrainingRun` in-process."""

    def __init__(self, project: str, control: str):
        from training.jobs import Job

        self.job = Job(id="test", project=project, control=control)
        self.phases: list[str] = []
        self.epochs: list[tuple[int, int]] = []

    def phase(self, name: str) -> None:
        self.phases.append(name)

    def epoch(self, epoch: int, epochs: int, metrics: dict) -> None:
        self.epochs.append((epoch, epochs))
