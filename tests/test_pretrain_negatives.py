"""Pretraining batches: ITM negatives from the batch, from the whole training set, or hard
ones chosen by the current model's ITM scores; MLM on whole words or single tokens."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import vilt
from vilt.data import PretrainingCollator, load_pairs
from vilt.processing import ImageProcessor, ViltProcessor, train_tokenizer
from vilt.training import HardNegatives

CAPTIONS = ["a reddish rectangular shape", "an elongated bluish triangle", "greenish circles"]


@pytest.fixture(scope="module")
def processor():
    # a small vocabulary: most words split into several WordPiece tokens
    tokenizer = train_tokenizer(CAPTIONS, vocab_size=60)
    return ViltProcessor(ImageProcessor(size=16, size_divisor=8), tokenizer, max_length=24)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, processor):
    """8 images of distinct widths (an image is known by its width), 2 captions each."""
    root = tmp_path_factory.mktemp("pairs")
    lines = []
    for i in range(8):
        Image.new("RGB", (16 + 8 * i, 16), (30 * i, 0, 0)).save(root / f"{i}.png")
        lines += [json.dumps({"image": f"{i}.png", "caption": CAPTIONS[(i + c) % 3]})
                  for c in range(2)]  # fmt: skip
    (root / "pairs.jsonl").write_text("\n".join(lines))
    return load_pairs(root / "pairs.jsonl", transform=processor.image_processor.preprocess_one)


def width(image: torch.Tensor) -> int:
    return int(image.shape[-1])


def shown_width(batch: dict, j: int) -> int:
    """The width of the j-th image of a batch: its mask's, or the batch's when no image was
    padded (the collator then leaves pixel_mask out)."""
    if "pixel_mask" not in batch:
        return width(batch["pixel_values"])
    return int(batch["pixel_mask"][j, 0].sum())


def test_whole_word_masking_takes_every_piece_of_a_word_and_token_masking_not(processor):
    texts = CAPTIONS * 4
    enc = processor.tokenizer(texts, max_length=24)
    words = [enc.word_ids(b) for b in range(len(texts))]
    items = [{"text": t, "pixel_values": torch.zeros(3, 16, 16), "meta": {"index": n}}
             for n, t in enumerate(texts)]  # fmt: skip
    partial = {True: 0, False: 0}
    for whole in (True, False):
        collate = PretrainingCollator(processor, itm=False, whole_word=whole, mlm_probability=0.3)
        for epoch in range(10):
            collate.set_epoch(epoch)
            chosen = collate(items)["mlm_labels"] != -100
            for b, ids in enumerate(words):
                for w in {w for w in ids if w is not None}:
                    marks = [bool(chosen[b, t]) for t, x in enumerate(ids) if x == w]
                    partial[whole] += any(marks) and not all(marks)
    assert partial[True] == 0  # a word is masked whole or not at all
    assert partial[False] > 0  # token by token, words are split


@pytest.mark.parametrize("whole", [True, False])
def test_the_mlm_probability_sets_the_share_of_tokens_masked(processor, whole):
    """--mlm-probability reaches the masking: the share of caption tokens chosen follows it,
    whole words or token by token (a whole word counts all its tokens)."""
    texts = [" ".join(CAPTIONS[n % 3 :] + CAPTIONS[: n % 3]) for n in range(120)]  # 8 words
    items = [{"text": t, "pixel_values": torch.zeros(3, 16, 16), "meta": {"index": n}}
             for n, t in enumerate(texts)]  # fmt: skip
    shares = {}
    for probability in (0.15, 0.5):
        collate = PretrainingCollator(
            processor, itm=False, whole_word=whole, mlm_probability=probability
        )
        batch = collate(items)
        tokens = batch["attention_mask"].sum() - 2 * len(texts)  # less [CLS] and [SEP]
        shares[probability] = float((batch["mlm_labels"] != -100).sum() / tokens)
    assert 0.10 < shares[0.15] < 0.21 and 0.42 < shares[0.5] < 0.58, shares


def test_dataset_negatives_come_from_other_images_of_the_training_set(processor, pairs):
    collate = PretrainingCollator(processor, negatives="dataset", negative_source=pairs, seed=2)
    items = [pairs[0], pairs[1]]  # one image: in-batch swaps would find no other image
    widths = {width(pairs[i]["pixel_values"]) for i in range(len(pairs))}
    negatives = 0
    for epoch in range(12):
        collate.set_epoch(epoch)
        batch = collate(items)
        for j, label in enumerate(batch["itm_labels"].tolist()):
            shown = shown_width(batch, j)
            if label == 0:
                negatives += 1
                assert shown != width(items[j]["pixel_values"]) and shown in widths
                assert (batch["mlm_labels"][j] == -100).all()
            else:
                assert shown == width(items[j]["pixel_values"])
    assert 6 <= negatives <= 18  # about half of 24
    again = PretrainingCollator(processor, negatives="dataset", negative_source=pairs, seed=2)
    again.set_epoch(11)
    assert torch.equal(again(items)["pixel_values"], batch["pixel_values"])  # seeded
    with pytest.raises(ValueError, match="map-style negative_source"):
        PretrainingCollator(processor, negatives="dataset")


def test_hard_candidates_are_other_images_and_the_negatives_are_labelled(processor, pairs):
    collate = PretrainingCollator(processor, negatives="hard", hard_candidates=3, seed=5)
    items = [pairs[i] for i in range(8)]  # images 0..3, two captions each
    batch = collate(items)
    rows, candidates = batch["itm_hard_rows"], batch["itm_hard_candidates"]
    assert candidates.shape == (len(rows), 3) and len(rows) > 0
    image = [it["meta"]["image_id"] for it in items]
    for r, cands in zip(rows.tolist(), candidates.tolist(), strict=True):
        assert all(image[c] != image[r] for c in cands)
    labels = batch["itm_labels"]
    assert labels[rows].eq(0).all() and labels.sum() == 8 - len(rows)
    assert (batch["mlm_labels"][rows] == -100).all()
    # the batch keeps every pair's own image until the step chooses
    assert [shown_width(batch, j) for j in range(8)] == [width(it["pixel_values"]) for it in items]


def test_hard_negatives_swap_in_the_candidate_the_model_scores_highest(processor, pairs):
    torch.manual_seed(0)
    config = vilt.ViltConfig.from_preset(
        "vilt-test", vocab_size=processor.tokenizer.vocab_size, max_position_embeddings=24,
        image_size=16,
    )  # fmt: skip
    model = vilt.ViltForPreTraining(config).train()
    collate = PretrainingCollator(processor, negatives="hard", hard_candidates=4, seed=1)
    batch = collate([pairs[i] for i in range(8)])
    batch.pop("meta")
    before = {k: v.clone() for k, v in batch.items()}
    out = HardNegatives()(model, batch)
    assert model.training and "itm_hard_rows" not in out and "itm_hard_candidates" not in out
    text_keys = ("input_ids", "attention_mask", "token_type_ids")
    model.eval()
    rows = before["itm_hard_rows"].tolist()
    for r, cands in zip(rows, before["itm_hard_candidates"].tolist(), strict=True):
        scores = []
        for c in cands:  # each candidate pair scored alone: the direct computation
            pair = {k: before[k][r : r + 1] for k in text_keys}
            pair["pixel_values"] = before["pixel_values"][c : c + 1]
            pair["pixel_mask"] = before["pixel_mask"][c : c + 1]
            with torch.no_grad():
                scores.append(float(model.match_scores(**pair)[0]))
        best = cands[max(range(len(cands)), key=scores.__getitem__)]
        assert torch.equal(out["pixel_values"][r], before["pixel_values"][best])
        assert torch.equal(out["pixel_mask"][r], before["pixel_mask"][best])
    for j in set(range(8)) - set(rows):
        assert torch.equal(out["pixel_values"][j], before["pixel_values"][j])
    assert torch.equal(out["itm_labels"], before["itm_labels"])
    # the loss takes the swapped batch as it is
    assert torch.isfinite(model.train()(**out).loss)
    # a batch without candidates (evaluation) passes through
    plain = {k: v for k, v in before.items() if not k.startswith("itm_hard")}
    assert HardNegatives()(model, plain).keys() == plain.keys()


def test_hard_negatives_in_a_batch_without_a_pixel_mask(processor, pairs):
    """The collators leave pixel_mask out when no image of a batch is padded: the swap then
    moves the pixels alone."""
    torch.manual_seed(0)
    config = vilt.ViltConfig.from_preset(
        "vilt-test", vocab_size=processor.tokenizer.vocab_size, max_position_embeddings=24,
        image_size=16,
    )  # fmt: skip
    model = vilt.ViltForPreTraining(config).train()
    batch = PretrainingCollator(processor, negatives="hard", seed=1)([pairs[i] for i in range(8)])
    batch.pop("meta")
    batch.pop("pixel_mask")
    before = {k: v.clone() for k, v in batch.items()}
    out = HardNegatives()(model, batch)
    assert "pixel_mask" not in out
    for r, cands in zip(before["itm_hard_rows"].tolist(), before["itm_hard_candidates"].tolist(),
                        strict=True):  # fmt: skip
        assert any(torch.equal(out["pixel_values"][r], before["pixel_values"][c]) for c in cands)
    assert torch.isfinite(model(**out).loss)
