"""Retrieval data: the Karpathy-split layout (on a small copy made here), negatives for the
ranking objective (never a pair that matches, replayed by seed and epoch, hard ones chosen by
a scorer), the grouped and flat batches, and the held-out pool with identical captions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vilt.data import DataError, load_pairs
from vilt.data.pairs import PairRecord, PairsDataset
from vilt.data.ranking import (
    RankingCollator,
    RankingDataset,
    load_retrieval_pairs,
    retrieval_pool,
)
from vilt.processing import ImageProcessor, ViltProcessor, train_tokenizer


def write_karpathy(root, name="dataset_coco.json", *, coco=True):
    """A Karpathy-split file: five images over train / restval / val / test, two or three
    sentences each, COCO's filepath folders (Flickr30k has none)."""
    images = []
    for n, split in enumerate(["train", "train", "restval", "val", "test"]):
        folder = ("val2014" if split != "train" else "train2014") if coco else ""
        filename = f"COCO_{folder}_{n:012d}.jpg" if coco else f"{1000 + n}.jpg"
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24 + n, 16), (50 * n, 0, 0)).save(root / folder / filename)
        sentences = [{"raw": f"picture {n} caption {k}.", "tokens": [], "sentid": 3 * n + k}
                     for k in range(2 + n % 2)]  # fmt: skip
        entry = {"filename": filename, "split": split, "sentences": sentences, "imgid": n}
        if coco:
            entry["filepath"] = folder
        images.append(entry)
    path = root / name
    path.write_text(json.dumps({"images": images, "dataset": "coco" if coco else "flickr30k"}))
    return path


def test_karpathy_layout_reads_the_split_asked_for(tmp_path):
    path = write_karpathy(tmp_path / "coco")
    train = load_pairs(path, split="train")
    assert [r.caption for r in train.records][:3] == [
        "picture 0 caption 0.", "picture 0 caption 1.", "picture 1 caption 0."
    ]  # fmt: skip
    assert len(train) == 2 + 3 and train.records[0].image == (
        tmp_path / "coco" / "train2014" / "COCO_train2014_000000000000.jpg"
    )
    assert len(load_pairs(path, split="train+restval")) == 7
    test = load_pairs(path, split="test")
    assert (
        test[0]["pixel_values"].shape == (3, 16, 28) and test[0]["text"] == "picture 4 caption 0."
    )
    assert test[0]["meta"]["image_id"] == "val2014/COCO_val2014_000000000004.jpg"
    flickr = write_karpathy(tmp_path / "f30k", "dataset_flickr30k.json", coco=False)
    assert load_pairs(flickr, split="val").records[0].image == tmp_path / "f30k" / "1003.jpg"
    elsewhere = load_pairs(flickr, split="val", image_dir=tmp_path / "images")
    assert elsewhere.records[0].image == tmp_path / "images" / "1003.jpg"
    with pytest.raises(DataError, match=r"no images in split 'dev'; .*\['restval', 'test'"):
        load_pairs(path, split="dev")


def test_karpathy_bad_entries_are_named_or_counted(tmp_path):
    path = write_karpathy(tmp_path)
    data = json.loads(path.read_text())
    data["images"][0]["sentences"][1] = {"tokens": ["no", "raw"]}
    data["images"].append({"filename": "x.jpg"})
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"images\[0\] \(train2014/.*\) sentence 1: no 'raw'"):
        load_pairs(path, split="train")
    counted = load_pairs(path, split="train", skip_bad=True)
    assert len(counted) == 4 and counted.skips.counts() == {"bad_record": 2}
    (tmp_path / "train2014" / "COCO_train2014_000000000001.jpg").unlink()
    assert counted[1] is None and counted.skips.counts()["missing_image"] == 1
    data["images"][0]["sentences"][1] = {"raw": "fixed"}
    data["images"].pop()
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"COCO_train2014_000000000001\.jpg"):
        load_pairs(path, split="train")[2]


def _pairs(captions_by_image):
    records = [
        PairRecord(np.full((8, 8, 3), 30 * i, np.uint8), i, f"image {i}", caption=c)
        for i, captions in enumerate(captions_by_image)
        for c in captions
    ]
    return PairsDataset(records)


# images 0 and 2 show the same thing, so they share "a red circle"
CAPTIONS = [["a red circle", "the circle is red"], ["a blue square"], ["a red circle"],
            ["a green triangle"], ["a gray square"], ["a teal circle"]]  # fmt: skip


