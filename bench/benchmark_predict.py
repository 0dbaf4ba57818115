"""Throughput of /predict against raw Ultralytics, measured in one run on this machine.

    python bench/benchmark_predict.py [--arch yolov8m] [--images 48] [--repeat 2]
    python bench/benchmark_predict.py --arch yolov8n yolo11n yolo26n [--imgsz 320] [--images 16]

Prints images/s for:
- raw Ultralytics with every core (torch threads = cores), one `predict` call per image;
- raw Ultralytics with every core, batched calls;
- the official example's setting: Ultralytics' default thread cap (min(8, cores - 1)), one call per image;
- this backend through HTTP (`POST /predict` with all tasks, images read from disk by the backend);
and the ratios against the first line. With several `--arch` values (e.g. yolov8n yolo11n yolo26n) it
compares the families instead, in one run: per architecture, raw Ultralytics batched, and this backend's
`/predict` on the `.pt` and on its calibrated OpenVINO INT8 export (`model_format="openvino-int8"`,
calibrated on the benchmark's own images; the accuracy check is off, the weights being random).
Weights are random (built from the YAML, as nothing can be
downloaded here): speed depends on the architecture, not the weights; conf is the same everywhere.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2
import yaml

CONF = 0.25


def build_model(arch: str, target: Path, imgsz: int = 640) -> Path:
    from ultralytics import YOLO
    from ultralytics.utils import ROOT

    names = yaml.safe_load((ROOT / "cfg" / "datasets" / "coco.yaml").read_text())["names"]
    model = YOLO(f"{arch}.yaml")
    model.model.names = {int(k): v for k, v in names.items()}
    if getattr(model.model.model[-1], "one2one_cv2", None) is not None:
        model.model.end2end = True  # YOLO26: NMS-free, as its released weights predict
    model.ckpt = {"train_args": {"imgsz": imgsz, "task": model.task}}  # the size the backend predicts at
    model.save(str(target))
    return target


def make_images(folder: Path, count: int) -> list[Path]:
    from ultralytics.utils import ASSETS

    sources = [cv2.imread(str(ASSETS / "bus.jpg")), cv2.imread(str(ASSETS / "zidane.jpg"))]
    paths = []
    for i in range(count):
        image = sources[i % 2]
        if i % 4 >= 2:  # vary sizes a little, as real projects do
            image = cv2.resize(image, None, fx=0.75, fy=0.75)
        path = folder / f"image-{i:04d}.jpg"
        cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


def timed(function, repeat: int) -> float:
    """Best wall time of `repeat` runs (after one warm-up run outside the timing)."""
    function()
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--arch",
        nargs="+",
        default=["yolov8m"],
        help="Ultralytics architecture YAML name(s) (default yolov8m); several compare the families, "
        "e.g. yolov8n yolo11n yolo26n",
    )
    parser.add_argument("--imgsz", type=int, default=640, help="inference size the models predict at")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=2)
    return parser.parse_args()


def raw_figures(weights: Path, paths: list[Path], repeat: int) -> dict[str, float]:
    """Seconds of raw Ultralytics calls: every core one by one and batched, then its own thread cap."""
    import torch
    from ultralytics import YOLO
    from ultralytics.utils import NUM_THREADS

    cores = os.cpu_count() or 1
    capped_threads = NUM_THREADS  # what Ultralytics sets when it sets up a predictor: min(8, cores - 1)
    model = YOLO(str(weights))
    # predictor set-up caps threads; done once here
    model.predict(str(paths[0]), conf=CONF, verbose=False)

    def raw_one_by_one(threads: int):
        torch.set_num_threads(threads)
        for path in paths:
            model.predict(str(path), conf=CONF, verbose=False)

    def raw_batched(threads: int):
        torch.set_num_threads(threads)
        for start in range(0, len(paths), 8):
            model.predict([str(p) for p in paths[start : start + 8]], conf=CONF, verbose=False)

    return {
        f"raw Ultralytics, {cores} threads, one call per image": timed(lambda: raw_one_by_one(cores), repeat),
        f"raw Ultralytics, {cores} threads, batches of 8": timed(lambda: raw_batched(cores), repeat),
        f"official example setting, {capped_threads} thread(s), one call per image": timed(
            lambda: raw_one_by_one(capped_threads), repeat
        ),
    }


@contextmanager
def workspace(arch: str, images: int, imgsz: int = 640) -> Iterator[tuple[Path, Path, list[Path]]]:
    """A temporary folder with a model of `arch` in its `models/` and `images` test images: (folder,
    weights, image paths); removed afterwards."""
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        (work / "models").mkdir()
        weights = build_model(arch, work / "models" / f"{arch}.pt", imgsz)
        yield work, weights, make_images(work, images)


def backend_settings(work: Path, model_root: Path, **overrides: Any) -> Any:
    """The backend's Settings for a benchmark: its models in `model_root`, images and cache in `work`."""
    from core.settings import Settings

    return Settings(
        _env_file=None,
        model_root=model_root,
        media_cache_dir=work / "cache",
        allowed_local_roots=str(work),  # the tasks name images written there
        allow_custom_model_path=True,
        allow_model_download=False,
        **overrides,
    )


