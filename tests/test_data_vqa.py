"""VQA data: official answer normalisation and accuracy, soft targets, the three sources,
and every bad-input case (an error naming file and record, or a counted skip)."""

import json

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from vilt.data import DataError, ImageError
from vilt.data.vqa import (
    AnswerVocab,
    build_answer_vocab,
    load_vqa,
    normalize_answer,
    soft_score,
    vqa_accuracy,
    write_vqa_predictions,
)

# ---- the official evaluation's rules, worked by hand ---------------------------------------


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("Yes", "yes"),
        ("  Two\n", "2"),  # whitespace, case, number words
        ("none", "0"),
        ("ten dogs", "10 dogs"),
        ("the dog.", "dog"),  # articles; a period not before a digit
        ("a man's hat", "man's hat"),
        ("an apple", "apple"),
        ("3.5", "3.5"),  # a period before a digit stays
        ("1,000", "1000"),  # a comma between digits: all punctuation deleted
        ("black-and-white", "black and white"),  # punctuation touching no space: a space
        ("left - right", "left right"),  # punctuation touching a space: deleted
        ("yes!", "yes"),
        ('"hello"', "hello"),
        ("dont", "don't"),  # contractions get their apostrophes
        ("isnt it", "isn't it"),
        ("Im", "im"),  # the official table's capitalised keys never match
        ("somebody'd", "somebodyd"),  # the official table's reversed entry, kept
    ],
)
def test_normalize_answer_official_rules(raw, normal):
    assert normalize_answer(raw) == normal


def test_soft_scores_are_vilts_table():
    assert [soft_score(k) for k in range(7)] == [0.0, 0.3, 0.6, 0.9, 1.0, 1.0, 1.0]
    vocab = AnswerVocab(["yes", "no", "2"])
    answers = ["yes"] * 3 + ["no"] * 6 + ["maybe"]
    assert vocab.targets(answers).tolist() == pytest.approx([0.9, 1.0, 0.0])
    assert vocab.targets(["2"]).tolist() == [0.0, 0.0, 1.0]  # one given answer: certain
    assert vocab.targets(["maybe", "perhaps"]).sum() == 0


def test_vqa_accuracy_leave_one_out():
    # 3 of 10 say "2": leaving out a "2" leaves 2 matches (2/3), leaving out another 3 (1)
    assert vqa_accuracy("two", ["2"] * 3 + ["3"] * 7) == pytest.approx((3 * 2 / 3 + 7) / 10)
    assert vqa_accuracy("2", ["2"] * 4 + ["3"] * 6) == pytest.approx(1.0)
    assert vqa_accuracy("2", ["2"] * 2 + ["3"] * 8) == pytest.approx(0.6)
    assert vqa_accuracy("2", ["2"] + ["3"] * 9) == pytest.approx(0.3)
    assert vqa_accuracy("4", ["2"] * 10) == 0.0
    assert vqa_accuracy("Yes.", ["yes"]) == 1.0  # one answer: plain accuracy
    assert vqa_accuracy("no", ["yes"]) == 0.0
    with pytest.raises(ValueError):
        vqa_accuracy("yes", [])


def test_vocab_from_majority_answers_with_min_count():
    lists = [["Yes"], ["yes"], ["no"], ["two", "2", "3"], ["2"], ["cat", "dog", "dog"]]
    vocab = build_answer_vocab(lists, min_count=2)
    assert vocab.labels == ["2", "yes"]  # counts 2, 2: ties alphabetical; no, dog: 1
    assert AnswerVocab.from_id2label({"1": "yes", "0": "2"}).labels == ["2", "yes"]
    with pytest.raises(ValueError, match="min_count"):
        build_answer_vocab(lists, min_count=5)


# ---- easy-VQA (offline default) -------------------------------------------------------------


def test_easy_vqa_official_split():
    train = load_vqa(None, split="train")
    test = load_vqa("easy-vqa", split="test", vocab=train.vocab)
    assert (len(train), len(test)) == (38_575, 9_673)
    assert len(train.vocab) == 13 and test.vocab is train.vocab
    item = train[0]
    assert item["pixel_values"].shape == (3, 64, 64) and item["pixel_values"].dtype == torch.uint8
    assert item["text"] == "what is the blue shape?"
    assert item["labels"].shape == (13,) and item["labels"].sum() == 1.0
    assert train.vocab.labels[int(item["labels"].argmax())] == "rectangle"
    assert item["meta"] == {
        "question_id": 0, "image_id": 0, "answers": ["rectangle"], "answer_type": None
    }  # fmt: skip


