"""Fine-tune an Ultralytics model on a written dataset, offline-safe, reproducible, into a version folder.

Ultralytics reaches for the internet while training in three places, all avoided here:
- weights: we start from a local file (the control's model or its last trained version), never a name;
- the AMP check downloads yolo11n.pt: it only runs on CUDA, and `amp=False` is passed on CPU;
- fonts: `check_dataset` asks for Arial.ttf on every dataset check (a 3 s HEAD request offline, and
  plots need it). Offline (YOLO_OFFLINE=1) we pass `plots=False` and skip that font check; online the
  font is fetched once into Ultralytics' config folder and the run folder gets its plots.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

EpochCallback = Callable[[int, int, dict[str, float]], None]  # (epoch done, epochs, metrics)


@dataclass(frozen=True)
class TrainParams:
    epochs: int = 30
    imgsz: int = 320
    batch: int = 8
    patience: int = 10
    seed: int = 0
    workers: int = 0  # dataloader processes; 0 keeps the job one process (the server keeps its cores)
    device: str = ""  # Ultralytics device string; empty lets it choose (cpu here)


def offline() -> bool:
    return os.environ.get("YOLO_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def fine_tune(
    base_weights: Path,
    data: Path,
    run_dir: Path,
    params: TrainParams,
    on_epoch: EpochCallback | None = None,
) -> Path:
    """Train from `base_weights` on `data` (dataset.yaml, or a classify folder); the best weights' path.

    Ultralytics writes its run into `run_dir` (results.csv, args.yaml, weights/, plots when online).
    """
    from ultralytics import YOLO

    plots = not offline()
    if not plots:
        _skip_font_check()
    model = YOLO(str(base_weights))
    if on_epoch is not None:
        model.add_callback("on_fit_epoch_end", _epoch_reporter(on_epoch))
    device = params.device or _default_device()
    model.train(
        data=str(data),
        epochs=params.epochs,
        imgsz=params.imgsz,
        batch=params.batch,
        patience=params.patience,
        # Ultralytics accumulates gradients up to a nominal batch of 64: with a few dozen images and
        # batch 8 that is one optimizer step every 2 epochs. A step per batch is what small data needs.
        nbs=params.batch,
        seed=params.seed,
        deterministic=True,
        workers=params.workers,
        device=device,
        amp=device not in ("cpu", "mps"),  # AMP is a CUDA feature; its check would download a model
        plots=plots,
        project=str(run_dir.parent),
        name=run_dir.name,
        exist_ok=True,
        verbose=False,
        val=True,
    )
    best = run_dir / "weights" / "best.pt"
    if not best.is_file():
        last = run_dir / "weights" / "last.pt"
        if not last.is_file():
            raise RuntimeError(f"Ultralytics wrote no weights into {run_dir / 'weights'}")
        best = last
    return best


def _default_device() -> str:
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


def _epoch_reporter(on_epoch: EpochCallback) -> Callable[[Any], None]:
    def report(trainer: Any) -> None:
        metrics = {
            str(key): round(float(value), 5)
            for key, value in (getattr(trainer, "metrics", None) or {}).items()
            if isinstance(value, int | float)
        }
        # Ultralytics calls this once more after its final validation: the count stops at `epochs`.
        on_epoch(min(int(trainer.epoch) + 1, int(trainer.epochs)), int(trainer.epochs), metrics)

    return report


def _skip_font_check() -> None:
    """Offline and without plots no font is drawn; Ultralytics would still try a HEAD request for one."""
    import ultralytics.data.utils as data_utils

    data_utils.check_font = lambda *args, **kwargs: None