def detector_config(weights_name: str, model_format: str = "pt") -> str:
    """A labeling config with one RectangleLabels on `weights_name` (in MODEL_ROOT)."""
    return (
        '<View><Image name="image" value="$image"/>'
        f'<RectangleLabels name="label" toName="image" model_path="{weights_name}" model_conf="{CONF}" '
        f'model_format="{model_format}"><Label value="person"/><Label value="bus"/></RectangleLabels></View>'
    )


def backend_seconds(
    work: Path, weights: Path, paths: list[Path], repeat: int, model_format: str = "pt"
) -> float:
    """Seconds of one `POST /predict` with every image as a task, through this backend's app (the INT8
    export, calibrated on the benchmark's images, is made before the timing: it is a one-off)."""
    from fastapi.testclient import TestClient

    from server.app import create_app

    settings = backend_settings(
        work, weights.parent, int8_calibration_dir=paths[0].parent, int8_max_drop=100.0
    )
    config = detector_config(weights.name, model_format)
    tasks = [{"id": i, "data": {"image": str(path)}} for i, path in enumerate(paths)]
    with TestClient(create_app(settings)) as client:

        def backend_predict():
            response = client.post("/predict", json={"tasks": tasks, "label_config": config})
            assert response.status_code == 200, response.text

        return timed(backend_predict, repeat)


def compare_families(args: argparse.Namespace) -> None:
    """Per architecture: raw batched, and the backend on the .pt and on its INT8 export, in one run."""
    import torch

    rows = []
    for arch in args.arch:
        with workspace(arch, args.images, args.imgsz) as (work, weights, paths):
            raw = raw_figures(weights, paths, args.repeat)
            batched = next(seconds for name, seconds in raw.items() if "batches" in name)
            pt = backend_seconds(work, weights, paths, args.repeat)
            int8 = backend_seconds(work, weights, paths, args.repeat, "openvino-int8")
            rows.append((arch, batched, pt, int8))
    print(
        f"\n{args.images} images at {args.imgsz} px, random weights, conf={CONF}, "
        f"{os.cpu_count() or 1} cores, torch {torch.__version__}; images/s"
    )
    print(f"{'arch':<10} {'raw batched':>12} {'backend .pt':>12} {'backend INT8':>13} {'INT8 / .pt':>11}")
    for arch, batched, pt, int8 in rows:
        n = args.images
        print(f"{arch:<10} {n / batched:>12.2f} {n / pt:>12.2f} {n / int8:>13.2f} {pt / int8:>10.2f}x")


def main() -> None:
    args = parse_args()
    if len(args.arch) > 1:
        compare_families(args)
        return
    import torch

    args.arch = args.arch[0]
    with workspace(args.arch, args.images, args.imgsz) as (work, weights, paths):
        figures = raw_figures(weights, paths, args.repeat)
        figures["this backend, POST /predict with all tasks"] = backend_seconds(
            work, weights, paths, args.repeat
        )

    baseline = next(iter(figures.values()))
    print(
        f"\n{args.images} images, {args.arch} (random weights), conf={CONF}, {os.cpu_count() or 1} cores, "
        f"torch {torch.__version__}"
    )
    print(f"{'':<62} {'images/s':>9} {'vs raw':>7}")
    for name, seconds in figures.items():
        print(f"{name:<62} {args.images / seconds:>9.2f} {baseline / seconds:>6.2f}x")


if __name__ == "__main__":
    main()
