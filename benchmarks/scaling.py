"""How ViLT-B/32 inference cost grows with batch size and with image size (sequence length).

For each setting: pairs/s, tokens/s, achieved GFLOP/s, and the share of the FLOPs that
attention's N x N products take (4 N^2 D per layer, against 24 N D^2 for the projections and
MLP). Cost per token stays flat while the projections dominate; it rises once the quadratic
term grows (N / 6D of the linear work: 12% at N = 577 for D = 768). Writes a table, JSON
and a PNG.

    python benchmarks/scaling.py [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
from harness import Case, count_flops, matmul_peak_gflops, measure, use_threads, write_json  # noqa: E402

import vilt  # noqa: E402

BATCHES = (1, 4, 8, 16, 32)
SIZES = (192, 288, 384, 512, 640, 768)
TEXT = 10  # tokens: an easy-VQA question with [CLS] and [SEP]


def _flops_split(config: vilt.ViltConfig, n: int) -> tuple[float, float]:
    """(linear, attention) forward FLOPs per sequence of ``n`` tokens."""
    d, layers, inner = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    linear = 2 * n * (4 * d * d + 2 * d * inner) * layers
    attention = 4 * n * n * d * layers
    return linear, attention


def one(model, config, *, batch: int, size: int, repeats: int) -> Case:
    grid = size // 32
    n = TEXT + 1 + grid * grid
    inputs = dict(
        input_ids=torch.randint(5, 1000, (batch, TEXT)),
        pixel_values=torch.randn(batch, 3, size, size),
    )

    def call() -> None:
        with torch.inference_mode():
            model(**inputs)

    case = Case(name=f"batch {batch}, {size}x{size} ({n} tokens)", unit="pairs", items=batch)
    case.seconds, case.spread = measure({"vilt": call}, repeats=repeats)
    case.gflops["vilt"] = count_flops(call) / case.seconds["vilt"] / 1e9
    linear, attention = _flops_split(config, n)
    case.extra.update(
        batch=batch,
        image_size=size,
        tokens=n,
        tokens_per_s=batch * n / case.seconds["vilt"],
        attention_flop_share=attention / (linear + attention),
    )
    return case


def table(cases: list[Case], peak: float) -> str:
    lines = [
        "| setting | pairs/s | tokens/s | GFLOP/s | % of matmul peak | attention share of FLOPs |",
        "|---|---|---|---|---|---|",
    ]
    for c in cases:
        lines.append(
            f"| {c.name} | {c.throughput('vilt'):.2f} | {c.extra['tokens_per_s']:.0f} | "
            f"{c.gflops['vilt']:.0f} | {100 * c.gflops['vilt'] / peak:.0f}% | "
            f"{100 * c.extra['attention_flop_share']:.1f}% |"
        )
    return "\n".join(lines)


def plot(by_batch: list[Case], by_size: list[Case], peak: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot(
        [c.extra["batch"] for c in by_batch], [c.extra["tokens_per_s"] for c in by_batch], "o-"
    )
    axes[0].set(
        xlabel="batch size (384x384)", ylabel="tokens / s", title="batch size", xscale="log"
    )
    ax = axes[1]
    ax.plot(
        [c.extra["tokens"] for c in by_size],
        [c.extra["tokens_per_s"] for c in by_size],
        "o-",
        label="tokens/s",
    )
    ax.set(
        xlabel="sequence length (image size / 32)^2 + 11",
        ylabel="tokens / s",
        title="sequence length",
    )
    twin = ax.twinx()
    twin.plot(
        [c.extra["tokens"] for c in by_size],
        [100 * c.extra["attention_flop_share"] for c in by_size],
        "s--",
        color="tab:red",
        label="attention % of FLOPs",
    )
    twin.set_ylabel("attention % of FLOPs", color="tab:red")
    fig.suptitle(
        f"ViLT-B/32 inference on {torch.get_num_threads()} CPU threads (matmul peak {peak:.0f} GFLOP/s)"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def run(*, repeats: int, out_dir: Path, peak: float | None = None) -> tuple[list[Case], str]:
    config = vilt.ViltConfig.from_preset("vilt-b32", vocab_size=1000, num_labels=13)
    torch.manual_seed(0)
    model = vilt.ViltForQuestionAnswering(config).eval()
    peak = max(peak or 0.0, matmul_peak_gflops())  # contention only lowers it: the best
    by_batch = [one(model, config, batch=b, size=384, repeats=repeats) for b in BATCHES]
    by_size = [one(model, config, batch=8, size=s, repeats=repeats) for s in SIZES]
    text = "By batch size (384x384 images):\n\n" + table(by_batch, peak)
    text += "\n\nBy image size (batch 8):\n\n" + table(by_size, peak)
    plot(by_batch, by_size, peak, out_dir / "scaling.png")
    write_json(out_dir / "scaling.json", by_batch + by_size, peak, benchmark="scaling")
    return by_batch + by_size, text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-dir", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    use_threads(args.threads)
    _, text = run(repeats=args.repeats, out_dir=Path(args.out_dir))
    print(text)
    print(f"\nwrote {args.out_dir}/scaling.json and scaling.png")


if __name__ == "__main__":
    main()
