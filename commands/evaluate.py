"""`cli.py evaluate`: how good a model (the served one, or `--model-path`) is on the project's annotated
tasks, without training: a table per label, and the tasks with the most missed and false regions."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from commands.common import EXIT_OK, add_project_arguments, figure, with_label_config
from core.settings import Settings
from model import YOLOBackend

NAME = "evaluate"
HELP = "how good a model is on the project's annotated tasks, without training"


def add_arguments(parser: argparse.ArgumentParser, settings: Settings) -> None:
    add_project_arguments(parser, settings, "the control's name (default: every trainable control)")
    parser.add_argument("--model-path", default="", help="weights in MODEL_ROOT (default: served)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    return with_label_config(
        args, settings, lambda backend, config, controls: evaluate_models(backend, args, config, controls)
    )


def evaluate_models(
    backend: YOLOBackend, args: argparse.Namespace, label_config: str, controls: list[str] | None
) -> int:
    from training_pipeline import TrainingRun, evaluate_project

    for spec in backend.training.specs(label_config, controls):
        run = TrainingRun(backend.settings, _QuietReporter())
        result = evaluate_project(run, str(args.project), spec.from_name, label_config, args.model_path)
        print(f"\n{spec.from_name}: {result.model}")
        print(report_table(result.evaluation))
        worst_missed = sorted((t for t in result.tasks if t.missed), key=lambda t: -t.missed)[:10]
        worst_false = sorted((t for t in result.tasks if t.false), key=lambda t: -t.false)[:10]
        print(
            "most missed regions (task: count): "
            + (", ".join(f"{t.task_id}: {t.missed}" for t in worst_missed) or "none")
        )
        print(
            "most false regions (task: count):  "
            + (", ".join(f"{t.task_id}: {t.false}" for t in worst_false) or "none")
        )
    return EXIT_OK


def report_table(evaluation: Any) -> str:
    """A classification-report-like table: one row per label, then all labels together."""
    lines = [f"{'label':>20} {'precision':>9} {'recall':>7} {'mAP50':>7} {'mAP50-95':>9} {'support':>8}"]
    for label, row in evaluation.per_class.items():
        lines.append(
            f"{label:>20} {row.get('precision', 0):9.3f} {row.get('recall', 0):7.3f} {figure(row.get('map50')):>7} "
            f"{figure(row.get('map50_95')):>9} {int(row.get('support', 0)):8d}"
        )
    support = sum(int(row.get("support", 0)) for row in evaluation.per_class.values())
    lines.append(
        f"{'all':>20} {evaluation.precision:9.3f} {evaluation.recall:7.3f} {figure(evaluation.map50):>7} "
        f"{figure(evaluation.map50_95):>9} {support:8d}"
    )
    if evaluation.metric != "map50_95":  # classify: no mAP, its figure is top-1 accuracy
        lines.append(f"{evaluation.metric}: {evaluation.score:.3f}")
    return "\n".join(lines)


class _QuietReporter:
    def __init__(self):
        from training.jobs import Job

        self.job = Job(id="evaluate", project="", control="")

    def phase(self, name: str) -> None:
        print(f"{name} ...", file=sys.stderr)

    def epoch(self, *args: Any) -> None:
        pass
