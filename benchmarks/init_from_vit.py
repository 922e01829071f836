"""Does starting ViLT from a ViT pay? The ViLT paper's premise, measured offline on easy-VQA.

1. A ViT of the easy-VQA ViLT's shape (preset vit-mini-h16) learns easy-VQA's images, one
   class per colour and shape (recipes/train_vit.py --data easy-vqa, recipe preset
   easy-vqa-shapes).
2. VQA (recipes/vqa.py) and ITM + MLM pretraining (recipes/pretrain.py), each from a random
   start and from that ViT (--init-vision), with the same seed, data order, learning rate and
   steps, evaluated every --eval-every steps on the same held-out examples.
3. A table of the evaluations (Markdown), a JSON of them, and one PNG of the curves.

    python benchmarks/init_from_vit.py --figure docs/init_from_vit.png  # docs/pretraining.md, 20 min
    python benchmarks/init_from_vit.py --vit-epochs 30 --batch-size 128 --vqa-steps 3246 \\
        --pretrain-steps 740 --eval-every 200 --max-eval-examples 0 \\
        --out runs/init-from-vit-full     # the recipes' full runs: the presets' epochs and batch

On a machine shared with other jobs, OMP_NUM_THREADS=1 keeps each run from waiting on its
own descheduled threads.

A run whose results.json exists is not run again (delete it to redo it). Each run's command
is printed before it starts, and the table says what ran.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"

# (task, recipe, the held-out metrics in metrics.csv)
TASKS = (
    ("vqa", "vqa.py", ("eval_vqa_accuracy",)),
    ("pretrain", "pretrain.py", ("eval_itm_accuracy", "eval_mlm_accuracy")),
)
STARTS = ("random", "vit")
LABELS = {"random": "random start", "vit": "from the ViT (--init-vision)"}


def run_recipe(out: Path, script: str, flags: list[str]) -> dict:
    """Run ``recipes/<script>`` into ``out`` unless it ran there already; its results.json."""
    if not (out / "results.json").is_file():
        command = [sys.executable, str(RECIPES / script), *flags, "--output-dir", str(out)]
        print("$ python", " ".join([f"recipes/{script}", *flags, "--output-dir", str(out)]))
        subprocess.run(command, check=True, cwd=ROOT)
    return json.loads((out / "results.json").read_text())


def evaluations(metrics_csv: Path, key: str) -> list[tuple[int, float]]:
    """(step, value) of each row of a metrics.csv that has ``key``."""
    with open(metrics_csv, newline="") as handle:
        return [(int(r["step"]), float(r[key])) for r in csv.DictReader(handle) if r.get(key)]


def table(out: Path, vit: dict, walls: dict[str, float]) -> list[str]:
    """Each held-out evaluation of each run, step by step, the two starts one above the
    other; the ViT's own accuracy first."""
    lines = [
        f"The ViT: {100 * vit['accuracy']:.2f}% held-out accuracy on easy-VQA's 24 colour-and-"
        f"shape classes after {vit['steps']} steps ({vit['wall_time_s']:.0f} s).",
    ]
    for task, _, keys in TASKS:
        steps = [s for s, _ in evaluations(out / f"{task}-random" / "metrics.csv", keys[0])]
        lines += [
            "",
            "| run | held out | " + " | ".join(f"step {s}" for s in steps) + " | training time |",
        ]
        lines.append("|---|---|" + "---:|" * len(steps) + "---:|")
        for key in keys:
            for start in STARTS:
                run = f"{task}-{start}"
                cells = [f"{100 * v:.2f}%" for _, v in evaluations(out / run / "metrics.csv", key)]
                name = key.removeprefix("eval_").replace("_", " ")
                row = [f"{task}, {LABELS[start]}", name, *cells, f"{walls[run]:.0f} s"]
                lines.append("| " + " | ".join(row) + " |")
    return lines


