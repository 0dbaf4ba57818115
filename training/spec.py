"""What training needs to know about one control, decided once when the labeling config is parsed."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SequenceHeadParams:
    """A trainable `TimelineLabels`: the small sequence model trained on the classifier's frame features."""

    vid_stride: int = 1  # model_vid_stride: features of every vid_stride-th frame
    threshold: float = 0.5  # model_score_threshold: a frame shows a label at this probability or more
    epochs: int = 300  # model_classifier_epochs (full-batch steps: a few seconds on a CPU)
    sequence_size: int = 64  # model_classifier_sequence_size: frames per training window
    hidden_size: int = 32  # model_classifier_hidden_size
    num_layers: int = 1  # model_classifier_num_layers


@dataclass(frozen=True)
class TrainingSpec:
    from_name: str  # the control's name
    control_tag: str  # "RectangleLabels", ...
    value_key: str  # task data key of its image ("image")
    task: str  # Ultralytics task: "detect" (the one trainable today)
    labels: tuple[str, ...]  # class list = the control's labels in config order
    model_path: str  # the control's configured weight file (relative to MODEL_ROOT)
    label_map: dict[str, str] = field(default_factory=dict)  # serving model class -> Label Studio label
    keypoint_labels: tuple[str, ...] = ()
    epochs: int = 30  # model_train_epochs
    imgsz: int = 320  # model_train_imgsz
    batch: int = 8  # model_train_batch
    patience: int = 10  # model_train_patience
    promote: str = "better"  # model_train_promote: "better" | "always"
    train_every: int = 0  # model_train_every (0 = off)
    kind: str = "yolo"  # "yolo": fine-tune the Ultralytics model; "timeline": train `head` on its features
    head: SequenceHeadParams | None = None
