"""Learning a WordPiece vocabulary, deterministically.

``tokenizers``' own WordPieceTrainer breaks ties between equally frequent pairs by hash order,
so the same texts give a different vocabulary on each run (and on each DDP rank: ids that
do not agree across processes). This is the same algorithm (BPE merges over "##"-continued
pieces, as tokenizers trains WordPiece) with every tie broken by the pieces' text, so a
corpus always gives the same vocabulary and ids.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from itertools import pairwise

from tokenizers import normalizers, pre_tokenizers

__all__ = ["PREFIX", "count_words", "learn_vocab"]

PREFIX = "##"


def _merge(symbols: list[str], left: str, right: str, merged: str) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == left and symbols[i + 1] == right:
            out.append(merged)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def count_words(
    texts: Iterable[str],
    normalizer: normalizers.Normalizer,
    pre_tokenizer: pre_tokenizers.PreTokenizer,
) -> tuple[Counter[str], int]:
    """How often each word occurs (words as the normaliser and pre-tokeniser cut them), and
    how many texts there were."""
    counts: Counter[str] = Counter()
    n = 0
    for n, text in enumerate(texts, start=1):
        if not isinstance(text, str):
            raise TypeError(f"text {n - 1} is {type(text).__name__}, not a string")
        words = pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
        counts.update(word for word, _ in words)
    return counts, n


def learn_vocab(
    word_counts: Counter[str],
    *,
    vocab_size: int,
    special_tokens: Sequence[str],
    min_frequency: int = 1,
) -> dict[str, int]:
    """token -> id: the special tokens, every character (first in a word as itself, later
    ones as "##c"), then merged pieces, most frequent pair first, until ``vocab_size``
    tokens or no pair occurs ``min_frequency`` times."""
    vocab: dict[str, int] = {}
    for token in special_tokens:
        vocab.setdefault(token, len(vocab))
    words = [[w[0], *(PREFIX + c for c in w[1:])] for w in sorted(word_counts)]
    freq = [word_counts[w] for w in sorted(word_counts)]
    alphabet: Counter[str] = Counter()
    for symbols, n in zip(words, freq, strict=True):
        for s in symbols:
            alphabet[s] += n
    for symbol, _ in sorted(alphabet.items(), key=lambda kv: (-kv[1], kv[0])):
        vocab.setdefault(symbol, len(vocab))

    pair_count: Counter[tuple[str, str]] = Counter()
    where: defaultdict[tuple[str, str], set[int]] = defaultdict(set)
    for i, (symbols, n) in enumerate(zip(words, freq, strict=True)):
        for pair in pairwise(symbols):
            pair_count[pair] += n
            where[pair].add(i)
    heap = [(-n, pair) for pair, n in pair_count.items()]
    heapq.heapify(heap)
    while len(vocab) < vocab_size and heap:
        negative, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -negative:
            continue  # a stale entry: the pair's count changed since it was pushed
        if -negative < min_frequency:
            break
        left, right = pair
        merged = left + right.removeprefix(PREFIX)
        vocab.setdefault(merged, len(vocab))
        changed: set[tuple[str, str]] = set()
        for i in sorted(where.pop(pair, ())):
            old = words[i]
            for p in pairwise(old):
                pair_count[p] -= freq[i]
                changed.add(p)
            words[i] = new = _merge(old, left, right, merged)
            for p in pairwise(new):
                pair_count[p] += freq[i]
                where[p].add(i)
                changed.add(p)
        for p in changed:
            if pair_count[p] > 0:
                heapq.heappush(heap, (-pair_count[p], p))
            else:
                pair_count.pop(p, None)
    return vocab
