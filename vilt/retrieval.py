"""Image-text retrieval evaluation with an ITM model: recall@K in both directions.

ViLT scores a pair only by running image and text through the model together, so ranking N
images against M texts exhaustively costs N x M forward passes. ``rerank_top_k=k`` keeps large
N affordable: a cheaper first stage ranks every candidate, and only its top k per query (in
both directions, at most k x (N + M) pairs) are scored by the ITM head; the others keep their
first-stage order below them. The default first stage is the cosine similarity of the
model's own image-only and text-only pooled states (N + M passes; weak, as ViLT was not
trained for it); pass ``first_stage`` with better similarities (e.g. a dual encoder's) when
there are some.
"""

from __future__ import annotations

import copy
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .config import to_pair
from .embedding import Embedder, ImageLike, check_images, check_texts

__all__ = ["RetrievalResult", "chance_recall", "rank_by_scores", "rerank", "retrieval_recall"]


@dataclass
class RetrievalResult:
    """Recall@K in percent for text->image and image->text retrieval.

    Attributes:
        text_to_image: K -> text->image recall@K, in percent.
        image_to_text: K -> image->text recall@K, in percent (over images some text describes).
        pairs_scored: image-text pairs run through the ITM head.
        text_ranks: per text, the 0-based rank of its first correct image among all images.
        image_ranks: per image, the best rank of any of its correct texts among all texts;
            None for an image that no text describes (a distractor for text->image queries,
            not an image->text query).
        text_top: per text, the first max(ks) images retrieved, best first.
        image_top: per image, the first max(ks) texts retrieved, best first.
    """

    text_to_image: dict[int, float]
    image_to_text: dict[int, float]
    pairs_scored: int
    text_ranks: list[int]
    image_ranks: list[int | None]
    text_top: list[list[int]] = field(default_factory=list)
    image_top: list[list[int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, float]:
        out: dict[str, float] = {f"t2i_R@{k}": v for k, v in self.text_to_image.items()}
        out |= {f"i2t_R@{k}": v for k, v in self.image_to_text.items()}
        out["pairs_scored"] = self.pairs_scored
        return out

    def __str__(self) -> str:
        t2i = "  ".join(f"R@{k} {v:5.1f}" for k, v in self.text_to_image.items())
        i2t = "  ".join(f"R@{k} {v:5.1f}" for k, v in self.image_to_text.items())
        return f"text->image {t2i}\nimage->text {i2t}\n({self.pairs_scored} pairs scored)"


def rank_by_scores(scores: torch.Tensor) -> torch.Tensor:
    """(Q, C) scores -> (Q, C) candidate ids, best first; ties keep index order.

    Args:
        scores: (Q queries, C candidates) scores, higher is better.
    """
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def rerank(first: torch.Tensor, candidates: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Per query: ``candidates`` (Q, k) ordered by their ``scores`` (Q, k), then every other
    candidate in the order of the first-stage scores ``first`` (Q, C).

    Args:
        first: (Q, C) first-stage scores of every candidate.
        candidates: (Q, k) ids of the candidates that were rescored, distinct per row.
        scores: (Q, k) their new scores, higher is better.

    Returns:
        (Q, C) candidate ids, best first.
    """
    q, c = first.shape
    by_score = candidates.gather(1, rank_by_scores(scores))
    rest = torch.ones(q, c, dtype=torch.bool).scatter_(1, candidates, False)
    first_order = rank_by_scores(first)
    others = first_order[rest.gather(1, first_order)].view(q, c - candidates.shape[1])
    return torch.cat([by_score, others], dim=1)


def _first_match(ranked: torch.Tensor, is_match: torch.Tensor) -> torch.Tensor:
    """(Q,) position of the first matching candidate in each ranking (C where none matches)."""
    hits = is_match.gather(1, ranked)
    first = hits.to(torch.uint8).argmax(dim=1)  # argmax returns the first of equal maxima
    return torch.where(hits.any(dim=1), first, ranked.shape[1])


def _recall(ranks: torch.Tensor, ks: Sequence[int]) -> dict[int, float]:
    n = max(1, ranks.numel())
    return {k: 100.0 * int((ranks < k).sum()) / n for k in ks}


def unimodal_similarity(
    embedder: Embedder,
    images: Sequence[ImageLike],
    texts: Sequence[str],
    batch_size: int | None = None,
) -> torch.Tensor:
    """(M texts, N images) cosine similarity of image-only and text-only pooled states.

    An image alone is paired with the empty text; a text alone with one mid-grey patch (not
    resized to the model's image size, so the text side costs about what the text does)."""
    images_alone = embedder(images, [""] * len(images), batch_size=batch_size)
    processor = copy.copy(embedder.processor)
    plain = processor.image_processor
    processor.image_processor = type(plain)(**{**plain.options(), "do_resize": False})
    text_side = Embedder(
        embedder.model, processor, batch_size=embedder.batch_size, progress=embedder.progress
    )
    ph, pw = to_pair(embedder.backbone.config.patch_size)
    blank = np.full((ph, pw, 3), 128, np.uint8)
    texts_alone = text_side([blank] * len(texts), texts, batch_size=batch_size)
    images_alone = torch.nn.functional.normalize(images_alone, dim=-1)
    texts_alone = torch.nn.functional.normalize(texts_alone, dim=-1)
    return texts_alone @ images_alone.T


def _check_inputs(
    images: Sequence[ImageLike],
    texts: Sequence[str],
    text_to_image: Sequence[int] | None,
    ks: Sequence[int],
    relevant: Any = None,
) -> torch.Tensor:
    """The (texts, images) bool matrix of the pairs that count as correct."""
    check_texts(texts)
    check_images(images)
    if len(images) == 0 or len(texts) == 0:
        raise ValueError(f"retrieval needs images and texts, got {len(images)} and {len(texts)}")
    if not ks or any(int(k) < 1 for k in ks):
        raise ValueError(f"ks must be positive ranks, got {list(ks)}")
    if relevant is not None:
        if text_to_image is not None:
            raise ValueError("pass text_to_image or relevant, not both")
        match = torch.as_tensor(relevant).bool()
        if match.shape != (len(texts), len(images)):
            raise ValueError(
                f"relevant must be a (texts, images) = ({len(texts)}, {len(images)}) matrix, "
                f"got {tuple(match.shape)}"
            )
        if not bool(match.any(dim=1).all()):
            lost = (~match.any(dim=1)).nonzero().flatten()[:5].tolist()
            raise ValueError(f"text(s) {lost} have no relevant image")
        return match
    owners = _owners(images, texts, text_to_image)
    match = torch.zeros(len(texts), len(images), dtype=torch.bool)
    match[torch.arange(len(texts)), torch.tensor(owners, dtype=torch.long)] = True
    return match


def _owners(
    images: Sequence[ImageLike], texts: Sequence[str], text_to_image: Sequence[int] | None
) -> list[int]:
    if text_to_image is None:
        if len(images) != len(texts):
            raise ValueError(
                f"got {len(images)} images and {len(texts)} texts: pass text_to_image (the "
                "image of each text) unless text i describes image i"
            )
        return list(range(len(texts)))
    if len(text_to_image) != len(texts):
        raise ValueError(f"text_to_image has {len(text_to_image)} entries for {len(texts)} texts")
    owners = [int(i) for i in text_to_image]
    bad = [t for t, i in enumerate(owners) if not 0 <= i < len(images)]
    if bad:
        raise ValueError(
            f"text_to_image of text(s) {bad[:5]} points outside the {len(images)} images"
        )
    return owners


def retrieval_recall(
    model: Embedder | str | os.PathLike | Any,
    images: Sequence[ImageLike],
    texts: Sequence[str],
    text_to_image: Sequence[int] | None = None,
    *,
    ks: Sequence[int] = (1, 5, 10),
    rerank_top_k: int | None = None,
    first_stage: torch.Tensor | np.ndarray | None = None,
    batch_size: int | None = None,
    relevant: torch.Tensor | np.ndarray | None = None,
) -> RetrievalResult:
    """Rank every image for every text (and back) by ITM score and report recall@K.

    Args:
        model: an :class:`Embedder` over an ITM model, or its checkpoint path (any object
            with Embedder's ``score_pairs`` will do).
        images: the images to rank.
        texts: the texts to rank.
        text_to_image: ``text_to_image[t]`` is the index of the image that text t describes
            (several texts may share an image); None means text i describes image i.
        ks: the K of recall@K.
        rerank_top_k: score only the first stage's top k candidates per query.
        first_stage: its (texts, images) similarities (default: :func:`unimodal_similarity`).
        batch_size: pairs per forward pass (default: the Embedder's).
        relevant: instead of ``text_to_image``, the (texts, images) bool matrix of the pairs
            that count as correct, for data where one text describes several images (an
            identical caption of several images: each of them is a right answer).
    """
    match = _check_inputs(images, texts, text_to_image, ks, relevant)
    if isinstance(model, str | os.PathLike):
        model = Embedder.from_pretrained(model)
    if not hasattr(model, "score_pairs"):
        raise TypeError(
            f"retrieval needs an Embedder (model + processor), got {type(model).__name__}; "
            "wrap a loaded model as vilt.Embedder(model, processor)"
        )
    n, m = len(images), len(texts)
    if rerank_top_k is None:
        if first_stage is not None:
            raise ValueError("first_stage is only used with rerank_top_k")
        pairs = [(i, t) for i in range(n) for t in range(m)]
        itm = model.score_pairs(images, texts, pairs, batch_size).view(n, m).T  # (texts, images)
        t2i, i2t = rank_by_scores(itm), rank_by_scores(itm.T)
    else:
        if rerank_top_k < 1:
            raise ValueError(f"rerank_top_k must be >= 1, got {rerank_top_k}")
        if first_stage is None:
            sim = unimodal_similarity(model, images, texts, batch_size)
        else:
            sim = torch.as_tensor(first_stage, dtype=torch.float32)
            if sim.shape != (m, n) or not bool(torch.isfinite(sim).all()):
                raise ValueError(
                    f"first_stage must be finite similarities of shape (texts, images) = "
                    f"({m}, {n}), got {tuple(sim.shape)}"
                )
        cand_t2i = rank_by_scores(sim)[:, : min(rerank_top_k, n)]  # (texts, k)
        cand_i2t = rank_by_scores(sim.T)[:, : min(rerank_top_k, m)]  # (images, k)
        pairs = sorted(
            {(int(i), t) for t in range(m) for i in cand_t2i[t]}
            | {(i, int(t)) for i in range(n) for t in cand_i2t[i]}
        )
        itm = torch.full((m, n), float("nan"))
        scored = model.score_pairs(images, texts, pairs, batch_size)
        index = torch.tensor(pairs, dtype=torch.long).view(-1, 2)
        itm[index[:, 1], index[:, 0]] = scored
        t2i = rerank(sim, cand_t2i, itm.gather(1, cand_t2i))
        i2t = rerank(sim.T, cand_i2t, itm.T.gather(1, cand_i2t))
    text_ranks = _first_match(t2i, match)
    described = match.any(dim=0)
    image_ranks = _first_match(i2t, match.T)
    ks = [int(k) for k in ks]
    return RetrievalResult(
        text_to_image=_recall(text_ranks, ks),
        image_to_text=_recall(image_ranks[described], ks),
        pairs_scored=len(pairs),
        text_ranks=text_ranks.tolist(),
        image_ranks=[
            r if d else None for r, d in zip(image_ranks.tolist(), described.tolist(), strict=True)
        ],
        text_top=t2i[:, : max(ks)].tolist(),
        image_top=i2t[:, : max(ks)].tolist(),
    )


def chance_recall(
    relevant: torch.Tensor | np.ndarray, ks: Sequence[int] = (1, 5, 10)
) -> RetrievalResult:
    """The recall@K, in percent, that a random order of the candidates scores on average: the
    figure a trained model's recall means something against (a query with m right answers
    among N candidates finds one in its top K with probability 1 - C(N-m, K) / C(N, K)).

    Args:
        relevant: the (texts, images) bool matrix of the pairs that count as right answers,
            as :func:`retrieval_recall` takes it.
        ks: the K of recall@K.

    Returns:
        A :class:`RetrievalResult` with the expected recalls (no pairs scored, no ranks).
    """
    right = torch.as_tensor(relevant, dtype=torch.bool)
    if right.ndim != 2 or not right.any(1).all():
        raise ValueError("relevant: a (texts, images) bool matrix with a right image per text")

    def expected(counts: torch.Tensor, n: int, k: int) -> float:
        k = min(k, n)  # queries with the same number m of right answers share a probability
        queries = Counter(counts.tolist())
        hits = sum(q * (1 - math.comb(n - m, k) / math.comb(n, k)) for m, q in queries.items())
        return 100 * hits / len(counts)

    texts, images = right.sum(1), right.sum(0)
    images = images[images > 0]  # image->text queries: the images some text describes
    return RetrievalResult(
        text_to_image={k: expected(texts, right.shape[1], k) for k in ks},
        image_to_text={k: expected(images, right.shape[0], k) for k in ks},
        pairs_scored=0,
        text_ranks=[],
        image_ranks=[],
    )
