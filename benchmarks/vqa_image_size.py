"""The VQA recipe's default model: one training step at each image size, side by side.

The recipe resizes easy-VQA's 64x64 images before cutting them into 8-pixel patches; the
size sets the sequence length (patches + [CLS] + the question's tokens) and so the cost of a
step. Every size is timed in the same rounds (alternated, median), on the same easy-VQA
batch of 128 (the recipe's batch size), with AdamW and the model built ``pooled_only`` as the recipe builds it.
Reports ms/step, samples/s, the speed-up over 64x64 and the share of the matmul peak.
Writes a table and JSON.

    python benchmarks/vqa_image_size.py [--sizes 64 56 48 40] [--repeats 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
from cases_vilt import small_preset, train_step_fn, training_batch  # noqa: E402
from harness import Case, count_flops, matmul_peak_gflops, measure, use_threads, write_json  # noqa: E402

import vilt  # noqa: E402
from vilt.training import TrainingConfig, build_optimizer  # noqa: E402

BATCH = 128  # the VQA recipe's default batch size
STEPS = 3  # steps per timed call: the recipe runs one model step after step, not one step each


def run(*, sizes: list[int], repeats: int, out_dir: Path) -> tuple[list[Case], str]:
    preset = small_preset()
    steps, cases = {}, {}
    for size in sizes:
        torch.manual_seed(0)
        config = vilt.ViltConfig.from_preset(
            preset, num_labels=13, image_size=size, pooled_only=True
        )
        if size < config.patch_size or size % config.patch_size:
            raise SystemExit(
                f"--sizes: {size} is not a multiple of the {config.patch_size}-px patch"
            )
        model = vilt.ViltForQuestionAnswering(config).train()
        batch = training_batch(config, BATCH, image_size=size)
        optimizer = build_optimizer(model, TrainingConfig(lr=1e-3))
        name = f"{size}x{size}"
        step = train_step_fn(model, optimizer, batch)
        steps[name] = lambda step=step: [step() for _ in range(STEPS)]
        grid = size // config.patch_size
        tokens = grid * grid + 1 + batch["input_ids"].shape[1]
        cases[name] = Case(name=name, unit="samples", items=BATCH)
        cases[name].extra.update(image_size=size, patches=grid * grid, tokens=tokens)
    peak = matmul_peak_gflops()
    seconds, spread = measure(steps, repeats=repeats, warmup=2)
    base = seconds.get("64x64")
    lines = [
        f"`{preset}` training step, batch {BATCH}, {torch.get_num_threads()} threads, "
        f"matmul peak {peak:.0f} GFLOP/s, median of {repeats} alternated rounds of {STEPS} steps",
        "",
        "| image size | patches | tokens | ms/step | samples/s | vs 64x64 | % of matmul peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, fn in steps.items():
        case, per_step = cases[name], seconds[name] / STEPS
        case.seconds, case.spread = {"vilt": per_step}, {"vilt": spread[name]}
        case.gflops["vilt"] = count_flops(fn) / seconds[name] / 1e9
        speedup = f"{base / seconds[name]:.2f}x" if base else "-"
        lines.append(
            f"| {name} | {case.extra['patches']} | {case.extra['tokens']} | "
            f"{1000 * per_step:.0f} | {BATCH / per_step:.0f} | {speedup} | "
            f"{100 * case.gflops['vilt'] / peak:.0f}% |"
        )
    write_json(
        out_dir / "vqa_image_size.json",
        list(cases.values()),
        peak,
        benchmark="vqa_image_size",
        preset=preset,
        batch_size=BATCH,
    )
    return list(cases.values()), "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 56, 48, 40])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-dir", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    use_threads(args.threads)
    _, text = run(sizes=args.sizes, repeats=args.repeats, out_dir=Path(args.out_dir))
    print(text)


if __name__ == "__main__":
    main()
