"""Video throughput and memory of the backend's video path (`YOLOBackend.predict` on a Video config).

    python bench/benchmark_video.py                       # the table below, each case in its own process
    python bench/benchmark_video.py --case track --frames 3000 --size 320x240 --model shapes

Each case runs in a fresh process, so its peak RSS (`ru_maxrss`) is its own. Cases:
- `track`: VideoRectangle (BoT-SORT, default settings) on a video of shapes moving across the frame;
- `timeline`: TimelineLabels with a `yolov8n-cls` (at 224 px, like the released weights) on the same video.
Models: `yolov8n` (COCO names, random weights built from the YAML, default imgsz 640: the speed of the
real yolov8n.pt; random weights find nothing, so tracking costs little here) or `shapes` (the shipped
`models/shapes-yolov8n.pt`, trained at 224 px: real detections and tracks).
Frames/s counts every frame of the video (decoding included); with `model_vid_stride=k` the model
runs on every k-th frame.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402

DEFAULT_CASES = [
    # (case, model, frames, size, stride)
    ("track", "yolov8n", 300, "640x360", 1),
    ("track", "yolov8n", 300, "1280x720", 1),
    ("track", "yolov8n", 300, "1280x720", 5),
    ("track", "shapes", 300, "320x240", 1),
    ("track", "shapes", 3000, "320x240", 1),
    ("timeline", "yolov8n-cls", 300, "1280x720", 1),
]


def write_video(path: Path, frames: int, width: int, height: int, fps: float = 30.0) -> Path:
    """Two shapes bouncing across the frame, drawn with tools/shapes.py."""
    from tools.shapes import draw_scene, render_shape

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    size = min(width, height) // 5
    background = draw_scene(width, height, [], background_seed=11)
    for i in range(frames):
        image = background.copy()
        for name, speed, row, color in (
            ("circle", 5, 0.25, (30, 30, 230)),
            ("square", 3, 0.6, (230, 60, 20)),
        ):
            span = width - size - 2
            x = (i * speed) % (2 * span)
            x = x if x < span else 2 * span - x
            y = int(row * height)
            render_shape(image, name, (x + 1, y, x + 1 + size, y + size), color)
        writer.write(image)
    writer.release()
    return path


def model_file(name: str, model_root: Path) -> str:
    import shutil

    from ultralytics import YOLO
    from ultralytics.utils import ROOT

    if name == "shapes":
        shutil.copy(REPO / "models" / "shapes-yolov8n.pt", model_root / "shapes-yolov8n.pt")
        return "shapes-yolov8n.pt"
    import yaml

    names_file = "ImageNet.yaml" if name.endswith("-cls") else "coco.yaml"
    names = yaml.safe_load((ROOT / "cfg" / "datasets" / names_file).read_text())["names"]
    model = YOLO(f"{name}.yaml")
    model.model.names = {int(k): v for k, v in names.items()}
    # The released weights remember their training size (640, classifiers 224); predict uses it.
    model.ckpt = {"train_args": {"imgsz": 224 if name.endswith("-cls") else 640, "task": model.task}}
    model.save(str(model_root / f"{name}.pt"))
    return f"{name}.pt"


def run_case(case: str, model: str, frames: int, size: str, stride: int) -> dict:
    from core.settings import Settings
    from model import YOLOBackend

    width, height = (int(v) for v in size.split("x"))
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        (work / "models").mkdir()
        weights = model_file(model, work / "models")
        video = write_video(work / "video.mp4", frames, width, height)
        settings = Settings(
            _env_file=None,
            model_root=work / "models",
            media_cache_dir=work / "cache",
            allowed_local_roots=str(work),  # the tasks name the videos written there
            allow_custom_model_path=True,
        )
        backend = YOLOBackend(settings)
        if case == "track":
            config = f"""<View><Video name="video" value="$video"/>
              <Labels name="labels" toName="video"><Label value="circle"/><Label value="square"/>
                <Label value="person"/><Label value="car"/></Labels>
              <VideoRectangle name="box" toName="video" model_path="{weights}" model_vid_stride="{stride}"/></View>"""
        else:
            config = f"""<View><Video name="video" value="$video"/>
              <TimelineLabels name="t" toName="video" model_path="{weights}" model_vid_stride="{stride}">
                <Label value="tabby cat"/><Label value="goldfish"/></TimelineLabels></View>"""
        warm = write_video(work / "warm.mp4", 8, width, height)
        backend.predict([{"id": 0, "data": {"video": str(warm)}}], config)  # load the model, warm up
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        started = time.perf_counter()
        run = backend.predict([{"id": 1, "data": {"video": str(video)}}], config)
        seconds = time.perf_counter() - started
        outcome = run.tasks[0]
        return {
            "case": case,
            "model": model,
            "frames": frames,
            "size": size,
            "stride": stride,
            "seconds": round(seconds, 2),
            "frames_per_s": round(frames / seconds, 1),
            "regions": len(outcome.regions),
            "error": outcome.error,
            "peak_rss_mib_after_warmup": round(rss_before),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "torch_threads": settings.effective_torch_threads,
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--case", choices=["track", "timeline"])
    parser.add_argument("--model", default="yolov8n")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--stride", type=int, default=1)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.model, args.frames, args.size, args.stride)))
        return
    for case, model, frames, size, stride in DEFAULT_CASES:
        command = [sys.executable, __file__, "--case", case, "--model", model, "--frames", str(frames)]
        command += ["--size", size, "--stride", str(stride)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        print(output.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
