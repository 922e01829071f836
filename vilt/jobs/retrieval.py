"""``vilt retrieval`` / ``python recipes/retrieval.py``: image-text retrieval fine-tuning as
ViLT does it (IRTR), with recall@1/5/10 in both directions on held-out images.

Each training pair comes with k negatives (``--negative-texts``, 15 as in ViLT; and/or
``--negative-images``), drawn at random from the training pairs or, with ``--negatives
hard``, the k that the model being trained scores highest among ``--hard-pool`` random ones;
the ranking loss is the cross-entropy of the softmax over the 1 + k match scores
(:class:`vilt.ViltForImageTextRetrieval`, the rank head of the public retrieval checkpoints).
``--objective itm`` trains the same pairs with the binary ITM loss instead (the comparison).

With no flags: captions made from easy-VQA's facts, three per image that knows its colour
and shape ("a red circle"); ``recipes/retrieval.py`` adds its recipe preset,
``recipes/presets/easy-vqa-retrieval.json`` (an identical caption matches every image that
has it: ``--identical-captions-match``). Writes the model with its processor, results.json,
metrics.csv (recall at every evaluation), loss.png and metrics.png, and predictions.json
(each query's first ten answers).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch

from ..config import ViltConfig, to_pair
from ..data.ranking import RankingCollator, RankingDataset, load_retrieval_pairs, retrieval_pool
from ..modeling import (
    ViltForImageTextMatching,
    ViltForImageTextRetrieval,
    ViltForPreTraining,
    load_model,
)
from ..processing import ViltProcessor
from ..training import Trainer, set_seed
from . import models
from .augment import add_randaugment_flags, check_randaugment_flags, with_randaugment
from .common import Job, job_parser, parse_job_args, percent, positive_int
from .retrieval_eval import ModelScorer, RecallEvaluator, write_retrieval_predictions
from .vqa import DEFAULT_PRESET

__all__ = ["build_parser", "main", "parse_args"]

EXAMPLES = """examples:
  python recipes/retrieval.py                             # easy-VQA captions, recall@1/5/10
  vilt retrieval --recipe-preset recipes/presets/easy-vqa-retrieval.json   # the same
  python recipes/retrieval.py --objective itm             # the binary ITM loss instead
  vilt retrieval --eval-only --init runs/pretrain         # recall of an ITM model as it is
  vilt retrieval --data dataset_coco.json --image-dir /data/coco --train-split train+restval \\
      --init dandelin/vilt-b32-mlm --image-size 384 --randaugment 2 --batch-size 8
  vilt retrieval --data dataset_flickr30k.json --image-dir /data/flickr30k/images \\
      --init dandelin/vilt-b32-finetuned-f30k --eval-only --recall-images 1000
  torchrun --nproc_per_node 2 recipes/retrieval.py --output-dir runs/retrieval-ddp

--data: easy-vqa (default), a Karpathy-split JSON (dataset_coco.json, dataset_flickr30k.json;
--image-dir holds the images, or for COCO the train2014/ and val2014/ folders), or any pairs
source of vilt pretrain (COCO captions JSON, JSONL/CSV, datasets) with --eval-data.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser(
        "vilt retrieval",
        "Fine-tune ViLT for image-text retrieval with ViLT's ranking objective (or\n"
        "--eval-only) and print recall@1/5/10 both ways on held-out images.\n"
        "python recipes/retrieval.py applies recipes/presets/easy-vqa-retrieval.json;\n"
        "vilt retrieval applies one only with --recipe-preset.",
        EXAMPLES,
        preset=DEFAULT_PRESET,
        data_help="easy-vqa (default), a Karpathy-split JSON, or a pairs source (vilt pretrain's)",
        output_dir="runs/retrieval",
        epochs=1,
        batch_size=32,
        eval_batch_size=64,
        lr=(1e-3, 1e-4),
        weight_decay=0.05,
        warmup=0.1,
        log_every=25,
    )
    data = parser.add_argument_group("retrieval data")
    data.add_argument("--train-split", default="train", help="('a+b': both) (default: train)")
    data.add_argument("--eval-split", default="test", help="held-out split (default: test)")
    data.add_argument("--eval-data", help="held-out pairs from another source than --data")
    data.add_argument("--image-dir", help="images of a Karpathy or COCO JSON --data")
    data.add_argument("--eval-image-dir", help="images of a JSON --eval-data")
    data.add_argument(
        "--identical-captions-match",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="an image is matched by every caption it has word for word: never a negative, "
        "and a right answer for recall (for data whose captions several images share) "
        "(default: %(default)s)",
    )
    data.add_argument("--vocab-size", type=int, default=4096, help="WordPiece vocabulary size")
    add_randaugment_flags(data)
    rank = parser.add_argument_group("objective")
    rank.add_argument(
        "--objective",
        choices=("rank", "itm"),
        default="rank",
        help="rank: softmax over each pair and its negatives (ViLT's IRTR); itm: the same pairs "
        "with the binary match loss (default: %(default)s)",
    )
    rank.add_argument(
        "--negative-texts", type=int, default=15, metavar="K", help="(default: %(default)s)"
    )
    rank.add_argument(
        "--negative-images", type=int, default=0, metavar="K", help="(default: %(default)s)"
    )
    rank.add_argument(
        "--negatives",
        choices=("random", "hard"),
        default="random",
        help="hard: the k candidates the model being trained scores highest (default: random)",
    )
    rank.add_argument(
        "--hard-pool",
        type=positive_int,
        metavar="N",
        help="random candidates scored per negative kind with --negatives hard (default: 4 k)",
    )
    recall = parser.add_argument_group("recall")
    recall.add_argument(
        "--recall-images", type=positive_int, metavar="N", help="held-out images (default: all)"
    )
    recall.add_argument(
        "--recall-ks", type=positive_int, nargs="+", default=[1, 5, 10], metavar="K"
    )
    recall.add_argument(
        "--rerank-top-k",
        type=int,
        default=16,
        metavar="K",
        help="two-stage recall: the first stage's top K per query reranked (0: off) "
        "(default: %(default)s)",
    )
    recall.add_argument(
        "--exhaustive-max-pairs",
        type=int,
        default=250_000,
        metavar="N",
        help="score every held-out image with every text when that is at most N pairs "
        "(default: %(default)s)",
    )
    return parser


