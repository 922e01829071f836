"""Models and processors for the jobs: a preset from scratch or an ``--init`` checkpoint
(vilt's format, a transformers directory or a hub name), and the processor that goes with
it, saved beside the model so that ``ViltProcessor.from_pretrained(output_dir)`` and
``vilt predict output_dir`` work on the result.

Every ViLT job starts its model through :class:`ViltStart`, which honours the ViLT flags
that :func:`add_vilt_start_flags` adds: ``--init-vision SOURCE`` (a ViT checkpoint: the
paper's start), ``--init-text BERT`` (BERT's text embeddings and tokenizer beside it) and
``--max-text-length N`` (the text positions, which the processor follows).

ViLT text: a resumed run reuses the tokenizer it saved; ``--init-text`` brings BERT's; an
``--init`` checkpoint brings its own when it has one; otherwise a WordPiece vocabulary is
trained on the training texts (seconds, deterministic, so every process of a distributed run
gets the same ids).
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from .. import interop  # noqa: F401  (registers the transformers checkpoint reader)
from ..config import ViltConfig, get_preset, to_pair
from ..interop.bert import read_bert_config
from ..modeling import PreTrainedModel, ViTModel
from ..modeling.from_vit import vilt_config_from_vit
from ..modeling.pretrained import Checkpoint, CheckpointError, read_checkpoint
from ..processing import ImageProcessor, Tokenizer, ViltProcessor, train_tokenizer
from ..training import latest_checkpoint
from ..training.accel import process_state

__all__ = [
    "ViltStart",
    "add_vilt_start_flags",
    "check_vilt_start",
    "check_vocab",
    "from_init",
    "has_image_processor",
    "has_tokenizer",
    "image_processor",
    "read_init",
    "resumed_processor",
    "scratch_config",
    "unknown_words",
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


def unknown_words(tokenizer: Tokenizer, texts: Iterable[str]) -> dict[str, Any]:
    """The words of ``texts`` that ``tokenizer`` can only encode as [UNK]: {"texts": how many
    texts hold one, "of": how many texts, "words": {word: texts holding it}, most first}.
    A checkpoint's vocabulary that lacks the fine-tuning data's words loses them silently.

    Args:
        tokenizer: the tokenizer the job will encode with.
        texts: the job's training texts.
    """
    counts = Counter(texts)
    unk, words, held = tokenizer.unk_token_id, Counter(), 0
    encodings = tokenizer.backend.encode_batch(list(counts), add_special_tokens=False)
    for (text, n), encoding in zip(counts.items(), encodings, strict=True):
        pieces = zip(encoding.ids, encoding.offsets, strict=True)
        found = {text[a:b] for i, (a, b) in pieces if i == unk}
        held += n if found else 0
        words.update({word: n for word in found})
    return {"texts": held, "of": sum(counts.values()), "words": dict(words.most_common())}


def describe_unknown_words(found: dict[str, Any], source: str) -> str:
    """The warning line for :func:`unknown_words`' result (empty when there are none)."""
    if not found["texts"]:
        return ""
    shown = ", ".join(repr(w) for w in list(found["words"])[:8])
    more = len(found["words"]) - 8
    return (
        f"warning: the vocabulary of {source} lacks {len(found['words']):,} word(s) of the "
        f"training texts, which become [UNK] in {found['texts']:,} of {found['of']:,} texts: "
        f"{shown}{f' and {more:,} more' if more > 0 else ''} (a checkpoint made with "
        "--vocab-vqa-questions or --vocab-nlvr2-statements knows them, their embeddings "
        "untrained until fine-tuning)"
    )


def image_processor(size: int, patch_size: int) -> ImageProcessor:
    """ViLT's image pipeline at ``size`` (shorter side), in multiples of the patch size."""
    return ImageProcessor(size=size, size_divisor=patch_size)


def check_vocab(processor: ViltProcessor, config: Any, source: str) -> None:
    """A tokenizer whose ids reach past the model's word embeddings is an error up front."""
    try:
        processor.check_model(config, source)
    except ValueError as err:
        raise ValueError(f"{err} (--vocab-size sets the size of a trained vocabulary)") from None


# ---- where a ViLT job's model starts ------------------------------------------------------


