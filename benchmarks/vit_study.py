"""What each regularisation buys a ViT trained from scratch on little data: one run of
``recipes/train_vit.py`` per row, on a random quarter of scikit-learn's digits (360 of the
1,437 training images, all 360 test images), with the digits recipe preset and one change
per row; then a markdown table (test accuracy, the EMA's, steps, CPU and wall time) and the
test-accuracy curves of every row (PNG).

    python benchmarks/vit_study.py                         # every row, 150 epochs each
    python benchmarks/vit_study.py --rows base,mixup       # some rows
    python benchmarks/vit_study.py --threads 1 --seeds 0 1 # torch threads, several seeds
    python benchmarks/vit_study.py --fraction full         # the whole training set instead
    python benchmarks/vit_study.py --epochs 100            # fewer passes (default 150; full 60)

Each run writes to ``--out/<row>-s<seed>/`` (results.json, metrics.csv); the summary goes to
``benchmarks/results/vit_study.json``, the figure to ``docs/vit_study.png`` and the table,
with the command that made it, into docs/vit.md between its ``vit_study`` markers. Accuracy
is deterministic for one thread count (a different count changes the rounding, and with it
the run); the times depend on the machine and what else runs on it (9 rows at 80 epochs,
``--threads 1``: 4.4 CPU minutes in all, 14.5 wall minutes on 2 shared cores).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "train_vit.py"
DOC = ROOT / "docs" / "vit.md"
# the table and figure go between these lines of docs/vit.md
BEGIN, END = "<!-- vit_study:begin -->", "<!-- vit_study:end -->"
# the small-data setting: a quarter of the training images, more passes over them
QUARTER = ["--max-train-examples", "360", "--eval-every", "90"]
FULL = ["--eval-every", "230"]  # the digits default: 1,437 images, 60 epochs, 1,380 steps
EPOCHS = {"quarter": 150, "full": 60}
# row name -> (what changes, the flags added to the recipe's digits preset)
ROWS: dict[str, tuple[str, list[str]]] = {
    name: (what, flags.split())
    for name, what, flags in [
        ("none", "no augmentation at all (the preset's shift off)", "--shift 0"),
        ("base", "the digits preset (1-pixel shifts)", ""),
        ("smooth", "+ label smoothing 0.1", "--label-smoothing 0.1"),
        ("crop", "+ random resized crop (60-100% of the area)", "--crop-scale 0.6"),
        ("randaug", "+ RandAugment (2 operations, magnitude 9)", "--randaugment 2"),
        ("trivial", "+ TrivialAugment", "--trivialaugment"),
        ("erase", "+ random erasing 0.25", "--random-erasing 0.25"),
        ("mixup", "+ Mixup 0.8 / CutMix 1.0", "--mixup 0.8 --cutmix 1.0"),
        ("droppath", "+ drop path 0.1", "--drop-path 0.1"),
        ("ema", "+ EMA of the weights, decay 0.995", "--ema-decay 0.995"),
        (
            "cheap",
            "+ label smoothing, erasing and Mixup/CutMix (no per-image transform)",
            "--label-smoothing 0.1 --random-erasing 0.25 --mixup 0.8 --cutmix 1.0",
        ),
        (
            "combo",
            "+ label smoothing, crop, erasing, Mixup/CutMix and drop path together",
            "--label-smoothing 0.1 --crop-scale 0.6 --random-erasing 0.25 --mixup 0.8 "
            "--cutmix 1.0 --drop-path 0.1",
        ),
        (
            "deit",
            "+ every value of the vit-scratch preset (DeiT's ImageNet recipe)",
            "--crop-scale 0.08 --randaugment 2 --random-erasing 0.25 --mixup 0.8 --cutmix 1.0 "
            "--label-smoothing 0.1 --drop-path 0.1",
        ),
    ]
}


def run_row(name: str, seed: int, args: argparse.Namespace) -> dict:
    """One recipe run; its results and times."""
    out = Path(args.out) / f"{name}-s{seed}"
    base = [*(QUARTER if args.fraction == "quarter" else FULL), "--epochs", str(args.epochs)]
    command = [str(RECIPE), *base, *ROWS[name][1], "--seed", str(seed), "--output-dir", str(out)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    times = out / "study_times.json"
    # a run is reused only when it was made by the same command and thread count
    made_by = {"argv": command[1:-2], "threads": args.threads}
    kept = json.loads(times.read_text()) if args.reuse and times.is_file() else {}
    if not (kept.get("made_by") == made_by and (out / "results.json").is_file()):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, *command], env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"row {name} seed {seed} failed:\n{done.stderr[-3000:]}")
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        times.write_text(json.dumps({"wall_s": wall, "cpu_s": cpu, "made_by": made_by}))
    wall, cpu = (json.loads(times.read_text())[k] for k in ("wall_s", "cpu_s"))
    results = json.loads((out / "results.json").read_text())
    with open(out / "metrics.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("eval_accuracy")]
    return {
        "row": name,
        "seed": seed,
        "command": "python recipes/train_vit.py "
        + " ".join([*base, *ROWS[name][1], *(["--seed", str(seed)] if seed else [])]),
        "accuracy": results["accuracy"],
        "ema_accuracy": results.get("ema_accuracy"),
        "steps": results["steps"],
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "curve": [(int(r["step"]), float(r["eval_accuracy"])) for r in rows],
    }


def table(found: list[dict]) -> str:
    """The markdown table: one line per row, seeds averaged."""
    lines = [
        "| row | command | test accuracy | EMA | steps | CPU s | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["row"] for r in found):
        runs = [r for r in found if r["row"] == name]
        acc = [r["accuracy"] for r in runs]
        ema = [r["ema_accuracy"] for r in runs if r["ema_accuracy"] is not None]
        shown = f"{100 * statistics.mean(acc):.2f}%"
        if len(acc) > 1:
            shown += " (" + ", ".join(f"{100 * a:.2f}" for a in acc) + ")"
        lines.append(
            f"| {ROWS[name][0]} | `{runs[0]['command']}` | {shown} | "
            + (f"{100 * statistics.mean(ema):.2f}%" if ema else "-")
            + f" | {runs[0]['steps']}"
            + f" | {statistics.mean(r['cpu_s'] for r in runs):.0f}"
            + f" | {statistics.mean(r['wall_s'] for r in runs):.0f} |"
        )
    return "\n".join(lines)


def plot(found: list[dict], path: Path) -> None:
    """Left: each row's test accuracy over the steps (mean over seeds); right: the final
    accuracy of each row, each seed a dot, the mean a bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["row"] for r in found))
    colours = plt.get_cmap("tab20").colors
    fig, (curves, finals) = plt.subplots(
        1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [3, 2]}
    )
    for k, name in enumerate(names):
        runs = [r for r in found if r["row"] == name]
        steps = [step for step, _ in runs[0]["curve"]]
        mean = [statistics.mean(r["curve"][i][1] for r in runs) for i in range(len(steps))]
        style = dict(color=colours[k % len(colours)], linestyle="-" if k < 10 else "--")
        curves.plot(steps, [100 * a for a in mean], marker=".", label=ROWS[name][0], **style)
        accs = [100 * r["accuracy"] for r in runs]
        finals.barh(k, statistics.mean(accs), color=style["color"], alpha=0.6)
        finals.plot(accs, [k] * len(accs), "k.", markersize=5)
    curves.set_xlabel("optimizer step")
    curves.set_ylabel("test accuracy (%), mean over seeds")
    curves.grid(alpha=0.3)
    curves.legend(fontsize=7, loc="lower right")
    finals.set_yticks(range(len(names)), names)
    finals.invert_yaxis()
    low = 85.0  # the rows below it are labelled with their mean instead
    for k, name in enumerate(names):
        mean = statistics.mean(100 * r["accuracy"] for r in found if r["row"] == name)
        if mean < low:
            finals.text(low + 0.3, k, f"{mean:.1f}% (off the scale)", va="center", fontsize=8)
    finals.set_xlim(low, 100)
    finals.set_xlabel("final test accuracy (%): bar the mean, dots the seeds")
    finals.grid(alpha=0.3, axis="x")
    seeds = len({r["seed"] for r in found})
    fig.suptitle(f"ViT from scratch on the digits: one change per row ({seeds} seed(s) each)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated row names")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS per run")
    parser.add_argument("--fraction", choices=("quarter", "full"), default="quarter")
    parser.add_argument("--out", default="runs/vit-study")
    parser.add_argument(
        "--reuse", action="store_true", help="keep the runs already in --out (same flags)"
    )
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "vit_study.json"))
    parser.add_argument("--png", default=str(ROOT / "docs" / "vit_study.png"))
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="passes over the training images "
        f"(default {EPOCHS['quarter']} for the quarter, {EPOCHS['full']} for the full set)",
    )
    parser.add_argument(
        "--doc", default=str(DOC), help="the page whose study section gets the table ('': none)"
    )
    args = parser.parse_args()
    args.epochs = args.epochs or EPOCHS[args.fraction]
    names = [n for n in args.rows.split(",") if n]
    unknown = sorted(set(names) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}; known: {', '.join(ROWS)}")
    found = []
    for name in names:
        for seed in args.seeds:
            found.append(run_row(name, seed, args))
            last = found[-1]
            print(f"{name} seed {seed}: {100 * last['accuracy']:.2f}% ({last['cpu_s']} CPU s)")
    invocation = " ".join(["python benchmarks/vit_study.py", *sys.argv[1:]])
    summary = {
        "command": invocation,
        "threads": args.threads,
        "fraction": args.fraction,
        "epochs": args.epochs,
        "runs": found,
    }
    Path(args.json).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    plot(found, Path(args.png))
    print(table(found))
    if args.doc:
        write_doc(Path(args.doc), found, invocation, Path(args.png), args)


def write_doc(doc: Path, found: list[dict], invocation: str, png: Path, args) -> None:
    """Replace what lies between BEGIN and END in the page with the command, table and plot."""
    text = doc.read_text(encoding="utf-8")
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        sys.exit(f"{doc}: expected one {BEGIN} line and one {END} line around the study")
    head, rest = text.split(BEGIN)
    tail = rest.split(END)[1]
    threads = f"{args.threads} torch thread(s) per run" if args.threads else "torch's threads"
    image = os.path.relpath(png, doc.parent)
    block = "\n".join(
        [
            BEGIN,
            f"Made by `{invocation}` ({len(args.seeds)} seed(s), {threads}, {args.epochs} "
            f"epochs, the {args.fraction} training set); the times are the machine's, "
            "noisy where others share it.",
            "",
            table(found),
            "",
            f"![test accuracy of each row over the steps, and at the end]({image})",
            END,
        ]
    )
    doc.write_text(head + block + tail, encoding="utf-8")


if __name__ == "__main__":
    main()
