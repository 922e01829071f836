"""The VQA job's data: which source ``--data`` names, its default splits, and a split
loaded (and limited) with the records that line up with its items.

Sources: easy-VQA (the default, from its package), a directory in the official VQAv2
layout, or a ``datasets`` source (hub name, local directory, ``save_to_disk`` output) with
image, question and answers columns. With ``--cache-images`` every image is decoded once
and kept as a uint8 tensor (small sources); otherwise the loader decodes it per item.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset, Subset

from ..data import AnswerVocab, load_vqa
from .common import limit

__all__ = ["VQASplit", "balance_answers", "default_splits", "load_split", "source_kind"]


def source_kind(data: str | None) -> str:
    """The kind of source: easy-vqa, vqav2 (a directory in the official layout) or datasets."""
    if data is None or data.lower() in ("easy-vqa", "easy_vqa"):
        return "easy-vqa"
    path = Path(data)
    if path.is_dir() and any(path.glob("v2_OpenEnded_mscoco_*_questions.json")):
        return "vqav2"
    return "datasets"


def default_splits(kind: str) -> tuple[str, str]:
    """(train split, evaluation split) of a source kind."""
    return {
        "easy-vqa": ("train", "test"),
        "vqav2": ("train", "val"),
        "datasets": ("train", "validation"),
    }[kind]


@dataclass
class VQASplit:
    """A loaded split: the items to batch, the records in item order, the answer vocab,
    and every question of the split (before ``--max-*-examples``: the tokenizer's texts)."""

    dataset: Dataset
    records: list[Any]
    vocab: AnswerVocab
    questions: list[str]

    @property
    def answered(self) -> bool:
        """Whether the split holds human answers (test splits may not: predictions only)."""
        return any(r.answers is not None for r in self.records)


def load_split(
    args: argparse.Namespace,
    split: str,
    *,
    vocab: AnswerVocab | None,
    transform: Any,
    max_examples: int | None,
    shuffle: bool,
) -> VQASplit:
    """``split`` of ``--data`` as items of ``transform``-ed images, limited to
    ``max_examples`` (a seeded random subset when ``shuffle``, else the first ones)."""
    kind = source_kind(args.data)
    min_count = args.min_answer_count or (9 if kind == "vqav2" else 1)
    base = load_vqa(
        args.data,
        split=split,
        vocab=vocab,
        min_count=min_count,
        transform=transform,
        cache_images=args.cache_images and max_examples is None,
    )
    dataset = limit(base, max_examples, shuffle=shuffle, seed=args.seed)
    indices = dataset.indices if isinstance(dataset, Subset) else range(len(base))
    questions = [r.question for r in base.records]
    return VQASplit(dataset, [base.records[i] for i in indices], base.vocab, questions)


def balance_answers(split: VQASplit, alpha: float, beta: float = 0.0) -> Dataset:
    """The training items, each repeated round(w_answer * w_template) times (at least once).

    w_answer = (n_top / n_answer) ** alpha, where n_answer counts the questions whose majority
    answer is the item's: rare answers are seen more often, so that a model from scratch does
    not learn the frequent answers first and the rare ones late.

    w_template = (n_top_in_template / n_template_answer) ** beta balances the answers *within*
    each question template (the question with the answer vocabulary's words blanked out, so
    "is there a circle?" and "is there a triangle?" share one): the answer a template's
    wording makes likely no longer wins on the wording alone, the idea behind VQAv2's
    complementary pairs. alpha 0 and beta 0 keep the data as it is."""
    if alpha <= 0 and beta <= 0:
        return split.dataset
    majority = [
        Counter(r.answers).most_common(1)[0][0] if r.answers else None for r in split.records
    ]
    counts = Counter(a for a in majority if a is not None)
    top = max(counts.values())
    templates = [""] * len(split.records)  # one template for all: w_template 1 at beta 0
    if beta > 0:
        words = {label.lower() for label in split.vocab.labels if label and " " not in label}
        words -= {"yes", "no"}  # answers, but in a question the word "no" is a negation
        templates = [question_template(r.question, words) for r in split.records]
    pairs = Counter((t, a) for t, a in zip(templates, majority, strict=True) if a is not None)
    template_top: dict[str, int] = {}
    for (t, _), n in pairs.items():
        template_top[t] = max(template_top.get(t, 0), n)
    repeats = []
    for t, a in zip(templates, majority, strict=True):
        if a is None:
            repeats.append(1)
            continue
        weight = (top / counts[a]) ** max(alpha, 0.0)
        weight *= (template_top[t] / pairs[(t, a)]) ** max(beta, 0.0)
        repeats.append(max(1, round(weight)))
    return Subset(split.dataset, [i for i, n in enumerate(repeats) for _ in range(n)])


def question_template(question: str, answer_words: set[str]) -> str:
    """The question with every word that is itself an answer replaced by "_"."""
    tokens = re.findall(r"[\w']+|[^\w\s]", question.lower())
    return " ".join("_" if t in answer_words else t for t in tokens)
