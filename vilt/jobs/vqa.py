"""``vilt vqa`` / ``python recipes/vqa.py``: train ViLT for visual question answering, or
evaluate a trained model, and print the accuracy.

With no flags: easy-VQA from its package, a small ViLT (``DEFAULT_PRESET``) from scratch
with a WordPiece vocabulary trained on the training questions, evaluated on easy-VQA's
official test split, with generic settings (no augmentation, answer balancing or test-time
views). ``recipes/vqa.py`` adds easy-VQA's own through its recipe preset,
``recipes/presets/easy-vqa.json``. Writes to ``--output-dir`` the model with its
processor, results.json, metrics.csv, loss.png and metrics.png, predictions.json (the
official VQA results format) and examples/ (test images with question, answer and
attention heatmap).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from functools import partial
from typing import Any

from ..config import ViltConfig
from ..data import AnswerVocab, VQACollator, vqa_accuracy
from ..modeling import ViltForQuestionAnswering
from ..processing import ViltProcessor
from ..processing.views import test_time_views
from ..training import Trainer, set_seed
from . import models
from .augment import (
    HorizontalFlip,
    RandomShift,
    add_randaugment_flags,
    check_randaugment_flags,
    check_shifts,
    with_randaugment,
)
from .common import Job, job_parser, parse_job_args, percent
from .vqa_data import balance_answers, default_splits, load_split, source_kind
from .vqa_outputs import (
    accuracy_by_answer_type,
    answer_type_metrics,
    predict_labels,
    save_examples,
    write_predictions,
)

__all__ = ["DEFAULT_PRESET", "build_parser", "main", "parse_args"]

DEFAULT_PRESET = "vilt-small-h16"
# peak learning rates from scratch and when fine-tuning an --init checkpoint
SCRATCH_LR, FINETUNE_LR = 1e-3, 1e-4

EXAMPLES = """examples:
  python recipes/vqa.py                                  # easy-VQA from scratch, test accuracy
  python recipes/vqa.py --epochs 3 --no-tta-flip         # its preset, two values overridden
  vilt vqa --recipe-preset recipes/presets/easy-vqa.json # the same through the vilt command
  vilt vqa --output-dir runs/vqa-plain                   # generic defaults: no preset
  vilt vqa --init runs/pretrain --lr 1e-3 --head-lr-multiplier 1  # from a small pretraining run
  vilt vqa --init dandelin/vilt-b32-mlm --image-size 384 # a transformers checkpoint
  vilt vqa --init-vision runs/vit-shapes --lr 1e-3       # from a ViT (the ViLT paper's start)
  vilt vqa --data /data/vqav2 --init dandelin/vilt-b32-mlm --image-size 384 --batch-size 32
  vilt vqa --eval-only --init runs/vqa                   # evaluate a saved model
  vilt vqa --eval-only --init runs/vqa --data /data/vqav2 --eval-split test-dev
  accelerate launch --config_file recipes/configs/multi_gpu.yaml recipes/vqa.py
  torchrun --nproc_per_node 2 recipes/vqa.py --output-dir runs/vqa-ddp

--data: easy-vqa (default), a directory in the official VQAv2 layout
(v2_OpenEnded_mscoco_{split}_questions.json, v2_mscoco_{split}_annotations.json,
{split}/COCO_{split}_{id:012d}.jpg; VQA accuracy; a test split without annotations is only
predicted), or a datasets source (hub name or directory) with image, question and answers.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser(
        "vilt vqa",
        "Train ViLT for visual question answering (or --eval-only) and print the accuracy.\n"
        "The defaults are generic (no flips, shifts, answer balancing or test-time views);\n"
        "a recipe preset brings what one data set needs: python recipes/vqa.py applies\n"
        "recipes/presets/easy-vqa.json, vilt vqa applies one only with --recipe-preset.",
        EXAMPLES,
        preset=DEFAULT_PRESET,
        data_help="easy-vqa (default), a VQAv2 directory, or a datasets hub name / directory",
        output_dir="runs/vqa",
        epochs=6,
        batch_size=128,
        eval_batch_size=512,
        lr=(SCRATCH_LR, FINETUNE_LR),
        weight_decay=0.05,
        warmup=0.05,
        log_every=25,
    )
    vqa = parser.add_argument_group("VQA")
    vqa.add_argument("--train-split", help="default: train")
    vqa.add_argument(
        "--eval-split", help="default: test (easy-VQA), val (VQAv2), validation (datasets)"
    )
    vqa.add_argument(
        "--vocab-size", type=int, default=4096, help="WordPiece vocabulary trained when needed"
    )
    vqa.add_argument(
        "--min-answer-count",
        type=int,
        help="answers seen fewer times in training are not predicted (default: 9 VQAv2, else 1)",
    )
    vqa.add_argument(
        "--hflip",
        type=float,
        default=0.0,
        help="probability of mirroring a training image: only for data whose answers do not "
        "depend on left and right (default: %(default)s)",
    )
    vqa.add_argument(
        "--shift",
        type=int,
        default=0,
        metavar="PIXELS",
        help="largest random shift of a training image, its border repeated (default: %(default)s)",
    )
    add_randaugment_flags(vqa)
    vqa.add_argument(
        "--tta-flip",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="test-time augmentation: average the answer logits with the mirrored image's "
        "(default: %(default)s)",
    )
    vqa.add_argument(
        "--tta-shift",
        type=int,
        default=0,
        metavar="PIXELS",
        help="test-time augmentation: also average with the image moved PIXELS up, down, "
        "left and right (default: %(default)s; 0: the plain image only)",
    )
    vqa.add_argument(
        "--balance-answers",
        type=float,
        default=0.0,
        metavar="ALPHA",
        help="repeat questions with rare answers (n_top / n_answer) ** ALPHA times an epoch "
        "(default: %(default)s; 0: the data as it is)",
    )
    vqa.add_argument(
        "--balance-templates",
        type=float,
        default=0.0,
        metavar="BETA",
        help="also repeat each answer within its question template (the question with answer "
        "words blanked) (n_top / n_answer) ** BETA times (default: 0)",
    )
    vqa.add_argument(
        "--examples", type=int, default=6, help="test images drawn with their answers (PNG)"
    )
    return parser


