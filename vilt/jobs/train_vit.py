"""``vilt train-vit`` / ``python recipes/train_vit.py``: train a ViT image classifier (or
evaluate one) and print the test accuracy.

With no flags: scikit-learn's bundled digits (1,437 train / 360 test 8x8 images, the data
loader's fixed split) and a small ViT from scratch (``DEFAULT_PRESET``), with generic
settings (no augmentation); ``recipes/train_vit.py`` adds the digits' own through its recipe
preset, ``recipes/presets/digits.json``. Any source
``load_classification`` reads works with ``--data``: a hub name, an imagefolder directory
(class subfolders under train/ and test/ or validation/), a ``save_to_disk`` directory.
Writes the model (label names in its config's id2label) with its image processor,
results.json, metrics.csv, loss.png and metrics.png to ``--output-dir`` (and with
``--ema-decay`` the averaged model in ``ema/``, with ``--save-best`` the best one in
``best/``, each with the processor).

Augmentation and regularisation (all off by default; ``recipes/presets/vit-scratch.json`` and
``vit-finetune.json`` turn them on): :mod:`vilt.jobs.image_augment`'s flags, ``--shift``,
``--drop-path`` and ``--layer-scale``. ``--init CHECKPOINT --image-size N`` fine-tunes at a
new resolution: the checkpoint's position table is resampled once, at load.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from functools import partial
from typing import Any

from ..config import ViTConfig
from ..data import ClassificationCollator, load_classification
from ..modeling import ViTForImageClassification
from ..processing import ViTImageProcessor
from ..training import Trainer, set_seed
from . import image_augment, models
from .augment import RandomShift
from .common import Job, WithIndex, job_parser, limit, parse_job_args, percent

__all__ = ["DEFAULT_PRESET", "build_parser", "main", "parse_args"]

DEFAULT_PRESET = "vit-nano"
SCRATCH_LR, FINETUNE_LR = 2e-3, 1e-4

EXAMPLES = """examples:
  python recipes/train_vit.py                            # digits from scratch, test accuracy
  vilt train-vit --recipe-preset recipes/presets/digits.json  # the same through vilt
  vilt train-vit --data path/to/imagefolder --image-size 64 --patch-size 8 --epochs 20
  vilt train-vit --data cifar10 --init google/vit-base-patch16-224 --image-size 224
  vilt train-vit --init runs/vit --image-size 24 --layer-decay 0.75 --ema-decay 0.999
  python recipes/train_vit.py --data easy-vqa --recipe-preset easy-vqa-shapes  # ViLT's ViT
  vilt train-vit --eval-only --init runs/vit             # evaluate a saved model
  torchrun --nproc_per_node 2 recipes/train_vit.py --output-dir runs/vit-ddp
"""


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser(
        "vilt train-vit",
        "Train a ViT image classifier (or --eval-only) and print the test accuracy.\n"
        "The defaults are generic (no augmentation); a recipe preset brings what one data set\n"
        "needs: python recipes/train_vit.py applies recipes/presets/digits.json, vilt\n"
        "train-vit applies one only with --recipe-preset.",
        EXAMPLES,
        preset=DEFAULT_PRESET,
        data_help="default: scikit-learn digits; easy-vqa (colour and shape classes); a hub "
        "name, imagefolder or datasets directory",
        output_dir="runs/vit",
        epochs=60,
        batch_size=64,
        eval_batch_size=512,
        lr=(SCRATCH_LR, FINETUNE_LR),
        weight_decay=0.05,
        warmup=0.05,
        log_every=20,
    )
    vit = parser.add_argument_group("classification")
    vit.add_argument("--train-split", default="train")
    vit.add_argument("--eval-split", default="test", help="test (falls back to validation)")
    vit.add_argument(
        "--shift",
        type=int,
        default=0,
        help="largest random shift of a training image, in pixels, the gap filled with zeros "
        "(default: %(default)s)",
    )
    vit.add_argument(
        "--drop-path",
        type=float,
        default=None,
        metavar="RATE",
        help="stochastic depth: the last block's residual branches dropped at RATE, earlier "
        "ones linearly less (default: the preset's or checkpoint's, 0)",
    )
    vit.add_argument(
        "--layer-scale",
        type=float,
        default=None,
        metavar="INIT",
        help="per-channel scales on each residual branch, starting at INIT (e.g. 1e-4; from "
        "scratch only) (default: off)",
    )
    image_augment.add_flags(parser.add_argument_group("augmentation (torchvision)"))
    return parser


def _resolve_defaults(args: argparse.Namespace) -> None:
    if args.shift < 0:
        raise ValueError(f"--shift must be >= 0, got {args.shift}")
    if args.drop_path is not None and not 0 <= args.drop_path < 1:
        raise ValueError(f"--drop-path must be in [0, 1), got {args.drop_path}")
    if args.layer_scale is not None and args.layer_scale < 0:
        raise ValueError(f"--layer-scale must be >= 0 (0: off), got {args.layer_scale}")
    if args.init is not None and args.layer_scale:
        raise ValueError(
            "--layer-scale adds weights an --init checkpoint does not have: train from scratch "
            "with it, or leave it out"
        )
    image_augment.check_flags(args)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The job's flags, recipe preset applied and defaults resolved (what ``main`` runs)."""
    return parse_job_args(build_parser(), argv, family=ViTConfig, resolve=_resolve_defaults)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    job = Job(args, task="image-classification")
    set_seed(args.seed)
    if args.eval_only:
        return _evaluate(job)
    return _train(job)


