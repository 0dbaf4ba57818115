"""Every setting of the backend, read from the environment once.

One `Settings` object is built at start-up (`Settings()` reads the environment) and passed down to
whoever needs it; no other module reads `os.environ` for configuration.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # Models
    model_root: Path = Field(default=PROJECT_ROOT / "models", description="Where weight files live.")
    model_score_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    allow_custom_model_path: bool = False
    model_version: str = Field(default="yolo", description="Prefix of the model_version we report.")
    task_score: Literal["confidence", "uncertainty"] = Field(
        default="confidence",
        description="What a task's prediction score says: confidence (mean region score) or uncertainty "
        "(high when the model is unsure: sort by it to label those tasks first). A control's "
        "model_task_score attribute overrides it.",
    )
    model_format: Literal["auto", "pt", "openvino-int8"] = Field(
        default="auto",
        description="auto: on a CPU host, a model's checked INT8 export when one was made (by a training "
        "job, `cli.py export-int8` or a first openvino-int8 request), else the .pt; never exported on a "
        "request's path. pt: PyTorch. openvino-int8: a calibrated INT8 OpenVINO export of each .pt, made once "
        "beside it (CPU; from INT8_CALIBRATION_DIR). A control's model_format attribute overrides it.",
    )
    int8_calibration_dir: Path | None = Field(
        default=None, description="Images like the project's, to calibrate and check INT8 exports."
    )
    int8_max_drop: float = Field(
        default=1.0, ge=0.0, description="Points of mAP50-95 an INT8 export may lose against its .pt."
    )
    allow_model_download: bool | None = Field(
        default=None,
        description="Let Ultralytics download a missing official weight file (needs internet). Unset: on, "
        "unless ALLOW_CUSTOM_MODEL_PATH is on (then any config could pull any of the official files).",
    )

    # Label Studio
    label_studio_url: str = ""
    label_studio_api_key: SecretStr = SecretStr("")

    # HTTP
    basic_auth_user: str = ""
    basic_auth_pass: SecretStr = SecretStr("")
    log_level: str = "INFO"
    prometheus_multiproc_dir: str = Field(
        default="", description="Set by start.sh: where gunicorn workers share their metrics."
    )
    threads: int = Field(default=8, ge=1, description="Requests handled at once per worker process.")

    # Inference
    torch_threads: int = Field(default=0, ge=0, description="0 means every core of the machine.")
    inference_batch_size: int = Field(
        default=0, ge=0, description="Most images per model call; 0: 32 on a CUDA GPU, 8 on CPU."
    )
    batch_latency_factor: float = Field(
        default=2.0,
        ge=1.0,
        description="A batch may take this many times a one-image call: how long a request may wait "
        "behind another request's batch on the same model.",
    )
    batch_min_gain: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Batch only where a batch item costs at least this fraction less than a one-image "
        "call (measured): below it (a CPU) batches hold one image, so an opened task waits for at most one.",
    )
    model_lanes: int = Field(
        default=0,
        ge=0,
        le=8,
        description="Requests that may run a batch on one model at the same time, each on a copy of the "
        "model loaded when first needed; 0: 2 on a CPU (an opened task starts beside a bulk request, in "
        "the cores one call leaves idle), 1 on a GPU (batches share it better).",
    )
    device: str = Field(default="", description="Ultralytics device string; empty lets it choose.")

    # Media
    media_cache_dir: Path = Field(default_factory=lambda: Path(tempfile.gettempdir()) / "yolo-ls-media")
    media_cache_bytes: int = Field(default=2 * 1024**3, ge=0)
    download_connect_timeout: float = Field(default=5.0, gt=0)
    download_read_timeout: float = Field(default=60.0, gt=0)
    download_workers: int = Field(default=4, ge=1)
    max_image_bytes: int = Field(default=50 * 1024**2, ge=1)
    max_video_bytes: int = Field(default=2 * 1024**3, ge=1)
    max_image_pixels: int = Field(
        default=50_000_000,
        ge=1,
        description="Pixels an image may have (from its header, before decoding). A decoded image costs "
        "3-4 bytes a pixel and DOWNLOAD_WORKERS decode at once per worker: 50 MP is ~200 MB each.",
    )
    max_video_frames: int = Field(default=100_000, ge=1, description="Frames a video may have (decoded).")
    download_total_timeout: float = Field(
        default=300.0, gt=0, description="Seconds one download may take in all (against slow drips)."
    )
    allowed_local_roots: str = Field(
        default="",
        description="Colon-separated folders a task may name local files in; empty: no local files "
        "(Label Studio's /data/local-files/ URLs are fetched through Label Studio and need none).",
    )
    allowed_media_hosts: str = Field(
        default="",
        description="Comma-separated hosts media may come from, each `host`, `host:port` or `*.example.com` "
        "(subdomains); empty allows any public host. A host listed here may also resolve to a private "
        "address. Label Studio's own origin is always allowed.",
    )
    allow_private_media: bool = Field(
        default=False,
        description="Let http(s) media come from loopback, private and link-local addresses (any host).",
    )

    max_mask_bytes: int = Field(
        default=4 * 1024**3,
        ge=1,
        description="Bytes of brush masks one request may decode (each: its box, plus the whole image "
        "for its RLE); a task over it gets an error.",
    )
    max_video_task_seconds: float = Field(
        default=3600.0, gt=0, description="Seconds one video task may take to decode and predict."
    )

    # Training
    training_jobs_kept: int = Field(
        default=20,
        ge=1,
        description="Finished training jobs kept (state and log files) per project and control; older "
        "ones are removed when a new job of that control starts.",
    )
    training_max_jobs: int = Field(
        default=0,
        ge=0,
        description="Jobs running at once on this host; more wait `queued`. 0: one per CUDA GPU that "
        "DEVICE selects, 1 on a CPU host.",
    )
    training_max_queued: int = Field(
        default=8,
        ge=0,
        description="Jobs that may wait on this host; a trigger past it is refused with 429 (a trigger "
        "for a control whose job runs always queues its one follow-up).",
    )
    model_versions_kept: int = Field(
        default=5,
        ge=1,
        description="Trained versions kept per project and control, the served one among them; older "
        "ones are deleted after each job (never the served one).",
    )
    training_int8: bool = Field(
        default=True,
        description="After a training job promotes a version on a CPU host (MODEL_FORMAT auto or "
        "openvino-int8), the job makes the version's INT8 export, calibrated on its training images and "
        "checked on its held-out ones against the annotations; kept within INT8_MAX_DROP, so auto serves it.",
    )
    training_min_free_bytes: int = Field(
        default=1024**3,
        ge=0,
        description="Free disk a training job needs where MODEL_ROOT lives before it starts (at least 4 "
        "times the model it starts from); less fails the job at once with a clear message.",
    )

    # Jobs (training and prediction)
    redis_url: str = Field(
        default="",
        description="Redis for the job queue (RQ): jobs run on `./worker.sh` workers, never in the web "
        "processes. Empty: each job runs as a local process of this machine.",
    )
    jobs_max_running: int = Field(
        default=1, ge=1, description="Without REDIS_URL: prediction jobs running at once here; more wait."
    )
    predict_time_budget: float = Field(
        default=80.0,
        ge=0,
        description="Seconds a /predict may spend (under Label Studio's 100 s timeout); the tasks left "
        "then go to a prediction job. 0: no budget.",
    )
    prediction_job_batch: int = Field(
        default=32,
        ge=1,
        description="Tasks a prediction job fetches, predicts and stores together; a cancel waits for "
        "the batch in flight.",
    )
    prelabel_new_tasks: bool = Field(
        default=False,
        description="TASKS_CREATED from Label Studio starts a prediction job for the new tasks.",
    )
    worker_heartbeat_seconds: int = Field(
        default=10,
        ge=1,
        description="RQ workers: how often a running job's heartbeat is renewed; a job whose worker "
        "died is found about 60 s plus this after its last one.",
    )
    worker_maintenance_seconds: int = Field(
        default=30, ge=5, description="RQ workers: how often one of them looks for abandoned jobs."
    )
    job_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="How much lower than the web server's a job process's CPU priority is (training and "
        "prediction jobs, local or on a worker): an opened task keeps its share of a shared host.",
    )
    job_torch_threads: int = Field(
        default=0,
        ge=0,
        description="Torch threads of a job process. 0: half the cores (at least 1), so a job on the web "
        "server's host leaves it cores; on a worker host of its own, set the number of cores.",
    )

    # Requests
    max_request_bytes: int = Field(default=100 * 1024**2, ge=1, description="Largest request body.")
    max_concurrent_uploads: int = Field(
        default=4, ge=1, description="Multipart uploads (/ui/predict) read at once per worker; more get 429."
    )
    max_label_config_bytes: int = Field(
        default=1024**2, ge=1, description="Largest labeling config (/predict, /setup, /ui)."
    )

    @field_validator("model_root", "media_cache_dir", "int8_calibration_dir", mode="after")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        return path.expanduser().resolve() if path is not None else None

    @model_validator(mode="after")
    def _basic_auth_both_or_neither(self) -> Settings:
        # One of the two alone used to leave every route open: refuse to start instead.
        if bool(self.basic_auth_user) != bool(self.basic_auth_pass.get_secret_value()):
            raise ValueError(
                "set both BASIC_AUTH_USER and BASIC_AUTH_PASS to require basic auth, or neither to serve "
                "without it; only one of them is set"
            )
        return self

    @model_validator(mode="after")
    def _no_download_for_custom_paths_unless_asked(self) -> Settings:
        # With custom paths on, a config could name any official weight file and make the server fetch it.
        if self.allow_model_download is None:
            self.allow_model_download = not self.allow_custom_model_path
        return self

    @field_validator("label_studio_url", mode="after")
    @classmethod
    def _no_trailing_slash(cls, url: str) -> str:
        return url.rstrip("/")

    @property
    def allowed_local_root_paths(self) -> list[Path]:
        return [Path(p).expanduser().resolve() for p in self.allowed_local_roots.split(":") if p.strip()]

    @property
    def allowed_media_host_list(self) -> list[tuple[str, int | None]]:
        """ALLOWED_MEDIA_HOSTS as (host, port or None for any port); IPv6 as `[::1]:8080` or `::1`."""
        return [_host_entry(h.strip().lower()) for h in self.allowed_media_hosts.split(",") if h.strip()]

    @property
    def media_wait_timeout(self) -> float:
        """Longest a request waits for one task's media: a whole download, connecting included."""
        return self.download_total_timeout + self.download_connect_timeout

    @field_validator("allowed_media_hosts", mode="after")
    @classmethod
    def _host_entries(cls, text: str) -> str:
        for entry in text.split(","):
            if entry.strip():
                _host_entry(entry.strip())
        return text

    @property
    def effective_torch_threads(self) -> int:
        return self.torch_threads or (os.cpu_count() or 1)

    @property
    def effective_job_torch_threads(self) -> int:
        return self.job_torch_threads or max(1, (os.cpu_count() or 1) // 2)

    def for_job_process(self) -> Settings:
        """The settings a job's own process predicts with: JOB_TORCH_THREADS threads, and batches as large
        as batching pays (it serves one request, so nobody waits behind its batches and
        BATCH_LATENCY_FACTOR, which bounds that wait in the web server, does not apply; nor is a second
        copy of its model ever used, so it has one lane)."""
        largest_batch = self.inference_batch_size or 32
        return self.model_copy(
            update={
                "torch_threads": self.effective_job_torch_threads,
                "batch_latency_factor": float(max(largest_batch, self.batch_latency_factor)),
                "model_lanes": 1,
            }
        )


def _host_entry(entry: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]:port` or a bare IPv6 address -> (host, port or None)."""
    host, port = entry, ""
    if entry.startswith("["):
        host, bracket, rest = entry[1:].partition("]")
        port = rest.removeprefix(":")
        host = host if bracket and (not rest or rest.startswith(":")) else ""
    elif entry.count(":") == 1:
        host, port = entry.split(":")
    if not host or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise ValueError(f"ALLOWED_MEDIA_HOSTS entry '{entry}' is not host, host:port or *.domain")
    return host.lower(), int(port) if port else None
