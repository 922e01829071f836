"""Data records under one policy (vilt.data.fields), on every reader: a null or non-string
question, caption or answer, a boolean or fractional id, a repeated id, and text that is not
valid Unicode are each a named DataError or, with skip_bad, a counted skip; never the string
"None", another image, an overwritten record, or a crash in the collator mid-epoch."""

from __future__ import annotations

import json

import datasets
import pytest
from PIL import Image
from test_data_pairs import _images
from test_data_vqa import _write_vqav2

from vilt.data import DataError, load_pairs, load_vqa
from vilt.data.fields import identifier, text

LONE = "what \ud800 is it?"  # what json.loads makes of "\\ud800": a lone surrogate


@pytest.mark.parametrize(
    ("value", "reason", "message"),
    [
        (None, "bad_record", "question is null, not text"),
        (0, "bad_record", "question is the number 0, not text"),
        (["a", "b"], "bad_record", r"question is a list \(2 items\), not text"),
        ("  ", "empty_text", "empty question"),
        (LONE, "invalid_text", "question is not valid Unicode .*character 5"),
    ],
)
def test_text_fields(value, reason, message):
    with pytest.raises(DataError, match=message) as info:
        text(value, "question", "file.json record 3")
    assert info.value.reason == reason and "file.json record 3" in str(info.value)


@pytest.mark.parametrize(
    ("value", "found"), [(7, 7), (7.0, 7), ("abc", "abc"), (True, None), (7.9, None), (None, None)]
)
def test_ids_are_integers_or_strings(value, found):
    if found is None:
        with pytest.raises(DataError, match="image id"):
            identifier(value, "image id", "record 1")
    else:
        assert identifier(value, "image id", "record 1") == found


# -- VQAv2 files ------------------------------------------------------------------------------------
def vqav2(tmp_path, changes: dict, *, answers=None):
    questions = [
        {"image_id": 1, "question": "What color is it?", "question_id": 10},
        {"image_id": 2, "question": "Is it red?", "question_id": 20, **changes},
    ]
    _write_vqav2(tmp_path, questions=questions)
    if answers is not None:
        path = tmp_path / "v2_mscoco_val2014_annotations.json"
        data = json.loads(path.read_text())
        data["annotations"][1]["answers"][0]["answer"] = answers
        path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("changes", "answers", "reason", "message"),
    [
        ({"question": None}, None, "bad_record", "question 20 .*question is null"),
        ({"question": 5}, None, "bad_record", "question is the number 5"),
        ({"image_id": 1.9}, None, "bad_record", "image_id 1.9 is not a whole number"),
        ({"image_id": True}, None, "bad_record", "image_id is the boolean true"),
        ({"question": LONE}, None, "invalid_text", "not valid Unicode"),
        ({}, None, "bad_record", "answer is null"),
        ({}, 3, "bad_record", "answer is the number 3"),
    ],
)
def test_vqav2_bad_fields_error_or_skip(tmp_path, changes, answers, reason, message):
    vqav2(tmp_path, changes, answers=None if answers is None and changes else answers)
    if not changes and answers is None:  # a null answer
        path = tmp_path / "v2_mscoco_val2014_annotations.json"
        data = json.loads(path.read_text())
        data["annotations"][1]["answers"][0]["answer"] = None
        path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=message) as info:
        load_vqa(tmp_path, split="val2014")
    assert info.value.reason == reason
    ds = load_vqa(tmp_path, split="val2014", skip_bad=True)
    assert len(ds) == 1 and ds.skips.counts() == {reason: 1}


def test_vqav2_repeated_annotation_spoils_its_question(tmp_path):
    vqav2(tmp_path, {})
    path = tmp_path / "v2_mscoco_val2014_annotations.json"
    data = json.loads(path.read_text())
    data["annotations"].append({**data["annotations"][0], "answers": [{"answer": "blue"}]})
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="annotation 2: question id 10 appears again"):
        load_vqa(tmp_path, split="val2014")