def add_vilt_start_flags(group: Any) -> None:
    """``--init-vision``, ``--init-text`` and ``--max-text-length``: every ViLT job's (added
    by ``common.job_parser`` for a ViLT preset; honoured by :class:`ViltStart`)."""
    group.add_argument(
        "--init-vision",
        metavar="SOURCE",
        help="start from a ViT instead (the ViLT paper's start): a vilt or transformers ViT "
        "checkpoint, directory or hub name (e.g. google/vit-base-patch32-384); its patch "
        "projection, positions, blocks and final norm are kept, the rest starts fresh",
    )
    group.add_argument(
        "--init-text",
        metavar="BERT_SOURCE",
        help="with --init-vision: the text embeddings (word, position, token type, norm) and "
        "the tokenizer of a transformers BERT checkpoint (e.g. bert-base-uncased)",
    )
    group.add_argument(
        "--max-text-length",
        type=_at_least_two,
        metavar="N",
        help="text positions: texts are kept up to N tokens ([CLS] and [SEP] included); a new "
        "model gets N positions, an --init model's table is resized to N (default: the "
        "preset's or the checkpoint's)",
    )
    group.add_argument(
        "--vocab-vqa-questions",
        metavar="SOURCE",
        help="a new vocabulary also learns the training questions of this VQA source (a --data "
        "of vilt vqa), so that fine-tuning on it meets no unknown word",
    )
    group.add_argument(
        "--vocab-nlvr2-statements",
        metavar="SOURCE",
        help="a new vocabulary also learns the training statements of this NLVR2 source (a "
        "--data of vilt nlvr2: easy-vqa or the release's root)",
    )


def vocabulary_extras(args: argparse.Namespace) -> list[str]:
    """The texts ``--vocab-vqa-questions`` and ``--vocab-nlvr2-statements`` add to what a new
    vocabulary learns: the words of the data a model will be fine-tuned on next."""
    from ..data import load_nlvr2, load_vqa

    texts: list[str] = []
    if getattr(args, "vocab_vqa_questions", None):
        texts += [r.question for r in load_vqa(args.vocab_vqa_questions).records]
    if getattr(args, "vocab_nlvr2_statements", None):
        texts += [r.sentence for r in load_nlvr2(args.vocab_nlvr2_statements).records]
    return texts


