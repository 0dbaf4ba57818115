"""What a trainable TimelineLabels costs: features per frame, head training, head inference.

    python bench/timeline_head.py                          # 10 videos of 300 frames, 320x240
    python bench/timeline_head.py --videos 20 --frames 500 --epochs 300 --threads 2

The classifier is yolov8n-cls built from its YAML (random weights, 224 px like the released weights:
the speed of the real one). Videos alternate solid colours in random spans; the head learns them.
Prints: feature extraction frames/s (decoding included), head training seconds, head inference ms per
1000 frames, and the held-out mean frame F1 (a sanity figure: colours are easy).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402


def write_video(path: Path, frames: int, size: tuple[int, int], red: tuple[int, int]) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, size)
    for frame in range(1, frames + 1):
        colour = (30, 30, 220) if red[0] <= frame <= red[1] else (220, 40, 30)
        writer.write(np.full((size[1], size[0], 3), colour, np.uint8))
    writer.release()


def annotated_samples(args, root: Path, loaded, settings, rng) -> tuple[list, float]:
    """One video per sample, red for a random stretch and blue elsewhere, with its features and frame
    labels; and the seconds spent extracting features."""
    from training.timeline import make_sample, video_features

    width, height = (int(v) for v in args.size.split("x"))
    samples = []
    extraction = 0.0
    for index in range(args.videos):
        start = int(rng.integers(1, args.frames // 2))
        red = (start, int(rng.integers(start, args.frames + 1)))
        path = root / f"{index}.mp4"
        write_video(path, args.frames, (width, height), red)
        regions = [{"value": {"ranges": [{"start": red[0], "end": red[1]}], "timelinelabels": ["Red"]}}]
        blue = [r for r in ((1, red[0] - 1), (red[1] + 1, args.frames)) if r[0] <= r[1]]
        regions += [
            {"value": {"ranges": [{"start": a, "end": b}], "timelinelabels": ["Blue"]}} for a, b in blue
        ]
        began = time.perf_counter()
        features, frames_count = video_features(loaded, path, 1, settings)
        extraction += time.perf_counter() - began
        samples.append(make_sample(index, features, frames_count, regions, ("Red", "Blue"), 1))
    return samples, extraction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=10)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    args = parser.parse_args()

    from ultralytics import YOLO

    from core.settings import Settings
    from inference.model_registry import ModelRegistry
    from training.spec import SequenceHeadParams
    from training.timeline import evaluate_head, split_by_task
    from training.timeline_head import train_head

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        model = YOLO("yolov8n-cls.yaml")
        model.model.names = {0: "a", 1: "b"}
        model.model.yaml["nc"] = 2
        model.ckpt = {"train_args": {"imgsz": 224, "task": "classify"}}
        model.save(str(root / "cls.pt"))
        settings = Settings(_env_file=None, model_root=root, torch_threads=args.threads)
        loaded = ModelRegistry(settings).get("cls.pt")
        params = SequenceHeadParams(epochs=args.epochs)
        samples, extraction = annotated_samples(args, root, loaded, settings, rng)
        train, val = split_by_task(samples)
        began = time.perf_counter()
        head = train_head([(s.features, s.targets) for s in train], ("Red", "Blue"), params, "cls.pt")
        training = time.perf_counter() - began
        began = time.perf_counter()
        for sample in val:
            head.probabilities(sample.features)
        inference = time.perf_counter() - began
        score = evaluate_head(head, val, ("Red", "Blue"), params)
    total_frames = args.videos * args.frames
    print(f"videos: {args.videos} x {args.frames} frames, {args.size}; torch threads {loaded.threads}")
    print(f"features: {total_frames / extraction:.1f} frames/s (yolov8n-cls at 224, decoding included)")
    print(f"head training: {training:.2f} s ({args.epochs} epochs, {len(train)} videos)")
    print(f"head inference: {1000 * inference / (len(val) * args.frames) * 1000:.1f} ms per 1000 frames")
    print(f"held-out mean frame F1: {score.mean_f1:.3f} on {len(val)} videos")


if __name__ == "__main__":
    main()
