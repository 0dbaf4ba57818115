"""Open-vocabulary models (YOLOE) prompted with a control's labels: text embeddings made once, kept.

A YOLOE model finds whatever its classes' text embeddings describe. The embeddings of a prompt list
come from Ultralytics' own text encoder (`YOLOE.get_text_pe`: MobileCLIP, whose weights Ultralytics
downloads on first use), which costs a second or more and a few hundred MB, so they are computed once
per (weight file, prompt list) and kept:

- in memory (`PromptEmbeddings`, one per `ModelRegistry`), and
- on disk beside the model, `<stem>-<sha256 of the weights, 12 hex>_prompts/<sha256 of the prompts>.pt`,
  written atomically, so every worker process (and every restart) reads what one of them computed.

Named by the weights' content as well as the prompts: the embeddings pass through the model's own
text head (`reprta`), so a retrained model gets new ones. The encoder is one seam, `TextEncoder`:
production uses `ultralytics_text_embeddings`; tests hand in precomputed embeddings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core.errors import ModelLoadError

logger = logging.getLogger(__name__)

TextEncoder = Callable[[Any, list[str]], Any]  # (YOLOE model, prompts) -> (1, N, D) torch tensor
MAX_PROMPT_LISTS_PER_MODEL = 8  # loaded prompted copies of one weight file; the least recently used goes


def ultralytics_text_embeddings(yolo: Any, prompts: list[str]) -> Any:
    """The prompts' embeddings from Ultralytics' text encoder, or a refusal that says what to install where."""
    try:
        return yolo.get_text_pe(prompts)
    except Exception as error:  # offline download, missing `clip` package, corrupt encoder file
        from ultralytics.utils import SETTINGS

        encoder = getattr(yolo.model, "text_model", "mobileclip:blt")
        weights = "mobileclip2_b.ts" if encoder.startswith("mobileclip2") else "mobileclip_blt.ts"
        logger.warning("Text encoder %s failed: %r", encoder, error)
        raise ModelLoadError(
            f"model_prompts needs Ultralytics' text encoder ({encoder}) to turn the labels into prompts, and it "
            f"could not be loaded ({type(error).__name__}: {str(error)[:160]}). Put {weights} (from "
            f"https://github.com/ultralytics/assets/releases) into {SETTINGS['weights_dir']} and install the "
            "`clip` package (pip install git+https://github.com/ultralytics/CLIP.git), or run the backend "
            "online once; the embeddings are then cached beside the model"
        ) from None


def prompts_digest(prompts: Sequence[str]) -> str:
    """A stable name for a prompt list (order matters: class i is prompt i).

    >>> prompts_digest(["car", "pickup truck"]) == prompts_digest(["car", "pickup truck"])
    True
    """
    return hashlib.sha256(json.dumps(list(prompts)).encode()).hexdigest()[:16]


class PromptEmbeddings:
    """Text embeddings per (weight file, prompt list): memory, then disk, then the encoder (once)."""

    def __init__(self, encoder: TextEncoder = ultralytics_text_embeddings):
        self._encoder = encoder
        self._memory: dict[tuple[Path, tuple[str, ...]], Any] = {}
        self._lock = (
            threading.Lock()
        )  # one computation at a time: the encoder is big, and so is a second copy

    def get(self, yolo: Any, weights: Path, prompts: tuple[str, ...]) -> Any:
        key = (weights, prompts)
        embeddings = self._memory.get(key)
        if embeddings is not None:
            return embeddings
        with self._lock:
            embeddings = self._memory.get(key)
            if embeddings is None:
                embeddings = self._from_disk_or_encoder(yolo, weights, prompts)
                self._memory[key] = embeddings
        return embeddings

    def _from_disk_or_encoder(self, yolo: Any, weights: Path, prompts: tuple[str, ...]) -> Any:
        import torch

        file = cache_file(weights, prompts)
        if file.is_file():
            try:
                stored = torch.load(file, map_location="cpu", weights_only=True)
                if stored["prompts"] == list(prompts):
                    return stored["embeddings"]
            except Exception as error:  # a broken file is made again, never served
                logger.warning("Prompt embeddings %s unreadable (%r); computing them again", file, error)
        logger.info("Computing text embeddings of %d prompts for %s", len(prompts), weights.name)
        embeddings = self._encoder(yolo, list(prompts)).detach().cpu()
        _write_atomically(file, {"prompts": list(prompts), "embeddings": embeddings})
        return embeddings


def cache_file(weights: Path, prompts: Sequence[str]) -> Path:
    """Where the embeddings of `prompts` for `weights` are kept on disk (beside the weights)."""
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
    return weights.with_name(f"{weights.stem}-{digest}_prompts") / f"{prompts_digest(prompts)}.pt"


def _write_atomically(file: Path, payload: dict) -> None:
    """Write to a temporary file beside `file`, then rename: readers see all of it or nothing."""
    import torch

    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=file.parent, suffix=".tmp", delete=False) as handle:
            torch.save(payload, handle)
        os.replace(handle.name, file)
    except OSError as error:  # a read-only MODEL_ROOT: the memory copy still serves this process
        logger.warning("Prompt embeddings not cached at %s: %r", file, error)


def prompt_model(
    yolo: Any, model_path: str, weights: Path, prompts: tuple[str, ...], cache: PromptEmbeddings
) -> None:
    """Give a freshly loaded YOLOE model the prompts as its classes (class i is prompts[i])."""
    from ultralytics.nn.tasks import YOLOEModel

    if not isinstance(getattr(yolo, "model", None), YOLOEModel) or hasattr(yolo.model.model[-1], "lrpc"):
        raise ModelLoadError(
            f"model_prompts is set, but '{model_path}' is not a text-promptable YOLOE model; name a "
            "yoloe-*.pt weight file (not a prompt-free -pf one) in model_path, or remove model_prompts"
        )
    yolo.set_classes(list(prompts), cache.get(yolo, weights, prompts))
