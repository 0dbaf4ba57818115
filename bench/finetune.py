"""Fine-tuning benchmark: a detector learns a class it does not know from a few dozen annotations.

The base model is the shipped shapes detector (circle, square, triangle). The project adds a fourth
label, "cross" (a plus sign, drawn here), which the base model has never seen. The script runs the
backend's own training job in this process (`TrainingRun`: annotations -> dataset -> fine-tune ->
evaluate both models on the same held-out split -> promote), then counts how many crosses of 8
held-out images (never annotated, never trained on) each model finds at IoU >= 0.5.

    YOLO_OFFLINE=1 python bench/finetune.py [--train-images 32] [--epochs 15] [--imgsz 192]
        [--results bench/RESULTS.md]

The job also makes the new version's checked INT8 export (TRAINING_INT8, on by default): its check and
both models timed here (one image a call, median) are reported beside the .pt's.

Prints the figures and writes them under "## Fine-tuning" in bench/RESULTS.md (other sections kept).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("YOLO_OFFLINE", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from tools.shapes import draw_shapes_image  # noqa: E402

LABELS = ("circle", "square", "triangle", "cross")
WIDTH, HEIGHT = 256, 192
HELD_OUT = 8


def draw_cross(image: np.ndarray, rng: np.random.Generator, taken: list) -> tuple[float, ...] | None:
    """A filled plus sign in a free spot; its box (x1, y1, x2, y2), or None when nothing is free."""
    for _ in range(50):
        size = int(rng.integers(36, 70))
        height, width = image.shape[:2]
        x1, y1 = int(rng.integers(0, width - size)), int(rng.integers(0, height - size))
        box = (x1, y1, x1 + size, y1 + size)
        if all(
            box[2] + 4 < t[0] or t[2] + 4 < box[0] or box[3] + 4 < t[1] or t[3] + 4 < box[1] for t in taken
        ):
            bar = size // 3
            color = tuple(int(c) for c in 255 - image[y1 : y1 + size, x1 : x1 + size].mean(axis=(0, 1)))
            cv2.rectangle(image, (x1 + bar, y1), (x1 + 2 * bar, y1 + size - 1), color, -1)
            cv2.rectangle(image, (x1, y1 + bar), (x1 + size - 1, y1 + 2 * bar), color, -1)
            return tuple(float(v) for v in box)
    return None


def make_image(rng: np.random.Generator, crosses: int) -> tuple[np.ndarray, list[tuple[str, tuple]]]:
    image, shapes = draw_shapes_image(rng, WIDTH, HEIGHT, n_shapes=int(rng.integers(1, 3)))
    taken = [box for _, box in shapes]
    for _ in range(crosses):
        box = draw_cross(image, rng, taken)
        if box is not None:
            taken.append(box)
            shapes.append(("cross", box))
    return image, shapes


def region(name: str, box, width: int, height: int) -> dict:
    x1, y1, x2, y2 = box
    value = {"x": 100 * x1 / width, "y": 100 * y1 / height, "width": 100 * (x2 - x1) / width}
    value.update({"height": 100 * (y2 - y1) / height, "rotation": 0, "rectanglelabels": [name]})
    return {"from_name": "label", "to_name": "image", "type": "rectanglelabels", "value": value}


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union else 0.0


def crosses_found(weights: Path, held_out: list[tuple[Path, list]], imgsz: int) -> tuple[int, float]:
    """Crosses of the held-out images found at IoU >= 0.5, and the model's median ms per image (one image
    a call, after a warm-up pass, three passes)."""
    from ultralytics import YOLO

    model = YOLO(str(weights), task="detect")
    model.predict(str(held_out[0][0]), imgsz=imgsz, verbose=False)  # warm-up (predictor set-up)
    found, seconds = 0, []
    for _ in range(3):
        found = 0
        for path, shapes in held_out:
            started = time.perf_counter()
            result = model.predict(str(path), imgsz=imgsz, conf=0.25, verbose=False)[0]
            seconds.append(time.perf_counter() - started)
            boxes = [
                tuple(xyxy)
                for c, xyxy in zip(result.boxes.cls.tolist(), result.boxes.xyxy.tolist(), strict=True)
                if model.names[int(c)] == "cross"
            ]
            found += sum(
                1
                for name, truth in shapes
                if name == "cross" and any(iou(truth, box) >= 0.5 for box in boxes)
            )
    return found, 1000 * float(np.median(seconds))


class PrintReporter:
    def __init__(self):
        from training.jobs import Job

        self.job = Job(id="bench", project="bench", control="label")

    def phase(self, name: str) -> None:
        print(f"  phase: {name}", flush=True)

    def epoch(self, epoch: int, epochs: int, metrics: dict) -> None:
        score = metrics.get("metrics/mAP50-95(B)")
        print(f"  epoch {epoch}/{epochs}  val mAP50-95 {score}", flush=True)


def table(rows: dict, title: str) -> list[str]:
    lines = [
        f"{title}: mAP50-95 {rows['map50_95']:.3f}, mAP50 {rows['map50']:.3f}, "
        f"P {rows['precision']:.3f}, R {rows['recall']:.3f}"
    ]
    lines.append("")
    lines.append("| class | precision | recall | mAP50-95 | support |")
    lines.append("|---|---|---|---|---|")
    for label, row in (rows.get("per_class") or {}).items():
        lines.append(
            f"| {label} | {row.get('precision', 0):.3f} | {row.get('recall', 0):.3f} | "
            f"{row.get('map50_95', 0):.3f} | {int(row.get('support', 0))} |"
        )
    return lines


def write_results(path: Path, section: str) -> None:
    """Replace (or add) the "## Fine-tuning" section; other sections stay as they are."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start = text.find("## Fine-tuning")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train-images", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--imgsz", type=int, default=192)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    return parser.parse_args()