def test_vqav2_repeated_question_ids_are_named_and_neither_is_used(tmp_path):
    questions = [
        {"image_id": 1, "question": "What color is it?", "question_id": 10},
        {"image_id": 2, "question": "Is it red?", "question_id": 20},
        {"image_id": 2, "question": "Is it blue?", "question_id": 20},
    ]
    _write_vqav2(tmp_path, questions=questions)  # its annotations repeat question 20 too
    with pytest.raises(DataError, match="question id 20 appears again"):
        load_vqa(tmp_path, split="val2014")
    ds = load_vqa(tmp_path, split="val2014", skip_bad=True)
    assert len(ds) == 1 and ds.skips.counts() == {"duplicate_id": 2}


def test_an_integral_float_image_id_is_that_image(tmp_path):
    vqav2(tmp_path, {"image_id": 2.0})
    assert load_vqa(tmp_path, split="val2014")[1]["meta"]["image_id"] == 2


# -- datasets sources and pairs -----------------------------------------------------------------
def hf_vqa(**columns):
    images = [Image.new("RGB", (8, 8), (i * 60, 0, 0)) for i in range(3)]
    data = {"image": images, "question": ["what?", "which?", "why?"],
            "answers": [["yes"], ["no"], ["yes"]], "question_id": [1, 2, 3], **columns}  # fmt: skip
    return datasets.Dataset.from_dict(data)


@pytest.mark.parametrize(
    ("columns", "reason"),
    [
        ({"question_id": [1, 2, 1]}, "duplicate_id"),
        ({"answers": [["yes"], ["no"], [None]]}, "bad_record"),
    ],
)
def test_datasets_vqa_rows_error_or_skip(columns, reason):
    with pytest.raises(DataError) as info:
        load_vqa(hf_vqa(**columns))
    assert info.value.reason == reason
    ds = load_vqa(hf_vqa(**columns), skip_bad=True)
    assert len(ds) == 2 and ds.skips.counts() == {reason: 1}


def test_pair_files_refuse_what_is_not_text(tmp_path):
    _images(tmp_path / "imgs")
    jsonl = tmp_path / "pairs.jsonl"
    rows = [{"image": "imgs/img0.png", "caption": "ok"}, {"image": "imgs/img1.png", "caption": 0},
            {"image": "imgs/img2.png", "caption": ["a", "b"]}, {"image": "imgs/img2.png", "caption": LONE}]  # fmt: skip
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"pairs\.jsonl: line 2: caption is the number 0"):
        load_pairs(jsonl)
    ds = load_pairs(jsonl, skip_bad=True)
    assert len(ds) == 1 and ds.skips.counts() == {"bad_record": 2, "invalid_text": 1}


def test_coco_captions_refuse_boolean_and_repeated_image_ids(tmp_path):
    _images(tmp_path)
    data = {
        "images": [{"id": 1, "file_name": "img0.png"}, {"id": 2, "file_name": "img1.png"},
                   {"id": 2, "file_name": "img2.png"}],
        "annotations": [{"image_id": 1, "caption": "one"}, {"image_id": True, "caption": "true"},
                        {"image_id": 2, "caption": "two"}],
    }  # fmt: skip
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"annotations\[1\]: image_id is the boolean true"):
        load_pairs(path)
    ds = load_pairs(path, skip_bad=True)
    assert [ds[i]["text"] for i in range(len(ds))] == ["one"]
    assert ds.skips.counts() == {"bad_record": 1, "duplicate_id": 1}


def test_the_tokenizer_names_text_that_is_not_valid_unicode():
    import vilt

    tokenizer = vilt.train_tokenizer(["what is it"] * 4, vocab_size=40)
    with pytest.raises(ValueError, match="text 1 of the batch is not valid Unicode"):
        tokenizer(["fine", LONE])