def _load(job: Job, split: str, processor: ViTImageProcessor) -> Any:
    """A split of ``--data`` as uint8 images at the processor's size (``--cache-images``:
    decoded once, up front)."""
    transform = partial(processor.preprocess_one, normalize=False)
    return load_classification(
        job.args.data, split=split, transform=transform, cache_images=job.args.cache_images
    )


def _evaluate(job: Job) -> int:
    source = job.model_dir()
    model = ViTForImageClassification.from_pretrained(source)
    processor = ViTImageProcessor.from_pretrained(source)
    test = limit(
        _load(job, job.args.eval_split, processor), job.args.max_eval_examples, shuffle=False
    )
    job.say(f"evaluating {source} on {len(test):,} {job.args.eval_split} images")
    results, _ = job.evaluate_only(model, test, ClassificationCollator(processor))
    return _report(job, results)


def _train(job: Job) -> int:
    args = job.args
    init = models.read_init(args.init, ViTForImageClassification) if args.init else None
    sizes = {"image_size": args.image_size} if init and args.image_size else {}
    base = ViTConfig.from_dict(init.config, **sizes) if init else models.scratch_config(args)
    processor = _processor(args, base)
    train = _load(job, args.train_split, processor)
    test = limit(_load(job, args.eval_split, processor), args.max_eval_examples, shuffle=False)
    num_labels = train.num_labels
    fields = {"id2label": train.id2label, "num_labels": num_labels, **_model_fields(args)}
    if init is not None:  # a new image size resamples the position table once, here
        model = models.from_init(ViTForImageClassification, init, **sizes, **fields)
    else:
        model = ViTForImageClassification(models.scratch_config(args, **fields))
    for note in getattr(train, "notes", ()):
        job.say(note)
    train = limit(train, args.max_train_examples, shuffle=True, seed=args.seed)
    job.say(
        f"image classification on {args.data or 'digits'}: {len(train):,} training and "
        f"{len(test):,} {args.eval_split} images, {num_labels} classes, "
        f"{model.num_parameters() / 1e6:.2f}M parameters"
    )
    collate = ClassificationCollator(processor)
    shifted = RandomShift(collate, args.shift, seed=args.seed)
    trainer = Trainer(
        model,
        job.training_config(data=args.data, preset=args.preset, init=args.init),
        train_dataset=WithIndex(train),
        eval_dataset=test,
        collate_fn=image_augment.wrap(shifted, args, num_labels),
        eval_collate_fn=collate,
        processor=processor,  # saved with the model, as one set
    )
    results = trainer.train()
    job.save_beside_kept(processor)  # ema/ and best/ load with their processor too
    return _report(job, results)


def _model_fields(args: argparse.Namespace) -> dict[str, Any]:
    """Config fields the flags set: the loss for soft targets, drop path, layer scale."""
    fields: dict[str, Any] = {}
    if image_augment.soft_targets(args):  # Mixup, CutMix, smoothing: soft cross-entropy
        fields["problem_type"] = "single_label_classification"
    if args.drop_path is not None:
        fields["drop_path_rate"] = args.drop_path
    if args.layer_scale is not None:
        fields["layer_scale_init_value"] = args.layer_scale
    return fields


def _processor(args: argparse.Namespace, config: ViTConfig) -> ViTImageProcessor:
    """The init checkpoint's image processor when it has one, else one at the model's size
    (a ViT's position table fixes its image size); ``--image-size`` resizes either."""
    if args.init is not None and models.has_image_processor(args.init):
        sizes = {"size": args.image_size} if args.image_size else {}
        return ViTImageProcessor.from_pretrained(args.init, **sizes)
    return ViTImageProcessor(size=config.image_size)


def _report(job: Job, results: dict) -> int:
    metrics = results["metrics"]
    accuracy = metrics.get("eval_accuracy")
    name = job.args.data or "digits"
    headline = (
        f"{name} {job.args.eval_split} accuracy: {percent(accuracy)} "
        f"({int(metrics.get('eval_samples', 0)):,} images)"
    )
    extra: dict[str, Any] = {}
    if "ema_eval_accuracy" in metrics:
        extra["ema_accuracy"] = metrics["ema_eval_accuracy"]
        headline += f"; the weights' moving average (ema/): {percent(extra['ema_accuracy'])}"
    best = results.get("best")
    if best and best.get("step") is not None:
        headline += f"; best {best['metric']} {best['value']:.4g} at step {best['step']:,} (best/)"
        if (results.get("early_stopping") or {}).get("stopped"):
            headline += ", stopped early"
    job.finish(
        results,
        headline=headline,
        curves=["eval_accuracy", "ema_eval_accuracy", "eval_top5_accuracy"],
        data=job.args.data or "digits",
        eval_split=job.args.eval_split,
        accuracy=accuracy,
        **extra,
    )
    return 0