def annotated_tasks(rng: np.random.Generator, images_dir: Path, count: int) -> list[dict]:
    """Tasks with one or two crosses each among the known shapes, annotated in full."""
    tasks = []
    for task_id in range(1, count + 1):
        image, shapes = make_image(rng, crosses=1 + task_id % 2)
        path = images_dir / f"task-{task_id}.png"
        cv2.imwrite(str(path), image)
        result = [region(name, box, WIDTH, HEIGHT) for name, box in shapes]
        tasks.append(
            {"id": task_id, "data": {"image": str(path)}, "annotations": [{"id": task_id, "result": result}]}
        )
    return tasks


def held_out_images(rng: np.random.Generator, images_dir: Path) -> list[tuple[Path, list]]:
    """`HELD_OUT` images with one cross each, never annotated: (path, shapes drawn)."""
    held_out = []
    for index in range(HELD_OUT):
        image, shapes = make_image(rng, crosses=1)
        path = images_dir / f"held-out-{index}.png"
        cv2.imwrite(str(path), image)
        held_out.append((path, shapes))
    assert sum(name == "cross" for _, shapes in held_out for name, _ in shapes) == HELD_OUT
    return held_out


def labeling_config(epochs: int, imgsz: int) -> str:
    labels = "".join(f'<Label value="{label}"/>' for label in LABELS)
    return (
        '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image" '
        f'model_path="shapes-yolov8n.pt" model_train_epochs="{epochs}" '
        f'model_train_imgsz="{imgsz}" model_train_batch="8" model_train_patience="50">'
        f"{labels}</RectangleLabels></View>"
    )


@dataclass
class Served:
    """The fine-tuned version as the backend serves it: the .pt, and the INT8 export the job made."""

    pt_found: int
    pt_ms: float
    int8_found: int | None
    int8_ms: float | None


def int8_lines(metrics: dict, served: Served) -> list[str]:
    """The INT8 export the training job made of the new version: its check, and both models timed here."""
    check = metrics.get("int8")
    if not check:
        return ["- INT8 export: none made (TRAINING_INT8 off, or not promoted)"]
    pt, quantized = check.get("pt") or {}, check.get("int8") or {}
    lines = [
        f"- INT8 export by the job: {'kept' if check.get('kept') else 'not kept'} "
        f"({check.get('export_seconds', 0):.1f} s; calibrated on {check.get('calibration_images')}, "
        f"checked on {check.get('held_out_images')} held-out images)"
        + (f": {check.get('error')}" if check.get("error") else ""),
        f"  - the job's check (Ultralytics val, annotations): mAP50-95 .pt {pt.get('map50_95', 0):.4f}, "
        f"INT8 {quantized.get('map50_95', 0):.4f}; val inference .pt {pt.get('ms_per_image', 0):.1f} ms, "
        f"INT8 {quantized.get('ms_per_image', 0):.1f} ms an image",
    ]
    if served.int8_ms is not None:
        lines.append(
            f"  - timed here, one image a call: .pt **{served.pt_ms:.1f} ms**, INT8 **{served.int8_ms:.1f} ms** "
            f"(**{served.pt_ms / served.int8_ms:.2f}x**); crosses found .pt {served.pt_found}/{HELD_OUT}, "
            f"INT8 {served.int8_found}/{HELD_OUT}"
        )
    return lines


