"""``vilt serve`` on the command line: its flags, and the call that starts the server.

Kept apart from vilt/cli.py with the rest of the server; importing it loads neither FastAPI
nor uvicorn, so ``vilt --help`` stays fast and works without the serve extra.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

__all__ = ["add_serve_parser", "run_serve"]


def _positive(kind: type):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def add_serve_parser(sub: Any, command: Callable[..., Any]) -> None:
    """Add ``vilt serve`` to the sub-commands (``command`` makes a sub-parser, as vilt.cli's)."""
    p = command(
        sub,
        "serve",
        "serve a model over HTTP: JSON API, micro-batching, demo page",
        "Serve MODEL over HTTP until SIGTERM or Ctrl-C (requests in flight finish first):\n"
        "GET /health, POST /v1/vqa, /v1/match, /v1/embed, /v1/classify (what the model\n"
        "serves), the demo page at /, the OpenAPI page at /docs. Concurrent requests share\n"
        "forward passes (--max-batch, --max-wait-ms); a request's answer is the same batched\n"
        "or alone. Needs the serve extra: pip install 'vilt[serve]'.",
        "  vilt serve runs/vqa                      # http://127.0.0.1:8000/\n"
        "  vilt serve runs/vqa --host 0.0.0.0 --port 8080 --max-batch 16\n"
        '  curl -F image=@shape.png -F question="what color is it?" '
        "http://127.0.0.1:8000/v1/vqa",
    )
    p.add_argument("model", help="checkpoint directory (with its processor)")
    p.add_argument("--host", default="127.0.0.1", help="(default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="(default 8000)")
    p.add_argument(
        "--max-batch", type=_positive(int), default=8, help="requests per forward (default 8)"
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        help="how long a request waits for others to batch with (default 5)",
    )
    p.add_argument("--max-upload-mb", type=_positive(float), default=10.0, help="(default 10)")
    p.add_argument(
        "--max-image-pixels",
        type=_positive(int),
        default=25_000_000,
        help="width x height of an image, checked before decoding (default 25000000)",
    )
    p.add_argument("--max-question-chars", type=_positive(int), default=1000, help="(default 1000)")
    p.add_argument(
        "--request-timeout", type=_positive(float), default=30.0, help="seconds (default 30)"
    )
    p.add_argument(
        "--max-queue", type=_positive(int), default=256, help="waiting requests (default 256)"
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if any)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def run_serve(args: argparse.Namespace) -> None:
    """Run ``vilt serve`` with parsed arguments (FastAPI and uvicorn load here)."""
    if args.max_wait_ms < 0:
        raise ValueError(f"--max-wait-ms must be >= 0, got {args.max_wait_ms:g}")
    from .app import serve
    from .engine import Limits

    limits = Limits(
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_image_pixels=args.max_image_pixels,
        max_question_chars=args.max_question_chars,
        request_timeout=args.request_timeout,
        max_queue=args.max_queue,
    )
    serve(
        args.model,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        limits=limits,
        device=args.device,
    )
