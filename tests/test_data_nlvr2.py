"""NLVR2 data: the official release's layout read as the original ViLT code reads it (on a
small copy made here), bad lines and images named or counted, the pair collator, and the
offline statements about easy-VQA images, whose truth the facts decide."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from PIL import Image

from vilt.data import DataError, ImageError
from vilt.data.easy_vqa import COLORS, SHAPES, full_fact_images
from vilt.data.nlvr2 import NLVR2Collator, easy_vqa_nlvr2_records, load_nlvr2
from vilt.processing import ImageProcessor, ViltProcessor, train_tokenizer

# identifier -> (sentence, label); train statements carry their image directory
ROWS = {
    "train": [("train-10-0-0", "both images show a dog", "True", 3),
              ("train-10-0-1", "the left image has two dogs", "False", 3),
              ("train-11-1-0", "there is one bird", "True", 7)],
    "dev": [("dev-5-0-0", "one image is dark", "False", None),
            ("dev-5-0-1", "both images are dark", "True", None)],
    "test1": [("test1-2-0-0", "the right image is red", "True", None)],
}  # fmt: skip


def write_nlvr2(root, rows=ROWS, *, skip_images=()):
    """A copy of the release's layout: nlvr2/data/{split}.json (JSON lines), the train images
    under images/train/{directory}/, the others under {split}/."""
    (root / "nlvr2" / "data").mkdir(parents=True)
    for split, statements in rows.items():
        lines = []
        for n, (identifier, sentence, label, directory) in enumerate(statements):
            row = {"identifier": identifier, "sentence": sentence, "label": label}
            if directory is not None:
                row["directory"] = directory
            lines.append(json.dumps(row))
            prefix = identifier.rsplit("-", 1)[0]
            folder = (
                root / "images" / "train" / str(directory) if split == "train" else root / split
            )
            folder.mkdir(parents=True, exist_ok=True)
            for i in (0, 1):
                path = folder / f"{prefix}-img{i}.png"
                if path.name not in skip_images and not path.exists():
                    Image.new("RGB", (20 + 8 * i, 16 + n), (40 * n, 80 * i, 0)).save(path)
        (root / "nlvr2" / "data" / f"{split}.json").write_text("\n".join(lines) + "\n")
    return root


def test_the_official_layout_pairs_each_statement_with_its_two_images(tmp_path):
    root = write_nlvr2(tmp_path)
    train = load_nlvr2(root, split="train", cache_images=True)
    assert [r.identifier for r in train.records] == [i for i, *_ in ROWS["train"]]
    first = train.records[0]
    assert first.images[0].image == root / "images/train/3/train-10-0-img0.png"
    assert first.images[1].image == root / "images/train/3/train-10-0-img1.png"
    assert train.cached_images() == 4  # two statements share train-10-0's pair
    item = train[1]
    assert item["labels"] == 0 and item["text"] == "the left image has two dogs"
    assert [tuple(im.shape) for im in item["pixel_values"]] == [(3, 16, 20), (3, 16, 28)]
    assert item["meta"] == {"identifier": "train-10-0-1", "index": 1}
    dev = load_nlvr2(root, split="dev")
    assert dev.records[1].images[0].image == root / "dev" / "dev-5-0-img0.png"
    assert [dev[i]["labels"] for i in range(2)] == [0, 1]
    assert len(load_nlvr2(root, split="test1")) == 1


def test_missing_images_and_bad_lines_are_named_or_counted(tmp_path):
    root = write_nlvr2(tmp_path, skip_images={"dev-5-0-img1.png"})
    dev = load_nlvr2(root, split="dev")
    with pytest.raises(ImageError, match=r"dev-5-0-img1\.png.*dev\.json line 1 \(dev-5-0-0\)"):
        dev[0]
    skipping = load_nlvr2(root, split="dev", skip_bad=True)
    assert skipping[0] is None and skipping[1] is None
    assert skipping.skip_counts() == {"missing_image": 2}
    data = root / "nlvr2" / "data"
    (data / "dev.json").write_text(
        '{"identifier": "dev-5-0-0", "sentence": "x", "label": "True"}\n{"identifier": 3}\n'
        '{"identifier": "dev-5-0-1", "sentence": "y", "label": "maybe"}\nnot json\n'
    )
    with pytest.raises(DataError, match=r"dev\.json: line 2: no identifier or sentence"):
        load_nlvr2(root, split="dev")
    counted = load_nlvr2(root, split="dev", skip_bad=True)
    assert len(counted) == 1 and counted.skip_counts() == {"bad_record": 3}
    (data / "train.json").write_text('{"identifier": "train-1-0-0", "sentence": "s"}\n')
    with pytest.raises(DataError, match="line 1: a train statement needs its 'directory'"):
        load_nlvr2(root, split="train")
    with pytest.raises(DataError, match=r"no such file .*found \['dev', 'test1', 'train'\]"):
        load_nlvr2(root, split="test2")


def test_the_collator_pads_both_images_of_every_pair(tmp_path):
    root = write_nlvr2(tmp_path)
    processor = ViltProcessor(
        ImageProcessor(size=32, size_divisor=8), train_tokenizer(["a dog", "a bird"], 50)
    )
    train = load_nlvr2(root, split="train", transform=processor.image_processor.preprocess_one)
    batch = NLVR2Collator(processor)([train[0], None, train[2]])
    assert batch["pixel_values"].shape[:3] == (2, 2, 3)
    assert batch["pixel_mask"].shape == (2, 2, *batch["pixel_values"].shape[-2:])
    assert batch["labels"].tolist() == [1, 1] and batch["input_ids"].shape[0] == 2
    # each image keeps its own size inside the padding
    for b, item in enumerate((train[0], train[2])):
        for i, image in enumerate(item["pixel_values"]):
            h, w = image.shape[-2:]
            assert batch["pixel_mask"][b, i].sum() == h * w
            torch.testing.assert_close(batch["pixel_values"][b, i, :, :h, :w], image)
    assert batch["meta"]["identifier"] == ["train-10-0-0", "train-11-1-0"]


def test_the_collator_leaves_the_mask_out_when_no_image_is_padded():
    processor = ViltProcessor(ImageProcessor(size=32, size_divisor=8), train_tokenizer(["a"], 50))
    images = torch.rand(4, 3, 32, 32)
    items = [
        {"pixel_values": [images[0], images[1]], "text": "a", "labels": 1, "meta": {}},
        {"pixel_values": [images[2], images[3]], "text": "a", "labels": 0, "meta": {}},
    ]
    batch = NLVR2Collator(processor)(items)
    assert "pixel_mask" not in batch
    torch.testing.assert_close(batch["pixel_values"], images.view(2, 2, 3, 32, 32))


def test_easy_vqa_statements_are_true_or_false_as_the_facts_say():
    records = easy_vqa_nlvr2_records("test")
    facts = {path: (color, shape) for _, path, color, shape in full_fact_images("test")}
    assert len(records) == 4 * len(facts)
    assert Counter(r.label for r in records) == {True: len(records) // 2, False: len(records) // 2}
    assert records == easy_vqa_nlvr2_records("test")  # a fixed seed
    left_is = {r.identifier: facts[r.images[0].image] for r in records}
    right_is = {r.identifier: facts[r.images[1].image] for r in records}
    checked = 0
    for r in records:
        (lc, ls), (rc, rs) = left_is[r.identifier], right_is[r.identifier]
        words = r.sentence.split()
        color = next((w for w in words if w in COLORS), None)
        shape = next((w for w in words if w in SHAPES), None)
        if r.sentence.startswith("both shapes are"):
            assert (lc == color and rc == color) == r.label, r
        elif r.sentence.startswith("the left image contains"):
            assert (ls == shape) == r.label, r
        elif r.sentence == "the two images show the same shape":
            assert (ls == rs) == r.label, r
        elif r.sentence.startswith("exactly one image contains"):
            assert ((ls == shape) != (rs == shape)) == r.label, r
        elif r.sentence.startswith("the left shape is a"):
            assert (ls == shape and rc == color) == r.label, r
        else:
            continue
        checked += 1
    assert checked > len(records) // 4
    # each template as often true as false: the words alone do not tell
    by_template = Counter(
        (" ".join(w for w in r.sentence.split() if w not in COLORS + SHAPES), r.label)
        for r in records
    )
    for (template, _), n in by_template.items():
        assert abs(n - by_template[(template, True)]) <= 0.25 * n + 10, template
    train_images = {r.images[0].image for r in easy_vqa_nlvr2_records("train")}
    assert not train_images & set(facts)  # held-out images only in the test statements
