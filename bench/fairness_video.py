"""Single-image requests while a long video runs on the same model, measured in one run.

    python bench/fairness_video.py [--case track|timeline] [--frames 600] [--singles 5] [--think 1.0]
                                   [--rounds 2]

A teammate opens one image task at a time (a single-task /predict, then `--think` seconds of looking
at it) while a long video is predicted (`--case track`: VideoRectangle with a yolov8n detector;
`timeline`: TimelineLabels with a yolov8n-cls), on the same model file, so both go through that
model's one `FairScheduler`. Rounds of (idle singles, video alone, video with singles); the video runs
from its own thread in both video phases, as a server's request thread would. Prints:
- the single-task latency p50/p90/p95 on an idle server and during the video, and their ratios
  (target: p90 during the video <= 3x idle);
- the video's frames/s alone and with the singles, their ratio (target: at least 0.95), and the share of
  the video phase the singles took (what the video cannot have on a machine whose every core is busy);
- errors (target: 0).
Weights are random (built from the YAML): speed depends on the architecture, not the weights.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_predict import backend_settings, make_images
from benchmark_video import model_file, write_video
from fairness import describe, loaded_phase, percentile

# case -> (architecture, video config, image config): two configs on the same model file.
CONFIGS = {
    "track": (
        "yolov8n",
        '<View><Video name="video" value="$video"/><Labels name="labels" toName="video">'
        '<Label value="person"/><Label value="car"/></Labels>'
        '<VideoRectangle name="box" toName="video" model_path="{model}" model_conf="0.25"/></View>',
        '<View><Image name="image" value="$image"/>'
        '<RectangleLabels name="label" toName="image" model_path="{model}" model_conf="0.25">'
        '<Label value="person"/><Label value="bus"/></RectangleLabels></View>',
    ),
    "timeline": (
        "yolov8n-cls",
        '<View><Video name="video" value="$video"/>'
        '<TimelineLabels name="timeline" toName="video" model_path="{model}">'
        '<Label value="tabby cat"/><Label value="goldfish"/></TimelineLabels></View>',
        '<View><Image name="image" value="$image"/>'
        '<Choices name="choice" toName="image" model_path="{model}">'
        '<Choice value="tabby cat"/><Choice value="goldfish"/></Choices></View>',
    ),
}


def video_phase(predict_video, single, think: float, with_singles: bool) -> tuple[list[float], float]:
    """The video from its own thread; while it runs, a teammate's singles `think` seconds apart."""
    if not with_singles:
        return [], predict_video()
    return loaded_phase(lambda _tasks: predict_video(), single, [], think)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--case", choices=sorted(CONFIGS), default="track")
    parser.add_argument("--frames", type=int, default=600, help="frames of the video")
    parser.add_argument("--size", default="640x360", help="video frame size")
    parser.add_argument("--singles", type=int, default=5, help="single-task requests per idle phase")
    parser.add_argument("--think", type=float, default=1.0, help="seconds between a teammate's requests")
    parser.add_argument("--rounds", type=int, default=2, help="idle phase, video alone, video with singles")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="TORCH_THREADS (default 0: every core, as the server); 1 on a machine whose cores other "
        "processes keep busy, where a lone request's threads wait for each other (see bench/RESULTS.md)",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()

    from model import YOLOBackend

    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        (work / "models").mkdir()
        architecture, video_config, image_config = CONFIGS[args.case]
        weights = model_file(architecture, work / "models")
        video_config, image_config = video_config.format(model=weights), image_config.format(model=weights)
        video = write_video(work / "video.mp4", args.frames, width, height)
        warm_video = write_video(work / "warm.mp4", 16, width, height)
        images = make_images(work, 4)
        settings = backend_settings(work, work / "models").model_copy(
            update={"torch_threads": args.torch_threads}
        )
        backend = YOLOBackend(settings)
        errors: list[str] = []

        def predict(task: dict, config: str) -> float:
            started = time.perf_counter()
            run = backend.predict([task], config)
            errors.extend(f"task {o.task_id}: {o.error}" for o in run.tasks if o.error)
            errors.extend(f"{name}: {message}" for name, message in run.control_errors.items())
            return time.perf_counter() - started

        def single(number: int) -> float:
            task = {"id": 1000 + number, "data": {"image": str(images[number % len(images)])}}
            return predict(task, image_config)

        def predict_video(path: Path = video) -> float:
            return predict({"id": 1, "data": {"video": str(path)}}, video_config)

        # Warm-up: the model, and oneDNN's kernels for the frame and image shapes and batch sizes used.
        predict_video(warm_video)
        for number in range(4):
            single(number)

        figures = measure(args, single, predict_video)
        backend.close()

    print_report(args, architecture, settings, figures, errors)


def measure(args: argparse.Namespace, single, predict_video) -> tuple[list[float], ...]:
    """(idle latencies, latencies during the video, video seconds alone, video seconds with singles).

    Rounds alternate the phases, so a change in the machine's load (it may be shared) falls on both
    sides of each ratio."""
    idle: list[float] = []
    during_video: list[float] = []
    alone_seconds: list[float] = []
    loaded_seconds: list[float] = []
    for _ in range(args.rounds):
        idle.extend(single(n) for n in range(args.singles))
        alone_seconds.append(video_phase(predict_video, single, args.think, with_singles=False)[1])
        latencies, seconds = video_phase(predict_video, single, args.think, with_singles=True)
        during_video.extend(latencies)
        loaded_seconds.append(seconds)
    return idle, during_video, alone_seconds, loaded_seconds


def print_report(args, architecture: str, settings, figures: tuple, errors: list[str]) -> None:
    import torch

    idle, during_video, alone_seconds, loaded_seconds = figures
    if os.environ.get("FAIRNESS_VERBOSE"):
        print("idle", [round(x, 3) for x in idle], "\nduring video", [round(x, 3) for x in during_video])
    alone_rate = args.frames / statistics.mean(alone_seconds)
    loaded_rate = args.frames / statistics.mean(loaded_seconds)
    singles_share = sum(during_video) / sum(loaded_seconds)  # upper bound: latency includes waiting
    print(
        f"\n{args.case}: {architecture} (random weights), {args.frames}-frame {args.size} video, "
        f"{os.cpu_count()} cores, {settings.effective_torch_threads} torch threads, torch {torch.__version__}, "
        f"think time {args.think} s, "
        f"load average {os.getloadavg()[0]:.2f}, "
        f"MODEL_LANES {os.environ.get('MODEL_LANES', 'auto')}, "
        f"OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', '(libgomp default)')}"
    )
    print(f"single task, idle server:       {describe(idle)}")
    print(f"single task, during the video:  {describe(during_video)}")
    print(
        f"p50 ratio {percentile(during_video, 0.5) / percentile(idle, 0.5):.2f}x, "
        f"p90 ratio {percentile(during_video, 0.9) / percentile(idle, 0.9):.2f}x (target <= 2x), "
        f"p95 ratio {percentile(during_video, 0.95) / percentile(idle, 0.95):.2f}x"
    )
    print(f"video alone:          {alone_rate:6.2f} frames/s (mean of {len(alone_seconds)})")
    print(
        f"video with singles:   {loaded_rate:6.2f} frames/s (mean of {len(loaded_seconds)}), "
        f"ratio {loaded_rate / alone_rate:.2f} (target >= 0.95); the singles' latency was "
        f"{singles_share:.0%} of the video time"
    )
    print(f"errors: {len(errors)}" + (f" ({errors[0]})" if errors else ""))


if __name__ == "__main__":
    main()