def _check(args: argparse.Namespace) -> None:
    if args.negative_texts < 0 or args.negative_images < 0:
        raise ValueError("--negative-texts and --negative-images must be >= 0")
    if args.negative_texts + args.negative_images < 1:
        raise ValueError("ranking needs a negative: --negative-texts or --negative-images >= 1")
    if args.negatives == "hard" and args.num_workers:
        raise ValueError(
            "--negatives hard scores candidates with the model being trained, in the main "
            "process: use --num-workers 0"
        )
    if args.rerank_top_k < 0 or args.exhaustive_max_pairs < 0:
        raise ValueError("--rerank-top-k and --exhaustive-max-pairs must be >= 0")
    if not args.rerank_top_k and not args.exhaustive_max_pairs:
        raise ValueError("no recall: --rerank-top-k 0 and --exhaustive-max-pairs 0")
    check_randaugment_flags(args)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The job's flags, recipe preset applied and defaults resolved (what ``main`` runs)."""
    return parse_job_args(build_parser(), argv, family=ViltConfig, resolve=_check)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    job = Job(args, task="image-text-retrieval")
    set_seed(args.seed)
    if args.eval_only:
        return _evaluate(job)
    return _train(job)


def _model_class(args: argparse.Namespace) -> type:
    return ViltForImageTextRetrieval if args.objective == "rank" else ViltForImageTextMatching


def _pairs(args: argparse.Namespace, processor_images: Any, *, held_out: bool) -> Any:
    source = (args.eval_data or args.data) if held_out else args.data
    image_dir = args.eval_image_dir if (held_out and args.eval_data) else args.image_dir
    own_data = not (held_out and args.eval_data)
    limited = args.max_eval_examples if held_out else args.max_train_examples
    return load_retrieval_pairs(
        source,
        split=args.eval_split if held_out else args.train_split,
        transform=partial(processor_images.preprocess_one, normalize=False),
        image_dir=image_dir,
        cache_images=args.cache_images and own_data and limited is None,
    )


def _ranking_set(args: argparse.Namespace, pairs: Any, *, held_out: bool) -> RankingDataset:
    n = args.max_eval_examples if held_out else args.max_train_examples
    indices = None
    if n is not None and n < len(pairs):
        gen = torch.Generator().manual_seed(args.seed)
        order = range(n) if held_out else torch.randperm(len(pairs), generator=gen)[:n].tolist()
        indices = sorted(order)
    pool = args.hard_pool if (args.negatives == "hard" and not held_out) else None
    kt, ki = args.negative_texts, args.negative_images
    return RankingDataset(
        pairs,
        indices=indices,
        text_candidates=max(kt, pool or 0) if kt else 0,
        image_candidates=max(ki, pool or 0) if ki else 0,
        identical_captions_match=args.identical_captions_match,
        seed=args.seed + (1 if held_out else 0),  # held out: the same negatives every time
    )


def _evaluator(args: argparse.Namespace, pairs: Any, processor: Any) -> RecallEvaluator:
    pool = retrieval_pool(
        pairs, max_images=args.recall_images, identical_captions_match=args.identical_captions_match
    )
    return RecallEvaluator(
        pool, processor, ks=args.recall_ks, rerank_top_k=args.rerank_top_k,
        exhaustive_max_pairs=args.exhaustive_max_pairs,
        batch_size=args.eval_batch_size or args.batch_size,
    )  # fmt: skip