def _at_least_two(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be >= 2 ([CLS] and [SEP]), got {value}")
    return value


def check_vilt_start(args: argparse.Namespace) -> None:
    """ValueError for ViLT start flags that cannot go together."""
    if args.init is not None and args.init_vision is not None:
        raise ValueError("--init and --init-vision are alternatives: start from one of them")
    if args.init_text is not None and args.init_vision is None:
        raise ValueError("--init-text needs --init-vision (BERT's text beside a ViT's vision)")
    if args.init_vision is not None and args.patch_size is not None:
        raise ValueError("--patch-size cannot change the patch size of an --init-vision ViT")
    if args.eval_only and (args.init_vision or args.max_text_length):
        raise ValueError("--eval-only evaluates a trained model: --init-vision and "
                         "--max-text-length start a new one")  # fmt: skip


class ViltStart:
    """Where a ViLT job's model starts: the ``--preset`` from scratch, an ``--init``
    checkpoint, or a ViT (``--init-vision``, with BERT's text from ``--init-text``); and the
    text length (``--max-text-length``). Each source is read once, up front, so that its
    sizes decide the image processor and the processor's ``max_length`` before any data is
    read.

    Args:
        args: the job's parsed flags.
        model_cls: the ViLT class the job trains (an --init checkpoint is read for it).
        adapt: what the job does to an --init checkpoint as read before its model is built
            from it (NLVR2 gives a one-image checkpoint a second image's modality type).
    """

    def __init__(
        self,
        args: argparse.Namespace,
        model_cls: type,
        adapt: Callable[[Checkpoint], Checkpoint] | None = None,
    ) -> None:
        self.args = args
        self.init: Checkpoint | None = None
        self.vit: Checkpoint | None = None
        self.text_config: dict[str, Any] | None = None
        self.unknown_words: dict[str, Any] | None = None  # of a checkpoint's tokenizer
        length = args.max_text_length
        if args.init is not None:
            self.init = read_init(args.init, model_cls)
            if adapt is not None:
                self.init = adapt(self.init)
            base = ViltConfig.from_dict(self.init.config)
        elif args.init_vision is not None:
            self.vit = read_checkpoint(args.init_vision, ViTModel)
            if self.vit.config.get("model_type") != "vit":
                raise CheckpointError(
                    f"--init-vision {args.init_vision}: holds a "
                    f"{self.vit.config.get('model_type')!r} model, not a ViT"
                )
            if args.init_text is not None:
                self.text_config = read_bert_config(args.init_text)
            base = vilt_config_from_vit(
                self.vit.config, self.text_config, source=args.init_vision, **self._sizes()
            )
        else:
            base = scratch_config(args, **self._sizes())
        self.config: ViltConfig = base
        self.max_length: int = length or base.max_position_embeddings

    def _sizes(self) -> dict[str, Any]:
        """The ViLT fields the flags set on a new model."""
        out: dict[str, Any] = {}
        if self.args.max_text_length:
            out["max_position_embeddings"] = self.args.max_text_length
        if self.args.init_vision is not None and self.args.image_size:
            out["image_size"] = self.args.image_size
        return out

    @property
    def kind(self) -> str:
        """ "init", "vision" or "scratch"."""
        return "init" if self.init else "vision" if self.vit else "scratch"

    def image_processor(self) -> ImageProcessor:
        """ViLT's image pipeline at ``--image-size`` (else the model's), in patch multiples."""
        size = self.args.image_size or min(to_pair(self.config.image_size))
        return image_processor(size, max(to_pair(self.config.patch_size)))

    def tokenizer(self, texts: Iterable[str], vocab_size: int) -> Tokenizer:
        """BERT's (``--init-text``), the ``--init`` checkpoint's when it has one, else a
        WordPiece vocabulary of ``vocab_size`` trained on ``texts``."""
        source = self.args.init_text
        if source is not None:
            tokenizer = Tokenizer.from_pretrained(source)
        elif self.args.init is not None and has_tokenizer(self.args.init):
            source, tokenizer = self.args.init, Tokenizer.from_pretrained(self.args.init)
        else:
            texts = [*texts, *vocabulary_extras(self.args)]
            if not texts:
                raise ValueError(
                    "no texts to train a vocabulary on (streamed data): start from a tokenizer "
                    "with --init-text BERT_SOURCE or --init"
                )
            return train_tokenizer(texts, vocab_size=vocab_size)
        self.unknown_words = unknown_words(tokenizer, texts)
        line = describe_unknown_words(self.unknown_words, source)
        if line and process_state().is_main_process:
            print(line, flush=True)
        return tokenizer

    def processor(self, images: ImageProcessor, tokenizer: Tokenizer) -> ViltProcessor:
        """The processor: texts kept up to the model's text positions."""
        return ViltProcessor(images, tokenizer, max_length=self.max_length)

    def build(self, model_cls: type[M], processor: ViltProcessor, **fields: Any) -> M:
        """The model, ``fields`` (labels, pooled_only, wpa_weight, ...) set, its vocabulary
        checked against the processor's."""
        vocab = {"vocab_size": processor.tokenizer.vocab_size}
        if self.init is not None:
            model = from_init(model_cls, self.init, **fields)
            if self.args.max_text_length:
                model.resize_text_positions(self.args.max_text_length)
        elif self.vit is not None:
            text = self.args.init_text
            model = model_cls.from_vit(
                self.vit, text=text, **self._sizes(), **({} if text else vocab), **fields
            )
        else:
            model = model_cls(scratch_config(self.args, **self._sizes(), **vocab, **fields))
        check_vocab(processor, model.config, self.describe())
        return model

    def describe(self) -> str:
        """How the job names its starting point."""
        if self.init is not None:
            return str(self.args.init)
        if self.vit is not None:
            text = f" with BERT text {self.args.init_text}" if self.args.init_text else ""
            return f"ViT {self.args.init_vision}{text}"
        return f"preset {self.args.preset}"

    def record(self, model: Any) -> dict[str, Any]:
        """What results.json keeps of it (``start``)."""
        return {
            "kind": self.kind,
            "init": self.args.init,
            "init_vision": self.args.init_vision,
            "init_text": self.args.init_text,
            "text_positions": model.config.max_position_embeddings,
            **({"unknown_words": self._unknown_record()} if self.unknown_words else {}),
        }

    def _unknown_record(self) -> dict[str, Any]:
        found = self.unknown_words or {}
        return {**found, "words": dict(list(found.get("words", {}).items())[:50])}
