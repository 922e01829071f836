"""Image-text retrieval evaluation with an ITM model: recall@K in both directions.

ViLT scores a pair only by running both through the model together, so exhaustive ranking of
N images against M texts costs N x M forward passes. ``rerank_top_k`` makes large N
affordable: a cheap first stage (cosine similarity of the model's own image-only and text-only
pooled states, N + M passes) keeps the k best candidates per query, and only those are scored
by the ITM head (k x (N + M) passes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .embed import Embedder, ImageLike


@dataclass
class RetrievalResult:
    """Recall@K for text->image and image->text, in percent, and the pairs scored."""

    text_to_image: dict[int, float]
    image_to_text: dict[int, float]
    pairs_scored: int

    def to_dict(self) -> dict[str, float]:
        out = {f"t2i_R@{k}": v for k, v in self.text_to_image.items()}
        out |= {f"i2t_R@{k}": v for k, v in self.image_to_text.items()}
        out["pairs_scored"] = self.pairs_scored
        return out


def _first_stage(embedder: Embedder, images, texts) -> torch.Tensor:
    """(M texts, N images) cosine similarity of unimodal pooled states."""
    blank = np.full((64, 64, 3), 127, np.uint8)  # a flat grey image: text-only pooled state
    image_vecs = embedder(images, [""] * len(images))
    text_vecs = embedder([blank] * len(texts), list(texts))
    image_vecs = torch.nn.functional.normalize(image_vecs, dim=-1)
    text_vecs = torch.nn.functional.normalize(text_vecs, dim=-1)
    return text_vecs @ image_vecs.T


def _score_pairs(embedder: Embedder, images, texts, pairs: list[tuple[int, int]]) -> torch.Tensor:
    return embedder.scores([images[i] for _, i in pairs], [texts[t] for t, _ in pairs])


def _rerank(first: torch.Tensor, candidates: torch.Tensor, itm_score) -> torch.Tensor:
    """Per query: candidates by ITM score, then every other item in first-stage order."""
    rows = []
    for q in range(first.shape[0]):
        cand = sorted(candidates[q].tolist(), key=lambda c: -itm_score(q, c))
        taken = set(cand)
        rest = [c for c in first[q].argsort(descending=True).tolist() if c not in taken]
        rows.append(cand + rest)
    return torch.tensor(rows)


def _recall(ranked: torch.Tensor, is_match, ks: Sequence[int]) -> dict[int, float]:
    """ranked: (queries, candidates) candidate ids best first; is_match(q, c) -> bool."""
    hits = {k: 0 for k in ks}
    for q in range(ranked.shape[0]):
        first = next(
            (r for r, c in enumerate(ranked[q].tolist()) if is_match(q, c)), ranked.shape[1]
        )
        for k in ks:
            hits[k] += first < k
    return {k: 100.0 * hits[k] / max(1, ranked.shape[0]) for k in ks}


def retrieval_recall(
    embedder: Embedder,
    images: Sequence[ImageLike],
    texts: Sequence[str],
    text_to_image: Sequence[int],
    *,
    ks: Sequence[int] = (1, 5, 10),
    rerank_top_k: int | None = None,
) -> RetrievalResult:
    """Rank every image for every text (and back) by ITM score and report recall@K.

    ``text_to_image[t]`` is the index of the image that text t describes (an image may have
    several texts). With ``rerank_top_k`` only the first stage's top k candidates per query are
    scored by the ITM head; the rest keep their first-stage order below them.
    """
    n, m = len(images), len(texts)
    if len(text_to_image) != m:
        raise ValueError(f"text_to_image has {len(text_to_image)} entries for {m} texts")
    bad = [t for t, i in enumerate(text_to_image) if not 0 <= i < n]
    if bad:
        raise ValueError(f"text_to_image of text(s) {bad[:5]} points outside the {n} images")
    if rerank_top_k is None:
        pairs = [(t, i) for t in range(m) for i in range(n)]
        scores = _score_pairs(embedder, images, texts, pairs).view(m, n)
        t2i = scores.argsort(dim=1, descending=True)
        i2t = scores.T.argsort(dim=1, descending=True)
        scored = len(pairs)
    else:
        if rerank_top_k < 1:
            raise ValueError(f"rerank_top_k must be >= 1, got {rerank_top_k}")
        k = rerank_top_k
        sim = _first_stage(embedder, images, texts)
        cand_t2i = sim.topk(min(k, n), dim=1).indices  # (m, k)
        cand_i2t = sim.T.topk(min(k, m), dim=1).indices  # (n, k)
        pairs = sorted(
            {(t, int(i)) for t in range(m) for i in cand_t2i[t]}
            | {(int(t), i) for i in range(n) for t in cand_i2t[i]}
        )
        pair_scores = _score_pairs(embedder, images, texts, pairs).tolist()
        itm = dict(zip(pairs, pair_scores, strict=True))
        t2i = _rerank(sim, cand_t2i, lambda q, c: itm[(q, c)])
        i2t = _rerank(sim.T, cand_i2t, lambda q, c: itm[(c, q)])
        scored = len(pairs)
    texts_of = [set() for _ in range(n)]
    for t, i in enumerate(text_to_image):
        texts_of[i].add(t)
    return RetrievalResult(
        text_to_image=_recall(t2i, lambda t, i: text_to_image[t] == i, ks),
        image_to_text=_recall(i2t, lambda i, t: t in texts_of[i], ks),
        pairs_scored=scored,
    )
