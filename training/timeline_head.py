"""The trained part of a `TimelineLabels`: a small LSTM over the classifier's per-frame features.

Architecture (as the official example's MultiLabelLSTM, smaller): features standardised with the
training set's mean and spread (stored inside the module, so they travel with the weights) -> linear to
`hidden_size` -> layer norm -> a bidirectional LSTM (a whole video is known when it is labelled, so each
frame may look both ways) -> linear to one logit per label (multi-label: a sigmoid each).

Files in the version folder: `best.pt` holds only the `state_dict` (tensors), `head.json` the shape and
the labels. Loading reads `best.pt` with `torch.load(weights_only=True)`: no pickled object, hence no
code, can come out of it. Training is seeded and runs on the CPU in the job process.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ModelLoadError
from training.spec import SequenceHeadParams

HEAD_META = "head.json"
FORMAT = "timeline-lstm-1"  # head.json's "format": a file of another format is refused, not misread


@dataclass(frozen=True)
class HeadMeta:
    """What `head.json` says: enough to rebuild the module and to check it fits the control."""

    labels: tuple[str, ...]
    feature_dim: int
    hidden_size: int
    num_layers: int
    vid_stride: int  # the stride its training features were taken at
    sequence_size: int  # the window it was trained on, and reads videos in
    feature_model: str  # the classifier (model_path) whose features it reads
    format: str = FORMAT

    def to_json(self) -> dict:
        return {**asdict(self), "labels": list(self.labels)}

    @classmethod
    def from_json(cls, data: Any) -> HeadMeta:
        try:
            meta = cls(
                labels=tuple(str(label) for label in data["labels"]),
                feature_dim=int(data["feature_dim"]),
                hidden_size=int(data["hidden_size"]),
                num_layers=int(data["num_layers"]),
                vid_stride=int(data["vid_stride"]),
                sequence_size=int(data["sequence_size"]),
                feature_model=str(data["feature_model"]),
                format=str(data["format"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ModelLoadError(f"{HEAD_META} is not a timeline head description ({error})") from None
        if meta.format != FORMAT:
            raise ModelLoadError(f"{HEAD_META} has format '{meta.format}'; this backend reads '{FORMAT}'")
        if (
            not meta.labels
            or min(meta.feature_dim, meta.hidden_size, meta.num_layers, meta.vid_stride, meta.sequence_size)
            < 1
        ):
            raise ModelLoadError(f"{HEAD_META} describes an empty head")
        return meta


def _module(meta: HeadMeta) -> Any:
    """The torch module for `meta` (torch is imported here, not when the backend starts)."""
    import torch
    from torch import nn

    class SequenceHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.zeros(meta.feature_dim))
            self.register_buffer("scale", torch.ones(meta.feature_dim))
            self.project = nn.Linear(meta.feature_dim, meta.hidden_size)
            self.norm = nn.LayerNorm(meta.hidden_size)
            self.lstm = nn.LSTM(
                meta.hidden_size, meta.hidden_size, meta.num_layers, batch_first=True, bidirectional=True
            )
            self.out = nn.Linear(2 * meta.hidden_size, len(meta.labels))

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            """(B, T, D) features -> (B, T, L) logits."""
            x = (features - self.mean) / self.scale
            x = torch.relu(self.norm(self.project(x)))
            x, _ = self.lstm(x)
            return self.out(x)

    return SequenceHead()


class TimelineHead:
    """A loaded head: per-frame label probabilities of one video's features. Thread-safe (eval, no grad)."""

    def __init__(self, meta: HeadMeta, module: Any):
        self.meta = meta
        self._module = module.eval()

    @property
    def labels(self) -> tuple[str, ...]:
        return self.meta.labels

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(N, D) features of one video's processed frames -> (N, L) probabilities."""
        import torch

        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.meta.feature_dim:
            raise ModelLoadError(
                f"the trained timeline head reads {self.meta.feature_dim} features per frame, but the "
                f"classifier gives {features.shape[-1] if features.ndim else 0}: was model_path changed? "
                "Train again (Start Training)"
            )
        if len(features) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        # In the windows it was trained on, padded the same way (`windows`): an LSTM that only ever saw
        # `sequence_size` steps, the last ones of a short window zeros, is not trusted over a whole long
        # video; evaluation reads videos the same way, so its score vouches for exactly this.
        cut = windows([(features, np.zeros((len(features), 0), np.float32))], self.meta.sequence_size)
        with torch.no_grad():
            logits = self._module(torch.from_numpy(cut.features))
        return torch.sigmoid(logits[torch.from_numpy(cut.mask)]).numpy()

    def save(self, folder: Path, weights_name: str) -> None:
        import torch

        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self._module.state_dict(), folder / weights_name)
        (folder / HEAD_META).write_text(json.dumps(self.meta.to_json(), indent=2, sort_keys=True))


