"""Collators: items from vilt data sets -> model-ready batches, padded per batch.

Text is tokenized here, padded to the longest text of the batch and truncated at
``max_length`` tokens (default: the processor's, 40 for ViLT; keep it within the model's
``max_position_embeddings``); each collator's ``truncation`` counter counts the texts cut
(across DataLoader workers), which the Trainer reports at the end of a run. Images arrive
decoded and transformed by the workers (``preprocess_one``) and are padded to the largest in
the batch by the image processor's ``pad``, which also returns ``pixel_mask`` (left out of a
batch in which no image is padded).

Every collator drops ``None`` items (records skipped with ``skip_bad``) and returns
``None`` when a whole batch was skipped: skip such a batch. Values that are not model
inputs travel under ``batch["meta"]`` (a dict of lists: question_id, image_id, answers,
index): ``meta = batch.pop("meta")`` before ``model(**batch)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..processing.truncation import TruncationCounter
from .masking import IGNORE_INDEX, whole_word_mask, word_ids_from_tokens

__all__ = [
    "NEGATIVES",
    "ClassificationCollator",
    "PretrainingCollator",
    "VQACollator",
    "collate_classification",
]

Item = dict[str, Any] | None


class ClassificationCollator:
    """{"pixel_values": (B, 3, H, W), "labels": (B,) long} from classification items.

    Call it on a list of items (``None`` items, skipped records, are dropped); it returns
    ``None`` when every item was skipped, and raises ``ValueError`` for images of different
    sizes when there is no ``image_processor`` to pad them.

    Args:
        image_processor: an image processor whose ``pad`` batches the images (and normalises
            uint8 ones, from ``preprocess_one(image, normalize=False)``: a quarter of the
            bytes from workers and in the image cache); None: the images are stacked as
            they are.
    """

    def __init__(self, image_processor: Any = None) -> None:
        self.image_processor = image_processor

    def __call__(self, items: Sequence[Item]) -> dict[str, torch.Tensor] | None:
        kept = [it for it in items if it is not None]
        if not kept:
            return None
        images = [it["pixel_values"] for it in kept]
        labels = torch.tensor([it["labels"] for it in kept], dtype=torch.long)
        if self.image_processor is not None:
            return {
                "pixel_values": self.image_processor.pad(images)["pixel_values"],
                "labels": labels,
            }
        shapes = {tuple(im.shape) for im in images}
        if len(shapes) > 1:
            raise ValueError(
                f"images of different sizes {sorted(shapes)} in one batch: use a transform that "
                "resizes to one size (ViTImageProcessor.preprocess_one)"
            )
        return {"pixel_values": torch.stack(images), "labels": labels}


collate_classification = ClassificationCollator()
"""Stacks classification items as they are: ``collate_classification(items)`` is
``ClassificationCollator()(items)`` (no image processor; every image of a batch must have one
size)."""


def _meta(items: Sequence[dict[str, Any]]) -> dict[str, list]:
    keys = items[0].get("meta", {}).keys()
    return {k: [it["meta"][k] for it in items] for k in keys}


class _TextImageCollator:
    """Tokenizer + image padding shared by the ViLT collators. Pass a ``ViltProcessor``, or
    its ``tokenizer`` and ``image_processor``."""

    def __init__(
        self,
        processor: Any = None,
        *,
        tokenizer: Any = None,
        image_processor: Any = None,
        max_length: int | None = None,
    ) -> None:
        self.tokenizer = tokenizer or getattr(processor, "tokenizer", None)
        self.image_processor = image_processor or getattr(processor, "image_processor", None)
        if self.tokenizer is None or self.image_processor is None:
            raise ValueError("pass a ViltProcessor, or both tokenizer= and image_processor=")
        self.max_length = int(max_length or getattr(processor, "max_length", None) or 40)
        self.truncation = TruncationCounter(shared=True)

    def encode_text(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        self.truncation.add(enc, self.max_length)
        out = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
        if "token_type_ids" not in out:
            out["token_type_ids"] = torch.zeros_like(out["input_ids"])
        if out["input_ids"].shape[1] > self.max_length:
            raise ValueError(
                f"tokenizer returned {out['input_ids'].shape[1]} tokens, more than "
                f"max_length={self.max_length}"
            )
        self._last_encoding = enc
        return out

    def pad_images(self, images: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """pixel_values, and pixel_mask unless no image of the batch is padded: without a mask
        the model takes every pixel as real, which gives the same outputs on its path without
        the per-image positions and gathers (the model cannot ask the mask's values itself)."""
        padded = self.image_processor.pad(images)
        out = {"pixel_values": padded["pixel_values"]}
        if not bool(padded["pixel_mask"].all()):
            out["pixel_mask"] = padded["pixel_mask"]
        return out


class VQACollator(_TextImageCollator):
    """VQA batches: input_ids, attention_mask, token_type_ids, pixel_values, pixel_mask,
    labels ((B, num_answers) float soft scores; absent for splits without answers), and
    meta (question_id, image_id, answers: not a model input, pop it).

    Args:
        processor: a ``ViltProcessor`` (its tokenizer, image processor and max_length), or
            None with ``tokenizer`` and ``image_processor`` given.
        tokenizer: the tokenizer (overrides the processor's).
        image_processor: the image processor whose ``pad`` batches the images (overrides the
            processor's).
        max_length: the most tokens a text keeps (default: the processor's, else 40).

    Raises:
        ValueError: when neither a processor nor both tokenizer and image_processor are given.
    """

    def __call__(self, items: Sequence[Item]) -> dict[str, Any] | None:
        kept = [it for it in items if it is not None]
        if not kept:
            return None
        batch: dict[str, Any] = self.encode_text([it["text"] for it in kept])
        batch.update(self.pad_images([it["pixel_values"] for it in kept]))
        if all("labels" in it for it in kept):
            batch["labels"] = torch.stack([it["labels"] for it in kept]).float()
        batch["meta"] = _meta(kept)
        return batch


NEGATIVES = ("in-batch", "dataset", "hard")


class PretrainingCollator(_TextImageCollator):
    """ITM + MLM batches from image-caption items.

    ITM: each pair becomes a negative with probability ``itm_negative_ratio``; where its
    mismatched image comes from is ``negatives``:

    - "in-batch": another item's image of the same batch (never one with the same image_id;
      when the batch has no other image the pair stays positive); no image is decoded twice;
    - "dataset": the image of a random item of ``negative_source`` (the training set), as
      the ViLT code draws it: negatives from across the data, at one more image read each;
    - "hard": the batch keeps its own images and carries, for each negative, up to
      ``hard_candidates`` other images of the batch (``itm_hard_rows`` (N,),
      ``itm_hard_candidates`` (N, K) long); :class:`vilt.training.HardNegatives`, run in the
      training step, swaps in the one the current model scores as the best match.

    ``itm_labels`` (B,) long, 1 = match.
    MLM: ``mlm_probability`` of the tokens (80/10/10), whole words at a time
    (``whole_word``) or token by token; ``mlm_labels`` (B, T) long, -100 except at masked
    tokens of matched pairs.
    The draws are seeded by (``seed``, epoch, the items' indices): call ``set_epoch`` each
    epoch (shared with DataLoader workers, persistent or not). ``itm``/``mlm`` False leaves
    that part (and its labels) out.

    Args:
        processor: a ``ViltProcessor``, or None with ``tokenizer`` and ``image_processor``
            in ``text_image``.
        mlm_probability: the fraction of (non-special) tokens chosen for MLM.
        itm_negative_ratio: the probability, in [0, 1], that a pair becomes an ITM negative.
        itm: make ITM pairs and ``itm_labels``.
        mlm: mask tokens and make ``mlm_labels``.
        whole_word: mask whole words (all their WordPiece tokens) rather than single tokens.
        negatives: where negative images come from: "in-batch", "dataset" or "hard".
        negative_source: the map-style training set to draw from with ``"dataset"``.
        hard_candidates: K, the candidate images per negative with ``"hard"`` (>= 1).
        seed: the seed of the ITM and MLM draws.
        **text_image: tokenizer, image_processor, max_length, as for :class:`VQACollator`.

    Raises:
        ValueError: for ``itm_negative_ratio`` outside [0, 1], an unknown ``negatives``,
            "dataset" without a map-style ``negative_source``, ``hard_candidates`` < 1, or
            no tokenizer and image processor.
    """

    def __init__(
        self,
        processor: Any = None,
        *,
        mlm_probability: float = 0.15,
        itm_negative_ratio: float = 0.5,
        itm: bool = True,
        mlm: bool = True,
        whole_word: bool = True,
        negatives: str = "in-batch",
        negative_source: Any = None,
        hard_candidates: int = 4,
        seed: int = 0,
        **text_image: Any,
    ) -> None:
        super().__init__(processor, **text_image)
        if not 0.0 <= itm_negative_ratio <= 1.0:
            raise ValueError(f"itm_negative_ratio must be in [0, 1], got {itm_negative_ratio}")
        if negatives not in NEGATIVES:
            raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")
        if negatives == "dataset" and (
            negative_source is None or not hasattr(negative_source, "__len__")
        ):
            raise ValueError(
                'negatives="dataset" needs a map-style negative_source (the training set)'
            )
        if hard_candidates < 1:
            raise ValueError(f"hard_candidates must be >= 1, got {hard_candidates}")
        self.mlm_probability = mlm_probability
        self.itm_negative_ratio = itm_negative_ratio
        self.itm, self.mlm, self.seed = itm, mlm, seed
        self.whole_word = whole_word
        self.negative_mode, self.negative_source = negatives, negative_source
        self.hard_candidates = hard_candidates
        self._epoch = torch.zeros(1, dtype=torch.long).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        """Reseed the draws for ``epoch``; workers see it (the value is in shared memory).

        Args:
            epoch: the epoch about to start.
        """
        self._epoch[0] = epoch

    def _rng(self, items: Sequence[dict[str, Any]]) -> np.random.Generator:
        indices = [int(it.get("meta", {}).get("index", 0)) for it in items]
        return np.random.default_rng([self.seed, int(self._epoch[0]), *indices])

    @staticmethod
    def _keys(items: Sequence[dict[str, Any]]) -> list[Any]:
        keys = [it.get("meta", {}).get("image_id") for it in items]
        return [k if k is not None else ("item", n) for n, k in enumerate(keys)]

    def negatives(
        self, items: Sequence[dict[str, Any]], rng: np.random.Generator
    ) -> list[int | None]:
        """For each pair, the batch position whose image replaces its own (None: keep).

        Args:
            items: the batch's (kept) items; ``meta["image_id"]`` tells images apart.
            rng: the batch's generator (each pair is a negative with probability
                ``itm_negative_ratio``).

        Returns:
            One entry per item: the position of another item with a different image, or
            None (a positive, or no other image in the batch).
        """
        keys = self._keys(items)
        swaps: list[int | None] = []
        for key in keys:
            negative = rng.random() < self.itm_negative_ratio
            others = [k for k in range(len(items)) if keys[k] != key]
            swaps.append(others[int(rng.integers(len(others)))] if negative and others else None)
        return swaps

    def hard_candidates_of(
        self, items: Sequence[dict[str, Any]], rng: np.random.Generator
    ) -> tuple[list[int], list[list[int]]]:
        """The pairs to make negatives, and for each its candidate images (batch positions
        of other images, ``hard_candidates`` of them, repeated when the batch has fewer).

        Args:
            items: the batch's (kept) items; ``meta["image_id"]`` tells images apart.
            rng: the batch's generator.

        Returns:
            (rows, candidates): the positions of the pairs made negatives, and for each a
            list of ``hard_candidates`` positions of items with another image.
        """
        keys = self._keys(items)
        rows, candidates = [], []
        for b, key in enumerate(keys):
            negative = rng.random() < self.itm_negative_ratio
            others = [k for k in range(len(items)) if keys[k] != key]
            if not (negative and others):
                continue
            picked = rng.permutation(others)[: self.hard_candidates].tolist()
            rows.append(b)
            candidates.append([picked[i % len(picked)] for i in range(self.hard_candidates)])
        return rows, candidates

    def _from_dataset(self, key: Any, rng: np.random.Generator) -> torch.Tensor | None:
        """The image of a random training item with another image (None: none found)."""
        for _ in range(8):  # a skipped item or the pair's own image: draw again
            item = self.negative_source[int(rng.integers(len(self.negative_source)))]
            if item is not None and item.get("meta", {}).get("image_id") != key:
                return item["pixel_values"]
        return None

    def __call__(self, items: Sequence[Item]) -> dict[str, Any] | None:
        kept = [it for it in items if it is not None]
        if not kept:
            return None
        rng = self._rng(kept)
        batch: dict[str, Any] = self.encode_text([it["text"] for it in kept])
        images = [it["pixel_values"] for it in kept]
        matched = torch.ones(len(kept), dtype=torch.long)
        if self.itm and self.negative_mode == "hard":
            rows, candidates = self.hard_candidates_of(kept, rng)
            matched[rows] = 0
            batch["itm_labels"] = matched
            batch["itm_hard_rows"] = torch.tensor(rows, dtype=torch.long)
            batch["itm_hard_candidates"] = torch.tensor(candidates, dtype=torch.long).reshape(
                len(rows), self.hard_candidates
            )
        elif self.itm and self.negative_mode == "dataset":
            keys = self._keys(kept)
            for b in range(len(kept)):
                if rng.random() < self.itm_negative_ratio:
                    image = self._from_dataset(keys[b], rng)
                    if image is not None:
                        images[b], matched[b] = image, 0
            batch["itm_labels"] = matched
        elif self.itm:
            swaps = self.negatives(kept, rng)
            images = [
                images[k] if k is not None else im for im, k in zip(images, swaps, strict=True)
            ]
            matched = torch.tensor([int(k is None) for k in swaps], dtype=torch.long)
            batch["itm_labels"] = matched
        batch.update(self.pad_images(images))
        if self.mlm:
            gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
            masked, labels = whole_word_mask(
                batch["input_ids"],
                [self.word_ids(b, batch["input_ids"][b]) for b in range(len(kept))],
                mask_token_id=self.tokenizer.mask_token_id,
                vocab_size=self.tokenizer.vocab_size,
                special_ids=self._special_ids(),
                probability=self.mlm_probability,
                generator=gen,
            )
            labels[matched == 0] = (
                IGNORE_INDEX  # a caption cannot be recovered from the wrong image
            )
            batch["input_ids"], batch["mlm_labels"] = masked, labels
        batch["meta"] = _meta(kept)
        return batch

    def _special_ids(self) -> set[int]:
        names = ("pad_token_id", "cls_token_id", "sep_token_id", "mask_token_id", "unk_token_id")
        ids = {getattr(self.tokenizer, n, None) for n in names}
        return {int(i) for i in ids if i is not None}

    def word_ids(self, b: int, input_ids: torch.Tensor) -> list[int | None]:
        """Word ids of text ``b`` of the last encoded batch, from the tokenizer when it
        reports them, else from the WordPiece "##" continuation marks; without
        ``whole_word``, each token its own word.

        Args:
            b: the text's position in the last batch :meth:`encode_text` encoded.
            input_ids: that text's (T,) token ids.

        Returns:
            T entries: the word index of each token, None for special tokens.
        """
        if not self.whole_word:
            special = self._special_ids()
            return [None if int(t) in special else n for n, t in enumerate(input_ids.tolist())]
        enc = self._last_encoding
        if hasattr(enc, "word_ids"):
            return list(enc.word_ids(b))
        if hasattr(self.tokenizer, "word_ids"):
            return list(self.tokenizer.word_ids(b))
        tokens = self.tokenizer.convert_ids_to_tokens(input_ids.tolist())
        special = set(self.tokenizer.convert_ids_to_tokens(sorted(self._special_ids())))
        return word_ids_from_tokens(tokens, special)