# ---- the official VQAv2 layout --------------------------------------------------------------


def _write_vqav2(root, split="val2014", *, questions=None, annotations=True, images=(1, 2)):
    subtype = "test2015" if split.startswith("test") else split
    (root / subtype).mkdir(parents=True, exist_ok=True)
    for i in images:
        Image.new("RGB", (24, 16), (i * 40, 0, 0)).save(
            root / subtype / f"COCO_{subtype}_{i:012d}.jpg"
        )
    questions = questions or [
        {"image_id": 1, "question": "What color is it?", "question_id": 10},
        {"image_id": 1, "question": "How many?", "question_id": 11},
        {"image_id": 2, "question": "Is it red?", "question_id": 20},
    ]
    qfile = root / f"v2_OpenEnded_mscoco_{split}_questions.json"
    qfile.write_text(json.dumps({"data_subtype": subtype, "questions": questions}))
    if annotations:
        given = {
            10: ["Red"] * 7 + ["dark red"] * 3,
            11: ["two"] * 4 + ["3"] * 6,
            12: ["x"] * 10,
            20: ["yes"] * 10,
        }
        types = {10: "other", 11: "number", 20: "yes/no"}
        anns = [
            {"question_id": q["question_id"], "image_id": q["image_id"],
             "answers": [{"answer": a, "answer_id": n + 1} for n, a in enumerate(given.get(q["question_id"], ["no"] * 10))]}
            | ({"answer_type": types[q["question_id"]]} if q["question_id"] in types else {})
            for q in questions
        ]  # fmt: skip
        (root / f"v2_mscoco_{split}_annotations.json").write_text(json.dumps({"annotations": anns}))
    return qfile


def test_vqav2_layout(tmp_path):
    _write_vqav2(tmp_path)
    ds = load_vqa(tmp_path, split="val")
    assert len(ds) == 3
    assert set(ds.vocab.labels) == {"red", "3", "yes"}  # majority answers, normalised
    item = ds[1]
    assert item["pixel_values"].shape == (3, 16, 24)
    assert item["meta"]["question_id"] == 11 and item["meta"]["image_id"] == 1
    assert item["meta"]["answers"][:4] == ["2", "2", "2", "2"]
    assert item["labels"][ds.vocab.label2id["3"]] == 1.0  # 6 of 10
    # the annotation's answer type travels with the question (the per-type accuracy's key)
    assert [ds[i]["meta"]["answer_type"] for i in range(3)] == ["other", "number", "yes/no"]
    assert [r.answer_type for r in ds.records] == ["other", "number", "yes/no"]


def test_vqav2_test_split_has_no_labels(tmp_path):
    _write_vqav2(tmp_path, "test2015", annotations=False)
    vocab = AnswerVocab(["yes", "no"])
    ds = load_vqa(tmp_path, split="test", vocab=vocab)
    item = ds[2]
    assert "labels" not in item and item["meta"]["answers"] is None
    assert item["meta"]["question_id"] == 20
    out = write_vqa_predictions(
        tmp_path / "out" / "results.json", [10, 11, 20], ["yes", "no", "yes"]
    )
    assert json.loads(out.read_text())[2] == {"question_id": 20, "answer": "yes"}
    with pytest.raises(DataError, match="pass vocab"):
        load_vqa(tmp_path, split="test")


def test_vqav2_unknown_image_id_errors_or_skips(tmp_path):
    questions = [
        {"image_id": 1, "question": "What color is it?", "question_id": 10},
        {"image_id": 99, "question": "Where?", "question_id": 12},
    ]
    _write_vqav2(tmp_path, questions=questions)
    with pytest.raises(DataError, match=r"questions\.json question 12 .*image id 99") as info:
        load_vqa(tmp_path, split="val2014")
    assert info.value.reason == "unknown_image_id"
    ds = load_vqa(tmp_path, split="val2014", skip_bad=True)
    assert len(ds) == 1 and ds.skips.counts() == {"unknown_image_id": 1}
    assert "1 unknown image id" in ds.skips.summary()


def test_vqav2_empty_question_errors_or_skips(tmp_path):
    questions = [
        {"image_id": 1, "question": "What color is it?", "question_id": 10},
        {"image_id": 2, "question": "   ", "question_id": 20},
    ]
    _write_vqav2(tmp_path, questions=questions)
    with pytest.raises(DataError, match="question 20 .*empty question"):
        load_vqa(tmp_path, split="val2014")
    ds = load_vqa(tmp_path, split="val2014", skip_bad=True)
    assert len(ds) == 1 and ds.skips.counts() == {"empty_text": 1}


