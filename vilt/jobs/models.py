"""Models and processors for the jobs: a preset from scratch or an ``--init`` checkpoint
(vilt's format, a transformers directory or a hub name), and the processor that goes with
it, saved beside the model so that ``ViltProcessor.from_pretrained(output_dir)`` and
``vilt predict output_dir`` work on the result.

ViLT text: a resumed run reuses the tokenizer it saved; an ``--init`` checkpoint brings its
own when it has one; otherwise a WordPiece vocabulary is trained on the training texts
(seconds, deterministic, so every process of a distributed run gets the same ids).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from .. import interop  # noqa: F401  (registers the transformers checkpoint reader)
from ..config import get_preset
from ..modeling import PreTrainedModel
from ..modeling.pretrained import Checkpoint, read_checkpoint
from ..processing import ImageProcessor, Tokenizer, ViltProcessor, train_tokenizer
from ..training import latest_checkpoint

__all__ = [
    "check_vocab",
    "from_init",
    "has_image_processor",
    "has_tokenizer",
    "image_processor",
    "read_init",
    "resumed_processor",
    "run_tokenizer",
    "scratch_config",
]

M = TypeVar("M", bound=PreTrainedModel)


def read_init(path_or_name: str, model_cls: type) -> Checkpoint:
    """The ``--init`` checkpoint, read once (its config decides labels and sizes)."""
    return read_checkpoint(path_or_name, model_cls)


def from_init(model_cls: type[M], ckpt: Checkpoint, **overrides: Any) -> M:
    """``model_cls`` with the checkpoint's weights; heads it lacks are initialised (and a
    CheckpointWarning names them)."""
    return model_cls.from_checkpoint(ckpt, **overrides)


def scratch_config(args: argparse.Namespace, **fields: Any) -> Any:
    """The ``--preset`` config with ``--image-size``/``--patch-size`` and ``fields``."""
    sizes = {k: getattr(args, k) for k in ("image_size", "patch_size") if getattr(args, k)}
    return get_preset(args.preset, **sizes, **fields)


def has_tokenizer(path_or_name: str | os.PathLike) -> bool:
    """Whether a local directory holds a tokenizer (a hub name is assumed to)."""
    path = Path(path_or_name)
    if not path.exists():
        return True
    return any((path / f).is_file() for f in ("tokenizer.json", "vocab.txt"))


def has_image_processor(path_or_name: str | os.PathLike) -> bool:
    """Whether a local directory holds image processor settings (a hub name may)."""
    path = Path(path_or_name)
    if not path.exists():
        return True
    return any((path / f).is_file() for f in ("preprocessor_config.json", "processor_config.json"))


def resumed_processor(out: Path, resume: Any) -> ViltProcessor | None:
    """The processor of the run that ``resume`` continues, so its ids stay the same: the one
    in the checkpoint it resumes from (the one named, or the latest under ``out``), else the
    one saved with the model in ``out``; None when not resuming or there is none."""
    if not resume:
        return None
    named = resume is not True and str(resume).lower() not in ("true", "latest")
    checkpoint = Path(resume) if named else latest_checkpoint(out / "checkpoints")
    for directory in (checkpoint / "processor" if checkpoint else None, out):
        if directory is not None and (directory / "tokenizer.json").is_file():
            return ViltProcessor.from_pretrained(directory)
    return None


def run_tokenizer(init: str | None, texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """The ``--init`` checkpoint's tokenizer when it has one, else one trained on ``texts``."""
    if init is not None and has_tokenizer(init):
        return Tokenizer.from_pretrained(init)
    return train_tokenizer(texts, vocab_size=vocab_size)


def image_processor(size: int, patch_size: int) -> ImageProcessor:
    """ViLT's image pipeline at ``size`` (shorter side), in multiples of the patch size."""
    return ImageProcessor(size=size, size_divisor=patch_size)


def check_vocab(processor: ViltProcessor, config: Any, source: str) -> None:
    """A tokenizer whose ids reach past the model's word embeddings is an error up front."""
    try:
        processor.check_model(config, source)
    except ValueError as err:
        raise ValueError(f"{err} (--vocab-size sets the size of a trained vocabulary)") from None
