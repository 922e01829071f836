"""Side-by-side timing: alternate the implementations, repeat, take medians, report ratios.

The machine is shared and noisy, so absolute times mean little; what counts is the ratio of two
implementations timed in the same process, interleaved, on the same inputs. The machine's own
fp32 matrix-multiply rate, measured in the same run, puts achieved GFLOP/s in context.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch


@dataclass
class Case:
    """One benchmark case: each implementation's median seconds per call and derived figures.

    ``goal`` is the target as a number of ``goal_kind``: "ratio" (vilt's speed over the
    reference's, at least), "peak" (vilt's fraction of the matmul peak, at least) or "memory"
    (vilt's peak over the reference's, at most). ``outputs`` holds the comparison of the two
    implementations' outputs in the same run; ``same_output`` says whether it passed."""

    name: str
    unit: str  # what one call processes, e.g. "32 pairs"
    items: int  # items per call, for throughput
    target: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    spread: dict[str, float] = field(default_factory=dict)  # (max - min) / median
    gflops: dict[str, float] = field(default_factory=dict)
    extra: dict[str, float | str] = field(default_factory=dict)
    goal: float | None = None
    goal_kind: str = "ratio"
    outputs: dict[str, float | bool | str] = field(default_factory=dict)
    same_output: bool | None = None

    def throughput(self, impl: str) -> float:
        return self.items / self.seconds[impl]

    def reference(self, ours: str = "vilt") -> str | None:
        refs = [k for k in self.seconds if k != ours]
        return refs[0] if refs else None

    def ratio(self, ours: str = "vilt", ref: str | None = None) -> float | None:
        if "ratio" in self.extra:  # a case that defines its own ratio (e.g. memory)
            return float(self.extra["ratio"])
        ref = ref or self.reference(ours)
        if ref is None or ours not in self.seconds:
            return None
        return self.seconds[ref] / self.seconds[ours]

    def met(self, peak: float | None = None) -> bool | None:
        """Whether the target is met (None: no target, or nothing to judge it by). A speed-up
        whose outputs differ does not count."""
        if self.goal is None or self.same_output is False:
            return None if self.goal is None else False
        if self.goal_kind == "peak":
            if not peak or "vilt" not in self.gflops:
                return None
            return self.gflops["vilt"] / peak >= self.goal
        ratio = self.ratio()
        if ratio is None:
            return None
        return ratio <= self.goal if self.goal_kind == "memory" else ratio >= self.goal


def measure(
    impls: dict[str, Callable[[], object]],
    *,
    repeats: int = 5,
    warmup: int = 1,
    min_time: float = 0.0,
) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds per call of each implementation, interleaved round by round.

    Each round calls every implementation once (in rotating order, so neither always runs
    first); ``min_time`` repeats rounds until each has had that much time in total.
    """
    names = list(impls)
    for _ in range(warmup):
        for name in names:
            impls[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    rounds = 0
    while rounds < repeats or min(sum(t) for t in times.values()) < min_time:
        order = names[rounds % len(names) :] + names[: rounds % len(names)]
        for name in order:
            gc.collect()
            start = time.perf_counter()
            impls[name]()
            times[name].append(time.perf_counter() - start)
        rounds += 1
    medians = {n: statistics.median(t) for n, t in times.items()}
    spread = {n: (max(t) - min(t)) / medians[n] for n, t in times.items()}
    return medians, spread


def matmul_peak_gflops(n: int = 2048, repeats: int = 10, dtype=torch.float32) -> float:
    """The machine's own fp32 GEMM rate (GFLOP/s), best of ``repeats`` n x n x n products."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    out = torch.empty(n, n, dtype=dtype)
    torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of one call, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def use_threads(n: int) -> bool:
    """Run torch on ``n`` intra-op threads; returns whether that needed a call to
    ``torch.set_num_threads``. The call is skipped when torch already uses ``n`` (its default
    on this machine): the call itself, even with the same count, turns MKL's dynamic threading
    off, which slows the SDPA kernel on small heads. The recipes never call it, so the
    benchmarks time what they run."""
    if torch.get_num_threads() == n:
        return False
    torch.set_num_threads(n)
    return True


def machine_info() -> dict[str, str | int]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count() or 0,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }


def _rate(case: Case, impl: str) -> str:
    per_s = case.items / case.seconds[impl]
    return f"{per_s:.3g} {case.unit}/s" if per_s < 100 else f"{per_s:.0f} {case.unit}/s"


def markdown_table(cases: list[Case], peak: float | None) -> str:
    """One row per case: throughputs, the ratio, each side's % of the matmul peak, whether the
    outputs agree, the target and whether it is met."""
    lines = [
        "| case | vilt | reference | ratio | % of matmul peak (vilt / ref) | same output "
        "| target | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        ref = case.reference()
        ours_s = _rate(case, "vilt") if "vilt" in case.seconds else case.extra.get("vilt", "-")
        ref_s = f"{ref}: {_rate(case, ref)}" if ref else case.extra.get("reference", "-")
        ratio = case.ratio()
        ratio_s = f"{ratio:.2f}x" if ratio else "-"
        fracs = [
            f"{100 * case.gflops[k] / peak:.0f}%" if peak and k in case.gflops else "-"
            for k in ("vilt", ref)
        ]
        same = {True: "yes", False: "NO", None: "-"}[case.same_output]
        if case.outputs.get("summary"):
            same += f" ({case.outputs['summary']})"
        met = {True: "yes", False: "no", None: "-"}[case.met(peak)]
        lines.append(
            f"| {case.name} | {ours_s} | {ref_s} | {ratio_s} | {' / '.join(fracs)} | {same} "
            f"| {case.target} | {met} |"
        )
    return "\n".join(lines)


def write_json(path: str | os.PathLike, cases: list[Case], peak: float, **meta: object) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "machine": machine_info(),
        "matmul_peak_gflops": peak,
        "cases": [asdict(c) | {"ratio": c.ratio(), "met": c.met(peak)} for c in cases],
        **meta,
    }
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return out
