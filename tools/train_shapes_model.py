"""Train the tiny shape detector shipped as ``models/shapes-yolov8n.pt``.

Generates a synthetic dataset with ``tools/shapes.py`` (classes ``0: circle, 1: square, 2: triangle``,
320x240 images) into a temporary directory in Ultralytics' YOLO format, trains YOLOv8n from scratch
(``yolov8n.yaml``, no pretrained weights, CPU), validates ``best.pt`` on a held-out set drawn with a
different seed, copies it to ``models/shapes-yolov8n.pt`` and prints mAP50 / mAP50-95.

Run from the repository root (no network needed)::

    YOLO_OFFLINE=1 python tools/train_shapes_model.py            # defaults below
    python tools/train_shapes_model.py --epochs 5 --n-train 64   # quick smoke run

Seeds: training images use ``--seed`` (0), validation ``--seed + 1`` (1). Tests must use other seeds.

Figures for the shipped model (these defaults: 400 train / 100 val images, 20 epochs, imgsz 224,
batch 16, AdamW lr0=0.002; Ultralytics 8.4.190, torch 2.14.1, CPU, 2 cores shared with other work)::

    val (100 held-out images, 256 shapes): mAP50 = 0.995, mAP50-95 = 0.968
        circle 0.995 / 0.977, square 0.995 / 0.965, triangle 0.995 / 0.961  (mAP50 / mAP50-95)
    training 711 s (~35 s/epoch; mAP50 > 0.99 from epoch 6), dataset generation 11 s
    models/shapes-yolov8n.pt: 6.2 MB (best.pt = last epoch, optimizer stripped, fp16)

(Made by this script with default arguments plus ``--keep-dir``/``--output`` pointing at /tmp. A rerun
gives similar but not bit-identical weights: cache="ram" and CPU thread scheduling are not deterministic.)

The checkpoint remembers ``imgsz=224``, which Ultralytics uses when ``predict``/``track`` get no
``imgsz``. On 320x240 images it is reliable at imgsz 224-320 (objects 30-90 px); at imgsz >= 416 the
image is upscaled and shapes get bigger than anything seen in training, so detections degrade
(at 640 most images fail). Don't pass a large imgsz with this model.
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

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tools.shapes import CLASS_NAMES, draw_shapes_image, to_yolo_labels  # noqa: E402

DEFAULT_OUTPUT = REPO_ROOT / "models" / "shapes-yolov8n.pt"


def write_split(root: Path, split: str, n_images: int, seed: int, width: int, height: int) -> None:
    """Write ``n_images`` images + YOLO label files under ``root/images/split`` and ``root/labels/split``."""
    img_dir, lbl_dir = root / "images" / split, root / "labels" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n_images):
        image, boxes = draw_shapes_image(rng, width, height)
        stem = f"{split}_{i:05d}"
        cv2.imwrite(str(img_dir / f"{stem}.png"), image)
        (lbl_dir / f"{stem}.txt").write_text("\n".join(to_yolo_labels(boxes, width, height)) + "\n")


def write_dataset(root: Path, n_train: int, n_val: int, seed: int, width: int, height: int) -> Path:
    write_split(root, "train", n_train, seed, width, height)
    write_split(root, "val", n_val, seed + 1, width, height)
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(CLASS_NAMES))
    data_yaml = root / "data.yaml"
    data_yaml.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return data_yaml


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-train", type=int, default=400)
    p.add_argument("--n-val", type=int, default=100)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--imgsz", type=int, default=224)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr0", type=float, default=0.002)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    p.add_argument(
        "--keep-dir", type=Path, default=None, help="write dataset/runs here instead of a temp dir"
    )
    return p.parse_args(argv)


def train(data_yaml: Path, work: Path, args: argparse.Namespace) -> Path:
    """Train YOLOv8n from scratch on the dataset; the path of its ``best.pt``."""
    from ultralytics import YOLO  # after YOLO_OFFLINE is set

    YOLO("yolov8n.yaml").train(
        **_common_options(data_yaml, work, args),
        epochs=args.epochs,
        pretrained=False,
        seed=args.seed,
        deterministic=True,
        cache="ram",
        amp=False,
        # Few images, few epochs: step the optimizer every batch (nbs=batch, no gradient
        # accumulation) with a fixed AdamW learning rate and a short warm-up.
        nbs=args.batch,
        optimizer="AdamW",
        lr0=args.lr0,
        warmup_epochs=args.warmup_epochs,
        name="shapes",
        verbose=False,
        # Shapes: flips/rotations would change nothing useful; vertical flip would invert triangles.
        flipud=0.0,
        fliplr=0.5,
        close_mosaic=max(1, args.epochs // 5),
    )
    return work / "runs" / "shapes" / "weights" / "best.pt"


def validate(best: Path, data_yaml: Path, work: Path, args: argparse.Namespace):
    """Ultralytics' validation metrics of ``best`` on the held-out split."""
    from ultralytics import YOLO

    return YOLO(str(best)).val(**_common_options(data_yaml, work, args), verbose=True, name="shapes-val")


def _common_options(data_yaml: Path, work: Path, args: argparse.Namespace) -> dict:
    """What training and validation share: the data, image size, batch, CPU, no plots, the runs folder."""
    return {
        "data": str(data_yaml),
        "imgsz": args.imgsz,
        "batch": args.batch,
        "device": "cpu",
        "workers": args.workers,
        "plots": False,
        "project": str(work / "runs"),
        "exist_ok": True,
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="shapes-yolo-") as tmp:
        work = args.keep_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        data_yaml = write_dataset(
            work / "dataset", args.n_train, args.n_val, args.seed, args.width, args.height
        )
        t_data = time.perf_counter() - t0
        t1 = time.perf_counter()
        best = train(data_yaml, work, args)
        t_train = time.perf_counter() - t1
        metrics = validate(best, data_yaml, work, args)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(best, args.output)

    results = {
        "map50": float(metrics.box.map50),
        "map50_95": float(metrics.box.map),
        "data_s": t_data,
        "train_s": t_train,
        "size_mb": args.output.stat().st_size / 1e6,
    }
    print(
        f"\nshapes model: mAP50={results['map50']:.4f} mAP50-95={results['map50_95']:.4f} "
        f"train={results['train_s']:.0f}s data={results['data_s']:.1f}s "
        f"file={args.output} ({results['size_mb']:.2f} MB)"
    )
    return results


if __name__ == "__main__":
    main()