def test_vqav2_malformed_files(tmp_path):
    qfile = _write_vqav2(tmp_path)
    qfile.write_text('{"questions": [{"image_id": 1, "question": "x", "question_id": 1},]}')
    with pytest.raises(
        DataError, match=r"v2_OpenEnded_mscoco_val2014_questions\.json: malformed JSON at line 1"
    ):
        load_vqa(tmp_path, split="val2014")
    qfile.write_text(json.dumps({"questions": [{"image_id": 1, "question_id": 1}]}))
    with pytest.raises(DataError, match="record 0 has no 'question'"):
        load_vqa(tmp_path, split="val2014")
    (tmp_path / "v2_mscoco_val2014_annotations.json").unlink()
    _write_vqav2(tmp_path, annotations=False)
    with pytest.raises(DataError, match="annotations.json: annotations file not found"):
        load_vqa(tmp_path, split="val2014")


def test_answers_outside_vocab_counted_or_skipped(tmp_path):
    _write_vqav2(tmp_path)
    vocab = AnswerVocab(["red", "yes"])  # question 11 ("2"/"3") has no answer in it
    ds = load_vqa(tmp_path, split="val2014", vocab=vocab)
    assert len(ds) == 3 and ds.unanswerable == 1
    assert ds[1]["labels"].sum() == 0  # all-zero targets
    ds = load_vqa(tmp_path, split="val2014", vocab=vocab, skip_unanswerable=True)
    assert len(ds) == 2 and ds.skips.counts() == {"answer_not_in_vocab": 1}


def test_bad_image_file_names_file_and_question(tmp_path):
    _write_vqav2(tmp_path)
    bad = tmp_path / "val2014" / "COCO_val2014_000000000002.jpg"
    bad.write_bytes(b"garbage")
    ds = load_vqa(tmp_path, split="val2014")
    with pytest.raises(ImageError, match="COCO_val2014_000000000002.jpg .*question 20"):
        ds[2]
    ds = load_vqa(tmp_path, split="val2014", skip_bad=True)
    assert ds[2] is None and ds[2] is None  # counted once however often it is met
    assert ds.skips.counts() == {"corrupt_image": 1}
    cached = load_vqa(tmp_path, split="val2014", skip_bad=True, cache_images=True)
    assert cached.cached_images() == 2 and cached[0] is not None and cached[2] is None


# ---- a datasets source ----------------------------------------------------------------------


def _hf_vqa(n=4):
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (8 + i, 10, 3), dtype=np.uint8)) for i in range(n)
    ]
    return datasets.Dataset.from_dict(
        {
            "image": images,
            "question": [f"what is in picture {i}?" for i in range(n)],
            "answers": [[{"answer": "Cat", "answer_id": 1}, {"answer": "cat", "answer_id": 2}], [{"answer": "dog"}]] * (n // 2),
            "question_id": [100 + i for i in range(n)],
        },
        features=datasets.Features({
            "image": datasets.Image(),
            "question": datasets.Value("string"),
            "answers": [{"answer": datasets.Value("string"), "answer_id": datasets.Value("int32")}],
            "question_id": datasets.Value("int64"),
        }),
    )  # fmt: skip


def test_datasets_source_map_and_streaming():
    data = _hf_vqa()
    ds = load_vqa(data)
    assert len(ds) == 4 and ds.vocab.labels == ["cat", "dog"]
    item = ds[1]
    assert item["pixel_values"].shape == (3, 9, 10)
    assert item["meta"]["question_id"] == 101 and item["meta"]["answers"] == ["dog"]
    assert item["labels"].tolist() == [0.0, 1.0]
    assert ds[0]["labels"].tolist() == pytest.approx([0.6, 0.0])  # two annotators said cat
    stream = load_vqa(data, streaming=True, vocab=ds.vocab)
    assert isinstance(stream, torch.utils.data.IterableDataset)
    got = list(stream)
    assert [g["meta"]["question_id"] for g in got] == [100, 101, 102, 103]
    assert torch.equal(got[2]["pixel_values"], ds[2]["pixel_values"])
    with pytest.raises(DataError, match="needs vocab"):
        load_vqa(data, streaming=True)


def test_datasets_source_missing_column_is_named():
    data = _hf_vqa().rename_column("question", "query")
    with pytest.raises(DataError, match=r"question column .*columns are \['image', 'query'"):
        load_vqa(data)
    assert len(load_vqa(data, question_column="query")) == 4
