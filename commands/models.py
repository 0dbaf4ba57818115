"""`cli.py models`: the trained versions of a project's controls with their metrics; `--use VERSION`
serves another one (a rollback), `--use base` the configured model."""

from __future__ import annotations

import argparse
from typing import Any

from commands.common import EXIT_NOTHING_RAN, EXIT_OK, add_project_arguments, figure, with_backend
from core.settings import Settings
from model import YOLOBackend
from training.versions import METRIC_LABELS

NAME = "models"
HELP = "list the trained versions with their metrics; --use switches (roll back)"


def add_arguments(parser: argparse.ArgumentParser, settings: Settings) -> None:
    add_project_arguments(parser, settings, "the control's name (default: every trainable control)")
    parser.add_argument("--use", metavar="VERSION", help='serve this version ("base": the configured model)')


def run(args: argparse.Namespace, settings: Settings) -> int:
    return with_backend(args, settings, lambda backend: list_or_use_models(backend, args))


def list_or_use_models(backend: YOLOBackend, args: argparse.Namespace) -> int:
    store, project = backend.versions, str(args.project)
    controls = [args.control] if args.control else store.controls(project)
    if args.use:
        if len(controls) != 1:
            print(
                f"error: name the control with --control (this project has: {', '.join(controls) or 'none'})"
            )
            return EXIT_NOTHING_RAN
        if args.use == "base":
            store.unserve(project, controls[0])
        else:
            store.promote(project, controls[0], args.use)
        print(f"{controls[0]}: now serving {args.use}")
        return EXIT_OK
    if not controls:
        print(f"no trained versions for project {project}")
    for control in controls:
        served = store.served(project, control)
        print(f"{control} (serving: {served or 'the configured model'})")
        print(f"  {'version':24} {'metric':>14} {'new':>7} {'before':>7}  decision")
        for version in store.versions(project, control):
            metrics = version.metrics or {}
            new, old = metrics.get("new") or {}, metrics.get("serving") or {}
            metric = main_metric(metrics)
            mark = "*" if version.served else " "
            print(
                f"{mark} {version.name:24} {METRIC_LABELS.get(metric, metric):>14} {figure(new.get(metric)):>7} "
                f"{figure(old.get(metric)):>7}  {metrics.get('decision', 'incomplete (failed or running)')}"
            )
            if metrics.get("int8"):
                print(f"  {'':24} {int8_line(metrics['int8'])}")
    return EXIT_OK


def int8_line(int8: dict[str, Any]) -> str:
    """A version's INT8 export in one line: kept or not, mAP50-95 and speed of the .pt and of INT8."""
    pt, quantized = int8.get("pt") or {}, int8.get("int8") or {}
    if not quantized:
        return f"INT8: not kept ({int8.get('error')})"
    return (
        f"INT8 {'kept' if int8.get('kept') else 'not kept'}: mAP50-95 {figure(quantized.get('map50_95'))} "
        f"(.pt {figure(pt.get('map50_95'))}), {_ms(quantized.get('ms_per_image'))} ms an image "
        f"(.pt {_ms(pt.get('ms_per_image'))} ms) on {int8.get('held_out_images')} held-out images"
    )


def main_metric(metrics: dict[str, Any]) -> str:
    """The key of a version's metrics.json figure that decided its promotion."""
    if metrics.get("kind") == "timeline":
        return "mean_f1"
    return str(metrics.get("metric") or "map50_95")


def _ms(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, int | float) else "-"
