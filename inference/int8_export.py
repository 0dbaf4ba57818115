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
A training job (`export_for_dataset`) calibrates on its training images and checks on its held-out ones
against their annotations. The check also times both models on the held-out images (ms per image).
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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from core.errors import ModelLoadError
from inference.heads import end_to_end_options

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
MIN_CALIBRATION_IMAGES = 8
CHECK_FILE = "int8_check.json"
# NNCF calibrates on 300 samples by default; more images only cost a training job's time.
MAX_CALIBRATION_IMAGES = 300
MAX_CHECK_IMAGES = 200  # held-out images the check predicts twice (.pt and INT8)


@dataclass
class Int8Check:
    """What the accuracy check measured (kept beside the export as `int8_check.json`)."""

    metric: str  # "mAP50-95 vs labels" | "mAP50-95 vs the .pt's boxes"
    pt_score: float
    int8_score: float
    held_out_images: int
    calibration_images: int
    export_seconds: float
    pt_ms: float | None = None  # inference per held-out image, batch 1 (None: checks made before timing)
    int8_ms: float | None = None

    @property
    def drop_points(self) -> float:
        return 100 * (self.pt_score - self.int8_score)


class Int8AccuracyError(ModelLoadError):
    """An export refused by its accuracy check; `check` holds what was measured."""

    def __init__(self, message: str, check: Int8Check):
        super().__init__(message)
        self.check = check


@dataclass
class CheckData:
    """What one export calibrates on and is checked on (data.yaml files in the export's work folder)."""

    calibration_yaml: Path
    check_yaml: Path
    labelled: bool  # False: the check's labels are the .pt's own boxes
    calibration_images: int
    held_out_images: int


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
    images = calibration_images(calibration_folder)
    held_out = images[:: max(2, min(5, len(images) // 2))]  # every 5th (at least 2 of them)
    calibration = [p for p in images if p not in held_out]

    def folder_data(model: Any, work: Path) -> CheckData:
        names = {int(k): str(v) for k, v in model.names.items()}
        labelled = all(_label_file(p) is not None for p in held_out)
        return CheckData(
            # The exporter calibrates on the dataset's `val` split: the calibration images, never the held-out.
            calibration_yaml=_dataset(work / "calibration", calibration, calibration, names, model=None),
            check_yaml=_dataset(
                work / "check", held_out, held_out, names, model=None if labelled else model, imgsz=imgsz
            ),
            labelled=labelled,
            calibration_images=len(calibration),
            held_out_images=len(held_out),
        )

    return _export_into_cache(weights, imgsz, max_drop, folder_data)


def export_for_dataset(
    weights: Path,
    description: dict,
    calibration: Sequence[Path],
    held_out: Sequence[Path],
    imgsz: int,
    max_drop: float,
) -> tuple[Path, Int8Check]:
    """The checked INT8 export of trained `weights`: calibrated on (an even spread of at most 300 of)
    the training images, checked on the held-out ones against their YOLO labels (`labels/` beside
    `images/`). `description` is the training dataset's data.yaml (names, keypoint shape)."""
    cached = cached_export(weights)
    if cached is not None:
        return cached
    if len(calibration) < MIN_CALIBRATION_IMAGES or len(held_out) < 2:
        raise ModelLoadError(
            f"too few images for a checked INT8 export ({len(calibration)} to calibrate on, at least "
            f"{MIN_CALIBRATION_IMAGES}; {len(held_out)} held out, at least 2)"
        )
    chosen = _spread(calibration, MAX_CALIBRATION_IMAGES)
    checked = _spread(held_out, MAX_CHECK_IMAGES)

    def dataset_data(_model: Any, work: Path) -> CheckData:
        return CheckData(
            calibration_yaml=_listed_dataset(work, "calibration", chosen, description),
            check_yaml=_listed_dataset(work, "check", checked, description),
            labelled=True,
            calibration_images=len(chosen),
            held_out_images=len(checked),
        )

    return _export_into_cache(weights, imgsz, max_drop, dataset_data)


def _spread(images: Sequence[Path], most: int) -> list[Path]:
    """At most `most` of `images`, evenly spread over them (the same ones every time)."""
    step = max(1, -(-len(images) // most))
    return list(images)[::step][:most]


def _listed_dataset(work: Path, name: str, images: list[Path], description: dict) -> Path:
    """A data.yaml whose train and val are a list file of `images` (Ultralytics finds each label by
    replacing `images` with `labels` in its path); names and keypoints as `description`."""
    listing = work / f"{name}.txt"
    listing.write_text("".join(f"{image.resolve()}\n" for image in images))
    data = work / f"{name}.yaml"
    data.write_text(
        yaml.safe_dump({**description, "path": str(work), "train": str(listing), "val": str(listing)})
    )
    return data


def _export_into_cache(
    weights: Path, imgsz: int, max_drop: float, data: Callable[[Any, Path], CheckData]
) -> tuple[Path, Int8Check]:
    """Export and check in a temporary folder beside `weights`; rename into `export_dir` when it passed."""
    target = export_dir(weights)
    with tempfile.TemporaryDirectory(prefix=f".{weights.stem}-int8-", dir=weights.parent) as work:
        work = Path(work)
        exported, check = _export_and_check(weights, imgsz, work, data)
        if check.drop_points > max_drop:
            raise Int8AccuracyError(
                f"the INT8 export of '{weights.name}' loses {check.drop_points:.1f} points of "
                f"{check.metric} on {check.held_out_images} held-out images ({check.pt_score:.3f} -> "
                f"{check.int8_score:.3f}; at most {max_drop} allowed): it is not served. Use more, and "
                "more varied, calibration images, or MODEL_FORMAT=pt",
                check,
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
    weights: Path, imgsz: int, work: Path, data: Callable[[Any, Path], CheckData]
) -> tuple[Path, Int8Check]:
    from ultralytics import YOLO

    pt_copy = work / weights.name
    shutil.copyfile(weights, pt_copy)
    model = YOLO(str(pt_copy))
    check_data = data(model, work)
    started = time.perf_counter()
    end_to_end = end_to_end_options(model)  # YOLO26: export and check its NMS-free head (inference/heads.py)
    exported = Path(
        model.export(
            format="openvino",
            quantize=8,
            data=str(check_data.calibration_yaml),
            imgsz=imgsz,
            batch=1,
            verbose=False,
            **end_to_end,
        )
    )
    export_seconds = time.perf_counter() - started
    pt_score, pt_ms = _map50_95(YOLO(str(pt_copy)), check_data.check_yaml, imgsz, work / "val-pt", end_to_end)
    int8_score, int8_ms = _map50_95(
        YOLO(str(exported), task=model.task), check_data.check_yaml, imgsz, work / "val-int8", end_to_end
    )
    check = Int8Check(
        metric="mAP50-95 vs labels" if check_data.labelled else "mAP50-95 vs the .pt's boxes",
        pt_score=pt_score,
        int8_score=int8_score,
        held_out_images=check_data.held_out_images,
        calibration_images=check_data.calibration_images,
        export_seconds=round(export_seconds, 1),
        pt_ms=round(pt_ms, 2),
        int8_ms=round(int8_ms, 2),
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


def _map50_95(model, data: Path, imgsz: int, project: Path, options: dict) -> tuple[float, float]:
    """(box mAP50-95, inference ms per image at batch 1) of `model` on the data's val split."""
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
    return float(metrics.box.map), float(metrics.speed.get("inference", 0.0))
