"""``vilt pretrain`` / ``python recipes/pretrain.py``: image-text matching (ITM) and masked
language modelling (MLM) on image-caption pairs, with held-out ITM and MLM accuracy.

With no flags: captions made from easy-VQA's question facts ("a red circle", "there is no
blue shape"), its train images for training and its test images held out, and the VQA
job's model shape (``vilt.jobs.vqa.DEFAULT_PRESET``) from scratch. The WordPiece
vocabulary is trained on the captions, and with ``--vocab-vqa-questions SOURCE`` also on a
VQA source's training questions (``--vocab-nlvr2-statements SOURCE``: an NLVR2 source's
statements), so that ``vilt vqa --init <this run> --data SOURCE`` meets no unknown word
(``recipes/pretrain.py`` does so for easy-VQA through its recipe preset,
``recipes/presets/easy-vqa-pretrain.json``). The result starts a VQA run:
``vilt vqa --init runs/pretrain``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from functools import partial
from typing import Any

from torch.utils.data import IterableDataset

from ..config import ViltConfig
from ..data import PretrainingCollator, load_pairs
from ..data.collate import NEGATIVES
from ..data.mixture import expand_sources, load_pair_mixture
from ..modeling import ViltForPreTraining
from ..processing import ViltProcessor
from ..training import HardNegatives, Trainer, set_seed
from . import models
from .common import Job, job_parser, limit, parse_job_args, percent, positive_int
from .vqa import DEFAULT_PRESET

__all__ = ["build_parser", "main", "parse_args"]

EXAMPLES = """examples:
  python recipes/pretrain.py                              # easy-VQA captions, ITM + MLM
  vilt pretrain --recipe-preset recipes/presets/easy-vqa-pretrain.json  # the same, via vilt
  vilt vqa --init runs/pretrain --lr 1e-3 --head-lr-multiplier 1   # then fine-tune on VQA
  python recipes/pretrain.py --init-vision runs/vit-shapes --wpa-weight 0.1   # from a ViT
  vilt pretrain --init-vision google/vit-base-patch32-384 --init-text bert-base-uncased \
      --data mixture.json --global-batch-size 4096 --max-steps 100000 --image-size 384
  vilt pretrain --data captions_train2017.json --image-dir /data/coco/train2017 \
      --eval-data captions_val2017.json --eval-image-dir /data/coco/val2017
  vilt pretrain --data coco.jsonl --data vg/region_descriptions.json:0.5 --itm-negatives hard
  vilt pretrain --data pairs.jsonl --max-steps 20000      # {"image": path, "caption": text}
  vilt pretrain --init dandelin/vilt-b32-mlm --data pairs.csv --image-size 384
  vilt pretrain --eval-only --init runs/pretrain          # held-out ITM / MLM accuracy

--data: easy-vqa (default), a COCO captions JSON, Visual Genome's region_descriptions.json,
SBU Captions' JSON, Conceptual Captions' TSV, a JSONL/CSV/TSV file of image paths and
captions, a datasets source (hub name or directory) with image and caption columns, or a
mixture file ({"sources": [{"data", "weight", "image_dir", "split", "streaming"}]}). Give
--data several times to mix sources, each SOURCE[:WEIGHT] (weight: its share of the pairs).
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
        data_help="easy-vqa (default), a pairs file or corpus, a datasets source, or a mixture "
        "file; several --data SOURCE[:WEIGHT] mix them",
        data_many=True,
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
    pre.add_argument(
        "--eval-data", help="held-out pairs from another source (default: the first --data)"
    )
    pre.add_argument("--image-dir", help="images of one --data file (default: beside it)")
    pre.add_argument("--eval-image-dir", help="images of a COCO captions --eval-data")
    pre.add_argument(
        "--streaming",
        action="store_true",
        help="stream the --data sources that datasets reads (hub names, parquet or webdataset "
        "directories) instead of indexing them; needs --max-steps",
    )
    pre.add_argument("--vocab-size", type=int, default=4096, help="WordPiece vocabulary size")
    pre.add_argument(
        "--mlm-probability", type=float, default=0.15, help="share of the tokens masked for MLM"
    )
    pre.add_argument(
        "--whole-word-masking",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="mask whole words (all their WordPiece tokens), as ViLT does, or single tokens "
        "(default: %(default)s)",
    )
    pre.add_argument(
        "--itm-negative-ratio", type=float, default=0.5, help="pairs whose image is swapped"
    )
    pre.add_argument(
        "--itm-negatives",
        choices=NEGATIVES,
        default="in-batch",
        help="where a negative's image comes from: another image of the batch, a random image "
        "of the training set (one more image read each), or the batch image the current "
        "model scores highest among --itm-hard-candidates (a no-grad forward over them in "
        "each step) (default: %(default)s)",
    )
    pre.add_argument(
        "--itm-hard-candidates",
        type=positive_int,
        default=4,
        metavar="K",
        help="with --itm-negatives hard: candidate images scored per negative (default: 4)",
    )
    pre.add_argument(
        "--wpa-weight",
        type=float,
        metavar="W",
        help="word-patch alignment loss weight (the ViLT paper: 0.1; default: the model's, 0 "
        "for a new one)",
    )
    return parser


