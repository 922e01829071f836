"""BERT-style WordPiece text: a trainer for offline vocabularies and a small, fast wrapper.

:class:`Tokenizer` wraps a ``tokenizers.Tokenizer`` (Rust) and returns torch tensors padded to
the longest text of the batch, never past ``max_length``. Built from a BERT ``vocab.txt``
(what the dandelin ViLT checkpoints ship) it gives the same ids as transformers'
BertTokenizerFast; its files (tokenizer.json, vocab.txt, tokenizer_config.json) load in
transformers' AutoTokenizer too.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer as RustTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from ..atomic import atomic_write, file_set, write_text
from ..textfiles import read_text
from .files import read_json, resolve_directory, write_json
from .wordpiece import PREFIX, count_words, learn_vocab

__all__ = ["SPECIAL_TOKENS", "BatchEncoding", "Tokenizer", "train_tokenizer"]

# BERT's special tokens; train_tokenizer gives them ids 0..4 in this order ([PAD] = 0).
SPECIAL_TOKENS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}
_SANE_MAX_LENGTH = 1_000_000  # transformers writes 1e30 for "no limit"


class BatchEncoding(dict):
    """``input_ids``, ``attention_mask``, ``token_type_ids``; plus :meth:`word_ids`.

    Args:
        data: the named outputs (tensors or lists).
        encodings: the ``tokenizers`` encodings, one per text (for :meth:`word_ids`).
    """

    def __init__(self, data: dict[str, Any], encodings: list[Any]) -> None:
        super().__init__(data)
        self.encodings = encodings

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        """The word each token of text ``batch_index`` came from (None: special or padding),
        for whole-word masking.

        Args:
            batch_index: which text of the batch.
        """
        return list(self.encodings[batch_index].word_ids)

    def to(self, device: str | torch.device) -> BatchEncoding:
        """A copy with every tensor moved to ``device`` (other values kept as they are).

        Args:
            device: the target device, e.g. "cuda" or ``torch.device("cpu")``.
        """
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.items()}
        return BatchEncoding(moved, self.encodings)


class Tokenizer:
    """A ``tokenizers`` tokenizer with the calls ViLT needs.

    Args:
        backend: the Rust ``tokenizers.Tokenizer`` (its truncation and padding are reset).
        special_tokens: pad/unk/cls/sep/mask_token to their strings, over BERT's defaults.
        lowercase: recorded for the saved files (the backend's normaliser does the
            lowercasing).
        model_max_length: the longest text a model takes, saved in tokenizer_config.json.

    Raises:
        ValueError: when the vocabulary lacks one of the five special tokens.
    """

    def __init__(
        self,
        backend: RustTokenizer,
        *,
        special_tokens: dict[str, str] | None = None,
        lowercase: bool = True,
        model_max_length: int = 40,
    ) -> None:
        self.backend = backend
        self.special_tokens = {**SPECIAL_TOKENS, **(special_tokens or {})}
        self.lowercase = bool(lowercase)
        self.model_max_length = int(model_max_length)
        for name in ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"):
            if backend.token_to_id(self.special_tokens[name]) is None:
                raise ValueError(
                    f"the vocabulary has no {name} {self.special_tokens[name]!r}; BERT-style "
                    "vocabularies need [PAD], [UNK], [CLS], [SEP] and [MASK]"
                )
        backend.no_truncation()
        backend.no_padding()
        self._lock = threading.Lock()
        self._settings: tuple[Any, ...] = (False, None)
        self._last: BatchEncoding | None = None

    # -- special tokens and vocabulary ---------------------------------------------------------
    def _id(self, name: str) -> int:
        return int(self.backend.token_to_id(self.special_tokens[name]))

    @property
    def pad_token_id(self) -> int:
        return self._id("pad_token")

    @property
    def unk_token_id(self) -> int:
        return self._id("unk_token")

    @property
    def cls_token_id(self) -> int:
        return self._id("cls_token")

    @property
    def sep_token_id(self) -> int:
        return self._id("sep_token")

    @property
    def mask_token_id(self) -> int:
        return self._id("mask_token")

    @property
    def all_special_ids(self) -> list[int]:
        """The ids of [PAD], [UNK], [CLS], [SEP], [MASK] (never masked or predicted)."""
        return sorted({self._id(name) for name in SPECIAL_TOKENS})

    @property
    def vocab_size(self) -> int:
        """Number of token ids (size of a model's word embedding table)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def get_vocab(self) -> dict[str, int]:
        return self.backend.get_vocab(with_added_tokens=True)

    # -- encoding ---------------------------------------------------------------------------
    def __call__(
        self,
        texts: str | Sequence[str],
        padding: bool | str = True,
        truncation: bool = True,
        max_length: int = 40,
        return_tensors: str | None = "pt",
    ) -> BatchEncoding:
        """Encode ``texts`` as [CLS] tokens [SEP].

        Args:
            texts: one string or a sequence of strings.
            padding: True/"longest" pads to the longest text of the batch; "max_length" to
                ``max_length``; False pads nothing (then "pt" needs equal lengths).
            truncation: cut each text to ``max_length`` tokens, specials included.
            max_length: the length limit (>= 2, room for [CLS] and [SEP]).
            return_tensors: "pt" for long tensors, None for lists.

        Returns:
            input_ids, attention_mask, token_type_ids (long tensors or lists).

        Raises:
            TypeError: for a text that is not a string.
            ValueError: for invalid Unicode, an unknown option, or unequal lengths with "pt".
        """
        batch = [texts] if isinstance(texts, str) else list(texts)
        for i, text in enumerate(batch):
            if not isinstance(text, str):
                raise TypeError(f"text {i} of the batch is {type(text).__name__}, not a string")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as err:  # a lone surrogate: the Rust side cannot take it
                raise ValueError(
                    f"text {i} of the batch is not valid Unicode (a lone surrogate at "
                    f"character {err.start})"
                ) from None
        if padding not in (True, False, "longest", "max_length", "do_not_pad"):
            raise ValueError(
                f"padding must be True, False, 'longest' or 'max_length', got {padding!r}"
            )
        if return_tensors not in ("pt", None):
            raise ValueError(f"return_tensors must be 'pt' or None, got {return_tensors!r}")
        if max_length < 2:
            raise ValueError(f"max_length must leave room for [CLS] and [SEP], got {max_length}")
        pad_to = None if padding in (False, "do_not_pad") else padding
        with self._lock:  # the Rust object holds truncation/padding as state
            self._configure(max_length if truncation else None, pad_to, max_length)
            encodings = self.backend.encode_batch(batch)
        ids = [e.ids for e in encodings]
        data = {
            "input_ids": ids,
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        if return_tensors == "pt":
            if len({len(row) for row in ids}) > 1:
                raise ValueError("texts of different lengths and padding=False; pass padding=True")
            data = {k: torch.tensor(v, dtype=torch.long) for k, v in data.items()}
        out = BatchEncoding(data, encodings)
        self._last = out
        return out

    def _configure(self, truncate_at: int | None, pad_to: Any, max_length: int) -> None:
        settings = (truncate_at, pad_to if pad_to != "max_length" else ("max_length", max_length))
        if settings == self._settings:
            return
        if truncate_at is None:
            self.backend.no_truncation()
        else:
            self.backend.enable_truncation(truncate_at)
        if pad_to is None:
            self.backend.no_padding()
        else:
            length = max_length if pad_to == "max_length" else None
            token = self.special_tokens["pad_token"]
            self.backend.enable_padding(pad_id=self.pad_token_id, pad_token=token, length=length)
        self._settings = settings

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        """Word ids of text ``batch_index`` of the last batch this tokenizer encoded (prefer
        the returned encoding's own ``word_ids``, which no other call can replace).

        Args:
            batch_index: which text of that batch.

        Raises:
            RuntimeError: when nothing has been encoded yet.
        """
        if self._last is None:
            raise RuntimeError("word_ids needs a batch encoded first")
        return self._last.word_ids(batch_index)

    def tokenize(self, text: str) -> list[str]:
        """The WordPiece tokens of ``text``, without [CLS]/[SEP], never cut: the backend
        keeps the last call's truncation as state, which is reset here.

        Args:
            text: one string.
        """
        with self._lock:
            self._configure(None, None, 0)
            return self.backend.encode(text, add_special_tokens=False).tokens

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        """The token strings of ``ids``.

        Args:
            ids: token ids; an id outside the vocabulary gives the [UNK] token.
        """
        return [self.backend.id_to_token(int(i)) or self.special_tokens["unk_token"] for i in ids]

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        """The ids of ``tokens``.

        Args:
            tokens: token strings; one outside the vocabulary gives the [UNK] id.
        """
        unk = self.unk_token_id
        return [t if (t := self.backend.token_to_id(tok)) is not None else unk for tok in tokens]

    def decode(self, ids: Iterable[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        """The text of one row of ids (WordPiece pieces joined back into words).

        Args:
            ids: token ids, a list or a 1-D tensor.
            skip_special_tokens: leave out [PAD], [CLS], [SEP] and the other special tokens.
        """
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def batch_decode(self, rows: Any, skip_special_tokens: bool = True) -> list[str]:
        """The texts of several rows of ids, as :meth:`decode`.

        Args:
            rows: a list of id rows or a 2-D tensor.
            skip_special_tokens: leave out the special tokens.
        """
        if isinstance(rows, torch.Tensor):
            rows = rows.tolist()
        return [self.decode(r, skip_special_tokens=skip_special_tokens) for r in rows]

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_vocab(
        cls, vocab_file: str | os.PathLike, *, lowercase: bool = True, model_max_length: int = 40
    ) -> Tokenizer:
        """A BERT WordPiece tokenizer from a ``vocab.txt`` (one token a line, id = line number),
        built as transformers' BertTokenizerFast builds it.

        Args:
            vocab_file: the vocabulary file.
            lowercase: lowercase texts before splitting them (uncased BERT).
            model_max_length: the longest text a model takes.

        Raises:
            ValueError: for an empty vocabulary or one without the five special tokens.
        """
        path = Path(vocab_file)
        vocab: dict[str, int] = {}
        for line in read_text(path).split("\n"):
            token = line.rstrip("\r")
            if token and token not in vocab:
                vocab[token] = len(vocab)
        if not vocab:
            raise ValueError(f"{path}: the vocabulary file is empty")
        missing = [t for t in SPECIAL_TOKENS.values() if t not in vocab]
        if missing:
            raise ValueError(f"{path}: the vocabulary lacks the special tokens {missing}")
        backend = RustTokenizer(models.WordPiece(vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
        _bert_text_rules(backend, lowercase=lowercase)
        _bert_specials(backend)
        return cls(backend, lowercase=lowercase, model_max_length=model_max_length)

    @classmethod
    def from_transformers(cls, tokenizer: Any, *, model_max_length: int | None = None) -> Tokenizer:
        """Wrap a transformers fast tokenizer (its Rust backend and special tokens).

        Args:
            tokenizer: a transformers ``PreTrainedTokenizerFast`` (e.g. BertTokenizerFast).
            model_max_length: the longest text a model takes; None: the tokenizer's own
                (40 when it says "no limit").

        Raises:
            TypeError: for a slow tokenizer (one without a Rust backend).
        """
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise TypeError(
                f"{type(tokenizer).__name__} has no Rust backend; pass a fast tokenizer"
            )
        names = {
            k: str(getattr(tokenizer, k)) for k in SPECIAL_TOKENS if getattr(tokenizer, k, None)
        }
        limit = model_max_length or getattr(tokenizer, "model_max_length", 40)
        return cls(
            RustTokenizer.from_str(backend.to_str()),
            special_tokens=names,
            lowercase=bool(getattr(tokenizer, "do_lower_case", True)),
            model_max_length=limit if limit <= _SANE_MAX_LENGTH else 40,
        )

    @classmethod
    def from_pretrained(cls, path_or_name: str | os.PathLike) -> Tokenizer:
        """From a directory (or hub name) with ``tokenizer.json`` or a BERT ``vocab.txt``
        (plus the optional ``tokenizer_config.json``), or from either file itself.

        Args:
            path_or_name: a directory, a tokenizer.json or vocab.txt file, or a hub name.

        Raises:
            FileNotFoundError: when neither file is there, or a hub name cannot be resolved.
            ValueError: for a file that is not a tokenizer, or one without the special tokens.
        """
        path = resolve_directory(path_or_name)
        directory = path.parent if path.is_file() else path
        config_file = directory / "tokenizer_config.json"
        config = read_json(config_file) if config_file.is_file() else {}
        lowercase = bool(config.get("do_lower_case", True))
        limit = config.get("model_max_length") or 40
        limit = int(limit) if limit <= _SANE_MAX_LENGTH else 40
        names = {k: v for k in SPECIAL_TOKENS if isinstance(v := config.get(k), str)}
        json_file = (
            path if path.is_file() and path.suffix == ".json" else directory / "tokenizer.json"
        )
        vocab_file = path if path.is_file() and path.suffix == ".txt" else directory / "vocab.txt"
        if json_file.is_file():
            try:
                backend = RustTokenizer.from_file(os.fspath(json_file))
            except Exception as err:
                raise ValueError(f"{json_file}: not a tokenizers file ({err})") from None
            try:
                return cls(
                    backend, special_tokens=names, lowercase=lowercase, model_max_length=limit
                )
            except ValueError as err:
                raise ValueError(f"{json_file}: {err}") from None
        if vocab_file.is_file():
            return cls.from_vocab(vocab_file, lowercase=lowercase, model_max_length=limit)
        raise FileNotFoundError(f"{directory}: no tokenizer.json or vocab.txt in this directory")

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write tokenizer.json, vocab.txt (WordPiece models), tokenizer_config.json and
        special_tokens_map.json, as one set (:func:`vilt.atomic.file_set`): readable here
        and by transformers' AutoTokenizer.

        Args:
            directory: where the files go (created when missing).
        """
        clean = RustTokenizer.from_str(self.backend.to_str())
        clean.no_truncation()
        clean.no_padding()
        model = json.loads(clean.to_str())["model"]
        is_bert = model.get("type") == "WordPiece"
        with file_set(directory) as out:
            atomic_write(out / "tokenizer.json", clean.save)
            if is_bert:
                tokens = sorted(model["vocab"].items(), key=lambda kv: kv[1])
                write_text(out / "vocab.txt", "".join(f"{t}\n" for t, _ in tokens))
            write_json(
                out / "tokenizer_config.json",
                {
                    "tokenizer_class": "BertTokenizer" if is_bert else "PreTrainedTokenizerFast",
                    "do_lower_case": self.lowercase,
                    "model_max_length": self.model_max_length,
                    **self.special_tokens,
                },
            )
            write_json(out / "special_tokens_map.json", dict(self.special_tokens))
        return Path(directory)

    def to_transformers(self) -> Any:
        """The same tokenizer as a transformers ``PreTrainedTokenizerFast``."""
        from transformers import PreTrainedTokenizerFast

        clean = RustTokenizer.from_str(self.backend.to_str())
        clean.no_truncation()
        clean.no_padding()
        return PreTrainedTokenizerFast(
            tokenizer_object=clean, model_max_length=self.model_max_length, **self.special_tokens
        )

    def __repr__(self) -> str:
        return (
            f"Tokenizer(vocab_size={self.vocab_size}, lowercase={self.lowercase}, "
            f"model_max_length={self.model_max_length})"
        )


def _bert_text_rules(backend: RustTokenizer, *, lowercase: bool) -> None:
    """BERT's normaliser (clean, split CJK, lowercase and strip accents) and pre-tokeniser."""
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()


def _bert_specials(backend: RustTokenizer) -> None:
    """The [CLS] A [SEP] template, the ## decoder, and special tokens matched whole in raw
    text ("the [MASK] is red"), as transformers' BertTokenizerFast sets them."""
    backend.decoder = decoders.WordPiece(prefix="##")
    cls_token, sep_token = SPECIAL_TOKENS["cls_token"], SPECIAL_TOKENS["sep_token"]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls_token}:0 $A:0 {sep_token}:0",
        pair=f"{cls_token}:0 $A:0 {sep_token}:0 $B:1 {sep_token}:1",
        special_tokens=[
            (cls_token, backend.token_to_id(cls_token)),
            (sep_token, backend.token_to_id(sep_token)),
        ],
    )
    backend.add_special_tokens(list(SPECIAL_TOKENS.values()))


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 1000,
    *,
    lowercase: bool = True,
    min_frequency: int = 1,
    model_max_length: int = 40,
) -> Tokenizer:
    """Train a BERT-style WordPiece vocabulary on ``texts`` (offline, seconds).

    [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4, then every character, then merged pieces;
    pairs seen fewer than ``min_frequency`` times are not merged. Deterministic: the same
    texts give the same ids on every run and every process. The vocabulary comes out
    smaller than ``vocab_size`` when the texts hold fewer distinct pieces. Save it with the
    model (``save_pretrained``).

    Args:
        texts: an iterable of strings (not one string).
        vocab_size: the largest vocabulary, special tokens included (> 5).
        lowercase: lowercase texts before splitting them.
        min_frequency: pairs seen fewer times than this are not merged.
        model_max_length: the longest text a model takes, saved with the tokenizer.

    Raises:
        TypeError: when ``texts`` is a single string.
        ValueError: for ``vocab_size`` <= 5 or no texts.
    """
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens")
    if isinstance(texts, str):
        raise TypeError("texts must be an iterable of strings, not one string")
    rules = RustTokenizer(models.WordPiece(unk_token=SPECIAL_TOKENS["unk_token"]))
    _bert_text_rules(rules, lowercase=lowercase)
    counts, n_texts = count_words(texts, rules.normalizer, rules.pre_tokenizer)
    if n_texts == 0:
        raise ValueError("train_tokenizer got no texts")
    vocab = learn_vocab(
        counts,
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        min_frequency=min_frequency,
    )
    backend = RustTokenizer(
        models.WordPiece(
            vocab, unk_token=SPECIAL_TOKENS["unk_token"], continuing_subword_prefix=PREFIX
        )
    )
    _bert_text_rules(backend, lowercase=lowercase)
    _bert_specials(backend)
    return Tokenizer(backend, lowercase=lowercase, model_max_length=model_max_length)
