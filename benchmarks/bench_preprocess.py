"""Image preprocessing alone: vilt's ImageProcessor against transformers' ViltImageProcessor.

Both turn the same 640x480 JPEGs (made here: seeded gradients, shapes and noise) into
ViLT batches (shorter side 384, bicubic, normalised, padded, pixel_mask), in the same
process, alternated, several rounds; the median time per round gives images/s and the
ratio. The outputs are compared too (largest absolute difference, mask equality): a speed-up
only counts when the output is the same.

    python benchmarks/bench_preprocess.py [--images 64] [--batch-size 32] [--repeats 7]
        [--threads 2] [--out benchmarks/results/preprocess.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # the harness; vilt from a checkout
from harness import Case, machine_info, measure, use_threads, write_json  # noqa: E402

TARGET = ">= 3x"


def make_jpegs(directory: Path, count: int, *, seed: int = 0) -> list[str]:
    """``count`` photo-like 640x480 JPEGs (quality 90): gradients, ellipses, sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:480, 0:640]
    ramps = np.stack([x / 640, y / 480, (x + y) / 1120], -1) * 255
    paths = []
    for i in range(count):
        pixels = ramps * rng.uniform(0.3, 1.0, 3) + rng.normal(0, 10, ramps.shape)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(12):
            x0, y0 = int(rng.integers(0, 600)), int(rng.integers(0, 440))
            box = [x0, y0, x0 + int(rng.integers(10, 200)), y0 + int(rng.integers(10, 200))]
            draw.ellipse(box, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        path = directory / f"image_{i:03d}.jpg"
        image.save(path, quality=90)
        paths.append(str(path))
    return paths


def batches(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def compare(ours, theirs, inputs: list[list]) -> dict[str, float | bool]:
    """Largest |difference| of pixel_values and whether every pixel_mask is equal."""
    worst, masks_equal = 0.0, True
    for batch in inputs:
        a = ours(batch)
        b = theirs(batch, return_tensors="pt")
        worst = max(worst, (a["pixel_values"] - b["pixel_values"]).abs().max().item())
        masks_equal &= bool(torch.equal(a["pixel_mask"], b["pixel_mask"]))
    return {"max_abs_diff": worst, "pixel_mask_equal": masks_equal}


def reference_processors() -> dict[str, object]:
    """transformers' PIL backend (the pipeline ViLT was trained with: vilt gives its output)
    and, when torchvision is installed, its default torchvision backend (faster, but its
    resize does not give PIL's pixels)."""
    import transformers

    pil = getattr(transformers, "ViltImageProcessorPil", None)
    if pil is None:  # transformers 4: the PIL pipeline is the only one
        return {"transformers": transformers.ViltImageProcessor()}
    refs = {"transformers": pil()}
    try:
        import torchvision  # noqa: F401
    except Exception:
        return refs
    refs["transformers torchvision backend"] = transformers.ViltImageProcessor()
    return refs


def run(args: argparse.Namespace) -> list[Case]:
    from vilt.processing import ImageProcessor

    use_threads(args.threads)
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp), args.images)
        decoded = [Image.open(p).convert("RGB") for p in paths]
        settings = [
            ("JPEG files -> batch", paths, None, "transformers"),
            ("decoded PIL images -> batch", decoded, None, "transformers"),
            ("JPEG files -> batch, vilt on 1 thread", paths, 1, "transformers"),
            ("JPEG files -> batch", paths, None, "transformers torchvision backend"),
        ]
        refs = reference_processors()
        for name, items, threads, ref_name in settings:
            if ref_name not in refs:
                continue
            reference = refs[ref_name]
            ours = ImageProcessor(num_threads=threads)
            inputs = batches(items, args.batch_size)
            impls = {
                "vilt": lambda ours=ours, inputs=inputs: [ours(b) for b in inputs],
                ref_name: lambda inputs=inputs, reference=reference: [
                    reference(b, return_tensors="pt") for b in inputs
                ],
            }
            seconds, spread = measure(impls, repeats=args.repeats, warmup=1)
            primary = threads is None and ref_name == "transformers"
            case = Case(
                name=name + ("" if ref_name == "transformers" else f" (vs {ref_name})"),
                unit="images",
                items=len(items),
                target=TARGET if primary else "",
                seconds=seconds,
                spread=spread,
            )
            case.extra.update(compare(ours, reference, inputs))
            cases.append(case)
    return cases


def table(cases: list[Case]) -> str:
    lines = [
        "| case | vilt (images/s) | transformers (images/s) | ratio | max abs diff | "
        "pixel_mask equal | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        lines.append(
            f"| {c.name} | {c.throughput('vilt'):.1f} | {c.throughput(c.reference()):.1f} | "
            f"{c.ratio():.2f}x | {c.extra['max_abs_diff']:.1e} | {c.extra['pixel_mask_equal']} "
            f"| {c.target} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=os.path.join("benchmarks", "results", "preprocess.json"))
    args = parser.parse_args(argv)
    cases = run(args)
    print(
        f"ViLT image preprocessing, {args.images} 640x480 JPEGs in batches of "
        f"{args.batch_size}, {args.threads} threads, median of {args.repeats} rounds\n"
    )
    print(table(cases))
    out = write_json(args.out, cases, None, benchmark="preprocess", settings=vars(args))
    print(f"\nwrote {out} ({machine_info()['cpu_count']} CPUs)")


if __name__ == "__main__":
    main()
