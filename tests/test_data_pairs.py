"""Image-text pairs: sources, whole-word masking, ITM negatives and the collators."""

import json

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from vilt.data import (
    DataError,
    load_pairs,
    whole_word_mask,
)
from vilt.data.masking import word_ids_from_tokens
from vilt.data.pairs import easy_vqa_captions


def _images(root, n=3):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (10 + i, 8), (i * 60, 0, 0)).save(root / f"img{i}.png")
    return root


# ---- sources ---------------------------------------------------------------------------------


def test_coco_captions_json(tmp_path):
    _images(tmp_path / "train2014")
    data = {
        "images": [{"id": 5, "file_name": "img0.png"}, {"id": 6, "file_name": "img1.png"}],
        "annotations": [
            {"id": 1, "image_id": 5, "caption": "a red square"},
            {"id": 2, "image_id": 5, "caption": "something dark"},
            {"id": 3, "image_id": 6, "caption": "another one"},
        ],
    }
    path = tmp_path / "captions_train2014.json"
    path.write_text(json.dumps(data))
    ds = load_pairs(path, image_dir=tmp_path / "train2014")
    assert len(ds) == 3
    item = ds[2]
    assert item["text"] == "another one" and item["pixel_values"].shape == (3, 8, 11)
    assert item["meta"] == {"image_id": 6, "index": 2}
    # an annotation whose image id is not in the file: named error, or a counted skip
    data["annotations"].append({"id": 4, "image_id": 99, "caption": "lost"})
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"annotations\[3\]: image id 99"):
        load_pairs(path, image_dir=tmp_path / "train2014")
    ds = load_pairs(path, image_dir=tmp_path / "train2014", skip_bad=True)
    assert len(ds) == 3 and ds.skips.counts() == {"unknown_image_id": 1}
    path.write_text('{"images": [], "annotations": [}')
    with pytest.raises(
        DataError, match=r"captions_train2014\.json: malformed JSON at line 1 column 32"
    ):
        load_pairs(path)


def test_jsonl_and_csv_relative_paths(tmp_path):
    _images(tmp_path / "imgs")
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text(
        '{"image": "imgs/img0.png", "caption": "first"}\n\n{"image_path": "imgs/img1.png", "text": "second"}\n'
    )
    ds = load_pairs(jsonl)
    assert [ds[i]["text"] for i in range(2)] == ["first", "second"]
    assert ds[1]["pixel_values"].shape == (3, 8, 11)
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text(
        'image,caption\nimgs/img2.png,"a caption, with a comma"\nimgs/img0.png,plain\n'
    )
    ds = load_pairs(csv_path)
    assert ds[0]["text"] == "a caption, with a comma" and ds[0]["pixel_values"].shape == (3, 8, 12)


def test_pair_file_bad_rows(tmp_path):
    _images(tmp_path / "imgs")
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text(
        '{"image": "imgs/img0.png", "caption": "ok"}\n{"image": "imgs/img1.png", "caption": \n'
    )
    with pytest.raises(DataError, match=r"pairs\.jsonl: malformed JSON at line 2"):
        load_pairs(jsonl)
    jsonl.write_text(
        '{"image": "imgs/img0.png", "caption": "ok"}\n{"image": "imgs/img1.png"}\n'
        '{"image": "imgs/missing.png", "caption": "gone"}\n{"image": "imgs/img2.png", "caption": "  "}\n'
    )
    with pytest.raises(DataError, match=r"pairs\.jsonl: line 2: no caption"):
        load_pairs(jsonl)
    ds = load_pairs(jsonl, skip_bad=True)  # the empty caption is refused as it is read
    assert len(ds) == 2 and ds.skips.counts() == {"bad_record": 1, "empty_text": 1}
    assert ds[0] is not None and ds[1] is None  # the missing file, met when decoded
    assert ds.skips.counts() == {"missing_image": 1, "empty_text": 1, "bad_record": 1}


