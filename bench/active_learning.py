"""Active learning benchmark: label the tasks the model is least sure of first, versus at random.

A project adds the label "cross" (a plus sign the shipped shapes detector has never seen) to circle,
square and triangle. Crosses are rare: a few images of the pool have one. Per seed:
- a pool of generated annotated images and a held-out set (never labelled, never trained on);
- round 0: the shapes detector fine-tuned on a small random seed set (the project's first labels);
- each round, per strategy, the same budget of N more images is "labelled" (their annotations revealed):
  `uncertainty`: the N with the highest task score from the backend's own /predict path
  (`YOLOBackend.predict`, `model_task_score="uncertainty"`); `random`: N at random;
- the strategy's model is fine-tuned again on all its labels, from its previous round's weights
  (as a project's Start Training does), through the project's training code (`training/dataset.py`,
  `training/trainer.py`), and scored on the held-out set by `training/evaluation.py` (mAP50-95).

    YOLO_OFFLINE=1 python bench/active_learning.py [--seeds 3] [--pool 120] [--held-out 40]
        [--seed-labels 12] [--batch-labels 12] [--rounds 3] [--epochs 6] [--imgsz 160]

Not in CI (minutes of training). Prints a table, writes `bench/active_learning.png` (held-out mAP50-95
against labels used, both strategies, mean and range over seeds) and the "## Active learning" section of
bench/RESULTS.md (other sections kept). Needs matplotlib.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("YOLO_OFFLINE", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from bench.finetune import draw_cross, region  # noqa: E402
from tools.shapes import draw_shapes_image  # noqa: E402

LABELS = ("circle", "square", "triangle", "cross")
STRATEGIES = ("uncertainty", "random")
CROSS_SHARE = 0.25  # images of the pool with a cross: the rare class a project must find


@dataclass
class Example:
    task_id: int
    path: Path
    shapes: list  # (label, xyxy) drawn


def make_examples(
    rng: np.random.Generator, folder: Path, count: int, first_id: int, size: int
) -> list[Example]:
    """`count` images of 1-2 known shapes; a CROSS_SHARE of them also has one or two crosses."""
    folder.mkdir(parents=True, exist_ok=True)
    examples = []
    for task_id in range(first_id, first_id + count):
        image, shapes = draw_shapes_image(rng, size, size, n_shapes=int(rng.integers(1, 3)))
        taken = [box for _, box in shapes]
        crosses = int(rng.integers(1, 3)) if rng.random() < CROSS_SHARE else 0
        for _ in range(crosses):
            box = draw_cross(image, rng, taken)
            if box is not None:
                taken.append(box)
                shapes.append(("cross", box))
        path = folder / f"{task_id}.png"
        cv2.imwrite(str(path), image)
        examples.append(Example(task_id, path, shapes))
    return examples


def labeling_config(model_path: str) -> str:
    labels = "".join(f'<Label value="{label}"/>' for label in LABELS)
    return (
        '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image" '
        f'model_path="{model_path}" model_task_score="uncertainty">{labels}</RectangleLabels></View>'
    )


def annotated(examples: list[Example], size: int) -> list:
    from training.dataset import AnnotatedImage

    return [
        AnnotatedImage(
            e.task_id, e.path, [region(name, box, size, size) for name, box in e.shapes], size, size
        )
        for e in examples
    ]


class Bench:
    """One workspace: the backend (for the uncertainty), the training spec and the held-out set."""

    def __init__(self, args: argparse.Namespace, work: Path):
        from control_models.labeling_plan import build_plan
        from core.settings import Settings
        from model import YOLOBackend
        from training.dataset import write_dataset

        self.args, self.work = args, work
        self.model_root = work / "models"
        self.model_root.mkdir()
        shutil.copy(ROOT / "models" / "shapes-yolov8n.pt", self.model_root / "shapes-yolov8n.pt")
        self.settings = Settings(
            _env_file=None,
            model_root=self.model_root,
            media_cache_dir=work / "cache",
            allow_custom_model_path=True,
            allow_model_download=False,
            allowed_local_roots=str(work),
        )
        self.backend = YOLOBackend(self.settings)
        self.spec = build_plan(labeling_config("shapes-yolov8n.pt"), self.settings).controls[0].training
        rng = np.random.default_rng(7)  # the same held-out set for every seed
        held_out = make_examples(rng, work / "held-out", args.held_out, 100_000, args.imgsz)
        self.held_out = write_dataset(
            annotated(held_out, args.imgsz), self.spec, work / "held-out-set", val_fraction=1.0,
            min_images=1, require_every_label=False,
        )  # fmt: skip

    def fine_tune(self, base: Path, examples: list[Example], name: str, seed: int) -> tuple[Path, float]:
        """Fine-tune `base` on `examples`; (best weights, held-out mAP50-95)."""
        from training.dataset import write_dataset
        from training.evaluation import evaluate
        from training.trainer import TrainParams, fine_tune

        data = write_dataset(
            annotated(examples, self.args.imgsz), self.spec, self.work / "data" / name, seed=seed,
            require_every_label=False,
        )  # fmt: skip
        params = TrainParams(
            epochs=self.args.epochs, imgsz=self.args.imgsz, batch=8, patience=self.args.epochs, seed=seed
        )
        best = fine_tune(base, data.train_data, self.work / "runs" / name, params)
        kept = self.model_root / f"{name}.pt"  # inside MODEL_ROOT, where a control may name it
        shutil.copy(best, kept)
        return kept, float(evaluate(kept, self.held_out, self.spec, self.args.imgsz).map50_95 or 0.0)

    def most_uncertain(self, model: Path, pool: list[Example], count: int) -> list[Example]:
        """The `count` pool images whose task score (uncertainty) is highest, through /predict's code."""
        tasks = [{"id": e.task_id, "data": {"image": str(e.path)}} for e in pool]
        run = self.backend.predict(tasks, labeling_config(model.name), project="bench")
        scores = [result["score"] for result in run.results()]
        order = np.argsort(-np.asarray(scores), kind="stable")
        return [pool[i] for i in order[:count]]


