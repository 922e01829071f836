"""Text files in every reader: a UTF-8 byte-order mark is read past (spreadsheets and Windows
editors write one), and a file in another encoding is refused naming the file, line and
column of the first byte that is not UTF-8."""

from __future__ import annotations

import json

import pytest
from test_data_pairs import _images

import vilt
from vilt.data import DataError, load_pairs
from vilt.textfiles import TextFileError, read_text

BOM = b"\xef\xbb\xbf"


def test_read_text_drops_a_bom_and_names_a_latin1_byte(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(BOM + "caf\u00e9\n".encode())
    assert read_text(path) == "caf\u00e9\n"
    path.write_bytes("first line\nna\u00efve\n".encode("latin-1"))
    with pytest.raises(TextFileError, match=r"a\.txt: line 2, column 3: byte 0xef is not UTF-8"):
        read_text(path)


def test_a_csv_of_pairs_with_a_bom_is_read(tmp_path):
    _images(tmp_path / "imgs")
    path = tmp_path / "pairs.csv"
    path.write_bytes(BOM + b"image,caption\nimgs/img0.png,a red square\n")
    ds = load_pairs(path)
    assert len(ds) == 1 and ds[0]["text"] == "a red square"


@pytest.mark.parametrize("name", ["pairs.csv", "pairs.jsonl"])
def test_a_latin1_pair_file_is_refused_naming_file_and_line(tmp_path, name):
    _images(tmp_path / "imgs")
    path = tmp_path / name
    rows = ["image,caption", "imgs/img0.png,a caf\u00e9 sign"]
    if name.endswith("jsonl"):
        rows = [json.dumps({"image": "imgs/img0.png", "caption": "ok"}),
                '{"image": "imgs/img1.png", "caption": "caf\u00e9"}']  # fmt: skip
    path.write_bytes("\n".join(rows).encode("latin-1"))
    with pytest.raises(DataError, match=rf"{name}: line 2, column \d+: byte 0xe9 is not UTF-8"):
        load_pairs(path, skip_bad=True)  # a file-level problem: never a skip of every row


def test_json_with_a_bom_and_latin1_json_in_the_other_readers(tmp_path):
    model = vilt.ViTForImageClassification(vilt.ViTConfig.from_preset("vit-test"))
    model.save_pretrained(tmp_path)
    config = tmp_path / "config.json"
    config.write_bytes(BOM + config.read_bytes())
    vilt.ViTForImageClassification.from_pretrained(tmp_path)  # read past the BOM
    vilt.ViTConfig.load(config)
    config.write_bytes(config.read_bytes().replace(b'"vit"', '"v\u00eft"'.encode("latin-1")))
    with pytest.raises(vilt.CheckpointError, match=r"config\.json: line \d+, column \d+"):
        vilt.load_model(tmp_path)
    with pytest.raises(vilt.ConfigError, match=r"config\.json: line \d+"):
        vilt.ViTConfig.load(config)
