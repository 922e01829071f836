"""Whole-word masking for masked language modelling (BERT's recipe, as ViLT uses it).

About ``probability`` (15%) of each text's tokens are chosen, whole words at a time: the
words are shuffled and taken while the chosen tokens stay within the budget, at least one
word per text. Each chosen token is replaced by [MASK] 80% of the time, by a random
ordinary token 10% and kept 10%. Labels hold the original id at chosen positions and
-100 elsewhere. Special tokens ([CLS], [SEP], [PAD], ...) are never chosen: they have no
word id, and ids in ``special_ids`` are excluded besides.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch

__all__ = ["IGNORE_INDEX", "whole_word_mask", "word_ids_from_tokens"]

IGNORE_INDEX = -100


def word_ids_from_tokens(tokens: Sequence[str], special: Collection[str]) -> list[int | None]:
    """Word ids from WordPiece tokens: a "##" piece continues the previous word; special
    tokens get ``None``. For tokenizers that do not report word ids themselves."""
    ids: list[int | None] = []
    word = -1
    for tok in tokens:
        if tok in special:
            ids.append(None)
            continue
        if not (tok.startswith("##") and word >= 0):
            word += 1
        ids.append(word)
    return ids


def whole_word_mask(
    input_ids: torch.Tensor,
    word_ids: Sequence[Sequence[int | None]],
    *,
    mask_token_id: int,
    vocab_size: int,
    special_ids: Collection[int] = (),
    probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked input_ids, labels) for a (B, T) batch; ``word_ids[b][t]`` is the word of
    token t of text b (``None`` for special and padding tokens).

    Args:
        input_ids: (B, T) token ids; not modified (the masked ids are a copy).
        word_ids: per text, each token's word number or None (a tokenizer's ``word_ids()``,
            or :func:`word_ids_from_tokens`); entries beyond T are ignored.
        mask_token_id: the [MASK] id; never chosen, never swapped in as a random token.
        vocab_size: random replacements are drawn from 0..vocab_size-1, special ids excluded.
        special_ids: ids never chosen nor swapped in ([CLS], [SEP], [PAD], ...).
        probability: the share of each text's word tokens to choose, in [0, 1] (at least one
            word per text that has any; 0 chooses none).
        generator: the random generator (None: torch's global one).

    Returns:
        The masked ids and the labels (the original id at chosen positions, -100 elsewhere),
        both (B, T) like ``input_ids``.

    Raises:
        ValueError: for ``probability`` outside [0, 1], or a ``vocab_size`` that leaves no
            ordinary token.
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {probability}")
    masked = input_ids.clone()
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    special = set(special_ids) | {mask_token_id}
    special_t = torch.tensor(sorted(special), dtype=torch.long)
    if vocab_size <= len(special):
        raise ValueError(f"vocab_size {vocab_size} leaves no ordinary token to swap in")
    for b in range(input_ids.shape[0]):
        words: dict[int, list[int]] = {}
        for t, w in enumerate(word_ids[b][: input_ids.shape[1]]):
            if w is not None and int(input_ids[b, t]) not in special:
                words.setdefault(w, []).append(t)
        if not words or probability == 0.0:
            continue
        n_tokens = sum(len(p) for p in words.values())
        budget = max(1, round(n_tokens * probability))
        order = torch.randperm(len(words), generator=generator).tolist()
        groups = list(words.values())
        chosen: list[int] = []
        for i in order:
            if chosen and len(chosen) + len(groups[i]) > budget:
                continue
            chosen.extend(groups[i])
            if len(chosen) >= budget:
                break
        pos = torch.tensor(chosen, dtype=torch.long)
        labels[b, pos] = input_ids[b, pos]
        roll = torch.rand(len(chosen), generator=generator)
        masked[b, pos[roll < 0.8]] = mask_token_id
        swap = pos[(roll >= 0.8) & (roll < 0.9)]
        if len(swap):
            masked[b, swap] = _random_ordinary(len(swap), vocab_size, special_t, generator)
    return masked, labels


def _random_ordinary(
    n: int, vocab_size: int, special: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """``n`` uniform token ids that are not special (redrawn until none is)."""
    ids = torch.randint(vocab_size, (n,), generator=generator)
    bad = torch.isin(ids, special)
    while bad.any():
        ids[bad] = torch.randint(vocab_size, (int(bad.sum()),), generator=generator)
        bad = torch.isin(ids, special)
    return ids
