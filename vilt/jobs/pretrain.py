"""``vilt pretrain`` / ``python recipes/pretrain.py``: image-text matching (ITM) and masked
language modelling (MLM) on image-caption pairs, with held-out ITM and MLM accuracy.

With no flags: captions made from easy-VQA's question facts ("a red circle", "there is no
blue shape"), its train images for training and its test images held out, and the VQA
job's model shape (``vilt.jobs.vqa.DEFAULT_PRESET``) from scratch. The WordPiece
vocabulary is trained on the captions, and with ``--vocab-vqa-questions SOURCE`` also on a
VQA source's training questions, so that ``vilt vqa --init <this run> --data SOURCE`` meets
no unknown word (``recipes/pretrain.py`` does so for easy-VQA through its recipe preset,
``recipes/presets/easy-vqa-pretrain.json``). The result starts a VQA run:
``vilt vqa --init runs/pretrain``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from functools import partial
from typing import Any

from ..config import ViltConfig, to_pair
from ..data import PretrainingCollator, load_pairs, load_vqa
from ..modeling import ViltForPreTraining
from ..processing import ViltProcessor
from ..training import Trainer, set_seed
from . import models
from .common import Job, job_parser, limit, parse_job_args, percent
from .vqa import DEFAULT_PRESET

__all__ = ["build_parser", "main", "parse_args"]

EXAMPLES = """examples:
  python recipes/pretrain.py                              # easy-VQA captions, ITM + MLM
  vilt pretrain --recipe-preset recipes/presets/easy-vqa-pretrain.json  # the same, via vilt
  vilt vqa --init runs/pretrain --lr 1e-3 --head-lr-multiplier 1   # then fine-tune on VQA
  vilt pretrain --data captions_train2017.json --image-dir /data/coco/train2017 \\
      --eval-data captions_val2017.json --eval-image-dir /data/coco/val2017
  vilt pretrain --data pairs.jsonl --max-steps 20000      # {"image": path, "caption": text}
  vilt pretrain --init dandelin/vilt-b32-mlm --data pairs.csv --image-size 384
  vilt pretrain --eval-only --init runs/pretrain          # held-out ITM / MLM accuracy

--data: easy-vqa (default), a COCO captions JSON, a JSONL/CSV/TSV file of image paths and
captions, or a datasets source (hub name or directory) with image and caption columns.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser(
        "vilt pretrain",
        "ITM + MLM pretraining of ViLT on image-text pairs; prints held-out ITM and MLM accuracy.\n"
        "python recipes/pretrain.py applies the recipe preset\n"
        "recipes/presets/easy-vqa-pretrain.json; vilt pretrain applies one only with\n"
        "--recipe-preset.",
        EXAMPLES,
        preset=DEFAULT_PRESET,
        data_help="easy-vqa (default), COCO captions JSON, JSONL/CSV pairs, or a datasets source",
        output_dir="runs/pretrain",
        epochs=5,
        batch_size=128,
        eval_batch_size=256,
        lr=(1e-3, 1e-4),
        weight_decay=0.05,
        warmup=0.05,
        log_every=25,
    )
    pre = parser.add_argument_group("pretraining")
    pre.add_argument("--train-split", default="train")
    pre.add_argument("--eval-split", default="test", help="held-out split of --data")
    pre.add_argument("--eval-data", help="held-out pairs from another source than --data")
    pre.add_argument("--image-dir", help="images of a COCO captions --data (default: beside it)")
    pre.add_argument("--eval-image-dir", help="images of a COCO captions --eval-data")
    pre.add_argument("--vocab-size", type=int, default=4096, help="WordPiece vocabulary size")
    pre.add_argument(
        "--vocab-vqa-questions",
        metavar="SOURCE",
        help="also train the vocabulary on the training questions of this VQA source (a "
        "--data of vilt vqa), so that fine-tuning on it meets no unknown word",
    )
    pre.add_argument("--mlm-probability", type=float, default=0.15, help="words masked for MLM")
    pre.add_argument(
        "--itm-negative-ratio", type=float, default=0.5, help="pairs whose image is swapped"
    )
    return parser


