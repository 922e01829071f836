"""Peak memory of one ViLT training step, each implementation in a fresh process.

CPU memory is measured as the process's peak resident set (VmHWM) above a steady-state
baseline: the model, its optimizer state and the batch are built and one warm-up step is run;
then the current RSS is the baseline, the kernel's peak counter is reset (/proc/self/clear_refs)
and one more step runs. glibc is told to give large blocks straight back to the system
(MALLOC_MMAP_THRESHOLD_), so freed activations do not linger in RSS. The figure is what the
step itself needs on top of the weights and optimizer state: activations, gradients, and
temporaries.

    python benchmarks/memory.py --impl vilt|transformers [--checkpointing] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MMAP_THRESHOLD = "131072"  # bytes: every tensor above 128 KiB gets its own mapping


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure_here(impl: str, *, preset: str, batch_size: int, checkpointing: bool) -> dict:
    import torch

    sys.path[:0] = [str(HERE), str(HERE.parent)]
    from cases_vilt import reference_optimizer, train_step_fn, training_batch
    from workloads import vilt_pair

    import vilt
    from vilt.training import TrainingConfig, build_optimizer

    config = vilt.ViltConfig.from_preset(preset, num_labels=13)
    ours, ref = vilt_pair(config)
    model = ours if impl == "vilt" else ref
    del ours, ref
    model.train()
    if checkpointing:
        model.gradient_checkpointing_enable()
    if impl == "vilt":
        optimizer = build_optimizer(model, TrainingConfig(lr=1e-4))
    else:
        optimizer = reference_optimizer(model)
    size = None if preset == "vilt-b32" else config.image_size  # ViLT-B/32: the 384 pipeline
    batch = training_batch(config, batch_size, image_size=size)
    step = train_step_fn(model, optimizer, batch)
    step()  # creates the optimizer state
    baseline = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    step()
    peak = _status_kb("VmHWM")
    return {
        "impl": impl,
        "checkpointing": checkpointing,
        "baseline_mib": baseline / 1024,
        "peak_mib": peak / 1024,
        "step_peak_mib": (peak - baseline) / 1024,
        "threads": torch.get_num_threads(),
    }


def measure_in_subprocess(
    impl: str, *, preset: str = "vilt-b32", batch_size: int = 16, checkpointing: bool = False,
    threads: int = 2,
) -> dict:  # fmt: skip
    """Run :func:`measure_here` in a fresh interpreter and return its result."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=MMAP_THRESHOLD, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--impl", impl, "--preset", preset]
    cmd += ["--batch-size", str(batch_size), "--threads", str(threads)]
    if checkpointing:
        cmd.append("--checkpointing")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"memory run for {impl} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=("vilt", "transformers"), required=True)
    parser.add_argument("--preset", default="vilt-b32")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpointing", action="store_true")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    result = measure_here(
        args.impl,
        preset=args.preset,
        batch_size=args.batch_size,
        checkpointing=args.checkpointing,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
