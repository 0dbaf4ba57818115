"""The one owner of loaded YOLO models.

Models load lazily, on first use, one instance per weight file, so the server starts and answers
`/health` without any weights on disk. Ultralytics predictors keep per-call state and are not
thread-safe, so calls into one model take turns through its `FairScheduler` (requests served in turn,
one batch per lane at a time, each lane on its own copy of the model); different models run in parallel.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import ModelLoadError
from core.settings import Settings
from inference.heads import end_to_end_options
from inference.int8_export import ExportFolders
from inference.prompts import (
    MAX_PROMPT_LISTS_PER_MODEL,
    PromptEmbeddings,
    TextEncoder,
    prompt_model,
    ultralytics_text_embeddings,
)
from inference.scheduler import BatchSizer, FairScheduler

if TYPE_CHECKING:
    from inference.int8_export import Int8Check

logger = logging.getLogger(__name__)

_MAX_REMEMBERED_ERRORS = 50
_MAX_NAME_BYTES = 255  # a file name on Linux file systems; longer ones make every stat raise
_MAX_PATH_CHARS = 1024
# What a model_path may name: a weight file Ultralytics loads, or an export folder. Anything else under
# MODEL_ROOT (job states and logs, served.json, metrics.json) is refused by its name, before the file
# system is asked, so the answer is the same whether such a file exists or not.
WEIGHT_SUFFIXES = (".pt", ".torchscript", ".onnx", ".engine", ".tflite", ".pb", ".xml")
EXPORT_FOLDER_SUFFIXES = ("_openvino_model", "_ncnn_model", "_saved_model", "_paddle_model", ".mlpackage")


@dataclass
class LoadedModel:
    """A YOLO model and the scheduler through which concurrent requests take turns on it."""

    name: str  # as the labeling config names it, relative to MODEL_ROOT
    yolo: Any
    task: str  # detect | segment | classify | pose | obb
    class_names: dict[int, str]
    threads: int = 1  # torch intra-op threads for CPU inference
    device: str = ""  # Ultralytics device string; empty lets Ultralytics choose
    half: bool = False  # FP16 inference (on a CUDA device)
    batch_size: int = 8  # most images per model call
    options: dict[str, Any] = field(default_factory=dict)  # always passed to predict (YOLO26: nms=False)
    scheduler: FairScheduler = field(default_factory=lambda: FairScheduler(BatchSizer()))
    # Builds another copy of `yolo` for the scheduler's second and later lanes, the first time one
    # is used (a model that never serves two requests at once is never copied).
    replicate: Callable[[], Any] | None = None
    _replicas: list[Any] = field(default_factory=list, repr=False)
    _replicas_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _copier: threading.Thread | None = field(default=None, repr=False)

    def predict(
        self, images: Sequence[np.ndarray], batch_size: int | None = None, **kwargs: Any
    ) -> list[Any]:
        """Run the model on BGR images, at most `batch_size` per call; one Ultralytics `Results` per image.

        Images of one shape go into a batch together: Ultralytics letterboxes a batch of equal shapes to
        the smallest stride-aligned rectangle, but pads a mixed batch to full squares (up to ~1.8x the
        pixels for 16:9 images). Concurrent calls take turns batch by batch (`FairScheduler`).
        """
        if self.device:
            # Only when set: a device argument that differs from the predictor's (None vs "") makes
            # Ultralytics rebuild the predictor, deep-copying the model, on every call.
            kwargs["device"] = self.device
        kwargs = {**self.options, **kwargs}
        if self.half:
            kwargs["quantize"] = 16  # FP16 compute (Ultralytics' name for it since `half` was deprecated)

        def run_batch(batch: list[np.ndarray], lane: int) -> list[Any]:
            self.use_all_threads()
            return self.replica(lane).predict(batch, verbose=False, **kwargs)

        if len(images) > 1:
            self._prepare_copies(images[0], kwargs)
        return self.scheduler.run(
            images, run_batch, group_of=lambda image: image.shape, max_batch=batch_size or self.batch_size
        )

    def replica(self, lane: int) -> Any:
        """The model copy that runs the scheduler's batches on `lane` (lane 0: `yolo` itself)."""
        if lane == 0:
            return self.yolo
        if self.replicate is None:
            raise RuntimeError(f"model '{self.name}' has no replicas for lane {lane}")
        with self._replicas_lock:
            self._add_copies(lane)
            return self._replicas[lane - 1]

    def _add_copies(self, count: int, warm: Callable[[Any], Any] | None = None) -> None:
        """Load copies until there are `count`, each run once through `warm` if given; under the copies' lock."""
        while len(self._replicas) < count:
            logger.info("Loading a copy of %s for requests that run beside another", self.name)
            copy = self.replicate()
            if warm is not None:
                self.use_all_threads()
                warm(copy)
            self._replicas.append(copy)

    def _prepare_copies(self, image: np.ndarray, kwargs: dict[str, Any]) -> None:
        """Build the other lanes' copies in the background when the first request of several images starts.

        A task opened beside a bulk request or a video then starts at once on the next lane, instead of
        waiting a second or more for its copy to load and set up its predictor (done here, with one call
        on this request's first image, under the copies' lock so no lane uses a copy half set up).
        """
        if self.scheduler.lanes < 2 or self.replicate is None:
            return
        with self._replicas_lock:
            if self._copier is not None:
                return
            self._copier = threading.Thread(
                target=self._build_copies, args=(image, kwargs), name=f"copies of {self.name}", daemon=True
            )
            self._copier.start()  # it waits for this lock; started under it so no one joins it unstarted

    def _build_copies(self, image: np.ndarray, kwargs: dict[str, Any]) -> None:
        try:
            with self._replicas_lock:
                self._add_copies(
                    self.scheduler.lanes - 1, warm=lambda copy: copy.predict([image], verbose=False, **kwargs)
                )
        except Exception:  # the lane that needs a copy builds it then, and its request gets the error
            logger.exception("Loading a copy of %s failed", self.name)

    def wait_for_copies(self, timeout: float) -> bool:
        """Whether the copies started by a request of several images are built, after waiting `timeout` s."""
        if self._copier is not None:
            self._copier.join(timeout)
        return len(self._replicas) >= self.scheduler.lanes - 1

    def use_all_threads(self) -> None:
        """Give torch every core, in the calling thread.

        Ultralytics caps torch at min(8, cores - 1) threads whenever it sets up a predictor (its
        `select_device`), and OpenMP keeps the thread count per calling thread, so the count is set
        here, right before each call, in the thread that runs it.
        """
        import torch

        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)


