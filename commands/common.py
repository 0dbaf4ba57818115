"""What every command shares: the Label Studio options, the process set-up, exit statuses, messages."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from pydantic import SecretStr

from core.errors import BackendError
from core.settings import Settings
from media.label_studio_client import LabelStudioClient
from media.label_studio_client import describe as describe_label_studio_error
from model import YOLOBackend

EXIT_OK, EXIT_TASKS_FAILED, EXIT_NOTHING_RAN = 0, 1, 2
NEEDS_LABEL_STUDIO = "give --ls-url and --ls-api-key (or set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY)"


def add_label_studio_arguments(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """`--ls-url` and `--ls-api-key`, every command's, defaulting to LABEL_STUDIO_URL and ..._API_KEY."""
    parser.add_argument(
        "--ls-url", default=settings.label_studio_url, help="Label Studio URL (default: $LABEL_STUDIO_URL)"
    )
    parser.add_argument(
        "--ls-api-key",
        default=settings.label_studio_api_key.get_secret_value(),
        help="personal access token or legacy token (default: $LABEL_STUDIO_API_KEY)",
    )


def add_project_arguments(parser: argparse.ArgumentParser, settings: Settings, control_help: str) -> None:
    """`--project`, `--control` and the Label Studio options of the project commands."""
    parser.add_argument("--project", type=int, required=True, help="Label Studio project id")
    parser.add_argument("--control", help=control_help)
    add_label_studio_arguments(parser, settings)


def has_label_studio(args: argparse.Namespace) -> bool:
    return bool(args.ls_url and args.ls_api_key)


def label_studio(args: argparse.Namespace) -> LabelStudioClient:
    """The one Label Studio client (`media/label_studio_client.py`), at the command line's address."""
    return LabelStudioClient(args.ls_url, args.ls_api_key)


def prepare_process() -> None:
    """As start.sh does for the server: load weight files without unpickling arbitrary code, and never
    pip-install at run time. Ultralytics reads both when it is first imported, which happens later."""
    os.environ.setdefault("ULTRALYTICS_SAFE_LOAD", "true")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def with_label_studio(settings: Settings, url: str, api_key: str) -> Settings:
    """`settings` with the Label Studio address and key of the command line (whose defaults they are)."""
    return settings.model_copy(
        update={"label_studio_url": url.rstrip("/"), "label_studio_api_key": SecretStr(api_key)}
    )


def with_backend(args: argparse.Namespace, settings: Settings, work: Callable[[YOLOBackend], int]) -> int:
    """Run `work` on a backend built from `settings` and the command line; any error ends the command
    with EXIT_NOTHING_RAN and one line saying why; the backend is closed after."""
    prepare_process()
    backend = YOLOBackend(with_label_studio(settings, args.ls_url, args.ls_api_key))
    try:
        return work(backend)
    except Exception as error:
        print(f"error: {describe(error)}", file=sys.stderr)
        return EXIT_NOTHING_RAN
    finally:
        backend.close()


def with_label_config(
    args: argparse.Namespace,
    settings: Settings,
    work: Callable[[YOLOBackend, str, list[str] | None], int],
) -> int:
    """`with_backend`, once the Label Studio options are there and the project's labeling config is
    fetched; `work` gets the backend, that config and the control named (None: every one)."""

    def run(backend: YOLOBackend) -> int:
        if not has_label_studio(args):
            print(f"error: {NEEDS_LABEL_STUDIO}")
            return EXIT_NOTHING_RAN
        label_config = label_studio(args).label_config(args.project)
        return work(backend, label_config, [args.control] if args.control else None)

    return with_backend(args, settings, run)


def describe(error: Exception) -> str:
    """A one-line reason for an error from the backend, the SDK (through `LabelStudioClient` its errors
    are the backend's) or anything else."""
    if isinstance(error, BackendError) or getattr(error, "status_code", None) is not None:
        return describe_label_studio_error(error)
    return f"{type(error).__name__}: {str(error)[:300]}"


def figure(value: Any) -> str:
    """A metric for a table: four decimals, or "-" when there is none."""
    return f"{value:.4f}" if isinstance(value, int | float) else "-"