def _check(args: argparse.Namespace) -> None:
    for name in ("mlm_probability", "itm_negative_ratio"):
        value = getattr(args, name)
        if not 0.0 <= value <= 1.0:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} must be in [0, 1], got {value}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The job's flags, recipe preset applied and defaults resolved (what ``main`` runs)."""
    return parse_job_args(build_parser(), argv, family=ViltConfig, resolve=_check)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    job = Job(args, task="pretraining")
    set_seed(args.seed)
    if args.eval_only:
        source = job.model_dir()
        model = ViltForPreTraining.from_pretrained(source)
        processor = ViltProcessor.from_pretrained(source)
        test = _held_out(job, processor)
        job.say(f"evaluating {source} on {len(test):,} held-out pairs")
        results, _ = job.evaluate_only(model, test, _collator(args, processor, eval=True))
        return _report(job, results)

    init = models.read_init(args.init, ViltForPreTraining) if args.init else None
    base = ViltConfig.from_dict(init.config) if init else models.scratch_config(args)
    processor = models.resumed_processor(job.out, args.resume)
    size = args.image_size or min(to_pair(base.image_size))
    images = (
        processor.image_processor
        if processor
        else models.image_processor(size, max(to_pair(base.patch_size)))
    )
    transform = partial(images.preprocess_one, normalize=False)
    cache = args.cache_images and args.max_train_examples is None
    train = load_pairs(
        args.data, split=args.train_split, transform=transform, image_dir=args.image_dir,
        cache_images=cache,
    )  # fmt: skip
    if processor is None:
        texts = [r.caption for r in train.records]
        if args.vocab_vqa_questions:
            texts += [r.question for r in load_vqa(args.vocab_vqa_questions).records]
        tokenizer = models.run_tokenizer(args.init, texts, args.vocab_size)
        processor = ViltProcessor(images, tokenizer, max_length=base.max_position_embeddings)
    if init is not None:
        model = models.from_init(ViltForPreTraining, init)
    else:
        model = ViltForPreTraining(
            models.scratch_config(args, vocab_size=processor.tokenizer.vocab_size)
        )
    models.check_vocab(processor, model.config, args.init or f"preset {args.preset}")
    train = limit(train, args.max_train_examples, shuffle=True, seed=args.seed)
    test = _held_out(job, processor)
    job.say(
        f"pretraining on {args.data or 'easy-vqa captions'}: {len(train):,} training and "
        f"{len(test):,} held-out pairs, {model.num_parameters() / 1e6:.2f}M parameters"
    )
    trainer = Trainer(
        model,
        job.training_config(data=args.data, preset=args.preset, init=args.init),
        train_dataset=train,
        eval_dataset=test,
        collate_fn=_collator(args, processor, eval=False),
        eval_collate_fn=_collator(args, processor, eval=True),
        processor=processor,  # saved with the model, as one set
    )
    return _report(job, trainer.train())


def _held_out(job: Job, processor: ViltProcessor) -> Any:
    """The held-out pairs: ``--eval-split`` of ``--eval-data`` (default: of ``--data``);
    ``--cache-images`` caches ``--data``'s images, not another source's."""
    args = job.args
    source = args.eval_data or args.data
    image_dir = args.eval_image_dir if args.eval_data else args.image_dir
    transform = partial(processor.image_processor.preprocess_one, normalize=False)
    pairs = load_pairs(
        source, split=args.eval_split, transform=transform, image_dir=image_dir,
        cache_images=args.cache_images and not args.eval_data and args.max_eval_examples is None,
    )  # fmt: skip
    return limit(pairs, args.max_eval_examples, shuffle=False)


def _collator(args: argparse.Namespace, processor: ViltProcessor, *, eval: bool) -> Any:
    """ITM negatives and MLM masks drawn per batch; the held-out ones fixed (epoch 0, its
    own seed), so every evaluation scores the same pairs and masks."""
    return PretrainingCollator(
        processor,
        mlm_probability=args.mlm_probability,
        itm_negative_ratio=args.itm_negative_ratio,
        seed=args.seed + (1 if eval else 0),
    )


def _report(job: Job, results: dict[str, Any]) -> int:
    m = results["metrics"]
    itm, mlm = m.get("eval_itm_accuracy"), m.get("eval_mlm_accuracy")
    headline = (
        f"held-out ITM accuracy: {percent(itm)}, MLM accuracy: {percent(mlm)} "
        f"({int(m.get('eval_samples', 0)):,} pairs)"
    )
    job.finish(
        results,
        headline=headline,
        curves=["eval_itm_accuracy", "eval_mlm_accuracy"],
        data=job.args.data or "easy-vqa",
        itm_accuracy=itm,
        mlm_accuracy=mlm,
    )
    return 0