def test_datasets_source_with_caption_lists():
    images = [Image.new("RGB", (6, 5), (i * 80, 0, 0)) for i in range(2)]
    data = datasets.Dataset.from_dict(
        {"image": images, "sentences": [["one", "uno"], ["two"]]},
        features=datasets.Features(
            {"image": datasets.Image(), "sentences": [datasets.Value("string")]}
        ),
    )
    ds = load_pairs(data, caption_column="sentences")
    assert [ds[i]["text"] for i in range(3)] == ["one", "uno", "two"]
    assert [ds[i]["meta"]["image_id"] for i in range(3)] == [0, 0, 1]
    stream = load_pairs(data, caption_column="sentences", streaming=True)
    assert [it["text"] for it in stream] == ["one", "two"]


def test_easy_vqa_captions_default():
    train = load_pairs()
    test = load_pairs(split="test")
    assert len({r.image_key for r in train.records}) == 4000
    assert len({r.image_key for r in test.records}) == 1000  # held-out images
    assert (
        train.records[0].caption == "a blue rectangle"
    )  # image 0: "what is the blue shape?" rectangle
    assert {r.caption for r in train.records if r.image_key == 0} == set(
        easy_vqa_captions("blue", "rectangle")
    )
    assert train[0]["pixel_values"].shape == (3, 64, 64)


# ---- whole-word masking ----------------------------------------------------------------------


def _words_batch(rows=200, seed=0):
    """(input_ids, word_ids): [CLS]=2 w... [SEP]=3 [PAD]=0; words of 1-3 pieces; ids 10.."""
    rng = np.random.default_rng(seed)
    ids, words = [], []
    for _ in range(rows):
        row, wid = [2], [None]
        for w in range(rng.integers(3, 12)):
            for _ in range(rng.integers(1, 4)):
                row.append(int(rng.integers(10, 100)))
                wid.append(w)
        row.append(3)
        wid.append(None)
        ids.append(row)
        words.append(wid)
    width = max(map(len, ids))
    for row, wid in zip(ids, words, strict=True):
        pad = width - len(row)
        row.extend([0] * pad)
        wid.extend([None] * pad)
    return torch.tensor(ids), words


def test_whole_word_masking_properties():
    ids, words = _words_batch()
    gen = torch.Generator().manual_seed(0)
    masked, labels = whole_word_mask(
        ids, words, mask_token_id=4, vocab_size=100, special_ids={0, 1, 2, 3}, generator=gen
    )
    chosen = labels != -100
    assert torch.equal(labels[chosen], ids[chosen])  # labels are the original ids
    assert torch.equal(masked[~chosen], ids[~chosen])  # nothing else changes
    assert not chosen[ids < 10].any()  # [CLS], [SEP], [PAD] never chosen
    for b, wid in enumerate(words):  # whole words: all pieces or none
        by_word = {}
        for t, w in enumerate(wid):
            if w is not None:
                by_word.setdefault(w, set()).add(bool(chosen[b, t]))
        assert all(len(s) == 1 for s in by_word.values())
        assert chosen[b].any()  # at least one word per text
    rate = chosen.sum().item() / (ids >= 10).sum().item()
    assert 0.12 < rate < 0.20
    kinds = masked[chosen]
    assert 0.72 < (kinds == 4).float().mean() < 0.88  # 80% [MASK]
    swapped = (kinds != 4) & (kinds != ids[chosen])
    assert 0.04 < swapped.float().mean() < 0.16  # 10% random (some draw their own id)
    assert not (masked[chosen][swapped] <= 4).any()  # random tokens are never special
    again = whole_word_mask(ids, words, mask_token_id=4, vocab_size=100, special_ids={0, 1, 2, 3},
                            generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert torch.equal(again[0], masked) and torch.equal(again[1], labels)


def test_word_ids_from_wordpiece_tokens():
    tokens = ["[CLS]", "play", "##ing", "a", "gui", "##tar", "[SEP]", "[PAD]"]
    assert word_ids_from_tokens(tokens, {"[CLS]", "[SEP]", "[PAD]"}) == [
        None,
        0,
        0,
        1,
        2,
        2,
        None,
        None,
    ]
