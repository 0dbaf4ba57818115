"""How many images a second this machine does with one model: one call at a time, and two calls at once.

    python bench/cpu_capacity.py [--arch yolov8m] [--images 8] [--seconds 8]

Raw Ultralytics on `bench/fairness.py`'s images (random weights, built from the YAML), every core given
to torch in each calling thread, as the backend does. Prints the images/s of one thread predicting one
image per call, of two threads doing so at once (each on its own copy: a predictor is not thread-safe),
and their ratio. Two calls at once are the most this CPU does with the model (what `MODEL_LANES` uses);
so while a bulk request runs beside opened tasks, the bulk's images/s cannot pass that figure less the
opened tasks' own images/s, however they are scheduled.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_predict import workspace


def images_per_second(models: list, images: list, seconds: float) -> float:
    """Images/s of len(models) threads, each predicting `images` in turn on its own model for `seconds`."""
    import torch

    counts = [0] * len(models)
    deadline = time.perf_counter() + seconds

    def predict(index: int) -> None:
        torch.set_num_threads(os.cpu_count() or 1)  # per calling thread (OpenMP), as the backend sets it
        while time.perf_counter() < deadline:
            models[index].predict(images[counts[index] % len(images)], verbose=False)
            counts[index] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=predict, args=(i,)) for i in range(len(models))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default="yolov8m")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each measurement")
    args = parser.parse_args()
    import cv2
    from ultralytics import YOLO

    with workspace(args.arch, args.images) as (_work, weights, paths):
        images = [cv2.imread(str(path)) for path in paths]
        models = [YOLO(str(weights)), YOLO(str(weights))]
        images_per_second(models, images, 2.0)  # warm-up: predictors, oneDNN kernels for each shape
        one = images_per_second(models[:1], images, args.seconds)
        two = images_per_second(models, images, args.seconds)
    print(
        f"{args.arch} (random weights), {os.cpu_count()} cores, OMP_WAIT_POLICY "
        f"{os.environ.get('OMP_WAIT_POLICY', '(libgomp default)')}, load average {os.getloadavg()[0]:.2f}"
    )
    print(f"one call at a time:  {one:6.2f} images/s")
    print(f"two calls at once:   {two:6.2f} images/s, {two / one:.2f}x")


if __name__ == "__main__":
    main()
