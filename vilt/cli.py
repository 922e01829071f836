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
from .jobs.parser import OneLineParser
from .serving.cli import add_serve_parser, run_serve

JOBS = {
    "train-vit": ("vilt.jobs.train_vit", "train a ViT image classifier (default: digits)"),
    "vqa": ("vilt.jobs.vqa", "fine-tune / evaluate ViLT on VQA (default: easy-VQA)"),
    "pretrain": ("vilt.jobs.pretrain", "ITM + MLM pretraining on image-text pairs"),
    "retrieval": ("vilt.jobs.retrieval", "image-text retrieval fine-tuning, recall@K"),
    "nlvr2": ("vilt.jobs.nlvr2", "NLVR2: is a statement about two images true?"),
}

EXAMPLES = """examples:
  vilt vqa --output-dir runs/vqa                      # train on easy-VQA, print test accuracy
  vilt train-vit --data path/to/imagefolder --epochs 5
  vilt convert dandelin-vilt-vqa/ vilt-vqa/ --to vilt  # transformers -> vilt (or back)
  vilt predict runs/vqa/model --image cat.png --question "what shape is it?"
  vilt embed runs/vqa/model --pairs pairs.jsonl --out embeddings.safetensors
  vilt attention runs/vqa/model --image cat.png --text "what color?" --out map.png
  vilt export runs/vqa vqa-onnx/ --format onnx --int8
  vilt serve runs/vqa --port 8000              # HTTP API and demo page
"""


def _command(sub, name: str, help_text: str, description: str, examples: str):
    return sub.add_parser(
        name,
        help=help_text,
        description=description,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_convert(sub) -> None:
    p = _command(
        sub,
        "convert",
        "convert a checkpoint between vilt's and transformers' formats",
        "Convert a checkpoint directory (or an original ViLT .ckpt) to vilt's or transformers'\n"
        "format. The model class is read from the source; processor and tokenizer files are\n"
        "copied along.",
        "  vilt convert runs/vqa/model hf-vqa/ --to transformers\n"
        "  vilt convert hf-vqa/ vilt-vqa/ --to vilt",
    )
    p.add_argument("src", help="checkpoint directory, hub name or original .ckpt file")
    p.add_argument("dst", help="output directory")
    p.add_argument(
        "--to",
        choices=("transformers", "vilt"),
        default=None,
        help="target format (default: the other one: transformers for a vilt checkpoint, vilt "
        "for a transformers checkpoint or an original .ckpt)",
    )


def _add_predict(sub) -> None:
    p = _command(
        sub,
        "predict",
        "answer a question about an image with a VQA checkpoint",
        "Print the most likely answers with their probabilities.",
        '  vilt predict runs/vqa/model --image shape.png --question "what color is the shape?"\n'
        '  vilt predict runs/vqa --image shape.png --question "is there a circle?" '
        "--tta-flip --tta-shift 2",
    )
    p.add_argument("model", help="VQA checkpoint directory (with its processor)")
    p.add_argument("--image", required=True, help="image file")
    p.add_argument("--question", required=True)
    p.add_argument("--top-k", type=int, default=3, help="answers to print (default 3)")
    p.add_argument(
        "--tta-flip",
        action="store_true",
        help="average the answer logits with those of the mirrored image (test-time views, as "
        "vilt vqa --tta-flip scores)",
    )
    p.add_argument(
        "--tta-shift",
        type=int,
        default=0,
        metavar="PIXELS",
        help="also average over the image moved PIXELS up, down, left and right (default 0)",
    )


def _add_embed(sub) -> None:
    p = _command(
        sub,
        "embed",
        "embed image-text pairs (ViLT) or images (ViT) into a .safetensors or .npy file",
        "Write the pooled joint representation of each image-text pair (a ViLT model), or each\n"
        "image's embedding (a ViT model: the features its classifier reads), one row per input\n"
        "in input order, as an (N, hidden_size) float32 array ('embeddings' in a .safetensors\n"
        "file). Pairs come from a JSONL or CSV file with 'image' and 'text' fields, or from two\n"
        "text files with one image path and one text per line; images for a ViT from --images\n"
        "alone. Relative image paths are read from the directory of the file that names them.",
        "  vilt embed model/ --pairs pairs.jsonl --out emb.safetensors\n"
        "  vilt embed model/ --images images.txt --texts texts.txt --out emb.npy\n"
        "  vilt embed vit-model/ --images images.txt --out emb.npy",
    )
    p.add_argument("model", help="checkpoint directory, any ViLT or ViT class (with its processor)")
    p.add_argument("--pairs", help="JSONL or CSV file with 'image' and 'text' fields")
    p.add_argument("--images", help="text file: one image path per line")
    p.add_argument("--texts", help="text file: one text per line")
    p.add_argument("--out", required=True, help="output file: .safetensors or .npy")
    p.add_argument("--batch-size", type=int, default=32, help="(default 32)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if any)")


def _add_attention(sub) -> None:
    p = _command(
        sub,
        "attention",
        "draw an attention-rollout heatmap over an image (ViT or ViLT)",
        "Attention rollout from the class token (or, for ViLT, a text token) over the image\n"
        "patches, drawn over the image and written as a PNG.",
        "  vilt attention runs/vit/model --image digit.png --out map.png\n"
        '  vilt attention runs/vqa/model --image shape.png --text "what color?" --out map.png\n'
        '  vilt attention runs/vqa/model --image shape.png --text "what color?" --per-token '
        "--out tokens.png",
    )
    p.add_argument("model", help="ViT or ViLT checkpoint directory (with its processor)")
    p.add_argument("--image", required=True, help="image file")
    p.add_argument("--text", default=None, help="the text paired with the image (ViLT)")
    p.add_argument(
        "--token", type=int, default=0, help="ViLT: text position to look from (default 0 = [CLS])"
    )
    p.add_argument("--per-token", action="store_true", help="ViLT: one map per text token")
    p.add_argument("--out", required=True, help="output PNG")


def _add_export(sub) -> None:
    p = _command(
        sub,
        "export",
        "export a model to ONNX (dynamic batch, text length and image size)",
        "Write MODEL as an ONNX directory: model.onnx, config.json, the processor files and\n"
        "onnx_export.json (the graph's inputs and outputs). Batch size, text length, image\n"
        "height and width are dynamic. Needs the onnx extra: pip install 'vilt[onnx]'.",
        "  vilt export runs/vqa vqa-onnx/ --format onnx\n"
        "  vilt export runs/vqa vqa-onnx/ --int8   # also model.int8.onnx",
    )
    p.add_argument("model", help="checkpoint directory (ViT classifier or any ViLT class)")
    p.add_argument("out", help="output directory")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="(default onnx)")
    p.add_argument(
        "--int8",
        action="store_true",
        help="also write model.int8.onnx: onnxruntime's dynamic int8 quantisation",
    )
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
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
    _add_export(sub)
    add_serve_parser(sub, _command)
    return parser


