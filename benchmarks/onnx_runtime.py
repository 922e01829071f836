"""ONNX Runtime against torch: speed of onnxruntime fp32 and int8, vilt eager and transformers
on the same weights and inputs, side by side; and, given a trained VQA model, the easy-VQA
accuracy each of torch fp32, onnxruntime fp32 and onnxruntime int8 keeps.

    python benchmarks/onnx_runtime.py                                   # speed, every case
    python benchmarks/onnx_runtime.py --presets vilt-easy-vqa --batch-sizes 1,32 --repeats 9
    python benchmarks/onnx_runtime.py --vqa-model runs/vqa/model --questions 2000   # + accuracy

Speed cases: each preset (random weights: speed does not depend on them) at each batch size,
once on inputs the processor made beforehand ("model") and once from image files and
questions ("processor + model": vilt's processor for vilt and onnxruntime, transformers' own
for transformers). Every implementation's logits are compared with vilt eager's in the same
run. Accuracy is single-view argmax accuracy on the first N easy-VQA test questions (the VQA
recipe's own figure adds test-time views). Writes benchmarks/results/onnx_runtime.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # the harness; vilt from a checkout

import numpy as np  # noqa: E402
import torch  # noqa: E402
from harness import machine_info, measure, use_threads  # noqa: E402
from PIL import Image  # noqa: E402
from workloads import easy_vqa_pairs, processors, vilt_pair  # noqa: E402

import vilt  # noqa: E402
from vilt.interop.onnx import OnnxModel, export_onnx  # noqa: E402

IMPLS = ("vilt eager", "transformers", "onnxruntime fp32", "onnxruntime int8")


def image_options(config: vilt.ViltConfig) -> dict:
    """Images read at the preset's own size, sides a multiple of its patch."""
    size = config.image_size if isinstance(config.image_size, int) else min(config.image_size)
    return {"size": size, "size_divisor": config.patch_size}


def timed_call(impl: str, model, mode: str, batch: dict, pairs, ours_proc, ref_proc):
    """One call of ``impl`` on the pairs: from ``batch`` (mode "model") or from the image
    files and questions through its processor; returns the logits as numpy."""
    if mode == "model":
        if impl.startswith("onnxruntime"):
            return lambda: model(**batch)["logits"]
        return lambda: model(**batch).logits.numpy()
    if impl == "transformers":

        def run():
            pictures = [Image.open(p).convert("RGB") for p in pairs.images]
            inputs = ref_proc(
                images=pictures, text=pairs.questions, padding=True, truncation=True,
                max_length=40, return_tensors="pt",
            )  # fmt: skip
            return model(**inputs).logits.numpy()

        return run

    def run():
        out = model(**ours_proc(images=pairs.images, text=pairs.questions))
        return out["logits"] if impl.startswith("onnxruntime") else out.logits.numpy()

    return run


def speed_cases(preset: str, batch_sizes: list[int], repeats: int, threads: int) -> list[dict]:
    config = vilt.ViltConfig.from_preset(preset, num_labels=13)
    ours, ref = (m.eval() for m in vilt_pair(config))
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        ours_proc, ref_proc = processors(config, Path(tmp) / "proc", **image_options(config))
        started = time.perf_counter()
        export_onnx(ours, Path(tmp) / "onnx", processor=ours_proc, int8=True)
        export_s = time.perf_counter() - started
        runners = {
            "onnxruntime fp32": OnnxModel(Path(tmp) / "onnx", threads=threads),
            "onnxruntime int8": OnnxModel(Path(tmp) / "onnx", int8=True, threads=threads),
        }
        # the export leaves a large heap behind: keep it out of the collections that the
        # harness runs between timed calls (untimed, but seconds each otherwise)
        gc.collect()
        gc.freeze()
        for batch_size in batch_sizes:
            pairs = easy_vqa_pairs(batch_size)
            batch = dict(ours_proc(images=pairs.images, text=pairs.questions))

            models = {"vilt eager": ours, "transformers": ref, **runners}
            for mode in ("model", "processor + model"):
                calls = {
                    impl: timed_call(impl, models[impl], mode, batch, pairs, ours_proc, ref_proc)
                    for impl in IMPLS
                }
                with torch.inference_mode():
                    reference = calls["vilt eager"]()
                    diffs = {i: float(np.abs(calls[i]() - reference).max()) for i in IMPLS}
                    seconds, spread = measure(calls, repeats=repeats)
                cases.append(
                    {
                        "preset": preset,
                        "batch_size": batch_size,
                        "mode": mode,
                        "pairs_per_s": {i: batch_size / s for i, s in seconds.items()},
                        "seconds": seconds,
                        "spread": spread,
                        "max_abs_logit_diff_vs_vilt": diffs,
                        "export_seconds": export_s,
                    }
                )
                print(markdown_row(cases[-1]), flush=True)
    return cases


