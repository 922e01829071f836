"""Image classification data: the digits default, imagefolder directories, in-memory
datasets, streaming, and bad images."""

import threading

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from vilt.data import (
    ClassificationDataset,
    DataError,
    ImageError,
    collate_classification,
    load_classification,
)
from vilt.data.classification import ClassRecord


def _imagefolder(root, splits=("train", "test"), classes=("cat", "dog"), n=2):
    for split in splits:
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (12, 10), (c * 200, i * 50, 0)).save(
                    root / split / name / f"{i}.png"
                )
    return root


def test_digits_default_split():
    train = load_classification()
    test = load_classification(None, split="test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.id2label == {i: str(i) for i in range(10)} and train.num_labels == 10
    item = train[0]
    assert item["pixel_values"].shape == (3, 8, 8) and item["pixel_values"].dtype == torch.uint8
    assert 0 <= item["labels"] < 10
    counts = np.bincount([r.label for r in test.records], minlength=10)
    assert counts.min() >= 35  # stratified: every class about a tenth of the test split
    # the split is fixed: same records every time, no overlap
    assert [r.image_key for r in load_classification(split="test").records] == [
        r.image_key for r in test.records
    ]
    assert not {r.image_key for r in train.records} & {r.image_key for r in test.records}


def test_imagefolder_directory(tmp_path):
    root = _imagefolder(tmp_path / "pets", splits=("train", "validation"))
    train = load_classification(root, split="train", cache_dir=str(tmp_path / "cache"))
    assert len(train) == 4 and train.id2label == {0: "cat", 1: "dog"}
    assert sorted(train[i]["labels"] for i in range(4)) == [0, 0, 1, 1]
    assert train[0]["pixel_values"].shape == (3, 10, 12)
    test = load_classification(
        root, split="test", cache_dir=str(tmp_path / "cache")
    )  # -> validation
    assert len(test) == 4
    with pytest.raises(DataError, match=r"no split 'extra'"):
        load_classification(root, split="extra", cache_dir=str(tmp_path / "cache"))


def test_in_memory_columns_found_or_named():
    images = [Image.new("RGB", (6, 6), (i * 30, 0, 0)) for i in range(4)]
    data = datasets.Dataset.from_dict(
        {"picture": images, "kind": ["b", "a", "b", "a"], "other": [1, 2, 3, 4]},
        features=datasets.Features(
            {
                "picture": datasets.Image(),
                "kind": datasets.Value("string"),
                "other": datasets.Value("int32"),
            }
        ),
    )
    ds = load_classification(data, label_column="kind")
    assert ds.id2label == {0: "a", 1: "b"}  # string labels become sorted class names
    assert [ds[i]["labels"] for i in range(4)] == [1, 0, 1, 0]
    with pytest.raises(
        DataError,
        match=r"cannot find the label column .*columns are \['picture', 'kind', 'other'\]",
    ):
        load_classification(data)
    dd = datasets.DatasetDict({"train": data, "test": data.select([0])})
    assert len(load_classification(dd, split="test", label_column="kind")) == 1


def test_streaming_and_dataloader_workers(tmp_path):
    images = [Image.new("RGB", (6, 6), (i * 30, 0, 0)) for i in range(6)]
    data = datasets.Dataset.from_dict(
        {"image": images, "label": [0, 1, 2, 0, 1, 2]},
        features=datasets.Features(
            {"image": datasets.Image(), "label": datasets.ClassLabel(names=["x", "y", "z"])}
        ),
    )
    stream = load_classification(data, streaming=True)
    assert stream.id2label == {0: "x", 1: "y", 2: "z"}
    assert [it["labels"] for it in stream] == [0, 1, 2, 0, 1, 2]
    loader = torch.utils.data.DataLoader(
        stream, batch_size=2, num_workers=2, collate_fn=collate_classification
    )
    seen = sorted(int(x) for b in loader for x in b["labels"])
    assert seen == [0, 0, 1, 1, 2, 2]  # every row once across the two workers
    ds = load_classification(data)
    batch = collate_classification([ds[0], None, ds[2]])
    assert batch["pixel_values"].shape == (2, 3, 6, 6) and batch["labels"].tolist() == [0, 2]
    assert collate_classification([None, None]) is None


def test_bad_image_in_imagefolder_named_or_skipped(tmp_path):
    root = _imagefolder(tmp_path / "pets", splits=("train",))
    (root / "train" / "dog" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    ds = load_classification(root, cache_dir=str(tmp_path / "cache"))
    bad = next(i for i, r in enumerate(ds.records) if str(r.image["path"]).endswith("dog/1.png"))
    with pytest.raises(ImageError, match=rf"dog/1\.png \(row {bad} of "):
        ds[bad]
    ds = load_classification(root, skip_bad=True, cache_dir=str(tmp_path / "cache"))
    loader = torch.utils.data.DataLoader(
        ds, batch_size=4, num_workers=2, collate_fn=collate_classification
    )
    assert sum(len(b["labels"]) for b in loader) == 3
    assert ds.skips.counts() == {"corrupt_image": 1}


def test_image_cache_decodes_once(monkeypatch):
    ds = load_classification(split="test", cache_images=True)
    assert ds.cached_images() == 360
    calls = []
    monkeypatch.setattr(ds, "decode", lambda record: calls.append(record) or None)
    assert ds[5]["pixel_values"].shape == (3, 8, 8) and not calls


def test_bad_label_named():
    data = datasets.Dataset.from_dict(
        {"image": [Image.new("RGB", (4, 4))], "label": [-1]},  # datasets: no label
        features=datasets.Features(
            {"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])}
        ),
    )
    with pytest.raises(DataError, match=r"row 0 of in-memory dataset.*label -1 is outside 0\.\.1"):
        load_classification(data)[0]


def test_hub_name_goes_to_load_dataset(monkeypatch):
    images = [Image.new("RGB", (5, 5)) for _ in range(3)]
    data = datasets.Dataset.from_dict(
        {"img": images, "fine_label": [0, 1, 1]},
        features=datasets.Features(
            {"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=["a", "b"])}
        ),
    )
    calls = []

    def fake_load(name, **kwargs):
        calls.append((name, kwargs))
        return datasets.DatasetDict({"train": data, "validation": data.select([0])})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    ds = load_classification("someone/pets", split="test", cache_dir="/tmp/x")  # -> validation
    assert len(ds) == 1 and ds.id2label == {0: "a", 1: "b"}  # columns found by feature type
    assert calls == [("someone/pets", {"streaming": False, "cache_dir": "/tmp/x"})]


def test_vit_pipeline_feeds_the_model():
    from functools import partial

    from vilt import ViTConfig, ViTForImageClassification
    from vilt.data import ClassificationCollator
    from vilt.processing import ViTImageProcessor

    torch.manual_seed(0)
    proc = ViTImageProcessor(size=32)
    ds = load_classification(
        split="test", transform=partial(proc.preprocess_one, normalize=False), cache_images=True
    )
    assert ds[0]["pixel_values"].shape == (3, 32, 32) and ds[0]["pixel_values"].dtype == torch.uint8
    loader = torch.utils.data.DataLoader(ds, batch_size=8, collate_fn=ClassificationCollator(proc))
    batch = next(iter(loader))
    assert batch["pixel_values"].dtype == torch.float32 and batch["pixel_values"].shape == (
        8,
        3,
        32,
        32,
    )
    config = ViTConfig.from_preset("vit-test", num_labels=ds.num_labels, id2label=ds.id2label)
    assert torch.isfinite(ViTForImageClassification(config)(**batch).loss)


# ---- skips are counted once per record, however often and wherever the record is met ------------


def _records_with_bad(bad=(2,), n=6):
    records = [
        ClassRecord(np.full((4, 4), 20 * i, np.uint8), i, f"image {i}", label=i % 2)
        for i in range(n)
    ]
    for i in bad:
        records[i] = ClassRecord(b"not an image", i, f"image {i}", label=0)
    return ClassificationDataset(records, id2label={0: "a", 1: "b"}, skip_bad=True)


def _in_lockstep(datasets_of_processes):
    """skip_counts of each process's copy of a data set, with an all_reduce between them as a
    distributed run has it (threads and a barrier stand in for the processes)."""
    n = len(datasets_of_processes)
    barrier, slots, results = threading.Barrier(n), [None] * n, [None] * n

    def process(rank):
        def all_reduce(tensor, op):
            slots[rank] = tensor.clone()
            barrier.wait()
            stacked = torch.stack(slots)
            out = stacked.sum(0) if op == "sum" else stacked.max(0).values
            barrier.wait()
            return out

        results[rank] = datasets_of_processes[rank].skip_counts(all_reduce)

    threads = [threading.Thread(target=process, args=(rank,)) for rank in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_skip_counts_once_per_record_across_epochs_and_processes():
    one = _records_with_bad()
    for _epoch in range(3):
        assert sum(one[i] is None for i in range(len(one))) == 1
    assert one.skip_counts() == {"corrupt_image": 1}
    # two processes, each with its own copy: both meet record 2 (in different epochs, shards
    # change), only the second meets record 4
    first, second = _records_with_bad((2, 4)), _records_with_bad((2, 4))
    assert first[2] is None and second[2] is None and second[4] is None
    assert _in_lockstep([first, second]) == [{"corrupt_image": 2}] * 2


def test_stream_skips_counted_once_across_epochs():
    images = [Image.new("RGB", (4, 4)), Image.new("RGB", (4, 4))]
    data = datasets.Dataset.from_dict(
        {"image": images, "label": [0, 1]},
        features=datasets.Features(
            {"image": datasets.Image(), "label": datasets.ClassLabel(names=["x", "y"])}
        ),
    )
    bad = {"bytes": b"not an image", "path": None}
    data = data.cast_column("image", datasets.Image(decode=False))
    data = datasets.concatenate_datasets(
        [data, datasets.Dataset.from_dict({"image": [bad], "label": [0]}, features=data.features)]
    )
    stream = load_classification(data, streaming=True, skip_bad=True)
    for epoch in range(2):
        stream.set_epoch(epoch)
        assert len(list(stream)) == 2
    assert stream.skip_counts() == {"corrupt_image": 1}
    assert _in_lockstep([stream, stream]) == [{"corrupt_image": 2}] * 2  # each read its own rows


def test_easy_vqa_images_get_their_colour_and_shape_as_classes():
    """A ViT to start the easy-VQA ViLT from learns these: one class per colour and shape,
    as easy-VQA's questions state them about each image."""
    from vilt.data.pairs import load_easy_vqa_pairs

    test = load_classification("easy-vqa", split="test")
    assert test.num_labels == 24 and test.id2label[0] == "red circle"
    assert len(test) == 880 and test.notes == [
        "easy-VQA test: 880 images labelled by colour and shape, 120 left out (no question "
        "states their colour or shape)"
    ]
    captions = {}
    for pair in load_easy_vqa_pairs("test"):
        captions.setdefault(pair.image_key, []).append(pair.caption)
    for record in test.records[:50]:
        color, shape = test.id2label[record.label].split()
        assert f"a {color} {shape}" in captions[record.image_key]
    item = test[0]
    assert item["pixel_values"].shape == (3, 64, 64) and 0 <= item["labels"] < 24
