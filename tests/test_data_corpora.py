"""The paper's pretraining corpora in their published layouts (Visual Genome, SBU Captions,
Conceptual Captions), each on a tiny copy made here, absent images as counted skips; and
several sources mixed with weights, map-style or streamed."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset

from vilt.data import DataError, load_pairs
from vilt.data.corpora import is_conceptual_captions
from vilt.data.mixture import (
    MixedDataset,
    MixedStream,
    PairSource,
    expand_sources,
    load_pair_mixture,
    parse_source,
    read_mixture_file,
)


def image(path, width=12):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, 10), (200, 30, 30)).save(path)


def captions(data) -> list[str]:
    return [data[i]["text"] for i in range(len(data))]


def test_visual_genome_regions_caption_their_whole_image(tmp_path):
    regions = [
        {"id": 1, "regions": [{"image_id": 1, "phrase": "a red ball"},
                              {"image_id": 1, "phrase": "grass"}]},
        {"id": 2, "regions": [{"image_id": 2, "phrase": "a dog"}]},
        {"id": 3, "regions": [{"image_id": 3, "phrase": "sky"}, {"image_id": 3, "phrase": "sun"}]},
    ]  # fmt: skip
    (tmp_path / "region_descriptions.json").write_text(json.dumps(regions))
    image(tmp_path / "VG_100K" / "1.jpg", 12)
    image(tmp_path / "VG_100K_2" / "2.jpg", 14)  # image 3 was never downloaded
    data = load_pairs(tmp_path / "region_descriptions.json")
    assert captions(data) == ["a red ball", "grass", "a dog"]
    assert [data[i]["pixel_values"].shape[-1] for i in range(3)] == [12, 12, 14]
    assert [data[i]["meta"]["image_id"] for i in range(3)] == [1, 1, 2]
    assert data.skip_counts() == {"missing_image": 2}  # both captions of image 3


def test_visual_genome_finds_images_through_image_data_json(tmp_path):
    regions = [{"id": 7, "regions": [{"image_id": 7, "phrase": "a cat"}]}]
    (tmp_path / "region_descriptions.json").write_text(json.dumps(regions))
    url = "https://cs.stanford.edu/people/rak248/VG_100K_2/7.jpg"
    (tmp_path / "image_data.json").write_text(json.dumps([{"image_id": 7, "url": url}]))
    image(tmp_path / "images" / "VG_100K_2" / "7.jpg", 16)
    data = load_pairs(tmp_path / "region_descriptions.json", image_dir=tmp_path / "images")
    assert captions(data) == ["a cat"] and data[0]["pixel_values"].shape[-1] == 16


def test_sbu_rows_find_images_by_row_or_by_url(tmp_path):
    urls = [f"http://static.flickr.com/1/{n}_abc.jpg" for n in range(3)]
    sbu = {"image_urls": urls, "captions": ["a boat", "a bridge", "a bird"], "user_ids": [1, 2, 3]}
    (tmp_path / "sbu-captions-all.json").write_text(json.dumps(sbu))
    image(tmp_path / "00000" / "000000000.jpg", 10)  # img2dataset's layout
    image(tmp_path / "2_abc.jpg", 18)  # the URL's file name; row 1 is absent
    data = load_pairs(tmp_path / "sbu-captions-all.json")
    assert captions(data) == ["a boat", "a bird"]
    assert [data[i]["pixel_values"].shape[-1] for i in range(2)] == [10, 18]
    assert data.skip_counts() == {"missing_image": 1}


def test_conceptual_captions_tsv_without_a_header(tmp_path):
    tsv = tmp_path / "Train_GCC-training.tsv"
    tsv.write_text("a plane in the sky\thttp://x.org/a.jpg\nan old car\thttp://x.org/b.jpg\n")
    image(tmp_path / "images" / "000000001.jpg")
    assert is_conceptual_captions(tsv)
    data = load_pairs(tsv, image_dir=tmp_path / "images")
    assert captions(data) == ["an old car"] and data.skip_counts() == {"missing_image": 1}
    # a TSV with a header is a pairs file, as before
    image(tmp_path / "p.png")
    (tmp_path / "pairs.tsv").write_text("image\tcaption\np.png\ta picture\n")
    assert not is_conceptual_captions(tmp_path / "pairs.tsv")
    assert captions(load_pairs(tmp_path / "pairs.tsv")) == ["a picture"]


def test_a_json_of_no_known_layout_is_named(tmp_path):
    (tmp_path / "odd.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(DataError, match="odd.json: not a layout vilt reads"):
        load_pairs(tmp_path / "odd.json")


class Items(torch.utils.data.Dataset):
    def __init__(self, name: str, n: int) -> None:
        self.name, self.n = name, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"text": f"{self.name} {i}", "meta": {"image_id": i, "index": i}}


def drawn(mixed) -> list[str]:
    return [mixed[k]["text"] for k in range(len(mixed))]


def test_a_mixture_draws_each_source_by_weight_seeded_by_epoch():
    mixed = MixedDataset([Items("a", 10), Items("b", 4)], [1, 3], names=["a", "b"], seed=0)
    assert len(mixed) == 14 and mixed.counts == [4, 10]  # 3.5 : 10.5
    first = drawn(mixed)
    a = [t for t in first if t.startswith("a")]
    b = [t for t in first if t.startswith("b")]
    assert len(a) == 4 and len(set(a)) == 4  # no repeat while a source has pairs left
    assert len(b) == 10 and {b.count(f"b {i}") for i in range(4)} <= {2, 3}  # small: repeated
    again = MixedDataset([Items("a", 10), Items("b", 4)], [1, 3], names=["a", "b"], seed=0)
    assert drawn(again) == first  # the same (seed, epoch), the same epoch
    item = mixed[0]
    assert item["meta"]["image_id"][0] in (0, 1) and item["meta"]["index"] == 0
    # DataLoader workers, persistent ones too, follow the epoch set in the main process
    loader = DataLoader(mixed, batch_size=None, num_workers=2, persistent_workers=True)
    assert [it["text"] for it in loader] == first
    mixed.set_epoch(1)
    second = drawn(mixed)
    assert second != first and [it["text"] for it in loader] == second


class Stream(IterableDataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        return ({"text": f"s {i}", "meta": {"image_id": i}} for i in range(self.n))


def test_a_streamed_mixture_interleaves_by_weight_until_a_source_runs_out():
    mixed = MixedStream([Stream(50), Items("a", 1000)], [1, 1], names=["s", "a"], seed=0)
    out = [it["text"] for it in mixed]
    assert sum(t.startswith("s") for t in out) == 50  # the stream ran out first
    assert 30 <= sum(t.startswith("a") for t in out) <= 80
    assert out == [it["text"] for it in mixed]  # seeded


def test_source_specs_and_mixture_files(tmp_path):
    assert parse_source("vg/regions.json:0.5") == PairSource("vg/regions.json", weight=0.5)
    assert parse_source("user/pairs") == PairSource("user/pairs")
    assert parse_source("odd:name") == PairSource("odd:name")
    with pytest.raises(DataError, match="weight must be > 0"):
        parse_source("a.jsonl:0")
    image(tmp_path / "imgs" / "0.png")
    (tmp_path / "a.jsonl").write_text(json.dumps({"image": "imgs/0.png", "caption": "one"}))
    spec = {"sources": [{"data": "a.jsonl", "weight": 2}, {"data": "a.jsonl", "split": "x"}]}
    (tmp_path / "mix.json").write_text(json.dumps(spec))
    sources = read_mixture_file(tmp_path / "mix.json")
    assert sources[0] == PairSource(str(tmp_path / "a.jsonl"), weight=2.0)
    assert expand_sources([str(tmp_path / "mix.json"), "hub/name:2"], streaming=True) == [
        *sources, PairSource("hub/name", weight=2.0, streaming=True),
    ]  # fmt: skip
    mixed = load_pairs(tmp_path / "mix.json")
    assert isinstance(mixed, MixedDataset) and captions(mixed) == ["one"] * 2
    # a bad row of a source: an error naming it, or with skip_bad a counted skip
    rows = [{"image": "imgs/0.png", "caption": "one"}, {"image": "imgs/0.png"}]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "mix2.json").write_text(json.dumps({"sources": [{"data": "b.jsonl"}]}))
    with pytest.raises(DataError, match="b.jsonl"):
        load_pairs(tmp_path / "mix2.json")
    mixed = load_pairs(tmp_path / "mix2.json", skip_bad=True)
    assert captions(mixed) == ["one"] and sum(mixed.skip_counts().values()) == 1
    (tmp_path / "bad.json").write_text(json.dumps({"sources": [{"data": "a", "wieght": 1}]}))
    with pytest.raises(DataError, match=r"sources\[0\]: unknown keys \['wieght'\]"):
        read_mixture_file(tmp_path / "bad.json")


def parquet_pairs(root, n: int, colour: int):
    """A datasets source on disk (parquet shards with an Image column), as large corpora
    come, for streaming."""
    import io

    import datasets

    def png(i: int) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (16, 16), (colour, 10 * i, 0)).save(buffer, format="PNG")
        return buffer.getvalue()

    rows = {"image": [{"bytes": png(i), "path": None} for i in range(n)],
            "caption": [f"shard {i}" for i in range(n)]}  # fmt: skip
    data = datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image())
    data.to_parquet(str(root / "shards" / "train-00000.parquet"))
    return root / "shards"


def test_a_streamed_datasets_source_mixes_with_a_file(tmp_path):
    shards = parquet_pairs(tmp_path, 6, 200)
    image(tmp_path / "a.png")
    lines = [json.dumps({"image": "a.png", "caption": f"file {i}"}) for i in range(30)]
    (tmp_path / "a.jsonl").write_text("\n".join(lines))
    sources = expand_sources([str(tmp_path / "a.jsonl"), f"{shards}:2"], streaming=True)
    assert [s.streaming for s in sources] == [False, True]  # files are read, not streamed
    mixed = load_pair_mixture(sources)
    assert isinstance(mixed, MixedStream)
    texts = [it["text"] for it in mixed]
    assert [t for t in texts if t.startswith("shard")] == [f"shard {i}" for i in range(6)]
    assert 0 < sum(t.startswith("file") for t in texts) < 12  # weight 1 against 2
