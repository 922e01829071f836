"""VQA records and the three sources: easy-VQA (offline default), the official VQAv2
directory layout, and ``datasets`` sources with image / question / answers columns.

Each loader returns a list of :class:`VQARecord` with answers already normalised
(``None`` for test splits without annotations). Problems found while loading, such as a
question whose image id has no image, an empty question or a record missing a field, raise
a :class:`DataError` naming the file and the question, or, given a ``SkipCounter``, are
counted and the record left out. Image files are only opened later, in the worker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import fields
from ..base import ImageRecord
from ..errors import DataError, SkipCounter, read_json, skip_or_raise
from .normalize import normalize_answer

__all__ = ["VQARecord", "load_easy_vqa_records", "load_vqav2_records", "vqav2_split_name"]


@dataclass
class VQARecord(ImageRecord):
    """One question about one image, with its human answers (normalised; ``None`` when the
    split has no annotations) and, where the annotations give one, its ``answer_type``
    (VQAv2: "yes/no", "number" or "other"; the official evaluation reports accuracy by it)."""

    question: str = ""
    answers: list[str] | None = None
    question_id: Any = None
    answer_type: str | None = None


def check_question(record: VQARecord) -> None:
    """A question that is not text, not valid Unicode or empty is an error naming the record
    (:func:`vilt.data.fields.text`; a long one is cut by the tokenizer at ``max_length``
    tokens, which the collators do)."""
    fields.text(record.question, "question", record.source)


def _keep(record: VQARecord, skips: SkipCounter | None) -> bool:
    try:
        check_question(record)
    except DataError as err:
        skip_or_raise(err, skips)
        return False
    return True


def load_easy_vqa_records(
    split: str = "train", *, skips: SkipCounter | None = None
) -> list[VQARecord]:
    """easy-VQA's official split ("train": 38,575 questions on 4,000 images; "test": 9,673
    on 1,000), from the ``easy-vqa`` package; one answer per question."""
    import easy_vqa

    if split == "train":
        questions, answers, image_ids = easy_vqa.get_train_questions()
        paths = easy_vqa.get_train_image_paths()
    elif split in ("test", "validation"):
        questions, answers, image_ids = easy_vqa.get_test_questions()
        paths = easy_vqa.get_test_image_paths()
    else:
        raise DataError(f"easy-VQA: no split {split!r}; it has ['test', 'train']")
    records = []
    for qid, (question, answer, image_id) in enumerate(
        zip(questions, answers, image_ids, strict=True)
    ):
        source = f"easy-VQA {split} question {qid} (image {image_id})"
        record = VQARecord(
            image=paths.get(image_id), image_key=image_id, source=source, question=question,
            answers=[normalize_answer(answer)], question_id=qid,
        )  # fmt: skip
        if record.image is None:
            skip_or_raise(
                DataError(f"{source}: no image with id {image_id}", reason="unknown_image_id"),
                skips,
            )
        elif _keep(record, skips):
            records.append(record)
    return records


_VQAV2_SPLITS = {
    "train": "train2014", "val": "val2014", "validation": "val2014", "test": "test2015",
    "test-dev": "test-dev2015",
}  # fmt: skip


def vqav2_split_name(split: str) -> str:
    """Official split names; "train", "val"/"validation", "test", "test-dev" are accepted."""
    return _VQAV2_SPLITS.get(split, split)


def _list_field(data: Any, key: str, path: Path) -> list:
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise DataError(f"{path}: expected a JSON object with a {key!r} list")
    return data[key]


def _field(entry: Any, key: str, path: Path, n: int) -> Any:
    if not isinstance(entry, dict) or key not in entry:
        raise DataError(f"{path}: record {n} has no {key!r}")
    return entry[key]


def _read_annotations(
    path: Path,
) -> tuple[dict[Any, list[str] | DataError], dict[Any, str]]:
    """(question id -> normalised answers, or the error its annotation gives (raised, or
    counted, when a question asks for it); question id -> answer_type where given)."""
    answers: dict[Any, list[str] | DataError] = {}
    types: dict[Any, str] = {}
    seen = fields.IdRegistry("question id")
    for n, entry in enumerate(_list_field(read_json(path), "annotations", path)):
        where = f"{path.name} annotation {n}"
        qid = fields.identifier(_field(entry, "question_id", path, n), "question_id", where)
        try:
            seen.add(qid, where)
            given = _field(entry, "answers", path, n)
            if not isinstance(given, list) or not all(
                isinstance(a, dict) and "answer" in a for a in given
            ):
                raise DataError(
                    f"{where} (question {qid}): 'answers' must be a list of {{'answer': ...}}"
                )
            answers[qid] = [
                normalize_answer(fields.text(a["answer"], "answer", where, allow_empty=True))
                for a in given
            ]
            if entry.get("answer_type") is not None:
                types[qid] = fields.text(entry["answer_type"], "answer_type", where)
        except DataError as err:
            answers[qid] = err  # a repeat spoils the id's answers: neither copy is used
    return answers, types


def load_vqav2_records(
    root: str | os.PathLike,
    split: str = "train2014",
    *,
    image_dir: str | os.PathLike | None = None,
    skips: SkipCounter | None = None,
) -> list[VQARecord]:
    """The official VQAv2 layout under ``root``:
    ``v2_OpenEnded_mscoco_{split}_questions.json``, ``v2_mscoco_{split}_annotations.json``
    (absent for test splits: answers are then ``None``, for prediction) and images
    ``{subtype}/COCO_{subtype}_{image_id:012d}.jpg`` where ``subtype`` is the questions
    file's ``data_subtype`` (test-dev2015 questions use test2015 images)."""
    root = Path(root)
    split = vqav2_split_name(split)
    q_path = root / f"v2_OpenEnded_mscoco_{split}_questions.json"
    a_path = root / f"v2_mscoco_{split}_annotations.json"
    if not q_path.exists():
        raise DataError(f"{q_path}: questions file not found (split {split!r} under {root})")
    q_data = read_json(q_path)
    questions = _list_field(q_data, "questions", q_path)
    subtype = q_data.get("data_subtype") or ("test2015" if split.startswith("test") else split)
    images = Path(image_dir) if image_dir is not None else root / subtype
    if not images.is_dir():
        raise DataError(f"{images}: image directory not found (for {q_path.name})")
    present = set(os.listdir(images))
    types: dict[Any, str] = {}
    if a_path.exists():
        answers: dict[Any, list[str] | DataError] | None
        answers, types = _read_annotations(a_path)
    elif split.startswith("test"):
        answers = None
    else:
        raise DataError(f"{a_path}: annotations file not found (only test splits may lack one)")
    records = []
    seen = fields.IdRegistry("question id")
    for n, entry in enumerate(questions):
        try:
            where = f"{q_path.name} record {n}"
            qid = fields.identifier(_field(entry, "question_id", q_path, n), "question_id", where)
            image_id = fields.identifier(_field(entry, "image_id", q_path, n), "image_id", where)
            source = f"{q_path.name} question {qid} (record {n}, image {image_id})"
            text = fields.text(_field(entry, "question", q_path, n), "question", source)
            seen.add(qid, source)
            if not isinstance(image_id, int):
                raise DataError(f"{source}: image_id {image_id!r} is not an integer")
            name = f"COCO_{subtype}_{image_id:012d}.jpg"
            if name not in present:
                raise DataError(
                    f"{source}: no image {images / name} for image id {image_id}",
                    reason="unknown_image_id",
                )
            if answers is not None and qid not in answers:
                raise DataError(f"{source}: no annotation in {a_path.name}")
            if answers is not None and isinstance(answers[qid], DataError):
                raise answers[qid]
        except DataError as err:
            skip_or_raise(err, skips)
            continue
        record = VQARecord(
            image=images / name, image_key=image_id, source=source, question=text,
            answers=None if answers is None else answers[qid], question_id=qid,
            answer_type=types.get(qid),
        )  # fmt: skip
        records.append(record)
    return records