class ModelRegistry:
    def __init__(self, settings: Settings, text_encoder: TextEncoder | None = None):
        self._settings = settings
        # (weight file, format, prompts): a YOLOE prompted with a control's labels is its own copy
        self._models: dict[tuple[Path, str, tuple[str, ...]], LoadedModel] = {}
        self._load_locks: dict[tuple[Path, str, tuple[str, ...]], threading.Lock] = {}
        self.prompt_embeddings = PromptEmbeddings(text_encoder or ultralytics_text_embeddings)
        self._registry_lock = threading.Lock()
        self._errors_lock = threading.Lock()
        self._last_errors: dict[str, str] = {}
        self._export_folders = ExportFolders()  # MODEL_FORMAT=auto: which weights have a checked export

    # -- paths -------------------------------------------------------------------------------------

    def resolve(self, model_path: str) -> Path:
        """The weight file for a config's `model_path`, refused unless it stays inside MODEL_ROOT.

        Symlinks are resolved before the check, so a link that points out of MODEL_ROOT is refused too.
        """
        if not model_path or not model_path.strip():
            raise ModelLoadError("model_path is empty")
        posix = PurePosixPath(model_path.strip().replace("\\", "/"))
        if len(model_path) > _MAX_PATH_CHARS or any(
            len(part.encode()) > _MAX_NAME_BYTES for part in posix.parts
        ):
            raise ModelLoadError(
                f"model_path '{model_path[:80]}...' is too long (at most {_MAX_NAME_BYTES} bytes a folder or "
                f"file name, {_MAX_PATH_CHARS} characters in all)"
            )
        if posix.is_absolute() or Path(model_path).is_absolute():
            raise ModelLoadError(f"model_path '{model_path}' is absolute; give a path relative to MODEL_ROOT")
        if ".." in posix.parts:
            raise ModelLoadError(f"model_path '{model_path}' leaves MODEL_ROOT; '..' is not allowed")
        check_weight_name(model_path, posix.name)
        root = self._settings.model_root
        try:
            candidate = (root / Path(*posix.parts)).resolve()
        except (OSError, RuntimeError) as error:  # a symlink loop, a name the file system refuses
            raise ModelLoadError(
                f"model_path '{model_path}' cannot be resolved ({type(error).__name__})"
            ) from None
        if not candidate.is_relative_to(root):
            raise ModelLoadError(f"model_path '{model_path}' resolves outside MODEL_ROOT")
        return candidate

    # -- loading -----------------------------------------------------------------------------------

    def loaded(self) -> dict[str, str]:
        """Names and tasks of the models loaded so far (cheap: for /health)."""
        return {model.name: model.task for model in list(self._models.values())}

    def get(self, model_path: str, model_format: str = "pt", prompts: tuple[str, ...] = ()) -> LoadedModel:
        """The loaded model for `model_path` in `model_format` (auto | pt | openvino-int8), loaded on first
        use; with `prompts`, a YOLOE copy whose classes are those prompts (`inference/prompts.py`)."""
        if model_format == "auto":
            model_format = "pt" if prompts else self.auto_format(model_path)
        try:
            path = self.resolve(model_path)
            key = (path, model_format, tuple(prompts))
            model = self._models.get(key)
            if model is not None:
                return model
            with self._registry_lock:
                load_lock = self._load_locks.setdefault(key, threading.Lock())
            with load_lock:
                model = self._models.get(key)
                if model is None:
                    if prompts:
                        model = self._load(model_path, path, model_format, tuple(prompts))
                        self._forget_old_prompt_lists(path)
                    else:
                        model = self._load(model_path, path, model_format)
                    self._models[key] = model
        except ModelLoadError as error:
            self._remember_error(model_path, error.message)
            raise
        with self._errors_lock:
            self._last_errors.pop(model_path, None)
        return model

    def auto_format(self, model_path: str) -> str:
        """openvino-int8 where a checked INT8 export of this .pt exists and inference runs on a CPU, else pt.

        Only looks (`ExportFolders`: two stats a request): an export is made by a training job, `cli.py
        export-int8` or an explicit openvino-int8 request, never on a request's path here.
        """
        if uses_cuda(self._settings.device):
            return "pt"
        try:
            path = self.resolve(model_path)
            checked = path.suffix == ".pt" and path.is_file() and self._export_folders.has_checked(path)
        except (ModelLoadError, OSError):
            return "pt"  # `get` reports the path's problem
        return "openvino-int8" if checked else "pt"

    @property
    def last_errors(self) -> dict[str, str]:
        """A copy of the last load error per model path (for /health): requests change it meanwhile."""
        with self._errors_lock:
            return dict(self._last_errors)

    def unload(self, model_path: str) -> None:
        """Drop a loaded model (e.g. a trained version no longer served); calls in flight finish on it."""
        try:
            path = self.resolve(model_path)
        except ModelLoadError:
            return
        with self._registry_lock:
            for key in [key for key in self._models if key[0] == path]:
                self._models.pop(key, None)
                self._load_locks.pop(key, None)

    def _forget_old_prompt_lists(self, path: Path) -> None:
        """Keep at most MAX_PROMPT_LISTS_PER_MODEL - 1 prompted copies of a weight file (one is coming):
        configs with ever new labels must not fill the memory with models. The oldest goes first."""
        with self._registry_lock:
            prompted = [key for key in self._models if key[0] == path and key[2]]
            for key in prompted[: max(0, len(prompted) - MAX_PROMPT_LISTS_PER_MODEL + 1)]:
                self._models.pop(key, None)
                self._load_locks.pop(key, None)

    def _remember_error(self, model_path: str, message: str) -> None:
        """Keep the last error per model path for /health, bounded against configs naming endless paths."""
        with self._errors_lock:
            self._last_errors.pop(model_path, None)
            self._last_errors[model_path] = message
            while len(self._last_errors) > _MAX_REMEMBERED_ERRORS:
                self._last_errors.pop(next(iter(self._last_errors)))

    def _load(
        self, model_path: str, path: Path, model_format: str, prompts: tuple[str, ...] = ()
    ) -> LoadedModel:
        if prompts and model_format != "pt":
            raise ModelLoadError(
                f"model_prompts needs model_format pt; '{model_path}' is asked for as {model_format}"
            )
        try:
            if not path.exists():
                download_official_weights(model_path, path, self._settings)
            is_file = path.is_file()
        except OSError as error:  # a path the file system refuses to look up (too long, no access)
            raise ModelLoadError(
                f"model file '{model_path}' cannot be read ({type(error).__name__})"
            ) from None
        if not is_file and not path.name.endswith(EXPORT_FOLDER_SUFFIXES):
            raise ModelLoadError(f"model file '{model_path}' is not a file in MODEL_ROOT")

        def build() -> Any:
            return self._build(model_path, path, model_format, prompts)

        yolo = build()
        task, class_names = _task_and_classes(model_path, yolo)
        cuda = uses_cuda(self._settings.device)
        return LoadedModel(
            name=_display_name(model_path, model_format, prompts),
            yolo=yolo,
            task=task,
            class_names=class_names,
            threads=self._settings.effective_torch_threads,
            device=self._settings.device,
            half=cuda and model_format == "pt",  # an OpenVINO model keeps its own precision
            batch_size=self._settings.inference_batch_size or (32 if cuda else 8),
            options=end_to_end_options(yolo),  # an INT8 export carries its head choice in its metadata
            scheduler=FairScheduler(
                BatchSizer(self._settings.batch_latency_factor, min_gain=self._settings.batch_min_gain),
                lanes=self._settings.model_lanes or (1 if cuda or _uses_mps(self._settings.device) else 2),
            ),
            replicate=build,
        )

    def _build(self, model_path: str, path: Path, model_format: str, prompts: tuple[str, ...]) -> Any:
        """The Ultralytics model for a checked weight path: loaded, exported to INT8 or prompted as asked."""
        yolo = self._yolo(model_path, path)
        if model_format == "openvino-int8":
            yolo = self._int8(model_path, path, yolo)
        if prompts:
            prompt_model(yolo, model_path, path, prompts, self.prompt_embeddings)
        return yolo

    def _yolo(self, model_path: str, path: Path) -> Any:
        from ultralytics import YOLO

        logger.info("Loading model %s", path)
        try:
            return YOLO(str(path))
        except Exception as error:  # corrupt file, foreign pickle, wrong format: all the user's to fix
            logger.warning("Model %s failed to load: %r", path, error)
            raise ModelLoadError(
                f"model file '{model_path}' could not be loaded as an Ultralytics YOLO model "
                f"({type(error).__name__})"
            ) from None

    def _int8(self, model_path: str, path: Path, pt_model: Any) -> Any:
        """The calibrated INT8 OpenVINO export of a `.pt` (made and checked on first use), loaded."""
        from ultralytics import YOLO

        folder, check = self._int8_export(model_path, path, pt_model, self._settings.int8_calibration_dir)
        logger.info(
            "Serving %s as INT8 (%s: %.3f, .pt %.3f)", folder, check.metric, check.int8_score, check.pt_score
        )
        return YOLO(str(folder), task=pt_model.task)

    def cached_int8_export(self, model_path: str) -> tuple[Path, Int8Check] | None:
        """The checked INT8 export that `model_format="openvino-int8"` would serve for `model_path`, if made."""
        from inference.int8_export import cached_export

        path = self.resolve(model_path)
        return cached_export(path) if path.is_file() else None

    def export_int8(self, model_path: str, calibration_folder: Path) -> tuple[Path, Int8Check]:
        """Make (or find) the checked INT8 export of `model_path`, calibrated on `calibration_folder`, in the
        cache `model_format="openvino-int8"` is served from; refused like on first use when it fails."""
        path = self.resolve(model_path)
        if not path.is_file():
            raise ModelLoadError(f"model file '{model_path}' not found in MODEL_ROOT")
        return self._int8_export(model_path, path, self._yolo(model_path, path), calibration_folder)

    def _int8_export(
        self, model_path: str, path: Path, pt_model: Any, calibration_folder: Path | None
    ) -> tuple[Path, Int8Check]:
        if path.suffix != ".pt":
            raise ModelLoadError(f"model_format openvino-int8 needs a .pt model; '{model_path}' is not one")
        from inference.int8_export import cached_or_export

        imgsz = int(pt_model.overrides.get("imgsz") or 640)
        try:
            return cached_or_export(path, calibration_folder, imgsz, self._settings.int8_max_drop)
        except ModelLoadError:
            raise
        except Exception as error:  # exporter or NNCF failure: the .pt stays usable with MODEL_FORMAT=pt
            logger.exception("INT8 export of %s failed", path)
            raise ModelLoadError(
                f"the INT8 export of '{model_path}' failed ({type(error).__name__}: {error}); "
                "use model_format pt"
            ) from None


