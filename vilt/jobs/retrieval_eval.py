"""Recall@K of the retrieval job: during training (a Trainer evaluator) and at the end, on every
process with the pairs shared out among them, and the predictions file.

Exhaustive scoring runs every held-out image with every held-out text through the ITM head;
where that is too many pairs, and beside it, the two-stage rerank of :mod:`vilt.retrieval`
scores only each query's top k of a first stage (the model's image-only and text-only
states).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..atomic import write_json
from ..data.ranking import RetrievalPool
from ..embedding import Embedder
from ..retrieval import RetrievalResult, chance_recall, retrieval_recall

__all__ = ["ModelScorer", "RecallEvaluator", "write_retrieval_predictions"]


class _SharedEmbedder(Embedder):
    """An Embedder whose pairs are shared out among the processes of a run: each scores every
    world_size-th pair, and every process gets all the results back."""

    def __init__(self, *args: Any, accelerator: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.accelerator = accelerator

    def _run(self, images, texts, pairs, batch_size, *, itm):  # type: ignore[override]
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        if world == 1:
            return super()._run(images, texts, pairs, batch_size, itm=itm)
        mine = super()._run(images, texts, pairs[rank::world], batch_size, itm=itm)
        rows = math.ceil(len(pairs) / world)
        padded = torch.zeros(rows, *mine.shape[1:], dtype=mine.dtype)
        padded[: len(mine)] = mine
        every = self.accelerator.gather(padded.to(self.accelerator.device)).cpu()
        # process r's row j is pair r + j * world: (world, rows) -> (rows, world) order
        every = every.view(world, rows, *mine.shape[1:]).transpose(0, 1)
        return every.reshape(world * rows, *mine.shape[1:])[: len(pairs)].contiguous()


class RecallEvaluator:
    """Recall@K over a held-out :class:`RetrievalPool`, exhaustive when the pool has at most
    ``exhaustive_max_pairs`` image-text pairs, and reranked from a first stage's top
    ``rerank_top_k`` (0: not). Figures are fractions, ``eval_t2i_R@1`` (exhaustive) and
    ``eval_rerank_t2i_R@1``; ``last`` keeps the latest RetrievalResults by kind.

    Args:
        pool: the held-out images and texts.
        processor: the ViltProcessor of the model.
        ks: the K of recall@K.
        rerank_top_k: the first stage's candidates per query that the ITM head reranks.
        exhaustive_max_pairs: the largest pool scored pair by pair.
        batch_size: pairs per forward pass.
    """

    def __init__(
        self,
        pool: RetrievalPool,
        processor: Any,
        *,
        ks: Sequence[int] = (1, 5, 10),
        rerank_top_k: int = 16,
        exhaustive_max_pairs: int = 250_000,
        batch_size: int = 256,
    ) -> None:
        self.pool, self.processor, self.ks = pool, processor, tuple(ks)
        self.rerank_top_k, self.exhaustive_max_pairs = rerank_top_k, exhaustive_max_pairs
        self.batch_size = batch_size
        self.last: dict[str, RetrievalResult] = {}

    @property
    def pairs(self) -> int:
        return len(self.pool.images) * len(self.pool.texts)

    @property
    def exhaustive(self) -> bool:
        return self.pairs <= self.exhaustive_max_pairs

    def __call__(self, trainer: Any) -> dict[str, float]:
        return self.run(trainer.accelerator, trainer.unwrapped_model)

    @torch.no_grad()
    def run(self, accelerator: Any, model: torch.nn.Module) -> dict[str, float]:
        """The figures of ``model`` (unwrapped) on the pool; every process must call it."""
        was_training = model.training
        embedder = _SharedEmbedder(
            model, self.processor, batch_size=self.batch_size, progress=False,
            accelerator=accelerator,
        )  # fmt: skip
        pool, out = self.pool, {}
        try:
            runs = {"exhaustive": None} if self.exhaustive else {}
            if self.rerank_top_k:
                runs["rerank"] = self.rerank_top_k
            for kind, top_k in runs.items():
                result = retrieval_recall(
                    embedder, pool.images, pool.texts, ks=self.ks, rerank_top_k=top_k,
                    relevant=pool.relevant,
                )  # fmt: skip
                self.last[kind] = result
                prefix = "eval_" if kind == "exhaustive" else "eval_rerank_"
                out.update({prefix + k: v / 100 for k, v in result.to_dict().items() if "@" in k})
        finally:
            model.train(was_training)
        return out

    def record(self) -> dict[str, Any]:
        """What results.json keeps: recall in percent by kind (and what a random order
        scores, ``chance``), and the pool's size."""
        kinds = {}
        chance = chance_recall(self.pool.relevant, self.ks)
        for kind, result in {**self.last, "chance": chance}.items():
            kinds[kind] = {
                "text_to_image": {f"R@{k}": v for k, v in result.text_to_image.items()},
                "image_to_text": {f"R@{k}": v for k, v in result.image_to_text.items()},
            }
            if kind != "chance":
                kinds[kind]["pairs_scored"] = result.pairs_scored
            if kind == "rerank":
                kinds[kind]["top_k"] = self.rerank_top_k
        return {"images": len(self.pool.images), "texts": len(self.pool.texts), **kinds}


def write_retrieval_predictions(path: Path, pool: RetrievalPool, result: RetrievalResult) -> int:
    """predictions.json: for each text its first images (by key), for each image its first
    texts, and the rank of the first right answer (0-based; null for an image no text of
    the pool describes). Returns the number of queries written.

    Args:
        path: the file to write (atomically).
        pool: the held-out images and texts that were ranked.
        result: their ranking (exhaustive or reranked).
    """
    keys = [str(k) for k in pool.image_keys]
    t2i = [
        {"text": pool.texts[t], "image": keys[pool.text_to_image[t]], "rank": rank,
         "retrieved": [keys[i] for i in result.text_top[t]]}
        for t, rank in enumerate(result.text_ranks)
    ]  # fmt: skip
    i2t = [
        {"image": keys[i], "rank": rank, "retrieved": [pool.texts[t] for t in result.image_top[i]]}
        for i, rank in enumerate(result.image_ranks)
    ]
    write_json(path, {"text_to_image": t2i, "image_to_text": i2t})
    return len(t2i) + len(i2t)


class ModelScorer:
    """Hard negatives: the match scores of flat pairs by the model being trained (set
    ``model`` once the Trainer has it), under no_grad and in eval mode, ``chunk`` pairs a pass.

    Args:
        chunk: pairs per forward pass.
    """

    def __init__(self, chunk: int = 512) -> None:
        self.model: torch.nn.Module | None = None
        self.chunk = chunk

    @torch.no_grad()
    def __call__(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.model is None:
            raise RuntimeError("ModelScorer.model is not set: no model to choose hard negatives")
        model, was_training = self.model, self.model.training
        device = next(model.parameters()).device
        n = next(iter(inputs.values())).shape[0]
        model.eval()
        try:
            scores = [
                model(**{k: v[s : s + self.chunk].to(device) for k, v in inputs.items()}).scores
                for s in range(0, n, self.chunk)
            ]
        finally:
            model.train(was_training)
        return torch.cat(scores).float().cpu()
