"""Fine-tuning benchmark for every trainable image kind: does a short job learn from a few dozen images?

For each kind (tests/training_projects.py: rotated bars for OBB, shapes as polygons, as brush masks, as
boxes with keypoints, one shape per image for choices) the script builds a base model of that kind whose
backbone is the shipped shapes detector's (no weights can be downloaded; the head starts untrained), runs
the backend's own training job in this process (`TrainingRun`: annotations -> dataset -> fine-tune ->
evaluate both models on the same held-out split -> promote) and prints both scores and the wall time.

    YOLO_OFFLINE=1 python bench/finetune_kinds.py [--kinds obb,polygon,brush,pose,choices]
        [--images 40] [--epochs 20] [--imgsz 160]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("YOLO_OFFLINE", "1")

import cv2  # noqa: E402

from tests import training_projects as projects  # noqa: E402

ARCHITECTURES = {
    "obb": "yolov8n-obb.yaml",
    "polygon": "yolov8n-seg.yaml",
    "brush": "yolov8n-seg.yaml",
    "pose": "yolov8n-pose.yaml",
    "choices": "yolov8n-cls.yaml",
    "taxonomy": "yolov8n-cls.yaml",
}


class PrintReporter:
    def __init__(self, kind: str):
        from training.jobs import Job

        self.job = Job(id=f"bench-{kind}", project="bench", control="label")

    def phase(self, name: str) -> None:
        print(f"  phase: {name}", flush=True)

    def epoch(self, epoch: int, epochs: int, metrics: dict) -> None:
        if epoch == epochs or epoch % 5 == 0:
            print(f"  epoch {epoch}/{epochs}", flush=True)


def base_model(kind: str, labels: tuple[str, ...], target: Path) -> None:
    """A model of the kind's architecture, the shapes detector's matching layers loaded into it."""
    from ultralytics import YOLO

    model = YOLO(ARCHITECTURES[kind])
    model.model = type(model.model)({**model.model.yaml, "nc": len(labels)}, verbose=False)  # its head
    if kind not in ("choices", "taxonomy"):  # a classifier's layers do not line up with a detector's
        model.load(str(ROOT / "models" / "shapes-yolov8n.pt"))
    model.model.names = dict(enumerate(labels))
    model.ckpt = {"train_args": {"imgsz": 224 if model.task == "classify" else 640, "task": model.task}}
    model.save(str(target))


def run_kind(kind: str, args: argparse.Namespace, work: Path) -> dict:
    from core.settings import Settings
    from training_pipeline import TrainingRun

    folder = work / kind
    (folder / "images").mkdir(parents=True)
    (folder / "models").mkdir()
    tasks = []
    for task_id, example in enumerate(projects.examples(kind, args.images, seed=11), start=1):
        path = folder / "images" / f"{task_id}.png"
        cv2.imwrite(str(path), example.image)
        annotation = {"id": task_id, "result": example.regions, "was_cancelled": False}
        tasks.append({"id": task_id, "data": {"image": str(path)}, "annotations": [annotation]})
    config = projects.config(
        kind,
        model_path="base.pt",
        model_train_epochs=str(args.epochs),
        model_train_imgsz=str(args.imgsz),
        model_train_batch="8",
        model_train_patience="100",
    )
    settings = Settings(
        _env_file=None,
        model_root=folder / "models",
        media_cache_dir=folder / "cache",
        allow_custom_model_path=True,
        allow_model_download=False,
        allowed_local_roots=str(folder / "images"),
    )
    run = TrainingRun(settings, PrintReporter(kind), tasks_source=lambda project: tasks)
    base_model(kind, run.spec_for(config, "label").labels, folder / "models" / "base.pt")
    started = time.perf_counter()
    outcome = run.run("bench", "label", config)
    seconds = time.perf_counter() - started
    metrics = json.loads(
        (run.store.control_dir("bench", "label") / outcome.version / "metrics.json").read_text()
    )
    return {"kind": kind, "seconds": seconds, "metrics": metrics}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kinds", default="obb,polygon,brush,pose,choices")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--imgsz", type=int, default=160)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="finetune-kinds-") as work:
        for kind in args.kinds.split(","):
            print(
                f"{kind}: {args.images} annotated images, {args.epochs} epochs at {args.imgsz} px", flush=True
            )
            rows.append(run_kind(kind, args, Path(work)))
            print(f"  {rows[-1]['metrics']['decision']} ({rows[-1]['seconds']:.0f} s)", flush=True)
    print("\n| kind | task | metric | base | fine-tuned | job wall time |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        metrics = row["metrics"]
        metric = metrics["metric"]
        print(
            f"| {row['kind']} | {metrics['task']} | {metric} | {metrics['serving'][metric]:.3f} | "
            f"{metrics['new'][metric]:.3f} | {row['seconds']:.0f} s |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
