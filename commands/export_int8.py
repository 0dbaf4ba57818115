"""`cli.py export-int8`: the checked INT8 (OpenVINO) export of each image control's model, calibrated on
the project's own images, into the cache that `model_format="openvino-int8"` is served from.

Exit status 0 when every model has its checked export, 1 when one was refused or failed, 2 when nothing
could run (Label Studio unreachable, key refused, config without image controls).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from commands.common import (
    EXIT_OK,
    EXIT_TASKS_FAILED,
    NEEDS_LABEL_STUDIO,
    add_project_arguments,
    has_label_studio,
    label_studio,
    with_backend,
)
from core.settings import Settings
from inference.int8_export import MIN_CALIBRATION_IMAGES
from model import YOLOBackend
from prediction.int8 import Int8Export

NAME = "export-int8"
HELP = (
    "calibrate and check the INT8 (OpenVINO) export of each image control's model on the project's own "
    'images, into the cache that model_format="openvino-int8" is served from'
)


def add_arguments(parser: argparse.ArgumentParser, settings: Settings) -> None:
    add_project_arguments(parser, settings, "the control's name (default: every control on an <Image>)")
    parser.add_argument(
        "--limit",
        type=int,
        default=64,
        help="most of the project's images per model (default 64); a fifth are held out for the check",
    )


def check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.limit < MIN_CALIBRATION_IMAGES:
        parser.error(f"--limit must be at least {MIN_CALIBRATION_IMAGES} (images to calibrate and check on)")
    if not has_label_studio(args):
        parser.error(NEEDS_LABEL_STUDIO)


def run(args: argparse.Namespace, settings: Settings) -> int:
    exports: list[Int8Export] = []

    def work(backend: YOLOBackend) -> int:
        project = label_studio(args)
        label_config = project.label_config(args.project)
        tasks = list(project.tasks(args.project))
        print(f"Project {args.project}: {len(tasks)} task(s)", file=sys.stderr)
        # The images are needed only while the export is made: it keeps its accuracy check, not them.
        with tempfile.TemporaryDirectory(prefix="int8-calibration-") as folder:
            exports.extend(
                backend.export_int8(
                    label_config,
                    tasks,
                    Path(folder),
                    project=args.project,
                    controls=[args.control] if args.control else None,
                    limit=args.limit,
                )
            )
        return EXIT_OK

    status = with_backend(args, settings, work)
    if status != EXIT_OK:
        return status
    for export in exports:
        print(describe_int8_export(export))
    return EXIT_TASKS_FAILED if any(export.error for export in exports) else EXIT_OK


def describe_int8_export(export: Int8Export) -> str:
    """One line (and the tasks left out) per model for `export-int8`."""
    head = f"{', '.join(export.controls)} ({export.model_path}):"
    skipped = "".join(f"\n  left out: {reason}" for reason in export.skipped[:10])
    if len(export.skipped) > 10:
        skipped += f"\n  ... and {len(export.skipped) - 10} more"
    if export.error or export.check is None or export.folder is None:
        return f"{head} no INT8 export: {export.error}{skipped}"
    check = export.check
    how = (
        f"made now from {export.images} of the project's images"
        if export.made_now
        else "already made before (kept as it is)"
    )
    return (
        f"{head} INT8 export {how}, checked on {check.held_out_images} held-out images: {check.metric} "
        f".pt {check.pt_score:.3f}, INT8 {check.int8_score:.3f} ({check.drop_points:.2f} points lost)\n"
        f'  {export.folder}\n  served where the control has model_format="openvino-int8" '
        f"(or MODEL_FORMAT=openvino-int8){skipped}"
    )