def _check(args: argparse.Namespace) -> None:
    for name in ("mlm_probability", "itm_negative_ratio"):
        value = getattr(args, name)
        if not 0.0 <= value <= 1.0:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} must be in [0, 1], got {value}")
    if args.wpa_weight is not None and not args.wpa_weight >= 0:
        raise ValueError(f"--wpa-weight must be >= 0, got {args.wpa_weight}")
    if args.image_dir and len(args.data or []) > 1:
        raise ValueError("--image-dir is for one --data; give each source its image_dir in a "
                         "mixture file")  # fmt: skip
    if args.streaming and args.itm_negatives == "dataset":
        raise ValueError("--itm-negatives dataset draws from the whole training set: it needs "
                         "data that is not streamed")  # fmt: skip


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
        results, _ = job.evaluate_only(model, test, _eval_collator(args, processor))
        return _report(job, results, model)

    start = models.ViltStart(args, ViltForPreTraining)
    processor = models.resumed_processor(job.out, args.resume)
    images = processor.image_processor if processor else start.image_processor()
    transform = partial(images.preprocess_one, normalize=False)
    train = _training_pairs(args, transform)
    if processor is None:
        processor = start.processor(images, start.tokenizer(_captions(train), args.vocab_size))
    fields = {} if args.wpa_weight is None else {"wpa_weight": args.wpa_weight}
    model = start.build(ViltForPreTraining, processor, **fields)
    job.model_start = start.record(model)
    if args.max_train_examples is not None:
        if isinstance(train, IterableDataset):
            raise ValueError("--max-train-examples needs data that is not streamed")
        train = limit(train, args.max_train_examples, shuffle=True, seed=args.seed)
    test = _held_out(job, processor)
    described = train.describe() if hasattr(train, "describe") else _data_name(args)
    size = f"{len(train):,} training" if not isinstance(train, IterableDataset) else "streamed"
    job.say(
        f"pretraining on {described}: {size} and {len(test):,} held-out pairs, from "
        f"{start.describe()}, {model.num_parameters() / 1e6:.2f}M parameters"
    )
    trainer = Trainer(
        model,
        job.training_config(data=args.data, preset=args.preset, init=args.init),
        train_dataset=train,
        eval_dataset=test,
        collate_fn=_collator(args, processor, train),
        eval_collate_fn=_eval_collator(args, processor),
        prepare_inputs=HardNegatives() if args.itm_negatives == "hard" else None,
        processor=processor,  # saved with the model, as one set
    )
    results = trainer.train()
    job.save_beside_kept(processor)
    return _report(job, results, trainer.unwrapped_model)


def _data_name(args: argparse.Namespace) -> str:
    return " + ".join(args.data) if args.data else "easy-vqa captions"


def _training_pairs(args: argparse.Namespace, transform: Any) -> Any:
    """``--data``: one source as ``load_pairs`` reads it, several (or a mixture file) mixed
    by weight; ``--cache-images`` for the whole training set only."""
    cache = args.cache_images and args.max_train_examples is None
    sources = expand_sources(args.data or [], streaming=args.streaming)
    if len(sources) <= 1:
        one = sources[0] if sources else None
        return load_pairs(
            one.data if one else None, split=args.train_split, transform=transform,
            image_dir=args.image_dir or (one.image_dir if one else None),
            cache_images=cache, streaming=bool(one and one.streaming),
        )  # fmt: skip
    return load_pair_mixture(
        sources, split=args.train_split, transform=transform, seed=args.seed, cache_images=cache
    )


def _captions(train: Any) -> list[str]:
    """The training captions: what a new vocabulary learns (with the ``--vocab-*`` sources),
    or what a checkpoint's vocabulary is checked against (none when streamed)."""
    return [r.caption for r in getattr(train, "records", [])]


def _held_out(job: Job, processor: ViltProcessor) -> Any:
    """The held-out pairs: ``--eval-split`` of ``--eval-data`` (default: of the first
    ``--data``); ``--cache-images`` caches ``--data``'s images, not another source's."""
    args = job.args
    first = (expand_sources(args.data) or [None])[0] if args.data else None
    source = args.eval_data or (first.data if first else None)
    image_dir = (
        args.eval_image_dir if args.eval_data else args.image_dir or (first and first.image_dir)
    )
    transform = partial(processor.image_processor.preprocess_one, normalize=False)
    pairs = load_pairs(
        source, split=args.eval_split, transform=transform, image_dir=image_dir,
        cache_images=args.cache_images and not args.eval_data and args.max_eval_examples is None,
    )  # fmt: skip
    return limit(pairs, args.max_eval_examples, shuffle=False)


def _collator(args: argparse.Namespace, processor: ViltProcessor, train: Any) -> Any:
    """ITM negatives (``--itm-negatives``) and MLM masks drawn per batch."""
    return PretrainingCollator(
        processor,
        mlm_probability=args.mlm_probability,
        itm_negative_ratio=args.itm_negative_ratio,
        whole_word=args.whole_word_masking,
        negatives=args.itm_negatives,
        negative_source=train if args.itm_negatives == "dataset" else None,
        hard_candidates=args.itm_hard_candidates,
        seed=args.seed,
    )


def _eval_collator(args: argparse.Namespace, processor: ViltProcessor) -> Any:
    """The held-out pairs' negatives (in-batch, whatever the training used) and masks,
    fixed (epoch 0, their own seed): every evaluation scores the same pairs and masks."""
    return PretrainingCollator(
        processor,
        mlm_probability=args.mlm_probability,
        itm_negative_ratio=args.itm_negative_ratio,
        whole_word=args.whole_word_masking,
        seed=args.seed + 1,
    )


def _report(job: Job, results: dict[str, Any], model: Any) -> int:
    args = job.args
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
        data=args.data or "easy-vqa",
        itm_accuracy=itm,
        mlm_accuracy=mlm,
        pretraining={
            "mlm_probability": args.mlm_probability,
            "whole_word_masking": args.whole_word_masking,
            "itm_negative_ratio": args.itm_negative_ratio,
            "itm_negatives": args.itm_negatives,
            "itm_hard_candidates": args.itm_hard_candidates
            if args.itm_negatives == "hard"
            else None,
            "wpa_weight": model.config.wpa_weight,
        },
    )
    return 0