def accuracy(model_dir: str, questions: int, threads: int, batch_size: int = 64) -> dict:
    """Single-view easy-VQA test accuracy of torch fp32, onnxruntime fp32 and int8."""
    model = vilt.load_model(model_dir).eval()
    processor = vilt.ViltProcessor.from_pretrained(model_dir)
    pairs = easy_vqa_pairs(questions, split="test", distinct_images=False)
    names = model.config.id2label
    predicted: dict[str, list[str]] = {k: [] for k in ("torch fp32", "onnx fp32", "onnx int8")}
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(model_dir, tmp, int8=True)
        fp32, int8 = OnnxModel(tmp, threads=threads), OnnxModel(tmp, int8=True, threads=threads)
        for start in range(0, questions, batch_size):
            end = start + batch_size
            inputs = processor(images=pairs.images[start:end], text=pairs.questions[start:end])
            with torch.inference_mode():
                logits = {
                    "torch fp32": model(**inputs).logits.numpy(),
                    "onnx fp32": fp32(**inputs)["logits"],
                    "onnx int8": int8(**inputs)["logits"],
                }
            for key, values in logits.items():
                predicted[key] += [names[int(i)] for i in values.argmax(-1)]
    truth = pairs.answers
    result = {
        f"accuracy {k}": sum(p == t for p, t in zip(v, truth, strict=True)) / len(truth)
        for k, v in predicted.items()
    }
    for key in ("onnx fp32", "onnx int8"):
        same = sum(a == b for a, b in zip(predicted[key], predicted["torch fp32"], strict=True))
        result[f"same answer as torch, {key}"] = same / len(truth)
    return {"model": model_dir, "questions": questions, **result}


def markdown_row(case: dict) -> str:
    rate = case["pairs_per_s"]
    ref = rate["vilt eager"]
    cells = [f"{rate[i]:.1f} ({rate[i] / ref:.2f}x)" for i in IMPLS]
    diff = max(case["max_abs_logit_diff_vs_vilt"][i] for i in IMPLS[:3])
    int8 = case["max_abs_logit_diff_vs_vilt"]["onnxruntime int8"]
    return (
        f"| {case['preset']} | {case['batch_size']} | {case['mode']} | "
        + " | ".join(cells)
        + f" | {diff:.1e} / {int8:.1e} |"
    )


HEADER = (
    "| preset | batch | timed | " + " | ".join(f"{i} pairs/s" for i in IMPLS)
    + " | max logit diff fp32 / int8 |\n|" + "---|" * (4 + len(IMPLS))
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="vilt-easy-vqa,vilt-b32")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--vqa-model", help="a trained VQA model directory: adds accuracy")
    parser.add_argument("--questions", type=int, default=1000, help="easy-VQA test questions")
    parser.add_argument("--skip-speed", action="store_true", help="accuracy only")
    parser.add_argument("--out", default=str(HERE / "results" / "onnx_runtime.json"))
    args = parser.parse_args(argv)
    use_threads(args.threads)
    results: dict = {"machine": machine_info(), "threads": args.threads, "cases": []}
    if not args.skip_speed:
        print(HEADER)
        for preset in args.presets.split(","):
            sizes = [int(b) for b in args.batch_sizes.split(",")]
            results["cases"] += speed_cases(preset, sizes, args.repeats, args.threads)
    if args.vqa_model:
        results["accuracy"] = accuracy(args.vqa_model, args.questions, args.threads)
        print(json.dumps(results["accuracy"], indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
