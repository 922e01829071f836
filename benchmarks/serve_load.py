"""Load test of `vilt serve` on the loopback interface: throughput and p50/p99 latency of
POST /v1/vqa at several concurrencies, with micro-batching and without (--max-batch 1).

    python benchmarks/serve_load.py                                # a vilt-easy-vqa model
    python benchmarks/serve_load.py --model runs/vqa/model --concurrency 1,4,16,32
    python benchmarks/serve_load.py --requests 256 --max-seconds 120 --max-batch 16

Each server runs in its own process on a free 127.0.0.1 port; the client (httpx, one
asyncio thread) keeps ``concurrency`` requests open until ``--requests`` have been answered
or ``--max-seconds`` have passed, over easy-VQA test images and questions. Client and server
share the machine's cores, as a sidecar would. Without --model, a vilt-easy-vqa VQA model
with random weights is served (speed does not depend on the weights). Writes
benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import httpx  # noqa: E402
from harness import machine_info  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_model(directory: Path) -> Path:
    """A vilt-easy-vqa VQA model (random weights) with an easy-VQA processor."""
    import torch
    from workloads import answer_vocab, tokenizer

    import vilt

    vocab = answer_vocab()
    config = vilt.ViltConfig.from_preset("vilt-easy-vqa", id2label=vocab.id2label)
    torch.manual_seed(0)
    vilt.ViltForQuestionAnswering(config).save_pretrained(directory)
    image = vilt.ImageProcessor(size=config.image_size, size_divisor=config.patch_size)
    vilt.ViltProcessor(image, tokenizer(), max_length=config.max_position_embeddings)\
        .save_pretrained(directory)  # fmt: skip
    return directory


class Server:
    """`vilt serve MODEL FLAGS...` on a free loopback port, up until stopped."""

    def __init__(self, model: Path, *flags: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
        cmd = [sys.executable, "-m", "vilt.cli", "serve", str(model), "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*cmd, "--log-level", "warning", *flags],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vilt serve exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("vilt serve did not come up in 120 s")
            time.sleep(0.2)

    def batches(self) -> dict[str, int]:
        stats = httpx.get(f"{self.url}/health", timeout=10).json()["batches"]["vqa"]
        return {int(k): v for k, v in stats.items()}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def load(url: str, payloads: list, concurrency: int, total: int, max_s: float) -> dict:
    """``concurrency`` workers send requests until ``total`` are answered or time is up."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    issued = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        start = time.perf_counter()

        async def worker() -> None:
            nonlocal issued
            while issued < total and time.perf_counter() - start < max_s:
                image, question = payloads[issued % len(payloads)]
                issued += 1
                sent = time.perf_counter()
                try:
                    response = await client.post(
                        "/v1/vqa", files={"image": ("q.png", image)},
                        data={"question": question, "top_k": "3"},
                    )  # fmt: skip
                    key = None if response.status_code == 200 else str(response.status_code)
                except httpx.HTTPError as err:
                    key = type(err).__name__
                if key is None:
                    latencies.append(time.perf_counter() - sent)
                else:
                    errors[key] = errors.get(key, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0

    return {
        "concurrency": concurrency,
        "answered": len(latencies),
        "errors": errors,
        "seconds": wall,
        "requests_per_s": len(latencies) / wall,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "mean_ms": statistics.fmean(latencies) * 1000 if latencies else 0.0,
    }


def payloads(n: int) -> list[tuple[bytes, str]]:
    from workloads import easy_vqa_pairs

    pairs = easy_vqa_pairs(n)
    return [(Path(p).read_bytes(), q) for p, q in zip(pairs.images, pairs.questions, strict=True)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a VQA model directory (default: vilt-easy-vqa, random)")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--requests", type=int, default=128, help="per concurrency level")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="per level, at most")
    parser.add_argument("--max-batch", type=int, default=16, help="the batched server's")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="the batched server's")
    parser.add_argument("--out", default=str(HERE / "results" / "serve_load.json"))
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    data = payloads(64)
    servers = {
        "unbatched": ("--max-batch", "1"),
        "batched": ("--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else random_model(Path(tmp) / "model")
        print("| server | concurrency | requests/s | p50 ms | p99 ms | mean batch | errors |")
        print("|---|---|---|---|---|---|---|")
        for name, flags in servers.items():
            server = Server(model, *flags)
            try:
                asyncio.run(load(server.url, data, 1, 8, 30))  # warm up: first calls are slow
                for level in levels:
                    before = server.batches()
                    row = asyncio.run(
                        load(server.url, data, level, args.requests, args.max_seconds)
                    )
                    after = server.batches()
                    runs = {k: after.get(k, 0) - before.get(k, 0) for k in after}
                    forwards = sum(runs.values())
                    row["mean_batch"] = sum(k * v for k, v in runs.items()) / max(forwards, 1)
                    row["server"] = name
                    row["flags"] = " ".join(flags)
                    rows.append(row)
                    print(
                        f"| {name} | {level} | {row['requests_per_s']:.1f} | {row['p50_ms']:.0f} "
                        f"| {row['p99_ms']:.0f} | {row['mean_batch']:.1f} | {row['errors'] or '-'} |",
                        flush=True,
                    )  # fmt: skip
            finally:
                server.stop()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": machine_info(),
        "model": args.model or "vilt-easy-vqa, random weights",
        "requests_per_level": args.requests,
        "rows": rows,
    }
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
