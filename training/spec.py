"""What training needs to know about one control, decided once when the labeling config is parsed."""

from __future__ import annotations

from dataclasses import dataclass, field

# Ultralytics tasks trained from image annotations, with the tag that gives each one its labels.
IMAGE_TASKS = ("detect", "obb", "segment", "pose", "classify")


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
    task: str  # Ultralytics task: one of IMAGE_TASKS
    labels: tuple[str, ...]  # class list in config order (pose: the box control's labels)
    model_path: str  # the control's configured weight file (relative to MODEL_ROOT)
    model_format: str = "pt"  # how the control serves its model: auto | pt | openvino-int8
    label_map: dict[str, str] = field(default_factory=dict)  # serving model class -> Label Studio label
    # pose: keypoint label at each model index (model_index), "" where no label has that index
    keypoint_labels: tuple[str, ...] = ()
    box_from_name: str = ""  # pose: the RectangleLabels control whose boxes group keypoints per instance
    epochs: int = 30  # model_train_epochs
    imgsz: int = 320  # model_train_imgsz
    batch: int = 8  # model_train_batch
    patience: int = 10  # model_train_patience
    promote: str = "better"  # model_train_promote: "better" | "always"
    train_every: int = 0  # model_train_every (0 = off)
    kind: str = "yolo"  # "yolo": fine-tune the Ultralytics model; "timeline": train `head` on its features
    head: SequenceHeadParams | None = None

    @property
    def region_from_names(self) -> tuple[str, ...]:
        """The controls whose result items the dataset reads (pose: the keypoints and their boxes)."""
        return (self.from_name, self.box_from_name) if self.box_from_name else (self.from_name,)

    @property
    def tag(self) -> str:
        """How messages name the control: <RectangleLabels name="box">."""
        return f'<{self.control_tag} name="{self.from_name}">'
