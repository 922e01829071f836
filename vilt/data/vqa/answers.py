"""Answer vocabulary, soft targets and the VQA accuracy metric.

Soft targets follow ViLT: an answer given by k of the human annotators scores
min(1, 0.3 k), i.e. 0, 0.3, 0.6, 0.9, 1.0 for k = 0, 1, 2, 3, 4+. A question with a single
answer (easy-VQA and other one-answer sets) scores that answer 1.0.

The metric is the official VQA accuracy: for each of the n human answers, leave it out and
score min(1, matches / 3) against the other n - 1; average the n scores. With a single
human answer it is plain exact-match accuracy. Prediction and human answers are both
normalised (``normalize_answer``); the official script skips that step when all ten
annotators typed the same string, which only matters for answers not already in normal form.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import torch

from .normalize import normalize_answer

__all__ = ["AnswerVocab", "build_answer_vocab", "soft_score", "vqa_accuracy"]

_SCORES = (0.0, 0.3, 0.6, 0.9, 1.0)


def soft_score(count: int) -> float:
    """ViLT's target for an answer given by ``count`` annotators: min(1, 0.3 count).

    Args:
        count: how many annotators gave the answer (below 0 counts as 0).

    Returns:
        0.0, 0.3, 0.6, 0.9 or 1.0.
    """
    return _SCORES[min(max(count, 0), 4)]


class AnswerVocab:
    """The answers a VQA head predicts, in label order (label i = ``labels[i]``).

    Args:
        labels: the answers, one per label id, in normalised form (``normalize_answer``).

    Raises:
        ValueError: when an answer occurs twice.
    """

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = list(labels)
        self.label2id = {a: i for i, a in enumerate(self.labels)}
        if len(self.label2id) != len(self.labels):
            dupes = [a for a, n in Counter(self.labels).items() if n > 1]
            raise ValueError(f"answer vocabulary has duplicate answers: {dupes[:5]}")

    @classmethod
    def from_id2label(cls, id2label: Mapping[int | str, str]) -> AnswerVocab:
        """From a model config's ``id2label`` (keys may be strings after a JSON round trip).

        Args:
            id2label: label id -> answer, ids (int or numeric str) covering 0..n-1.

        Raises:
            ValueError: when the ids are not exactly 0..n-1, or an answer occurs twice.
        """
        items = sorted((int(k), v) for k, v in id2label.items())
        if [k for k, _ in items] != list(range(len(items))):
            raise ValueError("id2label keys must be 0..n-1")
        return cls([v for _, v in items])

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, answer: object) -> bool:
        return answer in self.label2id

    def __repr__(self) -> str:
        head = ", ".join(self.labels[:5])
        return f"AnswerVocab({len(self)} answers: {head}{', ...' if len(self) > 5 else ''})"

    def targets(self, answers: Sequence[str]) -> torch.Tensor:
        """(len(self),) float soft scores for one question's (normalised) human answers.

        Answers outside the vocabulary contribute nothing; all of them outside gives zeros.

        Args:
            answers: the human answers, repeats included (an answer given by k annotators
                appears k times and scores ``soft_score(k)``); a single answer scores 1.0.
                They are compared as given: normalise them first.
        """
        out = torch.zeros(len(self.labels), dtype=torch.float32)
        counts = Counter(answers)
        single = len(answers) == 1
        for answer, k in counts.items():
            i = self.label2id.get(answer)
            if i is not None:
                out[i] = 1.0 if single else soft_score(k)
        return out

    def covers(self, answers: Sequence[str]) -> bool:
        """Whether at least one of the answers is in the vocabulary (a non-zero target).

        Args:
            answers: one question's human answers, normalised (compared as given).
        """
        return any(a in self.label2id for a in answers)


def majority_answer(answers: Sequence[str]) -> str:
    """The most frequent answer (first given wins a tie)."""
    return Counter(answers).most_common(1)[0][0]


def build_answer_vocab(
    answers_lists: Iterable[Sequence[str]], *, min_count: int = 1, max_size: int | None = None
) -> AnswerVocab:
    """Vocabulary of the training answers: each question's majority answer counts once (as
    ViLT builds its VQAv2 vocabulary, which used ``min_count=9``); answers seen fewer than
    ``min_count`` times are dropped; most frequent first, ties alphabetical.

    Args:
        answers_lists: each training question's human answers (raw: they are normalised here;
            answers empty after normalising are dropped, and a question left with none too).
        min_count: the fewest questions whose majority answer it must be to be kept.
        max_size: keep at most this many answers, the most frequent (None: no limit).

    Raises:
        ValueError: when no answer is kept.
    """
    counts: Counter[str] = Counter()
    for answers in answers_lists:
        normalised = [normalize_answer(a) for a in answers]
        normalised = [a for a in normalised if a]
        if normalised:
            counts[majority_answer(normalised)] += 1
    kept = sorted((a for a, n in counts.items() if n >= min_count), key=lambda a: (-counts[a], a))
    if max_size is not None:
        kept = kept[:max_size]
    if not kept:
        raise ValueError(f"no answer occurs at least min_count={min_count} times")
    return AnswerVocab(kept)


def vqa_accuracy(prediction: str, human_answers: Sequence[str]) -> float:
    """Official VQA accuracy of one predicted answer (see the module docstring).

    Args:
        prediction: the predicted answer (normalised here).
        human_answers: the question's human answers, usually 10 (normalised here).

    Returns:
        The accuracy in [0, 1]; with one human answer, 1.0 for an exact match else 0.0.

    Raises:
        ValueError: when ``human_answers`` is empty.
    """
    if not human_answers:
        raise ValueError("VQA accuracy needs at least one human answer")
    pred = normalize_answer(prediction)
    gts = [normalize_answer(a) for a in human_answers]
    if len(gts) == 1:
        return float(pred == gts[0])
    matches = sum(g == pred for g in gts)
    # leaving out answer i removes one match exactly when answer i is itself a match
    scores = [min(1.0, (matches - (g == pred)) / 3.0) for g in gts]
    return sum(scores) / len(scores)