def _run_convert(args) -> None:
    import json

    from .interop import convert

    out = convert(args.src, args.dst, to=args.to)
    written = json.loads((out / "config.json").read_text(encoding="utf-8"))
    print(f"wrote {'vilt' if 'vilt_format' in written else 'transformers'} checkpoint to {out}")


def _run_predict(args) -> None:
    from .predict import answer_question

    answers = answer_question(
        args.model,
        args.image,
        args.question,
        top_k=args.top_k,
        tta_flip=args.tta_flip,
        tta_shift=args.tta_shift,
    )
    for answer, prob in answers:
        print(f"{prob:6.1%}  {answer}")


def _read_lines(path: str, what: str) -> list[str]:
    """One entry per line (a final newline ends the last line; it adds no entry)."""
    from .textfiles import read_text

    lines = read_text(path).splitlines()  # a byte-order mark is no text; other encodings named
    if what == "image":
        blank = [n for n, line in enumerate(lines, 1) if not line.strip()]
        if blank:
            raise ValueError(f"{path}, line {blank[0]}: empty image path")
        base = Path(path).parent
        return [str(base / line.strip()) for line in lines]  # an absolute line stays absolute
    return lines


def _read_pairs(path: str) -> tuple[list[str], list[str]]:
    """(image paths, texts) from a JSONL or CSV file with 'image' and 'text' fields."""
    import csv
    import json

    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".jsonl", ".json"):
        raise ValueError(f"{path}: --pairs must be a .jsonl or .csv file")
    import io

    from .textfiles import read_text

    with io.StringIO(read_text(path), newline="") as fh:  # spreadsheets write a BOM
        if suffix == ".csv":
            rows = [(n, row) for n, row in enumerate(csv.DictReader(fh), 2)]
        else:
            rows = []
            for n, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        rows.append((n, json.loads(line)))
                    except json.JSONDecodeError as err:
                        raise ValueError(f"{path}, line {n}: not valid JSON ({err.msg})") from None
    from .data import fields

    images, texts = [], []
    base = Path(path).parent
    for n, row in rows:
        values = row if isinstance(row, dict) else {}
        image, text = values.get("image"), values.get("text")
        if not (isinstance(image, str) and image.strip() and isinstance(text, str)):
            raise ValueError(f"{path}, line {n}: needs an 'image' path and a 'text' string")
        images.append(str(base / fields.text(image, "image", f"{path}, line {n}").strip()))
        texts.append(fields.text(text, "text", f"{path}, line {n}", allow_empty=True))
    return images, texts


