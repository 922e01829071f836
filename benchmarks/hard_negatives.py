"""What hard ITM negatives cost: one pretraining step with in-batch negatives against the
same step with vilt.training.HardNegatives choosing them (a no-grad forward over the
candidate pairs first), alternated round by round, medians.

The pretraining recipe's model (vilt-small-h16 at 48x48), a batch of 128 pairs of 12 tokens,
half of them negatives, K candidates each; AdamW; one process.

    python benchmarks/hard_negatives.py [--candidates 2 4 8] [--repeats 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
from harness import measure, use_threads  # noqa: E402

import vilt  # noqa: E402
from vilt.training import HardNegatives  # noqa: E402

BATCH, TOKENS = 128, 12


def batch() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 900, (BATCH, TOKENS), generator=gen)
    itm = torch.ones(BATCH, dtype=torch.long)
    itm[::2] = 0
    mlm = torch.full((BATCH, TOKENS), -100)
    mlm[:, 3] = ids[:, 3]
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.zeros_like(ids),
        "pixel_values": torch.randn(BATCH, 3, 48, 48, generator=gen),
        "pixel_mask": torch.ones(BATCH, 48, 48, dtype=torch.long),
        "itm_labels": itm,
        "mlm_labels": mlm,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, nargs="+", default=[4])
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    use_threads(args.threads)
    torch.manual_seed(0)
    model = vilt.ViltForPreTraining(vilt.ViltConfig.from_preset("vilt-small-h16"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    inputs = batch()
    rows = torch.arange(0, BATCH, 2)

    def step(k: int | None):
        def run() -> None:
            given = dict(inputs)
            if k is not None:
                given["itm_hard_rows"] = rows
                given["itm_hard_candidates"] = torch.stack(
                    [(rows + 2 * j + 1) % BATCH for j in range(k)], dim=1
                )
                given = HardNegatives()(model, given)
            model(**given).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return run

    impls = {"in-batch": step(None), **{f"hard K={k}": step(k) for k in args.candidates}}
    seconds, _ = measure(impls, repeats=args.repeats)
    base = seconds["in-batch"]
    print("| negatives | s/step | vs in-batch |\n|---|---|---|")
    for name, s in seconds.items():
        print(f"| {name} | {s:.3f} | {s / base:.2f}x |")


if __name__ == "__main__":
    main()