def run_seed(bench: Bench, seed: int) -> dict[str, list[tuple[int, float]]]:
    """(labels used, held-out mAP50-95) per round, per strategy, for one seed."""
    args = bench.args
    rng = np.random.default_rng(seed)
    pool = make_examples(rng, bench.work / f"pool-{seed}", args.pool, 1, args.imgsz)
    order = rng.permutation(len(pool))
    labelled = [pool[i] for i in order[: args.seed_labels]]
    started = time.perf_counter()
    model, score = bench.fine_tune(bench.model_root / "shapes-yolov8n.pt", labelled, f"s{seed}-r0", seed)
    print(f"seed {seed} round 0: {len(labelled)} labels, mAP50-95 {score:.3f}", flush=True)
    curves = {}
    for strategy in STRATEGIES:
        mine, weights, curve = list(labelled), model, [(len(labelled), score)]
        for round_number in range(1, args.rounds + 1):
            taken = {e.task_id for e in mine}
            unlabelled = [e for e in pool if e.task_id not in taken]
            if strategy == "uncertainty":
                picked = bench.most_uncertain(weights, unlabelled, args.batch_labels)
            else:
                picked = [unlabelled[i] for i in rng.permutation(len(unlabelled))[: args.batch_labels]]
            mine += picked
            weights, round_score = bench.fine_tune(weights, mine, f"s{seed}-{strategy}-r{round_number}", seed)
            crosses = sum(name == "cross" for e in picked for name, _ in e.shapes)
            print(
                f"seed {seed} {strategy} round {round_number}: {len(mine)} labels (+{crosses} crosses), "
                f"mAP50-95 {round_score:.3f}  [{time.perf_counter() - started:.0f} s]",
                flush=True,
            )
            curve.append((len(mine), round_score))
        curves[strategy] = curve
    return curves


