"""Image-text retrieval data: pairs with negatives for ViLT's ranking objective, and the
held-out pool that recall@K ranks.

ViLT fine-tunes retrieval by ranking: each matched pair comes with k mismatched candidates,
texts of other images for its image (15 in the paper) and/or other images for its text.
:class:`RankingDataset` draws the candidates from the whole training set per item, seeded by
(seed, epoch, item), so DataLoader workers and resumed runs draw the same;
:class:`RankingCollator` keeps k of them (the first, or with a ``scorer`` the k that the
model being trained scores highest: hard negatives) and batches groups of 1 + k pairs for
:class:`vilt.ViltForImageTextRetrieval`, or flat pairs with 0/1 labels for an ITM model.

Where one caption describes several images (easy-VQA's captions name a colour and a shape,
shared by every image with those facts) ``identical_captions_match=True`` makes an image
count as matched by every caption it has, word for word: such a pair is never drawn as a
negative, and recall counts any such image or text as a right answer.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .collate import _meta, _TextImageCollator
from .easy_vqa import full_fact_images, retrieval_captions
from .errors import DataError
from .pairs import PairRecord, PairsDataset, load_pairs

__all__ = [
    "RankingCollator",
    "RankingDataset",
    "RetrievalPool",
    "load_retrieval_pairs",
    "retrieval_pool",
]


def _same_text(caption: str) -> str:
    return " ".join(caption.lower().split())


def easy_vqa_retrieval_records(split: str = "train") -> list[PairRecord]:
    """Three captions of each easy-VQA image whose colour and shape are known, each naming
    both ("a red circle", "the circle is red", "there is a red circle"): 3,542 train and 880
    test images.

    Args:
        split: "train" or "test" ("validation" reads the test split).
    """
    if split not in ("train", "test", "validation"):
        raise DataError(f"easy-VQA: no split {split!r}; it has ['test', 'train']")
    records = []
    for image_id, path, color, shape in full_fact_images(split):
        for n, caption in enumerate(retrieval_captions(color, shape)):
            source = f"easy-VQA {split} image {image_id} caption {n}"
            records.append(PairRecord(path, image_id, source, caption=caption))
    return records


def load_retrieval_pairs(
    source: Any = None, *, split: str = "train", **options: Any
) -> PairsDataset:
    """Image-caption pairs for retrieval: easy-VQA's facts as captions (``None`` or
    "easy-vqa", see :func:`easy_vqa_retrieval_records`), else any source
    :func:`vilt.data.load_pairs` reads (a Karpathy-split JSON, COCO captions, JSONL/CSV,
    ``datasets``).

    Args:
        source: the data (see above).
        split: the split to read.
        **options: transform, image_dir, skip_bad, cache_images, max_pixels (as load_pairs).
    """
    if source is None or (isinstance(source, str) and source.lower() in ("easy-vqa", "easy_vqa")):
        keep = ("transform", "skip_bad", "cache_images", "max_pixels")
        return PairsDataset(
            easy_vqa_retrieval_records(split), **{k: v for k, v in options.items() if k in keep}
        )
    data = load_pairs(source, split=split, **options)
    if not isinstance(data, PairsDataset):
        raise DataError(f"{source}: retrieval needs a map-style source, not a stream")
    return data


class _Matches:
    """Which captions each image has (for the identical-captions rule)."""

    def __init__(self, records: Sequence[PairRecord], identical: bool) -> None:
        self.identical = identical
        self.keys = [r.image_key for r in records]
        self.texts = [_same_text(r.caption) for r in records]
        self.of_image: dict[Hashable, set[str]] = {}
        for key, text in zip(self.keys, self.texts, strict=True):
            self.of_image.setdefault(key, set()).add(text)

    def matches(self, text: int, image: Hashable) -> bool:
        """Whether record ``text``'s caption describes ``image``."""
        if self.keys[text] == image:
            return True
        return self.identical and self.texts[text] in self.of_image.get(image, ())