def download_official_weights(model_path: str, path: Path, settings: Settings) -> None:
    """Fetch a missing official weight file (e.g. `yolov8m.pt`) into MODEL_ROOT, when online."""
    is_bare_name = "/" not in model_path.replace("\\", "/")
    if not (is_bare_name and path.suffix == ".pt"):
        raise ModelLoadError(f"model file '{model_path}' not found in MODEL_ROOT")
    if not settings.allow_model_download:
        raise ModelLoadError(missing_without_download(model_path, settings))
    from ultralytics.utils.downloads import attempt_download_asset

    path.parent.mkdir(parents=True, exist_ok=True)
    logger.info("Model %s not in MODEL_ROOT, trying to download it", model_path)
    try:
        downloaded = Path(attempt_download_asset(str(path)))
        # Ultralytics may answer with a copy from its own weights folder instead of downloading.
        if downloaded.is_file() and not path.exists():
            shutil.copyfile(downloaded, path)
    except Exception as error:
        logger.warning("Download of %s failed: %r", model_path, error)
    if not path.exists():
        raise ModelLoadError(
            f"model file '{model_path}' not found in MODEL_ROOT and could not be downloaded "
            "(no internet?); put the file into MODEL_ROOT"
        )


def missing_without_download(model_path: str, settings: Settings) -> str:
    """A missing official-looking file while downloads are off: say so, and why they are off."""
    why = (
        "ALLOW_CUSTOM_MODEL_PATH=true turns them off unless ALLOW_MODEL_DOWNLOAD=true is set"
        if settings.allow_custom_model_path
        else "ALLOW_MODEL_DOWNLOAD=false"
    )
    return (
        f"model file '{model_path}' not found in MODEL_ROOT, and downloads are off ({why}): put the file "
        "into MODEL_ROOT, or set ALLOW_MODEL_DOWNLOAD=true to let the backend fetch official weights"
    )


