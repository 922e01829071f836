"""``vilt nlvr2`` / ``python recipes/nlvr2.py``: is a statement about two images true? ViLT
on NLVR2 (:class:`vilt.ViltForImagesAndTextClassification`, the public -finetuned-nlvr2
layout), trained or evaluated, with the accuracy and a prediction per identifier.

With no flags: statements about pairs of easy-VQA images whose truth the images' facts
decide ("both shapes are red", "the left image contains a circle"), offline
(:func:`vilt.data.nlvr2.easy_vqa_nlvr2_records`); ``recipes/nlvr2.py`` adds its recipe
preset, ``recipes/presets/easy-vqa-nlvr2.json``. ``--data DIR``: the official release laid
out as the original ViLT code reads it (:mod:`vilt.data.nlvr2`). Writes the model with its
processor, results.json, metrics.csv, loss.png and metrics.png, predictions.json
(``[{"identifier", "prediction"}]``) and predictions.csv (``identifier,prediction`` lines,
the official evaluation's format).
"""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ..atomic import write_text
from ..config import ViltConfig, to_pair
from ..data.nlvr2 import LABELS, NLVR2Collator, load_nlvr2
from ..modeling import ViltForImagesAndTextClassification
from ..modeling.pretrained import Checkpoint
from ..processing import ViltProcessor
from ..training import Trainer, set_seed
from . import models
from .augment import add_randaugment_flags, check_randaugment_flags, with_randaugment
from .common import Job, job_parser, limit, parse_job_args, percent
from .vqa import DEFAULT_PRESET
from .vqa_outputs import predict_labels

__all__ = ["build_parser", "main", "parse_args"]

EXAMPLES = """examples:
  python recipes/nlvr2.py                                 # easy-VQA statements, accuracy
  vilt nlvr2 --recipe-preset recipes/presets/easy-vqa-nlvr2.json   # the same via vilt
  vilt nlvr2 --data /data/nlvr2 --init dandelin/vilt-b32-mlm --image-size 384 \\
      --randaugment 2 --batch-size 16 --epochs 10 --lr 1e-4
  vilt nlvr2 --data /data/nlvr2 --eval-only --init dandelin/vilt-b32-finetuned-nlvr2 \\
      --eval-split test1 --image-size 384
  torchrun --nproc_per_node 2 recipes/nlvr2.py --output-dir runs/nlvr2-ddp

--data: easy-vqa (default), or the root of the NLVR2 release: nlvr2/data/{train,dev,test1}.json
(JSON lines: identifier, sentence, label, directory), images/train/{directory}/{id}-img0.png
and -img1.png, dev/{id}-img0.png, test1/{id}-img0.png ({id}: the identifier without its last
-N). A split without labels is predicted, not scored.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser(
        "vilt nlvr2",
        "Train ViLT on NLVR2 (or --eval-only) and print the accuracy.\n"
        "python recipes/nlvr2.py applies recipes/presets/easy-vqa-nlvr2.json; vilt nlvr2\n"
        "applies one only with --recipe-preset.",
        EXAMPLES,
        preset=DEFAULT_PRESET,
        data_help="easy-vqa (default) or the root directory of the NLVR2 release",
        output_dir="runs/nlvr2",
        epochs=5,
        batch_size=64,
        eval_batch_size=256,
        lr=(1e-3, 1e-4),
        weight_decay=0.05,
        warmup=0.1,
        log_every=25,
    )
    task = parser.add_argument_group("NLVR2")
    task.add_argument("--train-split", default="train", help="(default: %(default)s)")
    task.add_argument("--eval-split", help="default: dev (NLVR2), test (easy-VQA)")
    task.add_argument("--vocab-size", type=int, default=4096, help="WordPiece vocabulary size")
    task.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip and count statements with a missing or unreadable image instead of stopping",
    )
    add_randaugment_flags(task)
    return parser


def _is_easy_vqa(data: str | None) -> bool:
    return data is None or data.lower() in ("easy-vqa", "easy_vqa")


def _resolve(args: argparse.Namespace) -> None:
    args.eval_split = args.eval_split or ("test" if _is_easy_vqa(args.data) else "dev")
    check_randaugment_flags(args)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The job's flags, recipe preset applied and defaults resolved (what ``main`` runs)."""
    return parse_job_args(build_parser(), argv, family=ViltConfig, resolve=_resolve)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    job = Job(args, task="nlvr2")
    set_seed(args.seed)
    if args.eval_only:
        return _evaluate(job)
    return _train(job)


def with_image_types(ckpt: Checkpoint, num_images: int = 2) -> Checkpoint:
    """A one-image checkpoint (VQA, ITM, MLM, a backbone) ready for ``num_images`` images per
    text: its modality-type table extended as ViLT starts NLVR2, each new image's row a copy
    of the first image's (row 1). Other checkpoints are returned as they are.

    Args:
        ckpt: the checkpoint as read.
        num_images: images per text of the model it starts.
    """
    rows = num_images + 1
    if int(ckpt.config.get("modality_type_vocab_size", 2)) >= rows:
        return ckpt
    state = dict(ckpt.state_dict)
    for key in [k for k in state if k.endswith("embeddings.modality_type_embeddings.weight")]:
        table = state[key]
        state[key] = torch.cat([table, table[1:2].expand(rows - len(table), -1)])
    config = {**ckpt.config, "modality_type_vocab_size": rows, "num_images": num_images}
    return Checkpoint(config, state, ckpt.architecture, ckpt.source, ckpt.notes, ckpt.format)