def summary(runs: list[dict]) -> dict[str, np.ndarray]:
    """Per strategy, (rounds, 3): labels used, mean mAP50-95 over seeds, and the spread (max - min)."""
    out = {}
    for strategy in STRATEGIES:
        scores = np.array([[s for _, s in run[strategy]] for run in runs])
        labels = np.array([n for n, _ in runs[0][strategy]])
        out[strategy] = np.stack([labels, scores.mean(0), scores.max(0) - scores.min(0)], axis=1)
    return out


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=110)
    for strategy, color in zip(STRATEGIES, ("tab:red", "tab:blue"), strict=True):
        scores = np.array([[s for _, s in run[strategy]] for run in runs])
        labels = [n for n, _ in runs[0][strategy]]
        axes.plot(labels, scores.mean(0), "o-", color=color, label=f"{strategy} (mean of {len(runs)} seeds)")
        axes.fill_between(labels, scores.min(0), scores.max(0), color=color, alpha=0.15)
    axes.set_xlabel("images labelled")
    axes.set_ylabel("held-out mAP50-95")
    axes.set_title("Active learning: least sure first vs random")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)


def results_section(args: argparse.Namespace, runs: list[dict], seconds: float, load: str) -> str:
    table = summary(runs)
    lines = [
        "## Active learning",
        "",
        f"`YOLO_OFFLINE=1 python bench/active_learning.py --seeds {args.seeds} --pool {args.pool} "
        f"--held-out {args.held_out} --seed-labels {args.seed_labels} --batch-labels {args.batch_labels} "
        f"--rounds {args.rounds} --epochs {args.epochs} --imgsz {args.imgsz}`, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}, {platform.machine()} {os.cpu_count()} cores, CPU, "
        f"load average at the start {load}; {seconds / 60:.1f} min.",
        "",
        f"Shapes images {args.imgsz} px; the project adds `cross`, unseen by the base model, in "
        f"{CROSS_SHARE:.0%} of the images. Round 0 fine-tunes the shapes detector on {args.seed_labels} "
        f"random images; each round adds {args.batch_labels} images picked by the strategy and fine-tunes "
        "again from the previous round. Held-out mAP50-95 (`training/evaluation.py`, 4 classes), mean over "
        "seeds (spread = max - min):",
        "",
        "| labels | uncertainty | spread | random | spread |",
        "|---|---|---|---|---|",
    ]
    for (labels, u_mean, u_spread), (_, r_mean, r_spread) in zip(
        table["uncertainty"], table["random"], strict=True
    ):
        lines.append(f"| {labels:.0f} | {u_mean:.3f} | {u_spread:.3f} | {r_mean:.3f} | {r_spread:.3f} |")
    lines += ["", "![held-out mAP50-95 against labels](active_learning.png)", ""]
    return "\n".join(lines)


def write_results(path: Path, section: str) -> None:
    """Replace (or add) this section (its first line is its heading); other sections stay as they are."""
    heading = section.splitlines()[0]
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start = text.find(heading + "\n")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pool", type=int, default=120)
    parser.add_argument("--held-out", type=int, default=40)
    parser.add_argument("--seed-labels", type=int, default=12)
    parser.add_argument("--batch-labels", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--plot", type=Path, default=ROOT / "bench" / "active_learning.png")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    load = f"{os.getloadavg()[0]:.1f}"
    work = Path(tempfile.mkdtemp(prefix="active-learning-bench-"))
    started = time.perf_counter()
    try:
        bench = Bench(args, work)
        runs = [run_seed(bench, seed) for seed in range(args.seeds)]
        bench.backend.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - started
    load += f", at the end {os.getloadavg()[0]:.1f}"
    plot(runs, args.plot)
    section = results_section(args, runs, seconds, load)
    print(section)
    write_results(args.results, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