def _run_embed(args) -> None:
    from .atomic import atomic_write
    from .embedding import Embedder

    out = Path(args.out)
    if out.suffix not in (".safetensors", ".npy"):
        raise ValueError(f"--out must end in .safetensors or .npy, got {out.name}")
    if args.pairs and (args.images or args.texts):
        raise ValueError("give either --pairs, or --images and --texts, not both")
    if not (args.pairs or args.images):
        raise ValueError(
            "give --pairs FILE, or --images FILE and --texts FILE (--images alone: ViT)"
        )
    embedder = Embedder.from_pretrained(args.model, device=args.device, batch_size=args.batch_size)
    kind = type(embedder.model).__name__
    if embedder.image_only and (args.pairs or args.texts):
        raise ValueError(f"{kind} embeds images alone: give --images FILE and no texts")
    texts = None
    if args.pairs:
        images, texts = _read_pairs(args.pairs)
        source = args.pairs
    elif embedder.image_only:
        images, source = _read_lines(args.images, "image"), args.images
    elif args.texts:
        images, texts = _read_lines(args.images, "image"), _read_lines(args.texts, "text")
        if len(images) != len(texts):
            raise ValueError(
                f"{args.images} has {len(images)} lines but {args.texts} has {len(texts)}"
            )
        source = args.images
    else:
        raise ValueError(f"{kind} embeds image-text pairs: give --pairs FILE, or --texts FILE too")
    if not images:
        raise ValueError(
            f"{source}: no {'images' if texts is None else 'image-text pairs'} in the file"
        )
    vectors = embedder(images, texts).contiguous()
    if out.suffix == ".npy":
        import numpy as np

        atomic_write(out, lambda tmp: np.save(tmp, vectors.numpy()))
    else:
        from safetensors.torch import save_file

        metadata = {"model": str(args.model)}
        atomic_write(out, lambda tmp: save_file({"embeddings": vectors}, tmp, metadata=metadata))
    print(f"wrote {tuple(vectors.shape)} embeddings to {out}")


def _run_attention(args) -> None:
    from .predict import attention_map

    path = attention_map(
        args.model,
        args.image,
        args.out,
        text=args.text,
        query=args.token,
        per_token=args.per_token,
    )
    print(f"wrote {path}")


def _run_export(args) -> None:
    from .interop.onnx import export_onnx

    out = export_onnx(args.model, args.out, int8=args.int8, opset=args.opset)
    sizes = ", ".join(
        f"{f.name} ({f.stat().st_size / 1e6:.1f} MB)" for f in sorted(out.glob("*.onnx"))
    )
    print(f"wrote {sizes} to {out}")


RUNNERS = {
    "convert": _run_convert,
    "predict": _run_predict,
    "embed": _run_embed,
    "attention": _run_attention,
    "export": _run_export,
    "serve": run_serve,
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
        message = " ".join(_own_message(err).split()) or type(err).__name__
        if not isinstance(
            err, ValueError | TypeError | OSError | ImportError
        ):  # a surprise: say what kind
            message = f"{type(err).__name__}: {message}"
        print(f"vilt: error: {message} (--debug shows the traceback)", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


def _own_message(err: BaseException) -> str:
    """The error's own message. An error raised in a DataLoader worker comes back with torch's
    whole worker traceback as its message; its last line holds the message that names the
    file and record."""
    text = str(err)
    if "Original Traceback" not in text:
        return text
    last = text.strip().splitlines()[-1]
    prefix = f"{type(err).__module__}.{type(err).__qualname__}: "
    return last.removeprefix(prefix) if last.startswith(prefix) else last


if __name__ == "__main__":
    sys.exit(main())