def _train(job: Job) -> int:
    args = job.args
    cls = _model_class(args)
    if args.hard_pool is None:
        args.hard_pool = 4 * max(args.negative_texts, args.negative_images)
    init = models.read_init(args.init, cls) if args.init else None
    base = ViltConfig.from_dict(init.config) if init else models.scratch_config(args)
    processor = models.resumed_processor(job.out, args.resume)
    size = args.image_size or min(to_pair(base.image_size))
    images = (
        processor.image_processor
        if processor
        else models.image_processor(size, max(to_pair(base.patch_size)))
    )
    train_pairs = _pairs(args, images, held_out=False)
    if processor is None:
        texts = [r.caption for r in train_pairs.records]
        tokenizer = models.run_tokenizer(args.init, texts, args.vocab_size)
        processor = ViltProcessor(images, tokenizer, max_length=base.max_position_embeddings)
    if init is not None:
        model = models.from_init(cls, init, pooled_only=True)
    else:
        config = models.scratch_config(
            args, vocab_size=processor.tokenizer.vocab_size, pooled_only=True
        )
        model = cls(config)
    models.check_vocab(processor, model.config, args.init or f"preset {args.preset}")
    held_out = _pairs(args, images, held_out=True)
    train = _ranking_set(args, train_pairs, held_out=False)
    test = _ranking_set(args, held_out, held_out=True)
    evaluator = _evaluator(args, held_out, processor)
    if job.is_main:
        processor.save_pretrained(job.out)
    scorer = ModelScorer() if args.negatives == "hard" else None
    collate = partial(
        RankingCollator, processor, negative_texts=args.negative_texts,
        negative_images=args.negative_images, objective=args.objective,
    )  # fmt: skip
    job.say(
        f"retrieval ({args.objective}) on {args.data or 'easy-vqa captions'}: {len(train):,} "
        f"training pairs with {args.negative_texts} + {args.negative_images} {args.negatives} "
        f"negatives, {len(test):,} held-out pairs; recall over {len(evaluator.pool.images):,} "
        f"images and {len(evaluator.pool.texts):,} texts; "
        f"{model.num_parameters() / 1e6:.2f}M parameters"
    )
    trainer = Trainer(
        model,
        job.training_config(data=args.data, preset=args.preset, init=args.init),
        train_dataset=train,
        eval_dataset=test,
        collate_fn=with_randaugment(collate(scorer=scorer), args),
        eval_collate_fn=collate(),
        evaluators=[evaluator],
    )
    if scorer is not None:
        scorer.model = trainer.unwrapped_model
    results = trainer.train()
    return _report(job, results, evaluator)


def _evaluate(job: Job) -> int:
    args = job.args
    source = job.model_dir()
    model = load_model(source)
    if not isinstance(model, ViltForImageTextMatching | ViltForPreTraining):
        raise ValueError(
            f"{source}: holds a {type(model).__name__}; retrieval needs an image-text matching "
            "head (ViltForImageTextRetrieval, ViltForImageTextMatching or ViltForPreTraining)"
        )
    processor = ViltProcessor.from_pretrained(source)
    evaluator = _evaluator(args, _pairs(args, processor.image_processor, held_out=True), processor)
    job.say(
        f"evaluating {source} on {len(evaluator.pool.images):,} images and "
        f"{len(evaluator.pool.texts):,} texts"
    )
    results, accelerator = job.evaluate_only(model, None, collate_fn=None)
    results["metrics"] = evaluator.run(accelerator, model)  # prepared: on its device
    return _report(job, results, evaluator)


def _line(result: Any) -> str:
    def part(recalls: dict[int, float]) -> str:
        return " ".join(f"R@{k} {percent(v / 100)}" for k, v in recalls.items())

    return f"text->image {part(result.text_to_image)} | image->text {part(result.image_to_text)}"


def _report(job: Job, results: dict[str, Any], evaluator: RecallEvaluator) -> int:
    pool, last = evaluator.pool, evaluator.last
    headline = f"held-out retrieval, {len(pool.images):,} images x {len(pool.texts):,} texts"
    lines = []
    if "exhaustive" in last:
        lines.append(f"{headline}, every pair scored: {_line(last['exhaustive'])}")
    if "rerank" in last:
        lines.append(
            f"{headline}, top {evaluator.rerank_top_k} of the first stage reranked: "
            f"{_line(last['rerank'])}"
        )
    extra: dict[str, Any] = {"files": []}
    best = last.get("exhaustive") or last.get("rerank")
    if job.is_main and best is not None:
        extra["predictions"] = write_retrieval_predictions(job.out / "predictions.json", pool, best)
        extra["files"] = ["predictions.json"]
    rank = results["metrics"].get("eval_rank_accuracy")
    if rank is not None:
        lines.append(f"held-out rank accuracy (the match first of 1 + k): {percent(rank)}")
    job.finish(
        results,
        headline="\n".join(lines),
        curves=["eval_t2i_R@1", "eval_i2t_R@1", "eval_rerank_t2i_R@1", "eval_rerank_i2t_R@1"],
        data=job.args.data or "easy-vqa",
        objective=job.args.objective,
        recall=evaluator.record(),
        **extra,
    )
    return 0