def check_weight_name(model_path: str, name: str) -> None:
    """Refuse a model_path whose name is not a weight file's or an export folder's (by name only)."""
    lowered = name.lower()
    if lowered.endswith(WEIGHT_SUFFIXES) or lowered.endswith(EXPORT_FOLDER_SUFFIXES):
        return
    raise ModelLoadError(
        f"model_path '{model_path}' is not a model: name a weight file ({', '.join(WEIGHT_SUFFIXES)}) or an "
        f"export folder ({', '.join('*' + s for s in EXPORT_FOLDER_SUFFIXES)}) in MODEL_ROOT"
    )


def _task_and_classes(model_path: str, yolo: Any) -> tuple[str, dict[int, str]]:
    """The loaded model's task and class names; an object without them is not a model (422, not 500)."""
    try:
        names = getattr(yolo, "names", None) or {}
        if isinstance(names, list | tuple):
            names = dict(enumerate(names))
        return str(yolo.task), {int(k): str(v) for k, v in names.items()}
    except Exception as error:
        logger.warning("Model %s has no usable task or class names: %r", model_path, error)
        raise ModelLoadError(
            f"model file '{model_path}' could not be loaded as an Ultralytics YOLO model ({type(error).__name__})"
        ) from None


def _display_name(model_path: str, model_format: str, prompts: tuple[str, ...]) -> str:
    """How /health and errors name a loaded model: `yolov8m.pt`, `yolov8m.pt (openvino-int8)`,
    `yoloe-26s-seg.pt (prompts: car, pickup truck)`."""
    if prompts:
        shown = ", ".join(prompts[:5]) + (", ..." if len(prompts) > 5 else "")
        return f"{model_path} (prompts: {shown})"
    return model_path if model_format == "pt" else f"{model_path} ({model_format})"


def _uses_mps(device: str) -> bool:
    return device.strip().lower().startswith("mps")


def uses_cuda(device: str) -> bool:
    """Whether Ultralytics runs on a CUDA GPU for this DEVICE ("0", "cuda:1", "0,1"; empty: if present)."""
    device = device.strip().lower()
    if device in ("cpu", "mps") or device.startswith(("cpu", "mps")):
        return False
    if device:
        return True
    import torch

    return torch.cuda.is_available()
