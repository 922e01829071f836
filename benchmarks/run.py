"""vilt against transformers and timm, side by side in one process: the benchmark command.

Every case runs vilt and the reference on the same weights and inputs, compares their outputs,
then times them alternately (several rounds, medians) and reports the ratio. The machine's own
fp32 matrix-multiply rate is measured in the same run, and each side's achieved GFLOP/s
(FLOPs counted by torch's FlopCounterMode) is shown as a fraction of it. Prints a markdown
table and writes benchmarks/results/run.json and run.md.

    python benchmarks/run.py                       # every case (about 20 minutes, 2 cores)
    python benchmarks/run.py --cases vqa-small-train,vit-s16-infer --repeats 9
    python benchmarks/run.py --cases int8 --vqa-model runs/vqa

Cases: vqa-b32-infer, vqa-b32-train, vqa-small-train, vqa-small-train-pooled (the opt-in
``pooled_only=True``), vqa-small-train-compiled,
vit-s16-train, vit-s16-infer, vit-b16-infer, memory, preprocess, int8, scaling.
timm cases need timm (the bench environment, see CONTRIBUTING.md) and are skipped without it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # the harness; vilt from a checkout

import torch  # noqa: E402
from harness import Case, markdown_table, matmul_peak_gflops, use_threads, write_json  # noqa: E402
from workloads import timm_available  # noqa: E402

TIMM_CASES = ("vit-s16-train", "vit-s16-infer", "vit-b16-infer")
ALL = (
    "vqa-b32-infer",
    "vqa-b32-train",
    "vqa-small-train",
    "vqa-small-train-pooled",
    "vqa-small-train-compiled",
    *TIMM_CASES,
    "memory",
    "preprocess",
    "int8",
    "scaling",
)


def memory_cases(threads: int) -> list[Case]:
    """Peak memory of the ViLT-B/32 training step (batch 16), each side in a fresh process."""
    from memory import measure_in_subprocess

    runs = {
        "transformers": measure_in_subprocess("transformers", threads=threads),
        "vilt": measure_in_subprocess("vilt", threads=threads),
        "vilt, gradient checkpointing": measure_in_subprocess(
            "vilt", threads=threads, checkpointing=True
        ),
    }
    ref = runs["transformers"]["step_peak_mib"]
    cases = []
    for label in ("vilt", "vilt, gradient checkpointing"):
        ours = runs[label]["step_peak_mib"]
        cases.append(
            Case(
                name=f"ViLT-B/32 training step peak memory, batch 16 ({label})",
                unit="MiB",
                items=0,
                target="<= 0.8x transformers" if label == "vilt" else "opt-in",
                goal=0.8 if label == "vilt" else None,
                goal_kind="memory",
                extra={
                    "ratio": ours / ref,
                    "vilt": f"{ours:.0f} MiB",
                    "reference": f"transformers: {ref:.0f} MiB",
                    "method": "peak RSS (VmHWM) above the steady-state RSS, fresh process each",
                    "runs": str(runs),
                },
            )
        )
    return cases


def preprocess_cases(repeats: int, threads: int) -> list[Case]:
    import bench_preprocess

    args = SimpleNamespace(images=64, batch_size=32, repeats=repeats, threads=threads)
    cases = bench_preprocess.run(args)
    for case in cases:
        case.outputs = {
            "max_abs_diff": case.extra["max_abs_diff"],
            "summary": f"pixels within {case.extra['max_abs_diff']:.0e}, masks equal",
        }
        case.same_output = case.extra["max_abs_diff"] <= 1e-5 and case.extra["pixel_mask_equal"]
        case.name = f"image preprocessing: {case.name}"
        case.goal = 3.0 if case.target else None
    return cases


def run_case(name: str, args: argparse.Namespace) -> tuple[list[Case], str]:
    """The cases of one name, and any text (a table of its own) to print after the main one."""
    import cases_vilt

    r = args.repeats
    if name == "vqa-b32-infer":
        return [cases_vilt.vqa_infer(repeats=r)], ""
    if name == "vqa-b32-train":
        return [cases_vilt.vqa_b32_train(repeats=r)], ""
    if name == "vqa-small-train":
        return [cases_vilt.vqa_small_train(repeats=max(r, 5) * 4)], ""
    if name == "vqa-small-train-pooled":
        return [cases_vilt.vqa_small_train(repeats=max(r, 5) * 4, pooled_only=True)], ""
    if name == "vqa-small-train-compiled":
        return [cases_vilt.vqa_small_train(repeats=max(r, 5) * 4, compile=True)], ""
    if name in TIMM_CASES:
        import cases_vit

        if name == "vit-s16-train":
            return [cases_vit.vit_train(repeats=r)], ""
        preset = "vit-small/16" if name == "vit-s16-infer" else "vit-base/16"
        kind = "ratio" if name == "vit-s16-infer" else "peak"
        return [cases_vit.vit_infer(repeats=r, preset=preset, goal_kind=kind)], ""
    if name == "memory":
        return memory_cases(args.threads), ""
    if name == "preprocess":
        return preprocess_cases(max(r, 5), args.threads), ""
    if name == "int8":
        import cases_int8

        case = cases_int8.int8_case(
            repeats=r,
            model_dir=args.vqa_model,
            questions=args.int8_questions,
            train_steps=args.int8_train_steps,
        )
        return [case, cases_int8.int8_b32_speed(repeats=r)], ""
    if name == "scaling":
        import scaling

        _, text = scaling.run(repeats=max(2, r // 2), out_dir=Path(args.out).parent, peak=args.peak)
        return [], "ViLT-B/32 inference scaling (vilt only)\n\n" + text
    raise ValueError(f"unknown case {name!r}; known: {', '.join(ALL)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="all", help=f"comma-separated, or all: {','.join(ALL)}")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per case")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "results" / "run.json"))
    parser.add_argument("--vqa-model", default=None, help="trained VQA model dir (int8 case)")
    parser.add_argument("--int8-questions", type=int, default=2000)
    parser.add_argument("--int8-train-steps", type=int, default=600)
    args = parser.parse_args(argv)
    names = list(ALL) if args.cases == "all" else [c.strip() for c in args.cases.split(",")]
    unknown = [n for n in names if n not in ALL]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; known: {', '.join(ALL)}")
    if not timm_available() and any(n in TIMM_CASES for n in names):
        print("timm is not importable here: skipping the ViT cases (see CONTRIBUTING.md)\n")
        names = [n for n in names if n not in TIMM_CASES]

    use_threads(args.threads)
    start = time.perf_counter()
    args.peak = matmul_peak_gflops()
    cases: list[Case] = []
    texts: list[str] = []
    for name in names:
        t0 = time.perf_counter()
        print(f"[{name}] ...", flush=True)
        new, text = run_case(name, args)
        cases += new
        texts += [text] if text else []
        print(f"[{name}] {time.perf_counter() - t0:.0f} s", flush=True)
    peak_end = matmul_peak_gflops()
    args.peak = max(args.peak, peak_end)  # the best seen: contention only lowers it
    elapsed = time.perf_counter() - start
    header = (
        f"vilt vs references, {args.threads} threads, fp32 (int8 rows are opt-in), median of "
        f"{args.repeats}+ alternated rounds; matmul peak {args.peak:.0f} GFLOP/s (2048^3 fp32); "
        f"torch {torch.__version__}; {elapsed / 60:.1f} min"
    )
    table = markdown_table(cases, args.peak)
    print("\n" + header + "\n\n" + table)
    for text in texts:
        print("\n" + text)
    settings = {k: v for k, v in vars(args).items() if k != "peak"}
    out = write_json(
        args.out, cases, args.peak, benchmark="run", settings=settings, seconds=elapsed
    )
    md = Path(args.out).with_suffix(".md")
    md.write_text(header + "\n\n" + table + "\n" + "".join("\n" + t + "\n" for t in texts))
    print(f"\nwrote {out} and {md} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
