"""The ``vilt`` command line: one sub-command per job, one clear line per error.

The training commands forward their arguments to the recipes' jobs in ``vilt.jobs`` (so
``vilt vqa --help`` and ``python recipes/vqa.py --help`` are the same); the others are short
wrappers over the library. Errors print one line; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__

JOBS = {
    "train-vit": ("vilt.jobs.train_vit", "train a ViT image classifier (default: digits)"),
    "vqa": ("vilt.jobs.vqa", "fine-tune / evaluate ViLT on VQA (default: easy-VQA)"),
    "pretrain": ("vilt.jobs.pretrain", "ITM + MLM pretraining on image-text pairs"),
}

EXAMPLES = """examples:
  vilt vqa --output-dir runs/vqa                      # train on easy-VQA, print test accuracy
  vilt train-vit --data path/to/imagefolder --epochs 5
  vilt convert dandelin-vilt-vqa/ vilt-vqa/ --to vilt  # transformers -> vilt (or back)
  vilt predict runs/vqa/model --image cat.png --question "what shape is it?"
  vilt embed runs/vqa/model --pairs pairs.jsonl --out embeddings.safetensors
  vilt attention runs/vqa/model --image cat.png --text "what color?" --out map.png
"""


def _add_convert(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a checkpoint between vilt's and transformers' formats",
        description="Convert a checkpoint. The model class is read from the source.",
        epilog="example: vilt convert runs/vqa/model hf-vqa/ --to transformers",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", help="checkpoint directory or hub name")
    p.add_argument("dst", help="output directory")
    p.add_argument("--to", choices=("transformers", "vilt"), default="vilt")


def _add_predict(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="answer a question about an image with a VQA checkpoint",
        epilog='example: vilt predict runs/vqa/model --image a.png --question "what shape?"',
    )
    p.add_argument("model", help="VQA checkpoint directory (with its processor)")
    p.add_argument("--image", required=True, help="image file")
    p.add_argument("--question", required=True)
    p.add_argument("--top-k", type=int, default=3, help="answers to print (default 3)")


def _add_embed(sub) -> None:
    p = sub.add_parser(
        "embed",
        help="embed image-text pairs into a .safetensors or .npy file",
        epilog=(
            "examples:\n  vilt embed model/ --pairs pairs.jsonl --out emb.safetensors\n"
            "  vilt embed model/ --images images.txt --texts texts.txt --out emb.npy"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="ViLT checkpoint directory (with its processor)")
    p.add_argument("--pairs", help="JSONL or CSV with 'image' and 'text' fields")
    p.add_argument("--images", help="text file: one image path per line")
    p.add_argument("--texts", help="text file: one text per line")
    p.add_argument("--out", required=True, help="output .safetensors or .npy")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default=None)


def _add_attention(sub) -> None:
    p = sub.add_parser(
        "attention",
        help="draw an attention-rollout heatmap over an image",
        epilog="example: vilt attention model/ --image a.png --text 'what color?' --out a.png",
    )
    p.add_argument("model", help="ViT or ViLT checkpoint directory (with its processor)")
    p.add_argument("--image", required=True)
    p.add_argument("--text", default=None, help="the text paired with the image (ViLT)")
    p.add_argument("--token", type=int, default=0, help="query position (0 = class token)")
    p.add_argument("--out", required=True, help="output PNG")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vilt",
        description="Vision Transformers and ViLT: train, convert, embed, predict, inspect.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vilt {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in JOBS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    _add_convert(sub)
    _add_predict(sub)
    _add_embed(sub)
    _add_attention(sub)
    return parser


def _run_convert(args) -> None:
    from .interop import convert

    convert(args.src, args.dst, to=args.to)
    print(f"wrote {args.to} checkpoint to {args.dst}")


def _run_predict(args) -> None:
    from .predict import answer_question

    for answer, prob in answer_question(args.model, args.image, args.question, top_k=args.top_k):
        print(f"{prob:6.1%}  {answer}")


def _read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        return [line.rstrip("\n") for line in fh if line.strip()]


def _read_pairs(path: str) -> tuple[list[str], list[str]]:
    import csv
    import json

    images, texts = [], []
    with open(path, encoding="utf-8", newline="") as fh:
        if path.endswith(".csv"):
            rows = list(csv.DictReader(fh))
        else:
            rows = []
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}, line {n}: not valid JSON ({err.msg})") from err
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or "image" not in row or "text" not in row:
            raise ValueError(f"{path}, record {n}: needs 'image' and 'text' fields")
        base = Path(path).parent
        image = Path(row["image"])
        images.append(str(image if image.is_absolute() else base / image))
        texts.append(str(row["text"]))
    return images, texts


def _run_embed(args) -> None:
    from .embedding import Embedder

    if args.pairs:
        images, texts = _read_pairs(args.pairs)
    elif args.images and args.texts:
        images, texts = _read_lines(args.images), _read_lines(args.texts)
    else:
        raise ValueError("give --pairs FILE, or --images FILE and --texts FILE")
    embedder = Embedder.from_pretrained(args.model, device=args.device, batch_size=args.batch_size)
    vectors = embedder(images, texts)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        import numpy as np

        np.save(out, vectors.numpy())
    elif out.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({"embeddings": vectors.contiguous()}, str(out))
    else:
        raise ValueError(f"--out must end in .safetensors or .npy, got {out.name}")
    print(f"wrote {tuple(vectors.shape)} embeddings to {out}")


def _run_attention(args) -> None:
    from .predict import attention_map

    path = attention_map(args.model, args.image, args.out, text=args.text, query=args.token)
    print(f"wrote {path}")


RUNNERS = {
    "convert": _run_convert,
    "predict": _run_predict,
    "embed": _run_embed,
    "attention": _run_attention,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    parser = build_parser()
    if argv and argv[0] in JOBS:
        import importlib

        job = importlib.import_module(JOBS[argv[0]][0])
        return _guard(lambda: job.main(argv[1:]), debug)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return _guard(lambda: RUNNERS[args.command](args), debug)


def _guard(action, debug: bool) -> int:
    """Run a command; turn an exception into one line on stderr unless debugging."""
    try:
        result = action()
    except KeyboardInterrupt:
        print("vilt: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            raise
        print(f"vilt: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