def _split(args: argparse.Namespace, split: str, transform: Any, n: int | None, *, train: bool):
    data = load_nlvr2(
        args.data, split=split, transform=transform, skip_bad=args.skip_bad,
        cache_images=args.cache_images and n is None,
    )  # fmt: skip
    return data, limit(data, n, shuffle=train, seed=args.seed)


def _train(job: Job) -> int:
    args = job.args
    init = models.read_init(args.init, ViltForImagesAndTextClassification) if args.init else None
    init = with_image_types(init) if init is not None else None
    base = ViltConfig.from_dict(init.config) if init else models.scratch_config(args)
    processor = models.resumed_processor(job.out, args.resume)
    size = args.image_size or min(to_pair(base.image_size))
    images = (
        processor.image_processor
        if processor
        else models.image_processor(size, max(to_pair(base.patch_size)))
    )
    transform = partial(images.preprocess_one, normalize=False)
    full, train = _split(args, args.train_split, transform, args.max_train_examples, train=True)
    test_full, test = _split(args, args.eval_split, transform, args.max_eval_examples, train=False)
    if processor is None:
        texts = [r.sentence for r in full.records]
        tokenizer = models.run_tokenizer(args.init, texts, args.vocab_size)
        processor = ViltProcessor(images, tokenizer, max_length=base.max_position_embeddings)
    fields = {"id2label": dict(LABELS), "num_labels": 2, "pooled_only": True}
    if init is not None:
        model = models.from_init(ViltForImagesAndTextClassification, init, **fields)
    else:
        config = models.scratch_config(
            args, vocab_size=processor.tokenizer.vocab_size, num_images=2,
            modality_type_vocab_size=3, **fields,
        )  # fmt: skip
        model = ViltForImagesAndTextClassification(config)
    models.check_vocab(processor, model.config, args.init or f"preset {args.preset}")
    if job.is_main:
        processor.save_pretrained(job.out)
    collate = NLVR2Collator(processor)
    labelled = any(r.label is not None for r in test_full.records)
    job.say(
        f"NLVR2 on {args.data or 'easy-vqa statements'}: {len(train):,} training and "
        f"{len(test):,} {args.eval_split} statements, {model.num_parameters() / 1e6:.2f}M "
        "parameters"
    )
    trainer = Trainer(
        model,
        job.training_config(data=args.data, preset=args.preset, init=args.init),
        train_dataset=train,
        eval_dataset=test if labelled else None,
        collate_fn=with_randaugment(collate, args),
        eval_collate_fn=collate,
    )
    results = trainer.train()
    extra = _predictions(job, trainer.accelerator, trainer.model, test_full, test, collate)
    return _report(job, results, len(test), extra)


def _evaluate(job: Job) -> int:
    args = job.args
    source = job.model_dir()
    model = ViltForImagesAndTextClassification.from_pretrained(source, pooled_only=True)
    processor = ViltProcessor.from_pretrained(source)
    transform = partial(processor.image_processor.preprocess_one, normalize=False)
    test_full, test = _split(args, args.eval_split, transform, args.max_eval_examples, train=False)
    labelled = any(r.label is not None for r in test_full.records)
    collate = NLVR2Collator(processor)
    job.say(f"evaluating {source} on {len(test):,} {args.eval_split} statements")
    results, accelerator = job.evaluate_only(model, test if labelled else None, collate)
    extra = _predictions(job, accelerator, model, test_full, test, collate)
    return _report(job, results, len(test), extra)


def _predictions(
    job: Job, accelerator: Any, model: Any, full: Any, test: Any, collate: Any
) -> dict[str, Any]:
    """predictions.json and predictions.csv: the predicted truth of every evaluated
    statement, by identifier (statements skipped as bad are left out)."""
    config = job.training_config()
    labels = predict_labels(accelerator, model, test, collate, config)
    positions = test.indices if hasattr(test, "indices") else range(len(full))
    rows = [
        (full.records[i].identifier, LABELS[int(p)])
        for i, p in zip(positions, labels.tolist(), strict=True)
        if p >= 0
    ]
    if not job.is_main:
        return {"files": []}
    from ..atomic import write_json

    write_json(job.out / "predictions.json", [{"identifier": i, "prediction": p} for i, p in rows])
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    write_text(Path(job.out) / "predictions.csv", buffer.getvalue())
    return {"files": ["predictions.json", "predictions.csv"], "predictions": len(rows)}


def _report(job: Job, results: dict[str, Any], count: int, extra: dict[str, Any]) -> int:
    args = job.args
    accuracy = results["metrics"].get("eval_accuracy")
    name = "NLVR2 on easy-VQA images" if _is_easy_vqa(args.data) else f"NLVR2 {args.data}"
    if accuracy is None:
        headline = f"{name} {args.eval_split}: no labels to score; predictions written"
    else:
        headline = f"{name} {args.eval_split} accuracy: {percent(accuracy)} ({count:,} statements)"
    job.finish(
        results,
        headline=headline,
        curves=["eval_accuracy"],
        data=args.data or "easy-vqa",
        eval_split=args.eval_split,
        accuracy=accuracy,
        **extra,
    )
    return 0