class RankingDataset(Dataset):
    """``pairs`` (or those at ``indices``), each with candidate negatives drawn at random from
    the same pairs: ``text_candidates`` captions of images it does not match and
    ``image_candidates`` images its caption does not match, all different. Items are the
    pair's item plus "candidate_texts" (strings) and "candidate_images" (tensors).

    Args:
        pairs: the image-caption pairs.
        indices: the pairs to use (default: all), e.g. a random subset.
        text_candidates: negative texts drawn per item.
        image_candidates: negative images drawn per item.
        identical_captions_match: an image is matched by every caption it has word for word
            (never a negative of it).
        seed: the draws' seed.
    """

    def __init__(
        self,
        pairs: PairsDataset,
        *,
        indices: Sequence[int] | None = None,
        text_candidates: int = 15,
        image_candidates: int = 0,
        identical_captions_match: bool = False,
        seed: int = 0,
    ) -> None:
        self.pairs = pairs
        self.indices = list(range(len(pairs)) if indices is None else indices)
        self.text_candidates, self.image_candidates = text_candidates, image_candidates
        self.seed = seed
        used = [pairs.records[i] for i in self.indices]
        self._match = _Matches(pairs.records, identical_captions_match)
        self._text_pool = np.asarray(self.indices)
        firsts: dict[Hashable, int] = {}
        for i, record in zip(self.indices, used, strict=True):
            firsts.setdefault(record.image_key, i)
        self._image_pool = list(firsts.items())  # (image key, a record of it)
        self._epoch = torch.zeros(1, dtype=torch.long).share_memory_()

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        """Reseed the candidate draws for ``epoch``; workers see it (shared memory).

        Args:
            epoch: the epoch about to start.
        """
        self._epoch[0] = epoch

    def skip_counts(self, all_reduce: Any = None) -> dict[str, int]:
        """The underlying pairs' skipped records by reason (see
        :meth:`vilt.data.base.RecordDataset.skip_counts`).

        Args:
            all_reduce: ``all_reduce(tensor, op)`` over the processes of a distributed run;
                None: this process's counts only.
        """
        return self.pairs.skip_counts(all_reduce)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        j = self.indices[index]
        item = self.pairs[j]
        if item is None:
            return None
        rng = np.random.default_rng([self.seed, int(self._epoch[0]), j])
        return {
            **item,
            "candidate_texts": self._texts(j, rng),
            "candidate_images": self._images(j, rng),
        }

    def _texts(self, j: int, rng: np.random.Generator) -> list[str]:
        own, chosen = self.pairs.records[j].image_key, {}
        for _ in range(50 * self.text_candidates):
            if len(chosen) == self.text_candidates:
                break
            t = int(self._text_pool[rng.integers(len(self._text_pool))])
            text = self._match.texts[t]
            if text not in chosen and not self._match.matches(t, own):
                chosen[text] = self.pairs.records[t].caption
        if len(chosen) < self.text_candidates:
            raise DataError(
                f"{self.pairs.records[j].source}: found {len(chosen)} of "
                f"{self.text_candidates} negative captions; the data has too few captions of "
                "other images"
            )
        return list(chosen.values())

    def _images(self, j: int, rng: np.random.Generator) -> list[torch.Tensor]:
        chosen: dict[Hashable, torch.Tensor] = {}
        for _ in range(50 * self.image_candidates):
            if len(chosen) == self.image_candidates:
                break
            key, record = self._image_pool[int(rng.integers(len(self._image_pool)))]
            if key in chosen or self._match.matches(j, key):
                continue
            item = self.pairs[record]
            if item is not None:  # a bad image skipped (skip_bad): draw another
                chosen[key] = item["pixel_values"]
        if len(chosen) < self.image_candidates:
            raise DataError(
                f"{self.pairs.records[j].source}: found {len(chosen)} of "
                f"{self.image_candidates} negative images; the data has too few other images"
            )
        return list(chosen.values())


Scorer = Callable[[dict[str, torch.Tensor]], torch.Tensor]


