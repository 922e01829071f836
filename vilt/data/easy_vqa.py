"""easy-VQA's images as facts: the colour and shape of each image's one shape, read off its
questions and answers, and the offline data sets made from them for the tasks easy-VQA has no
data for (ITM/MLM captions, image-text retrieval, NLVR2-style statements about two images).

easy-VQA (the ``easy-vqa`` package) ships 4,000 train and 1,000 test images of one coloured
shape each (8 colours, 3 shapes) with about ten questions an image. The questions give the
shape's colour and kind for 3,542 train and 880 test images ("what color is the shape?"
"red"); the others are known only by what they lack ("is there not a blue shape?" "yes").
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from .errors import DataError

__all__ = [
    "COLORS",
    "SHAPES",
    "STATEMENTS",
    "easy_vqa_facts",
    "full_fact_images",
    "question_facts",
    "retrieval_captions",
    "statement",
]

COLORS = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")
SHAPES = ("circle", "rectangle", "triangle")


def question_facts(question: str, answer: str) -> dict[str, str]:
    """Facts a question/answer pair states about its image's one shape: "color"/"shape"
    when present, "no color"/"no shape" when absent. A yes/no question states presence
    when the answer affirms it ("is there a red shape?" yes; "is there not a red shape?"
    no), absence otherwise; a what-question names a present colour or shape in its answer
    and sometimes another in its words ("what color is the circle?").

    Args:
        question: an easy-VQA question.
        answer: its answer.
    """
    words = re.findall(r"[a-z]+", question.lower())
    prefix = ""
    if answer in ("yes", "no"):
        negated = "not" in words or "no" in words
        prefix = "" if (answer == "yes") != negated else "no "
    else:
        words = [*words, answer]
    facts: dict[str, str] = {}
    for w in words:
        if w in COLORS:
            facts[prefix + "color"] = w
        elif w in SHAPES:
            facts[prefix + "shape"] = w
    return facts


def easy_vqa_facts(split: str = "train") -> tuple[dict[int, dict[str, str]], dict[int, str]]:
    """(image id -> its facts, image id -> image path) of easy-VQA's train or test split.

    Args:
        split: "train", or "test" (also "validation": easy-VQA has no other held-out split).
    """
    import easy_vqa

    if split == "train":
        (questions, answers, ids), paths = (
            easy_vqa.get_train_questions(),
            easy_vqa.get_train_image_paths(),
        )
    elif split in ("test", "validation"):
        (questions, answers, ids), paths = (
            easy_vqa.get_test_questions(),
            easy_vqa.get_test_image_paths(),
        )
    else:
        raise DataError(f"easy-VQA: no split {split!r}; it has ['test', 'train']")
    facts: dict[int, dict[str, str]] = {}
    for q, a, i in zip(questions, answers, ids, strict=True):
        facts.setdefault(i, {}).update(question_facts(q, a))
    return facts, paths


def full_fact_images(split: str = "train") -> list[tuple[int, str, str, str]]:
    """(image id, path, colour, shape) of each image whose colour and shape are both known,
    by image id.

    Args:
        split: "train" or "test".
    """
    facts, paths = easy_vqa_facts(split)
    return [
        (i, paths[i], f["color"], f["shape"])
        for i, f in sorted(facts.items())
        if f.get("color") and f.get("shape")
    ]


def retrieval_captions(color: str, shape: str) -> list[str]:
    """Three captions of a shape that each name its colour and its kind: every image with the
    same facts has the same three, and no other image has any of them.

    Args:
        color: the shape's colour.
        shape: its kind.
    """
    return [f"a {color} {shape}", f"the {shape} is {color}", f"there is a {color} {shape}"]


# NLVR2-style statements about a left (a) and a right (b) image, each (colour, shape): the
# text with {c} / {s} slots for a colour / shape, and its truth.
_STATEMENTS: tuple[tuple[str, Any], ...] = (
    ("both shapes are {c}", lambda a, b, c, s: a[0] == c and b[0] == c),
    ("both images show a {s}", lambda a, b, c, s: a[1] == s and b[1] == s),
    ("the left image shows a {c} shape", lambda a, b, c, s: a[0] == c),
    ("the right image shows a {c} shape", lambda a, b, c, s: b[0] == c),
    ("the left image contains a {s}", lambda a, b, c, s: a[1] == s),
    ("the right image contains a {s}", lambda a, b, c, s: b[1] == s),
    ("there is a {c} {s} on the left", lambda a, b, c, s: a == (c, s)),
    ("there is a {c} {s} on the right", lambda a, b, c, s: b == (c, s)),
    ("the two images show the same shape", lambda a, b, c, s: a[1] == b[1]),
    ("the two shapes have the same color", lambda a, b, c, s: a[0] == b[0]),
    ("exactly one image contains a {s}", lambda a, b, c, s: (a[1] == s) != (b[1] == s)),
    ("at least one image has a {c} shape", lambda a, b, c, s: c in (a[0], b[0])),
    ("the left shape is a {s} and the right one is {c}", lambda a, b, c, s: (a[1], b[0]) == (s, c)),
)


STATEMENTS = len(_STATEMENTS)


def statement(
    template: int,
    left: tuple[str, str],
    right: tuple[str, str],
    truth: bool,
    rng: np.random.Generator,
) -> str | None:
    """Statement ``template`` (0 to ``STATEMENTS - 1``) about a left and a right image (each
    (colour, shape)), its colour and shape slots filled at random among the values that make
    its truth ``truth``; None when no value does (another right image may).

    Args:
        template: which of the statements.
        left: the left image's (colour, shape).
        right: the right image's (colour, shape).
        truth: whether the statement is to be true.
        rng: the generator of the draws.
    """
    text, holds = _STATEMENTS[template]
    colors = COLORS if "{c}" in text else (None,)
    shapes = SHAPES if "{s}" in text else (None,)
    fits = [(c, s) for c in colors for s in shapes if holds(left, right, c, s) == truth]
    if not fits:
        return None
    c, s = fits[int(rng.integers(len(fits)))]
    return text.format(c=c, s=s)
