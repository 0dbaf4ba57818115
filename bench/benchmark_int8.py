"""Calibrated OpenVINO INT8 against the best raw PyTorch, on a trained detector, measured in one run.

    python bench/benchmark_int8.py [--images 64] [--calibration 40] [--imgsz 224] [--arch-640]

The shapes detector (models/shapes-yolov8n.pt, trained at 224 px) is exported the way the backend
does it (`inference.int8_export.cached_or_export`: Ultralytics' exporter with NNCF calibration on
generated shapes images, then the accuracy check on held-out labelled images). Prints:
- images/s of raw PyTorch and of the INT8 model (every core; one call per image and lists of 8), and
  the ratio of the better of each (target >= 1.4x);
- mAP50-95 of both on the held-out images (target: within 1 point);
- the export's wall time and the process RSS before and after loading each model.
`--arch-640` adds a yolov8n at 640 px with random weights (speed only: its accuracy means nothing).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2
import numpy as np
import psutil

SHAPES = Path(__file__).resolve().parent.parent / "models" / "shapes-yolov8n.pt"


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def shapes_images(folder: Path, count: int, seed: int) -> list[Path]:
    from tools.shapes import draw_shapes_image, to_yolo_labels

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    paths = []
    for number in range(count):
        image, boxes = draw_shapes_image(rng)
        path = folder / "images" / f"{number:04d}.jpg"
        cv2.imwrite(str(path), image)
        lines = to_yolo_labels(boxes, image.shape[1], image.shape[0])
        (folder / "labels" / f"{number:04d}.txt").write_text("\n".join(lines))
        paths.append(path)
    return paths


def images_per_second(model, images: list[np.ndarray], batch: int, imgsz: int, repeat: int = 2) -> float:
    """Best of `repeat` timed passes after one warm-up pass."""
    best = float("inf")
    for attempt in range(repeat + 1):
        started = time.perf_counter()
        for start in range(0, len(images), batch):
            model.predict(images[start : start + batch], imgsz=imgsz, conf=0.25, verbose=False)
        if attempt:
            best = min(best, time.perf_counter() - started)
    return len(images) / best


def compare(name: str, weights: Path, calibration: Path, images: list[np.ndarray], imgsz: int) -> None:
    import torch
    from ultralytics import YOLO

    from inference.int8_export import cached_or_export

    cores = os.cpu_count() or 1
    rss_start = rss_mib()
    pt = YOLO(str(weights))
    pt.predict(images[0], imgsz=imgsz, verbose=False)
    torch.set_num_threads(cores)  # Ultralytics caps it when it sets up a predictor
    rss_pt = rss_mib()
    pt_one = images_per_second(pt, images, 1, imgsz)
    pt_batched = images_per_second(pt, images, 8, imgsz)
    best_pt = max(pt_one, pt_batched)

    started = time.perf_counter()
    folder, check = cached_or_export(
        weights, calibration, imgsz, max_drop=100.0
    )  # refusal is printed, not raised
    export_seconds = time.perf_counter() - started
    rss_export = rss_mib()
    int8 = YOLO(str(folder), task=pt.task)
    int8.predict(images[0], imgsz=imgsz, verbose=False)
    rss_int8 = rss_mib()
    int8_one = images_per_second(int8, images, 1, imgsz)
    int8_batched = images_per_second(int8, images, 8, imgsz)
    best_int8 = max(int8_one, int8_batched)

    print(
        f"\n{name}: {len(images)} images at {imgsz} px, {cores} cores, torch {torch.__version__}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(f"  raw PyTorch, one call per image     {pt_one:8.2f} images/s")
    print(f"  raw PyTorch, batches of 8           {pt_batched:8.2f} images/s")
    print(f"  OpenVINO INT8, one call per image   {int8_one:8.2f} images/s")
    print(f"  OpenVINO INT8, lists of 8           {int8_batched:8.2f} images/s")
    print(f"  best INT8 / best PyTorch            {best_int8 / best_pt:8.2f}x (target >= 1.4x)")
    print(
        f"  accuracy ({check.metric}, {check.held_out_images} held-out images): .pt {check.pt_score:.3f}, "
        f"INT8 {check.int8_score:.3f}, drop {check.drop_points:.2f} points (target <= 1)"
    )
    print(
        f"  export + check: {export_seconds:.1f} s (export alone {check.export_seconds:.1f} s, "
        f"{check.calibration_images} calibration images)"
    )
    print(
        f"  RSS: start {rss_start:.0f} MiB, with .pt {rss_pt:.0f} MiB, after export {rss_export:.0f} MiB, "
        f"with INT8 too {rss_int8:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=64, help="images timed")
    parser.add_argument("--calibration", type=int, default=40, help="calibration + held-out images")
    parser.add_argument("--imgsz", type=int, default=224)
    parser.add_argument("--arch-640", action="store_true", help="also a yolov8n at 640 px (random weights)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        (work / "models").mkdir()
        weights = work / "models" / SHAPES.name
        shutil.copy(SHAPES, weights)
        calibration = work / "calibration"
        shapes_images(calibration, args.calibration, seed=1)
        timed = [cv2.imread(str(p)) for p in shapes_images(work / "timed", args.images, seed=2)]
        compare("shapes-yolov8n (trained)", weights, calibration, timed, args.imgsz)
        if args.arch_640:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from benchmark_predict import build_model, make_images

            detector = build_model("yolov8n", work / "models" / "yolov8n.pt")
            (work / "photos").mkdir()
            photos = [cv2.imread(str(p)) for p in make_images(work / "photos", 32)]
            photo_calibration = work / "photo-calibration"
            (photo_calibration / "images").mkdir(parents=True)
            for path in make_images(photo_calibration / "images", 16):
                path.with_suffix(".txt").write_text("")  # no objects: speed only
            compare("yolov8n (random weights; speed only)", detector, photo_calibration, photos, 640)


if __name__ == "__main__":
    main()