def results_section(
    args: argparse.Namespace, seconds: float, found: tuple[int, Served], message: str, metrics: dict
) -> str:
    """The "## Fine-tuning" section of bench/RESULTS.md; `found`: crosses found by the base, and the
    fine-tuned version as served."""
    base_found, served = found
    new_found = served.pt_found
    lines = [
        "## Fine-tuning",
        "",
        f"`YOLO_OFFLINE=1 python bench/finetune.py --train-images {args.train_images} --epochs {args.epochs} "
        f"--imgsz {args.imgsz}`, {time.strftime('%Y-%m-%d', time.gmtime())}, {platform.machine()} "
        f"{os.cpu_count()} cores, CPU, load average {os.getloadavg()[0]:.2f} at the end.",
        "",
        "Base: the shipped shapes detector (circle, square, triangle); the project adds `cross`, which "
        f"it has never seen. {args.train_images} annotated images; the training job's own split and "
        "evaluation (same held-out split for both models, mAP through the label map).",
        "",
        f"- training job wall time (dataset, fine-tune, both evaluations, INT8 export): **{seconds:.0f} s**",
        f"- held-out crosses found at IoU >= 0.5: base **{base_found}/{HELD_OUT}**, "
        f"fine-tuned **{new_found}/{HELD_OUT}** (target >= 6 of 8 in < 10 min)",
        f"- decision: {message}",
        *int8_lines(metrics, served),
        "",
        *table(metrics["serving"], "Base model on the val split"),
        "",
        *table(metrics["new"], "Fine-tuned model on the val split"),
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    from core.settings import Settings
    from training_pipeline import TrainingRun

    work = Path(tempfile.mkdtemp(prefix="finetune-bench-"))
    try:
        model_root, images_dir = work / "models", work / "images"
        model_root.mkdir()
        images_dir.mkdir()
        shutil.copy(ROOT / "models" / "shapes-yolov8n.pt", model_root / "shapes-yolov8n.pt")
        rng = np.random.default_rng(2024)
        tasks = annotated_tasks(rng, images_dir, args.train_images)
        held_out = held_out_images(rng, images_dir)
        settings = Settings(
            _env_file=None,
            model_root=model_root,
            media_cache_dir=work / "cache",
            allow_custom_model_path=True,
            allow_model_download=False,
            allowed_local_roots=str(images_dir),
        )
        print(
            f"{args.train_images} annotated images, {args.epochs} epochs at {args.imgsz} px, "
            f"{os.cpu_count()} cores",
            flush=True,
        )
        started = time.perf_counter()
        outcome = TrainingRun(settings, PrintReporter(), tasks_source=lambda _project: tasks).run(
            "bench", "label", labeling_config(args.epochs, args.imgsz)
        )
        seconds = time.perf_counter() - started
        folder = model_root / "trained" / "bench" / "label" / outcome.version
        metrics = json.loads((folder / "metrics.json").read_text())
        base_found, _ = crosses_found(model_root / "shapes-yolov8n.pt", held_out, args.imgsz)
        new_found, new_ms = crosses_found(folder / "best.pt", held_out, args.imgsz)
        exports = sorted(folder.glob("*_int8_openvino_model"))
        int8_found, int8_ms = crosses_found(exports[0], held_out, args.imgsz) if exports else (None, None)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    served = Served(new_found, new_ms, int8_found, int8_ms)
    section = results_section(args, seconds, (base_found, served), outcome.message, metrics)
    print(section)
    write_results(args.results, section)
    return 0 if new_found >= 6 else 1


if __name__ == "__main__":
    sys.exit(main())