class RankingCollator(_TextImageCollator):
    """Batches of :class:`RankingDataset` items with ``negative_texts`` and
    ``negative_images`` negatives each: the first of the item's candidates, or, with a
    ``scorer`` (flat pair inputs -> (N,) match scores, under no_grad: the model being
    trained), the ones it scores highest (hard negatives).

    ``objective="rank"``: groups for :class:`vilt.ViltForImageTextRetrieval`, the matched pair
    first: input_ids (B, G or 1, T) and pixel_values (B, G or 1, C, H, W) with G = 1 + the
    negatives (a side without negatives is shared by its group), labels (B,) zeros.
    ``objective="itm"``: the same pairs flat for an ITM model, labels 1 (matched) or 0.
    ``meta`` keeps the items' image_id and index.

    Args:
        processor: the ViltProcessor (tokenizer and image processor).
        negative_texts: negative captions per pair.
        negative_images: negative images per pair.
        objective: "rank" or "itm".
        scorer: chooses hard negatives among the candidates (None: the first ones).
        **text_image: tokenizer, image_processor, max_length, as for the other collators.
    """

    def __init__(
        self,
        processor: Any = None,
        *,
        negative_texts: int = 15,
        negative_images: int = 0,
        objective: str = "rank",
        scorer: Scorer | None = None,
        **text_image: Any,
    ) -> None:
        super().__init__(processor, **text_image)
        if objective not in ("rank", "itm"):
            raise ValueError(f"objective must be 'rank' or 'itm', got {objective!r}")
        if negative_texts < 0 or negative_images < 0 or negative_texts + negative_images < 1:
            raise ValueError("ranking needs at least one negative text or image")
        self.negative_texts, self.negative_images = negative_texts, negative_images
        self.objective, self.scorer = objective, scorer

    def _hardest(self, kept: list[dict[str, Any]], side: str, k: int) -> list[list[int]]:
        """Per item, the positions of the ``k`` candidates to keep."""
        counts = [len(it[side]) for it in kept]
        if any(n < k for n in counts):
            raise ValueError(f"an item has fewer {side} ({min(counts)}) than {k} negatives")
        if self.scorer is None or all(n == k for n in counts):
            return [list(range(k))] * len(kept)
        if side == "candidate_texts":
            pairs = [(it["pixel_values"], text) for it in kept for text in it[side]]
        else:
            pairs = [(image, it["text"]) for it in kept for image in it[side]]
        inputs = self.encode_text([t for _, t in pairs])
        inputs.update(self.pad_images([im for im, _ in pairs]))
        scores = self.scorer(inputs).float().cpu().split(counts)
        return [s.topk(k).indices.tolist() for s in scores]

    def __call__(self, items: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
        kept = [it for it in items if it is not None]
        if not kept:
            return None
        kt, ki = self.negative_texts, self.negative_images
        pick_t = self._hardest(kept, "candidate_texts", kt) if kt else [[]] * len(kept)
        pick_i = self._hardest(kept, "candidate_images", ki) if ki else [[]] * len(kept)
        texts, images = [], []  # per item: the candidates of its group, the matched one first
        for it, t, i in zip(kept, pick_t, pick_i, strict=True):
            negs_t = [it["candidate_texts"][n] for n in t]
            negs_i = [it["candidate_images"][n] for n in i]
            texts.append([it["text"], *negs_t, *[it["text"]] * ki])
            images.append([it["pixel_values"]] * (1 + kt) + negs_i)
        b, g = len(kept), 1 + kt + ki
        if self.objective == "itm":
            batch: dict[str, Any] = self.encode_text([t for group in texts for t in group])
            batch.update(self.pad_images([im for group in images for im in group]))
            batch["labels"] = torch.tensor(([1] + [0] * (g - 1)) * b, dtype=torch.long)
        else:
            texts = [group[:1] for group in texts] if kt == 0 else texts
            images = [group[:1] for group in images] if ki == 0 else images
            batch = {
                k: v.view(b, -1, *v.shape[1:])
                for k, v in self.encode_text([t for group in texts for t in group]).items()
            }
            padded = self.pad_images([im for group in images for im in group])
            batch.update({k: v.view(b, -1, *v.shape[1:]) for k, v in padded.items()})
            batch["labels"] = torch.zeros(b, dtype=torch.long)
        batch["meta"] = _meta(kept)
        return batch


@dataclass
class RetrievalPool:
    """The held-out images and texts that recall@K ranks.

    Args:
        images: the images, uint8 (3, H, W) tensors.
        image_keys: their keys (ids or paths).
        texts: the captions.
        text_to_image: each caption's own image.
        relevant: (texts, images) bool, the pairs that count as right answers.
    """

    images: list[torch.Tensor]
    image_keys: list[Hashable]
    texts: list[str]
    text_to_image: list[int]
    relevant: torch.Tensor


def retrieval_pool(
    pairs: PairsDataset, *, max_images: int | None = None, identical_captions_match: bool = False
) -> RetrievalPool:
    """The first ``max_images`` images of ``pairs`` (in record order) with all their captions.
    An image skipped as bad (``skip_bad``) leaves the pool with its captions.

    Args:
        pairs: held-out image-caption pairs.
        max_images: how many images (default: all).
        identical_captions_match: a caption also matches every other image that has it.
    """
    firsts: dict[Hashable, int] = {}
    for n, record in enumerate(pairs.records):
        if record.image_key not in firsts:
            if max_images is not None and len(firsts) >= max_images:
                continue
            firsts[record.image_key] = n
    images, keys = [], []
    for key, n in firsts.items():
        item = pairs[n]
        if item is not None:
            images.append(item["pixel_values"])
            keys.append(key)
    position = {key: i for i, key in enumerate(keys)}
    texts, owners = [], []
    for record in pairs.records:
        if record.image_key in position:
            texts.append(record.caption)
            owners.append(position[record.image_key])
    if not texts:
        raise DataError("no held-out image with a caption to rank")
    relevant = torch.zeros(len(texts), len(keys), dtype=torch.bool)
    relevant[torch.arange(len(texts)), torch.tensor(owners)] = True
    if identical_captions_match:
        by_text: dict[str, list[int]] = {}
        for t, text in enumerate(texts):
            by_text.setdefault(_same_text(text), []).append(owners[t])
        for t, text in enumerate(texts):
            relevant[t, by_text[_same_text(text)]] = True
    return RetrievalPool(images, keys, texts, owners, relevant)
