"""The Trainer's step: steps per second, this checkout against another, side by side.

``Trainer.train()`` on synthetic in-memory batches (batch 32, log_every 25, no evaluation,
no saved model), with the default model of the easy-VQA and digits recipes (their presets
in ``recipes/presets/``).

    git worktree add /tmp/trainer-before main        # or any other checkout of vilt
    python benchmarks/trainer_step.py --ref /tmp/trainer-before [--models easy-vqa digits]
        [--rounds 5] [--steps 100] [--warmup 10] [--threads N] [--on-nonfinite raise]

Each round trains once with each code version, each in a fresh subprocess that imports vilt
from its checkout (the order alternates between rounds); a run times its steps from the end
of step ``warmup`` to the end of the last one, read points included, start-up and the final
save left out, in wall time and in the process's CPU time (the steadier figure where other
work shares the cores). Reports the median of each version and their ratios (this checkout
over the reference; also of the best rounds' CPU times, since other work only adds time)
and writes ``benchmarks/results/trainer_step.json``. Without ``--ref``
it times this checkout alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # not ROOT: a run imports vilt from the checkout it times
from harness import Case, matmul_peak_gflops, use_threads, write_json  # noqa: E402

BATCH, LOG_EVERY = 32, 25
RECIPES = {"easy-vqa": 13, "digits": 10}  # recipe preset -> labels (easy-VQA's answers, digits)


def recipe_shape(recipe: str) -> dict:
    """The model the recipe trains by default, as this checkout defines it: the config family
    and fields of its model preset. Both versions build the model from these fields, so a
    preset renamed between them does not matter."""
    if str(ROOT) not in sys.path:
        sys.path.insert(1, str(ROOT))  # this process only; a run's vilt comes from its checkout
    from vilt.config import PRESETS

    flags = json.loads((ROOT / "recipes" / "presets" / f"{recipe}.json").read_text())["flags"]
    family, fields = PRESETS[flags["preset"]]
    return {"family": family.__name__, "preset": flags["preset"], "fields": dict(fields),
            "num_labels": RECIPES[recipe]}  # fmt: skip


# -- one run, in a subprocess -----------------------------------------------------------------
def synthetic_data(shape: dict, n: int):
    """The model (seeded) and ``n`` synthetic training items shaped as its recipe's."""
    import torch

    import vilt

    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    labels = shape["num_labels"]
    config = getattr(vilt, shape["family"])(**shape["fields"], num_labels=labels)
    size = config.image_size
    if shape["family"] == "ViTConfig":
        model = vilt.ViTForImageClassification(config)
        pixels = torch.randn(n, config.num_channels, size, size, generator=gen)
        targets = torch.randint(0, labels, (n,), generator=gen)
        return model, [{"pixel_values": pixels[i], "labels": targets[i]} for i in range(n)]
    model = vilt.ViltForQuestionAnswering(config)
    text = 10  # an easy-VQA question with [CLS] and [SEP]
    ids = torch.randint(5, config.vocab_size, (n, text), generator=gen)
    pixels = torch.randn(n, 3, size, size, generator=gen)
    answers = torch.nn.functional.one_hot(torch.randint(0, labels, (n,), generator=gen), labels)
    items = [
        {
            "input_ids": ids[i],
            "attention_mask": torch.ones(text, dtype=torch.long),
            "pixel_values": pixels[i],
            "labels": answers[i].float(),
        }
        for i in range(n)
    ]
    return model, items


