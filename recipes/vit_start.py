"""Does starting ViLT from a ViT pay? The ViLT paper's premise, measured offline on easy-VQA.

1. A ViT of the easy-VQA ViLT's shape (vit-mini-h16) learns easy-VQA's images, one class per
   colour and shape (recipes/presets/easy-vqa-shapes.json).
2. VQA (recipes/vqa.py) and ITM + MLM pretraining (recipes/pretrain.py), each from a random
   start and from that ViT (--init-vision), at the same steps, evaluated along the way.
3. The curves (two PNGs) and a table of the evaluations (table.md) in --out.

    python recipes/vit_start.py                          # the figures of docs/pretraining.md
    python recipes/vit_start.py --vqa-steps 1082 --pretrain-steps 740 --out runs/vit-start-full

A run whose results.json exists is not run again (delete it to redo it). Each run's command
is printed before it starts.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

RECIPES = Path(__file__).resolve().parent
sys.path.insert(0, str(RECIPES.parent))  # a checkout without install


def _run(out: Path, script: str, *flags: str) -> dict:
    if not (out / "results.json").is_file():
        command = [sys.executable, str(RECIPES / script), *flags, "--output-dir", str(out)]
        print("$", " ".join(command[1:]), flush=True)
        subprocess.run(command, check=True)
    return json.loads((out / "results.json").read_text())


def _evaluations(out: Path, key: str) -> list[tuple[int, float]]:
    with open(out / "metrics.csv", newline="") as handle:
        return [(int(r["step"]), float(r[key])) for r in csv.DictReader(handle) if r.get(key)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/vit-start"))
    parser.add_argument("--vit-epochs", type=int, default=6)
    parser.add_argument("--vqa-steps", type=int, default=250)
    parser.add_argument("--pretrain-steps", type=int, default=250)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--max-eval-examples", type=int, default=2000)
    args = parser.parse_args(argv)
    out = args.out
    vit = out / "vit"
    found = {"vit": _run(vit, "train_vit.py", "--data", "easy-vqa", "--recipe-preset",
                         "easy-vqa-shapes", "--epochs", str(args.vit_epochs))}  # fmt: skip
    evals = [
        "--eval-every",
        str(args.eval_every),
        "--max-eval-examples",
        str(args.max_eval_examples),
    ]
    starts = {"random": [], "ViT": ["--init-vision", str(vit)]}
    for task, script, steps, keys in (
        ("vqa", "vqa.py", args.vqa_steps, ["eval_vqa_accuracy"]),
        (
            "pretrain",
            "pretrain.py",
            args.pretrain_steps,
            ["eval_itm_accuracy", "eval_mlm_accuracy"],
        ),
    ):
        runs = []
        for name, flags in starts.items():
            run = out / f"{task}-{name.lower()}"
            found[run.name] = _run(run, script, "--max-steps", str(steps), *evals, *flags)
            runs.append(run)
        from vilt.viz import plot_training_curves

        plot_training_curves(
            [r / "metrics.csv" for r in runs], out / f"{task}.png", labels=[f"{n} start" for n in starts],
            keys=["loss", *keys],
        )  # fmt: skip
    lines = _table(out, found)
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _table(out: Path, found: dict) -> list[str]:
    """Each evaluation of each run, step by step: random start against the ViT start."""
    vit = found["vit"]
    lines = [
        f"ViT: easy-VQA test accuracy (24 classes of colour and shape) "
        f"{100 * vit['accuracy']:.2f}% after {vit['steps']} steps"
    ]
    tasks = (
        ("vqa", ["eval_vqa_accuracy"]),
        ("pretrain", ["eval_itm_accuracy", "eval_mlm_accuracy"]),
    )
    for task, keys in tasks:
        steps = [s for s, _ in _evaluations(out / f"{task}-random", keys[0])]
        lines += ["", "| run | metric | " + " | ".join(f"step {s}" for s in steps) + " |"]
        lines.append("|---|---|" + "---|" * len(steps))
        for key in keys:
            for name in ("random", "vit"):
                cells = " | ".join(
                    f"{100 * v:.2f}%" for _, v in _evaluations(out / f"{task}-{name}", key)
                )
                start = "a ViT" if name == "vit" else "random"
                lines.append(f"| {task} from {start} | {key.removeprefix('eval_')} | {cells} |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