def load_head(folder: Path, weights_name: str) -> TimelineHead:
    """The head saved in `folder`; ModelLoadError (never an unpickled object) when the files are not one."""
    import torch

    try:
        meta = HeadMeta.from_json(json.loads((folder / HEAD_META).read_text()))
    except (OSError, ValueError) as error:
        raise ModelLoadError(
            f"no readable {HEAD_META} in the trained version ({type(error).__name__})"
        ) from None
    module = _module(meta)
    try:
        state = torch.load(folder / weights_name, map_location="cpu", weights_only=True)
        module.load_state_dict(state)
    except Exception as error:  # a foreign pickle, a truncated file, other shapes: all refused alike
        raise ModelLoadError(
            f"the trained timeline head could not be loaded ({type(error).__name__}); train again"
        ) from None
    return TimelineHead(meta, module)


@dataclass(frozen=True)
class TrainingWindow:
    """Windows of `sequence_size` rows cut from the training videos, padded, with a mask of real rows."""

    features: np.ndarray  # (W, T, D) float32
    targets: np.ndarray  # (W, T, L) float32 0/1
    mask: np.ndarray  # (W, T) bool


def windows(videos: list[tuple[np.ndarray, np.ndarray]], sequence_size: int) -> TrainingWindow:
    """Cut each (features (N, D), targets (N, L)) video into consecutive windows; the last one padded.

    Windows never cross from one video into another (no false context at the seam). The padding rows
    are zeros, at training and at prediction alike (the backward LSTM starts from them).
    """
    dim = videos[0][0].shape[1]
    labels = videos[0][1].shape[1]
    cut = []
    for features, targets in videos:
        for start in range(0, len(features), sequence_size):
            cut.append((features[start : start + sequence_size], targets[start : start + sequence_size]))
    count = len(cut)
    out = TrainingWindow(
        np.zeros((count, sequence_size, dim), np.float32),
        np.zeros((count, sequence_size, labels), np.float32),
        np.zeros((count, sequence_size), bool),
    )
    for index, (features, targets) in enumerate(cut):
        out.features[index, : len(features)] = features
        out.targets[index, : len(features)] = targets
        out.mask[index, : len(features)] = True
    return out


def _set_normalisation(module: Any, all_features: np.ndarray) -> None:
    """The head's input mean and scale, from every training frame's features."""
    import torch

    mean = all_features.mean(axis=0)
    spread = all_features.std(axis=0)
    # A random or saturated classifier leaves some features (nearly) constant: their spread is floored
    # relative to the largest one, so they stay near 0 instead of being blown up into noise.
    spread = np.maximum(spread, 1e-3 * float(spread.max()) + np.finfo(np.float32).tiny)
    with torch.no_grad():
        module.mean.copy_(torch.from_numpy(mean))
        module.scale.copy_(torch.from_numpy(spread.astype(np.float32)))


def _positive_weight(all_targets: np.ndarray) -> Any:
    """Per label, negatives / positives (1-100): a label's positive frames weigh as much as its negatives."""
    import torch

    positives = all_targets.sum(axis=0)
    negatives = len(all_targets) - positives
    return torch.from_numpy(np.clip(negatives / np.maximum(positives, 1), 1.0, 100.0).astype(np.float32))


def train_head(
    videos: list[tuple[np.ndarray, np.ndarray]],
    labels: tuple[str, ...],
    params: SequenceHeadParams,
    feature_model: str,
    seed: int = 0,
    on_epoch: Callable[[int, int, dict[str, float]], None] | None = None,
) -> TimelineHead:
    """Train a head on (features (N, D), multi-hot targets (N, L)) per training video.

    Full-batch Adam on all windows at once (a few hundred windows at most for a project's videos), BCE
    on the real rows only; positive frames weigh as much as negative ones in total, per label, so a
    short event is not drowned by the frames around it.
    """
    import torch

    torch.manual_seed(seed)
    all_features = np.concatenate([features for features, _ in videos])
    all_targets = np.concatenate([targets for _, targets in videos])
    meta = HeadMeta(
        labels=tuple(labels),
        feature_dim=int(all_features.shape[1]),
        hidden_size=params.hidden_size,
        num_layers=params.num_layers,
        vid_stride=params.vid_stride,
        sequence_size=params.sequence_size,
        feature_model=feature_model,
    )
    module = _module(meta)
    _set_normalisation(module, all_features)
    cut = windows(videos, params.sequence_size)
    features, targets = torch.from_numpy(cut.features), torch.from_numpy(cut.targets)
    mask = torch.from_numpy(cut.mask)
    loss_of = torch.nn.BCEWithLogitsLoss(reduction="none", pos_weight=_positive_weight(all_targets))
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2, weight_decay=1e-4)
    module.train()
    report_every = max(1, params.epochs // 20)
    for epoch in range(params.epochs):
        optimizer.zero_grad()
        loss = loss_of(module(features), targets).mean(dim=2)[mask].mean()
        loss.backward()
        optimizer.step()
        if on_epoch is not None and ((epoch + 1) % report_every == 0 or epoch + 1 == params.epochs):
            value = float(loss.detach())
            on_epoch(
                epoch + 1, params.epochs, {"train/loss": round(value, 5) if math.isfinite(value) else -1}
            )
    return TimelineHead(meta, module)