def test_negatives_never_match_and_replay_by_seed_and_epoch():
    pairs = _pairs(CAPTIONS)
    data = RankingDataset(
        pairs, text_candidates=3, image_candidates=2, identical_captions_match=True, seed=1
    )
    for index in range(len(data)):
        item = data[index]
        own = pairs.records[index]
        texts = item["candidate_texts"]
        assert len(texts) == len(set(texts)) == 3
        # never a caption of its own image, nor one its image has word for word
        own_texts = {c for r in pairs.records if r.image_key == own.image_key for c in [r.caption]}
        assert not set(texts) & own_texts
        if own.caption == "a red circle":
            assert "a red circle" not in texts and "the circle is red" not in texts
        assert len(item["candidate_images"]) == 2
        for image in item["candidate_images"]:
            shade = int(image[0, 0, 0]) // 30
            assert shade != own.image_key
            assert own.caption not in CAPTIONS[shade]  # an image with the caption: no negative
    again = RankingDataset(pairs, text_candidates=3, image_candidates=2,
                           identical_captions_match=True, seed=1)  # fmt: skip
    assert [again[i]["candidate_texts"] for i in range(7)] == [
        data[i]["candidate_texts"] for i in range(7)
    ]
    before = [data[i]["candidate_texts"] for i in range(7)]
    data.set_epoch(1)
    assert [data[i]["candidate_texts"] for i in range(7)] != before
    plain = RankingDataset(pairs, text_candidates=6)  # only the image's own captions excluded
    assert "a red circle" in plain[3]["candidate_texts"]  # image 0's, for image 2
    with pytest.raises(DataError, match="image 0: found 4 of 5 negative captions"):
        RankingDataset(pairs, text_candidates=5, identical_captions_match=True)[0]


@pytest.fixture(scope="module")
def processor():
    tokenizer = train_tokenizer([c for cs in CAPTIONS for c in cs] * 3, vocab_size=60)
    return ViltProcessor(ImageProcessor(size=16, size_divisor=8), tokenizer)


def test_grouped_and_flat_batches(processor):
    pairs = _pairs(CAPTIONS)
    data = RankingDataset(pairs, text_candidates=3, image_candidates=1, seed=0)
    items = [data[i] for i in range(4)]
    texts_only = RankingCollator(processor, negative_texts=2)(items)
    assert texts_only["input_ids"].shape[:2] == (4, 3)
    assert texts_only["pixel_values"].shape[:2] == (4, 1)
    assert texts_only["labels"].tolist() == [0, 0, 0, 0]
    ids = processor.tokenizer(["a red circle"])["input_ids"][0]
    assert texts_only["input_ids"][0, 0, : len(ids)].tolist() == ids.tolist()  # match first
    both = RankingCollator(processor, negative_texts=2, negative_images=1)(items)
    assert both["input_ids"].shape[:2] == (4, 4) and both["pixel_values"].shape[:2] == (4, 4)
    # the image negative pairs the item's own text with another image
    assert torch.equal(both["input_ids"][:, 3], both["input_ids"][:, 0])
    assert not torch.equal(both["pixel_values"][:, 3], both["pixel_values"][:, 0])
    flat = RankingCollator(processor, negative_texts=2, objective="itm")(items)
    assert flat["input_ids"].shape[0] == 12 and flat["labels"].tolist() == [1, 0, 0] * 4
    assert flat["meta"]["index"] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="at least one negative"):
        RankingCollator(processor, negative_texts=0)


def test_hard_negatives_are_the_candidates_the_scorer_likes_best(processor):
    pairs = _pairs(CAPTIONS)
    data = RankingDataset(pairs, text_candidates=4, seed=0)
    items = [data[i] for i in range(3)]
    likes = processor.tokenizer(["square"])["input_ids"][0][1]  # the id of "square"

    def scorer(inputs):  # prefers captions that say "square"
        assert inputs["input_ids"].shape[0] == 12 and inputs["pixel_values"].shape[0] == 12
        return (inputs["input_ids"] == likes).any(1).float()

    batch = RankingCollator(processor, negative_texts=2, scorer=scorer)(items)
    for b, item in enumerate(items):
        chosen = processor.tokenizer.batch_decode(batch["input_ids"][b, 1:].tolist())
        squares = [t for t in item["candidate_texts"] if "square" in t]
        assert sum("square" in t for t in chosen) == min(2, len(squares))


def test_the_held_out_pool_counts_identical_captions_as_matches():
    pairs = _pairs(CAPTIONS)
    pool = retrieval_pool(pairs, identical_captions_match=True)
    assert pool.image_keys == list(range(6)) and len(pool.texts) == 7
    assert pool.text_to_image == [0, 0, 1, 2, 3, 4, 5]
    red = [t for t, text in enumerate(pool.texts) if text == "a red circle"]
    assert pool.relevant[red].nonzero()[:, 1].tolist() == [0, 2, 0, 2]
    assert pool.relevant.sum() == 9  # 7 own pairs, and each "a red circle" the other image
    strict = retrieval_pool(pairs, max_images=3)
    assert len(strict.images) == 3 and strict.relevant.sum() == len(strict.texts) == 4


def test_easy_vqa_retrieval_captions_name_colour_and_shape():
    train = load_retrieval_pairs(None, split="train")
    test = load_retrieval_pairs("easy-vqa", split="test")
    assert (len(train), len(test)) == (3 * 3542, 3 * 880)
    color, shape = test.records[0].caption.split()[1:3]
    assert [r.caption for r in test.records[:3]] == [
        f"a {color} {shape}", f"the {shape} is {color}", f"there is a {color} {shape}"
    ]  # fmt: skip