def _resolve_defaults(args: argparse.Namespace) -> None:
    train_split, eval_split = default_splits(source_kind(args.data))
    args.train_split = args.train_split or train_split
    args.eval_split = args.eval_split or eval_split
    if args.tta_shift < 0:
        raise ValueError(f"--tta-shift must be >= 0 pixels, got {args.tta_shift}")
    if args.balance_templates < 0:
        raise ValueError(f"--balance-templates must be >= 0, got {args.balance_templates}")
    if args.balance_answers < 0:
        raise ValueError(f"--balance-answers must be >= 0, got {args.balance_answers}")
    if args.shift < 0:
        raise ValueError(f"--shift must be >= 0 pixels, got {args.shift}")
    if not 0.0 <= args.hflip <= 1.0:
        raise ValueError(f"--hflip must be a probability in [0, 1], got {args.hflip}")
    check_randaugment_flags(args)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The job's flags, recipe preset applied and defaults resolved (what ``main`` runs)."""
    return parse_job_args(build_parser(), argv, family=ViltConfig, resolve=_resolve_defaults)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    job = Job(args, task="vqa")
    if args.eval_only:
        return _evaluate(job)
    return _train(job)


def _train(job: Job) -> int:
    args = job.args
    set_seed(args.seed)
    start = models.ViltStart(args, ViltForQuestionAnswering)
    processor = models.resumed_processor(job.out, args.resume)
    image_processor = processor.image_processor if processor else start.image_processor()
    check_shifts(args, image_processor.size)
    transform = partial(image_processor.preprocess_one, normalize=False)
    vocab = _init_vocab(start.init)
    train = load_split(
        args, args.train_split, vocab=vocab, transform=transform,
        max_examples=args.max_train_examples, shuffle=True,
    )  # fmt: skip
    test = load_split(
        args, args.eval_split, vocab=train.vocab, transform=transform,
        max_examples=args.max_eval_examples, shuffle=False,
    )  # fmt: skip
    if processor is None:
        tokenizer = start.tokenizer(train.questions, args.vocab_size)
        processor = start.processor(image_processor, tokenizer)
    # the answer head reads the pooled [CLS] state alone: the last block computes nothing else
    fields = {"id2label": train.vocab.id2label, "num_labels": len(train.vocab), "pooled_only": True}
    model = start.build(ViltForQuestionAnswering, processor, **fields)
    job.model_start = start.record(model)
    collate = VQACollator(processor)
    job.say(
        f"VQA on {args.data or 'easy-vqa'}: {len(train.dataset):,} training and "
        f"{len(test.dataset):,} {args.eval_split} questions, {len(train.vocab)} answers, "
        f"{model.num_parameters() / 1e6:.2f}M parameters"
    )
    trainer = Trainer(
        model,
        job.training_config(data=args.data, preset=args.preset, init=args.init),
        train_dataset=balance_answers(train, args.balance_answers, args.balance_templates),
        eval_dataset=test.dataset if test.answered else None,
        collate_fn=_augment(collate, args),
        eval_collate_fn=VQACollator(processor),  # its own counts of texts cut
        metrics=answer_type_metrics(model, test.records),
        processor=processor,  # saved with the model, as one set
    )
    results = trainer.train()
    job.save_beside_kept(processor)
    extra = _finish_outputs(job, trainer.accelerator, trainer.model, processor, test, collate)
    _report(job, results, test, extra)
    return 0


