"""The VQA torch data set and ``load_vqa``, which picks the source.

Items are {"pixel_values": (3, H, W), "text": question, "labels": (num_answers,) soft
scores (absent for splits without answers), "meta": {"question_id", "image_id",
"answers", "answer_type"}} (answer_type None where the annotations give none). The VQA
collator turns "meta" into a batch["meta"] dict of lists that is not a model input: pop it
before ``model(**batch)`` and use it for the VQA accuracy and a predictions file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import datasets

from ...atomic import write_text
from .. import fields
from ..base import RecordDataset
from ..errors import DataError, SkipCounter, skip_or_raise
from ..hub import RowImage, find_column, open_hf, undecoded
from ..streaming import StreamingDataset
from .answers import AnswerVocab, build_answer_vocab
from .normalize import normalize_answer
from .records import VQARecord, check_question, load_easy_vqa_records, load_vqav2_records

__all__ = ["VQADataset", "load_vqa", "load_vqa_hf_records", "write_vqa_predictions"]

logger = logging.getLogger("vilt.data")


class VQADataset(RecordDataset):
    """Map-style VQA data over VQA records and an answer vocabulary.

    A question none of whose answers is in the vocabulary gets all-zero targets and is
    counted in ``unanswerable``; with ``skip_unanswerable=True`` it is left out instead
    (counted in ``skips`` as answer_not_in_vocab).

    Args:
        records: the questions (:class:`~vilt.data.vqa.records.VQARecord`); answers None
            for a split without answers.
        vocab: the answer vocabulary that makes the (num_answers,) soft-score targets.
        skip_unanswerable: leave out questions none of whose answers is in ``vocab``
            (instead of keeping them with all-zero targets).
        **options: transform, skip_bad, skips, cache_images, max_pixels (see
            :class:`~vilt.data.base.RecordDataset`).
    """

    def __init__(
        self,
        records: Sequence[VQARecord],
        *,
        vocab: AnswerVocab,
        skip_unanswerable: bool = False,
        **options: Any,
    ) -> None:
        self.vocab = vocab
        skips = options.pop("skips", None)
        if skips is None and (skip_unanswerable or options.get("skip_bad")):
            skips = SkipCounter()
        missing = [r for r in records if r.answers is not None and not vocab.covers(r.answers)]
        self.unanswerable = len(missing)
        if missing and skip_unanswerable:
            dropped = {id(r) for r in missing}
            for r in missing:
                skips.add("answer_not_in_vocab", f"{r.source}: answers {r.answers}")
            records = [r for r in records if id(r) not in dropped]
            self.unanswerable = 0
        elif missing:
            logger.info(
                "%d questions have no answer in the vocabulary (zero targets)", len(missing)
            )
        self.records = records
        super().__init__(skips=skips, **options)

    @property
    def id2label(self) -> dict[int, str]:
        return self.vocab.id2label

    def encode(self, record: VQARecord, index: int) -> dict[str, Any]:
        """One question -> {"pixel_values", "text", "labels"?, "meta"} (see the module).

        Args:
            record: the question, its image and its answers (None: no "labels").
            index: its position (unused; part of the encoder interface).

        Raises:
            DataError: for a question that is not text, not valid Unicode or empty, or an
                :class:`~vilt.data.errors.ImageError` for an image that cannot be read.
        """
        check_question(record)
        item: dict[str, Any] = {"pixel_values": self.image_tensor(record), "text": record.question}
        if record.answers is not None:
            item["labels"] = self.vocab.targets(record.answers)
        item["meta"] = {
            "question_id": record.question_id,
            "image_id": record.image_key,
            "answers": record.answers,
            "answer_type": record.answer_type,
        }
        return item


def _answers_of(value: Any, where: str) -> list[str]:
    """Answers as stored by different data sets: a string, a list of strings, a list of
    {"answer": ...} dicts, or datasets' dict of lists {"answer": [...], ...}; each answer must
    be text (:func:`vilt.data.fields.text`)."""
    if value is None:
        return []
    if isinstance(value, dict):
        return _answers_of(value.get("answer"), where)
    if isinstance(value, list | tuple):
        out: list[str] = []
        for a in value:
            out.extend(_answers_of(a, where) if isinstance(a, dict | list | tuple) else
                       [fields.text(a, "answer", where, allow_empty=True)])  # fmt: skip
        return out
    return [fields.text(value, "answer", where, allow_empty=True)]


def _row_record(
    row: dict,
    i: int,
    image: Any = None,
    *,
    image_col: str,
    question_col: str,
    answers_col: str | None,
    qid_col: str | None,
    iid_col: str | None,
    name: str,
    type_col: str | None = None,
) -> VQARecord:
    """Row ``i`` as a record (``image``: a lazy stand-in for the row's image column); its
    fields read as :mod:`vilt.data.fields` says (a DataError names the row)."""
    where = f"row {i} of {name}"
    qid = fields.identifier(row[qid_col], "question_id", where) if qid_col else i
    source = f"{where} (question {qid})"
    answers = None
    if answers_col is not None:
        answers = [normalize_answer(a) for a in _answers_of(row[answers_col], source)]
    return VQARecord(
        image=row[image_col] if image is None else image,
        image_key=fields.identifier(row[iid_col], "image_id", source) if iid_col else i,
        source=source,
        question=fields.text(row[question_col], "question", source),
        answers=answers,
        question_id=qid,
        answer_type=None if type_col is None or row[type_col] is None else str(row[type_col]),
    )


_ANSWER_COLUMNS = ("answers", "answer", "multiple_choice_answer")


def load_vqa_hf_records(
    source: Any,
    *,
    split: str = "train",
    image_column: str | None = None,
    question_column: str | None = None,
    answers_column: str | None = None,
    streaming: bool = False,
    skips: SkipCounter | None = None,
    **load_kwargs: Any,
) -> tuple[list[VQARecord] | datasets.IterableDataset, Any]:
    """Records of a ``datasets`` VQA source. Map-style: (records with text in memory and
    images read lazily, None). Streaming: (rows, to_record) for :class:`StreamingDataset`.
    Without an answers column, answers are ``None`` (prediction). Without a question_id
    column the row number stands in; streamed with DataLoader workers, row numbers count
    within each worker's shards, so give streamed sources a question_id column. A bad row
    (:mod:`vilt.data.fields`; a repeated question id in a map-style source) raises, or with
    ``skips`` is counted and left out (streamed rows: when the stream reaches them)."""
    data, name = open_hf(source, split=split, streaming=streaming, **load_kwargs)
    features = data.features
    columns = list(features or {})
    image_col = find_column(
        features,
        kind=datasets.Image,
        given=image_column,
        names=("image", "img", "image_path"),
        what="image",
        source=name,
    )
    question_col = find_column(
        features,
        kind=None,
        given=question_column,
        names=("question", "text"),
        what="question",
        source=name,
    )
    answers_col = answers_column or next((c for c in _ANSWER_COLUMNS if c in columns), None)
    if answers_col is not None and answers_col not in columns:
        raise DataError(f"{name}: no answers column {answers_col!r}; columns are {columns}")
    qid_col = "question_id" if "question_id" in columns else None
    iid_col = "image_id" if "image_id" in columns else None
    type_col = "answer_type" if "answer_type" in columns else None

    columns = {"image_col": image_col, "question_col": question_col, "answers_col": answers_col,
               "qid_col": qid_col, "iid_col": iid_col, "type_col": type_col}  # fmt: skip
    to_record = partial(_row_record, name=name, **columns)  # picklable for spawned workers

    if isinstance(data, datasets.IterableDataset):
        return undecoded(data, image_col), to_record
    images = undecoded(data.select_columns([image_col]), image_col)
    text_cols = [c for c in (question_col, answers_col, qid_col, iid_col, type_col) if c]
    rows = data.select_columns(text_cols).to_list()
    records, seen = [], fields.IdRegistry("question id")
    for i, row in enumerate(rows):
        try:
            record = to_record(row, i, RowImage(images, i))
            seen.add(record.question_id, record.source)
        except DataError as err:
            skip_or_raise(err, skips)
            continue
        records.append(record)
    return records, None


def _is_vqav2_dir(source: Any) -> bool:
    if not isinstance(source, str | os.PathLike) or not Path(source).is_dir():
        return False
    return any(Path(source).glob("v2_OpenEnded_mscoco_*_questions.json"))


def load_vqa(
    source: Any = None,
    *,
    split: str = "train",
    vocab: AnswerVocab | None = None,
    min_count: int = 1,
    transform: Any = None,
    streaming: bool = False,
    skip_bad: bool = False,
    skip_unanswerable: bool = False,
    cache_images: bool = False,
    max_pixels: int | None = None,
    image_dir: str | os.PathLike | None = None,
    image_column: str | None = None,
    question_column: str | None = None,
    answers_column: str | None = None,
    **load_kwargs: Any,
) -> VQADataset | StreamingDataset:
    """A VQA data set of ``split`` from ``source``:
    - ``None`` or "easy-vqa": easy-VQA from its package (train / test);
    - a directory in the official VQAv2 layout (``load_vqav2_records``; split "train2014",
      "val2014", "test2015", "test-dev2015" or "train" / "val" / "test" / "test-dev");
    - otherwise a ``datasets`` source (hub name, directory, Dataset) with image, question
      and answers columns (found by name or given).

    Questions longer than the collator's ``max_length`` tokens are truncated there.

    Args:
        source: None or "easy-vqa", a VQAv2 directory, or a ``datasets`` source.
        split: the split to read.
        vocab: the answer vocabulary; None: built from this split's answers (do that for
            the training split and pass ``train.vocab`` to the others; streams need one).
        min_count: when building the vocabulary, the fewest questions whose majority answer
            an answer must be to be kept.
        transform: RGB PIL image -> (3, H, W) tensor (the image processor's
            ``preprocess_one``); None: items hold the uint8 image.
        streaming: read a ``datasets`` source as a stream (needs ``vocab``).
        skip_bad: skip and count bad questions and images instead of raising.
        skip_unanswerable: leave out questions with no answer in the vocabulary (counted).
        cache_images: decode each distinct image once, up front (small sets: easy-VQA).
        max_pixels: refuse images larger than this many pixels (default: PIL's limit).
        image_dir: a VQAv2 directory's images (default: ``source``/train2014 etc., the
            questions file's ``data_subtype``).
        image_column: a ``datasets`` source's image column (default: the first ``Image``
            feature, else image/img/image_path).
        question_column: its question column (default: question, else text).
        answers_column: its answers column (default: answers, answer or
            multiple_choice_answer; none: answers are None, for prediction).
        **load_kwargs: passed to ``datasets.load_dataset`` (e.g. ``cache_dir``).

    Returns:
        A :class:`VQADataset`, or a :class:`~vilt.data.streaming.StreamingDataset` when
        streaming.

    Raises:
        DataError: for a missing split or column, a stream without ``vocab``, a split with
            no answers and no ``vocab``, or (without ``skip_bad``) a bad record.
    """
    skips = SkipCounter() if (skip_bad or skip_unanswerable) else None
    options = {"transform": transform, "skip_bad": skip_bad, "skips": skips,
               "max_pixels": max_pixels}  # fmt: skip
    if source is None or (isinstance(source, str) and source.lower() in ("easy-vqa", "easy_vqa")):
        records: Any = load_easy_vqa_records(split, skips=skips)
    elif _is_vqav2_dir(source):
        records = load_vqav2_records(source, split, image_dir=image_dir, skips=skips)
    else:
        records, to_record = load_vqa_hf_records(
            source, split=split, image_column=image_column, question_column=question_column,
            answers_column=answers_column, streaming=streaming, skips=skips, **load_kwargs,
        )  # fmt: skip
        if to_record is not None:
            if vocab is None:
                raise DataError(
                    "a streamed VQA source needs vocab= (its answers are not read up front)"
                )
            encoder = VQADataset([], vocab=vocab, **options)
            return StreamingDataset(records, to_record=to_record, encoder=encoder)
    if vocab is None:
        answered = [r.answers for r in records if r.answers]
        if not answered:
            raise DataError(
                f"VQA split {split!r} has no answers to build a vocabulary from; pass vocab="
            )
        vocab = build_answer_vocab(answered, min_count=min_count)
    return VQADataset(records, vocab=vocab, skip_unanswerable=skip_unanswerable,
                      cache_images=cache_images, **options)  # fmt: skip


def write_vqa_predictions(
    path: str | os.PathLike, question_ids: Sequence[Any], answers: Sequence[str]
) -> Path:
    """The official results file: a JSON list of {"question_id", "answer"}.

    Args:
        path: the file to write (atomically).
        question_ids: the questions' ids, in order.
        answers: the predicted answer of each, in the same order.

    Returns:
        The path written.

    Raises:
        ValueError: when ``question_ids`` and ``answers`` differ in length.
    """
    if len(question_ids) != len(answers):
        raise ValueError(f"{len(question_ids)} question ids but {len(answers)} answers")
    rows = [{"question_id": q, "answer": a} for q, a in zip(question_ids, answers, strict=True)]
    return write_text(path, json.dumps(rows))