def worker(args: argparse.Namespace) -> None:
    """Train ``warmup + steps`` steps and print the timing as JSON (this process's vilt)."""
    if args.threads:
        use_threads(args.threads)
    import torch

    import vilt
    from vilt.training import Trainer, TrainingConfig

    total = args.warmup + args.steps
    model, items = synthetic_data(json.loads(args.shape), BATCH * total)
    with tempfile.TemporaryDirectory() as out:
        config = TrainingConfig(
            output_dir=out, max_steps=total, batch_size=BATCH, log_every=LOG_EVERY,
            lr=1e-4, save_model=False, tensorboard=False, on_nonfinite=args.on_nonfinite,
        )  # fmt: skip
        trainer = Trainer(model, config, train_dataset=items)
        ends: list[float] = []
        after_step = trainer._after_step  # both versions end each step here; no callback

        def timed(*a, **k):
            out = after_step(*a, **k)
            ends.append((time.perf_counter(), time.process_time()))
            return out

        trainer._after_step = timed
        trainer.train()
    first, last = ends[args.warmup - 1], ends[-1]
    result = {
        "s_per_step": (last[0] - first[0]) / args.steps,
        "cpu_s_per_step": (last[1] - first[1]) / args.steps,
        "vilt": str(Path(vilt.__file__).parent.parent),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


def run_once(checkout: Path, shape: dict, args: argparse.Namespace) -> dict:
    """Wall and CPU seconds per step of one training run with ``checkout``'s vilt."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--shape", json.dumps(shape),
           "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--on-nonfinite", args.on_nonfinite]  # fmt: skip
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = {**os.environ, "PYTHONPATH": str(checkout), "TQDM_DISABLE": "1"}
    with tempfile.TemporaryDirectory() as cwd:
        done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"the run with {checkout} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(result["vilt"]).resolve() != checkout.resolve():
        raise SystemExit(f"the run meant for {checkout} imported vilt from {result['vilt']}")
    return result


# -- the comparison -----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", choices=sorted(RECIPES), nargs="+", default=["easy-vqa"],
        help="the default model of these recipes (recipes/presets/NAME.json)",
    )  # fmt: skip
    parser.add_argument("--ref", type=Path, help="another checkout of vilt to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    parser.add_argument("--on-nonfinite", choices=("raise", "skip"), default="raise")
    parser.add_argument("--out-dir", type=Path, default=HERE / "results")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)  # a worker's model, as JSON
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be >= 1")
    if args.worker:
        worker(args)
        return
    versions = {"vilt": ROOT}
    if args.ref is not None:
        versions["before"] = args.ref
    cases = [compare(model, versions, args) for model in args.models]
    path = write_json(
        args.out_dir / "trainer_step.json", cases, matmul_peak_gflops(),
        benchmark="trainer_step", rounds=args.rounds,
    )  # fmt: skip
    for case in cases:
        print(case.name)
        for name in versions:
            print(f"  {name}: {1 / case.seconds[name]:.2f} steps/s "
                  f"({1000 * case.seconds[name]:.1f} ms/step, spread "
                  f"{100 * case.spread[name]:.0f}%; "
                  f"{1000 * case.extra[f'{name}_cpu_s_per_step']:.1f} ms CPU/step)")  # fmt: skip
        if args.ref is not None:
            print(f"  ratio (this checkout / reference): {case.ratio():.3f} in steps/s, "
                  f"{case.extra['cpu_ratio']:.3f} in CPU time per step, "
                  f"{case.extra['best_cpu_ratio']:.3f} in the best round's")  # fmt: skip
    print(f"wrote {path}")


def compare(recipe: str, versions: dict[str, Path], args: argparse.Namespace) -> Case:
    """Alternated rounds of training ``recipe``'s model with each code version: a Case."""
    shape = recipe_shape(recipe)
    runs: dict[str, list[dict]] = {name: [] for name in versions}
    names = list(versions)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            runs[name].append(run_once(versions[name], shape, args))
            print(f"{recipe} round {r + 1}: {name} {1 / runs[name][-1]['s_per_step']:.2f} "
                  f"steps/s ({1000 * runs[name][-1]['cpu_s_per_step']:.1f} ms CPU/step)",
                  flush=True)  # fmt: skip
    case = Case(
        name=f"trainer-step-{recipe} ({shape['preset']})", unit="steps", items=1,
        target="this checkout at least as fast as the reference",
    )  # fmt: skip
    for name, seen in runs.items():
        wall = [run["s_per_step"] for run in seen]
        cpu = [run["cpu_s_per_step"] for run in seen]
        case.seconds[name] = statistics.median(wall)
        case.spread[name] = (max(wall) - min(wall)) / case.seconds[name]
        case.extra[f"{name}_cpu_s_per_step"] = statistics.median(cpu)
        case.extra[f"{name}_best_cpu_s_per_step"] = min(cpu)  # other work only adds time
        case.extra[f"{name}_rounds_s_per_step"] = json.dumps([round(t, 5) for t in wall])
        case.extra[f"{name}_rounds_cpu_s_per_step"] = json.dumps([round(t, 5) for t in cpu])
    if "before" in runs:  # CPU time: less sensitive to other work on a shared machine
        for key in ("cpu", "best_cpu"):
            ratio = case.extra[f"before_{key}_s_per_step"] / case.extra[f"vilt_{key}_s_per_step"]
            case.extra[f"{key}_ratio"] = ratio
        case.extra["reference"] = str(versions["before"])
    case.extra.update(preset=shape["preset"], batch_size=BATCH, log_every=LOG_EVERY,
                      steps=args.steps, on_nonfinite=args.on_nonfinite,
                      threads=args.threads or "torch's default")  # fmt: skip
    return case


if __name__ == "__main__":
    main()
