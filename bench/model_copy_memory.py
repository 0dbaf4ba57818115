"""What a second lane's copy of a model costs in memory (`MODEL_LANES`), measured in one process.

    python bench/model_copy_memory.py [--arch yolov8n yolov8m]

For each architecture (random weights, built from its YAML): the process's resident memory after the
model's first prediction, and after its second lane's copy (`LoadedModel.replica(1)`) has predicted too.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_predict import backend_settings, workspace


def resident_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", nargs="+", default=["yolov8n", "yolov8m"])
    args = parser.parse_args()
    import numpy as np

    from inference.model_registry import ModelRegistry

    image = np.zeros((480, 640, 3), np.uint8)
    for arch in args.arch:
        with workspace(arch, 1) as (work, weights, _paths):
            model = ModelRegistry(backend_settings(work, weights.parent)).get(weights.name)
            model.predict([image])
            one = resident_mb()
            model.replica(1).predict(image, verbose=False)
            two = resident_mb()
        print(f"{arch}: resident {one:.0f} MB with one copy, {two:.0f} MB with two (+{two - one:.0f} MB)")


if __name__ == "__main__":
    main()