def plot(out: Path, path: Path) -> None:
    """One PNG: each task's held-out metrics and training loss, both starts in each panel."""
    from matplotlib.figure import Figure  # no pyplot: no display needed

    rows = [[(task, key) for key in (*keys, "loss")] for task, _, keys in TASKS]  # a row a task
    columns = max(len(row) for row in rows)
    figure = Figure(figsize=(4 * columns, 3.2 * len(rows)), layout="constrained")
    grid = figure.subplots(len(rows), columns, squeeze=False)
    for axes, row in zip(grid, rows, strict=True):
        for axis in axes[len(row) :]:
            axis.set_visible(False)
        for axis, (task, key) in zip(axes, row, strict=False):
            _panel(axis, out, task, key)
    grid[0][0].legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def _panel(axis: Any, out: Path, task: str, key: str) -> None:
    """One metric of one task, both starts."""
    for start, style in zip(STARTS, ("--", "-"), strict=True):
        points = evaluations(out / f"{task}-{start}" / "metrics.csv", key)
        scale = 1 if key == "loss" else 100
        axis.plot(
            [s for s, _ in points], [scale * v for _, v in points], style,
            marker="o" if key != "loss" else None, markersize=3, label=LABELS[start],
        )  # fmt: skip
    title = "training loss" if key == "loss" else f"held-out {key.removeprefix('eval_')} (%)"
    axis.set_title(f"{task}: {title}".replace("_", " "), fontsize=10)
    axis.set_xlabel("step")
    axis.grid(alpha=0.3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/init-from-vit"))
    parser.add_argument("--figure", type=Path, help="the PNG (default: OUT/init_from_vit.png)")
    parser.add_argument("--vit-epochs", type=int, default=8)
    parser.add_argument("--vqa-steps", type=int, default=200)
    parser.add_argument("--pretrain-steps", type=int, default=200)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument(
        "--max-eval-examples", type=int, default=1000, help="held-out examples (0: all)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="every run's batch (0: each recipe preset's)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = args.out.resolve()
    common = ["--seed", str(args.seed)]
    if args.batch_size:
        common += ["--batch-size", str(args.batch_size)]
    vit = run_recipe(
        out / "vit", "train_vit.py",
        ["--data", "easy-vqa", "--recipe-preset", "easy-vqa-shapes", "--epochs",
         str(args.vit_epochs), *common],
    )  # fmt: skip
    held_out = (
        ["--max-eval-examples", str(args.max_eval_examples)] if args.max_eval_examples else []
    )
    flags = ["--eval-every", str(args.eval_every), *held_out, *common]
    walls, found = {}, {"vit": vit}
    for task, script, _ in TASKS:
        steps = args.vqa_steps if task == "vqa" else args.pretrain_steps
        for start in STARTS:
            init = ["--init-vision", str(out / "vit")] if start == "vit" else []
            run = f"{task}-{start}"
            found[run] = run_recipe(out / run, script, ["--max-steps", str(steps), *flags, *init])
            walls[run] = found[run]["wall_time_s"]
    lines = table(out, vit, walls)
    (out / "table.md").write_text("\n".join(lines) + "\n")
    summary = {
        run: {
            "metrics": {k: v for k, v in r["metrics"].items() if k.startswith("eval_")},
            "steps": r["steps"],
            "wall_time_s": r["wall_time_s"],
            "start": r.get("start"),
            "accuracy": r.get("accuracy"),  # VQA: over the test-time views
        }
        for run, r in found.items()
    }
    summary["command"] = "python benchmarks/init_from_vit.py " + " ".join(sys.argv[1:])
    (out / "init_from_vit.json").write_text(json.dumps(summary, indent=2) + "\n")
    figure = args.figure or out / "init_from_vit.png"
    plot(out, figure)
    print("\n".join(lines))
    print(f"wrote {out / 'table.md'}, {out / 'init_from_vit.json'} and {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