def _evaluate(job: Job) -> int:
    args = job.args
    source = job.model_dir()
    model = ViltForQuestionAnswering.from_pretrained(source, pooled_only=True)
    processor = ViltProcessor.from_pretrained(source)
    check_shifts(args, processor.image_processor.size)
    if not model.config.id2label:
        raise ValueError(f"{source}: the model has no answer names (id2label) to evaluate")
    vocab = AnswerVocab.from_id2label(model.config.id2label)
    transform = partial(processor.image_processor.preprocess_one, normalize=False)
    test = load_split(
        args, args.eval_split, vocab=vocab, transform=transform,
        max_examples=args.max_eval_examples, shuffle=False,
    )  # fmt: skip
    collate = VQACollator(processor)
    job.say(f"evaluating {source} on {len(test.dataset):,} {args.eval_split} questions")
    results, accelerator = job.evaluate_only(
        model,
        test.dataset if test.answered else None,
        collate,
        metrics=answer_type_metrics(model, test.records),
    )
    extra = _finish_outputs(job, accelerator, model, processor, test, collate)
    _report(job, results, test, extra)
    return 0


def _views(args: argparse.Namespace) -> list[Any]:
    """The test-time views whose answer logits are averaged with the plain image's."""
    return test_time_views(flip=args.tta_flip, shift=args.tta_shift)


def _augment(collate: Any, args: argparse.Namespace) -> Any:
    """Training images RandAugment-ed, mirrored, then shifted (border repeated): each with its
    own draws."""
    if args.shift:
        collate = RandomShift(collate, args.shift, fill="edge", seed=args.seed, stream=1)
    collate = HorizontalFlip(collate, args.hflip, seed=args.seed)
    return with_randaugment(collate, args)


def _init_vocab(init: Any) -> AnswerVocab | None:
    """A VQA checkpoint's own answers (its head's label order), else None (from the data)."""
    if init is None or init.architecture != "ViltForQuestionAnswering":
        return None
    id2label = init.config.get("id2label")
    return AnswerVocab.from_id2label(id2label) if id2label else None


def _finish_outputs(
    job: Job, accelerator: Any, model: Any, processor: Any, test: Any, collate: Any
) -> dict[str, Any]:
    """predictions.json for every question of the evaluated split (answered from the
    test-time views when there are any, and then scored: ``views_accuracy``), and the
    example images."""
    config = job.training_config()
    bare = accelerator.unwrap_model(model)
    views = _views(job.args)
    predictions = predict_labels(accelerator, model, test.dataset, collate, config, views=views)
    extra: dict[str, Any] = {
        "files": [],
        "test_time_views": {"flip": job.args.tta_flip, "shift": job.args.tta_shift},
    }
    if views and test.answered:
        names = bare.config.id2label
        scores = [
            vqa_accuracy(names[p], r.answers)
            for r, p in zip(test.records, predictions.tolist(), strict=True)
            if p >= 0
        ]
        extra["views_accuracy"] = sum(scores) / max(len(scores), 1)
    by_type = accuracy_by_answer_type(test.records, predictions, bare.config.id2label)
    if by_type:
        extra["accuracy_by_answer_type"] = by_type
    if job.is_main:
        path = job.out / "predictions.json"
        extra["predictions"] = write_predictions(
            path, test.records, predictions, bare.config.id2label
        )
        examples = save_examples(
            bare, processor, test.records, job.out / "examples", job.args.examples, views=views
        )
        extra["files"] = ["predictions.json"] + (["examples/"] if examples else [])
    return extra


def _report(job: Job, results: dict[str, Any], test: Any, extra: dict[str, Any]) -> None:
    """Print and record the accuracy: with test-time views, that of the answers averaged over
    them (predictions.json), beside the plain images' (``single_view_accuracy``, the trainer's
    ``eval_vqa_accuracy``)."""
    args = job.args
    single = results["metrics"].get("eval_vqa_accuracy")
    views_accuracy = extra.pop("views_accuracy", None)
    accuracy = single if views_accuracy is None else views_accuracy
    name = "easy-VQA" if source_kind(args.data) == "easy-vqa" else args.data
    if accuracy is None:
        headline = f"{name} {args.eval_split}: no answers to score; predictions written"
    else:
        count = int(results["metrics"].get("eval_samples", 0))
        headline = f"{name} {args.eval_split} accuracy: {percent(accuracy)} ({count:,} questions"
        if views_accuracy is not None:
            views = len(_views(args)) + 1
            headline += (
                f"; answer logits averaged over {views} views of each image, "
                f"the image alone: {percent(single)}"
            )
        headline += ")"
        by_type = extra.get("accuracy_by_answer_type")
        if by_type:
            headline += "\nby answer type: " + ", ".join(
                f"{t} {percent(a)}" for t, a in by_type.items()
            )
    job.finish(
        results,
        headline=headline,
        curves=["eval_vqa_accuracy"],
        data=args.data or "easy-vqa",
        eval_split=args.eval_split,
        accuracy=accuracy,
        single_view_accuracy=single,
        **extra,
    )
