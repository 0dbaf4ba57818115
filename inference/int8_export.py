"""Calibrated OpenVINO INT8 copies of `.pt` models, made once and checked before they are served.

On CPUs, an INT8 model quantised by NNCF on a few dozen of the user's own images runs well ahead of
FP32 PyTorch (VNNI/AMX CPUs gain most), where FP32 exports do not. The export (Ultralytics' exporter,
`format=openvino, quantize=8`, formerly `int8=True`) goes into a cache beside the `.pt`:

    <stem>-<first 12 hex of the .pt's sha256>_int8_openvino_model/

named by the weights' content, so a retrained `.pt` gets a new export and nothing is ever overwritten.
The export is made in a temporary folder beside it and renamed into place only after the accuracy
check passed, so a half-written or refused export is never found, let alone served.

Calibration images come from a folder (`INT8_CALIBRATION_DIR`, or the one `cli.py export-int8` fills
with a Label Studio project's images); a fifth of them (at least 2) are held out to compare the INT8
model with the `.pt`: by mAP50-95 against YOLO-format labels where the folder has them (`labels/` beside
`images/`, or `<image>.txt` beside each image), otherwise by the same score against the `.pt`'s own boxes
(how well INT8 agrees with the model it replaces). A drop of more than `max_drop` points is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from core.errors import ModelLoadError
from inference.heads import end_to_end_options

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
MIN_CALIBRATION_IMAGES = 8
CHECK_FILE = "int8_check.json"


@dataclass
class Int8Check:
    """What the accuracy check measured (kept beside the export as `int8_check.json`)."""

    metric: str  # "mAP50-95 vs labels" | "mAP50-95 vs the .pt's boxes"
    pt_score: float
    int8_score: float
    held_out_images: int
    calibration_images: int
    export_seconds: float

    @property
    def drop_points(self) -> float:
        return 100 * (self.pt_score - self.int8_score)


def export_dir(weights: Path) -> Path:
    """Where the INT8 export of `weights` lives (or will): beside it, named by its content."""
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
    return weights.with_name(f"{weights.stem}-{digest}_int8_openvino_model")


def calibration_images(folder: Path | None) -> list[Path]:
    """The images under `folder` (recursively, sorted), or a refusal that says what to do."""
    how = (
        "MODEL_FORMAT=openvino-int8 needs calibration images from your own data: run "
        "`python cli.py export-int8 --project <id>` once (it calibrates on the project's images), or set "
        f"INT8_CALIBRATION_DIR to a folder of at least {MIN_CALIBRATION_IMAGES} images like the ones you "
        "label; it is never calibrated on random data"
    )
    if folder is None:
        raise ModelLoadError(how)
    if not folder.is_dir():
        raise ModelLoadError(f"INT8_CALIBRATION_DIR '{folder}' is not a folder; {how}")
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if len(images) < MIN_CALIBRATION_IMAGES:
        raise ModelLoadError(f"INT8_CALIBRATION_DIR '{folder}' has {len(images)} images; {how}")
    return images


def is_checked_export(folder: Path) -> bool:
    """Whether `folder` (an `export_dir`) holds an export that passed its check."""
    return (folder / CHECK_FILE).is_file()


class ExportFolders:
    """Whether weights have a checked INT8 export, for MODEL_FORMAT=auto on every request. The export's
    folder is named by the weights' content: that name is remembered per (path, size, mtime), so a
    request costs two stats instead of hashing the weights."""

    def __init__(self, remembered: int = 64):
        self._folders: dict[tuple[Path, int, int], Path] = {}
        self._remembered = remembered
        self._lock = threading.Lock()

    def has_checked(self, weights: Path) -> bool:
        stat = weights.stat()
        key = (weights, stat.st_size, stat.st_mtime_ns)
        with self._lock:
            folder = self._folders.get(key)
        if folder is None:
            folder = export_dir(weights)
            with self._lock:
                self._folders[key] = folder
                while len(self._folders) > self._remembered:
                    self._folders.pop(next(iter(self._folders)))
        return is_checked_export(folder)


def cached_export(weights: Path) -> tuple[Path, Int8Check] | None:
    """The INT8 export of `weights` that passed its check, if one was made before (by any process)."""
    target = export_dir(weights)
    if not is_checked_export(target):
        return None
    return target, Int8Check(**json.loads((target / CHECK_FILE).read_text()))


def cached_or_export(
    weights: Path, calibration_folder: Path | None, imgsz: int, max_drop: float = 1.0
) -> tuple[Path, Int8Check]:
    """The INT8 export of `weights`: the cached one, or a new one made, checked and cached now."""
    cached = cached_export(weights)
    if cached is not None:
        return cached
    target = export_dir(weights)
    images = calibration_images(calibration_folder)
    held_out = images[:: max(2, min(5, len(images) // 2))]  # every 5th (at least 2 of them)
    calibration = [p for p in images if p not in held_out]
    with tempfile.TemporaryDirectory(prefix=f".{weights.stem}-int8-", dir=weights.parent) as work:
        work = Path(work)
        exported, check = _export_and_check(weights, calibration, held_out, imgsz, work)
        if check.drop_points > max_drop:
            raise ModelLoadError(
                f"the INT8 export of '{weights.name}' loses {check.drop_points:.1f} points of "
                f"{check.metric} on {check.held_out_images} held-out images ({check.pt_score:.3f} -> "
                f"{check.int8_score:.3f}; at most {max_drop} allowed): it is not served. Use more, and "
                "more varied, calibration images, or MODEL_FORMAT=pt"
            )
        (exported / CHECK_FILE).write_text(json.dumps(asdict(check)))
        try:
            exported.rename(target)  # atomic; fails where another process got there first
        except OSError:
            if not (target / CHECK_FILE).is_file():
                raise
            logger.info("INT8 export of %s was made by another process meanwhile", weights)
    return target, check


def _export_and_check(
    weights: Path, calibration: list[Path], held_out: list[Path], imgsz: int, work: Path
) -> tuple[Path, Int8Check]:
    from ultralytics import YOLO

    pt_copy = work / weights.name
    shutil.copyfile(weights, pt_copy)
    model = YOLO(str(pt_copy))
    names = {int(k): str(v) for k, v in model.names.items()}
    # The exporter calibrates on the dataset's `val` split: the calibration images, never the held-out ones.
    calibration_yaml = _dataset(work / "calibration", calibration, calibration, names, model=None)
    started = time.perf_counter()
    end_to_end = end_to_end_options(model)  # YOLO26: export and check its NMS-free head (inference/heads.py)
    exported = Path(
        model.export(
            format="openvino",
            quantize=8,
            data=str(calibration_yaml),
            imgsz=imgsz,
            batch=1,
            verbose=False,
            **end_to_end,
        )
    )
    export_seconds = time.perf_counter() - started
    labelled = all(_label_file(p) is not None for p in held_out)
    check_yaml = _dataset(
        work / "check", held_out, held_out, names, model=None if labelled else model, imgsz=imgsz
    )
    pt_score = _map50_95(YOLO(str(pt_copy)), check_yaml, imgsz, work / "val-pt", end_to_end)
    int8_score = _map50_95(
        YOLO(str(exported), task=model.task), check_yaml, imgsz, work / "val-int8", end_to_end
    )
    check = Int8Check(
        metric="mAP50-95 vs labels" if labelled else "mAP50-95 vs the .pt's boxes",
        pt_score=pt_score,
        int8_score=int8_score,
        held_out_images=len(held_out),
        calibration_images=len(calibration),
        export_seconds=round(export_seconds, 1),
    )
    logger.info("INT8 export of %s: %s", weights.name, check)
    return exported, check


def _label_file(image: Path) -> Path | None:
    """The YOLO-format label file of `image`: `labels/` beside `images/`, or beside the image."""
    candidates = [image.with_suffix(".txt")]
    parts = list(image.parts)
    if "images" in parts:
        index = len(parts) - 1 - parts[::-1].index("images")
        candidates.append(Path(*parts[:index], "labels", *parts[index + 1 :]).with_suffix(".txt"))
    return next((c for c in candidates if c.is_file()), None)


def _dataset(
    folder: Path,
    train: list[Path],
    val: list[Path],
    names: dict[int, str],
    model,
    imgsz: int = 640,
) -> Path:
    """A YOLO dataset folder of links to the images, with their labels, or with the `.pt`'s boxes
    as labels when `model` is given; returns its data.yaml."""
    for split, images in (("train", train), ("val", val)):
        (folder / split / "images").mkdir(parents=True)
        (folder / split / "labels").mkdir(parents=True)
        for number, image in enumerate(images):
            name = f"{number:05d}{image.suffix.lower()}"
            os.symlink(image.resolve(), folder / split / "images" / name)
            label = folder / split / "labels" / f"{number:05d}.txt"
            if model is not None:
                result = model.predict(
                    str(image), imgsz=imgsz, conf=0.25, verbose=False, **end_to_end_options(model)
                )[0]
                rows = [
                    f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}"
                    for c, (x, y, w, h) in zip(
                        result.boxes.cls.tolist(), result.boxes.xywhn.tolist(), strict=True
                    )
                ]
                label.write_text("\n".join(rows))
            elif (source := _label_file(image)) is not None:
                shutil.copyfile(source, label)
    data = folder / "data.yaml"
    data.write_text(
        yaml.safe_dump({"path": str(folder), "train": "train/images", "val": "val/images", "names": names})
    )
    return data


def _map50_95(model, data: Path, imgsz: int, project: Path, options: dict) -> float:
    metrics = model.val(
        **options,
        data=str(data),
        imgsz=imgsz,
        batch=1,
        workers=0,
        plots=False,
        verbose=False,
        project=str(project),
        name="v",
    )
    return float(metrics.box.map)
