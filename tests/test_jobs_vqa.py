"""The VQA recipe end to end on tiny settings: every output, resumption, evaluation of a
saved model, starts from vilt and transformers checkpoints, VQAv2 and datasets sources."""

from __future__ import annotations

import json
import shutil

import datasets
import numpy as np
import pytest
import torch
import transformers
from jobs_helpers import (
    EASY_VQA,
    TINY_VQA,
    assert_run_outputs,
    results,
    rows,
    same_weights,
    weights,
)
from PIL import Image

import vilt
from vilt.data import load_image, vqa_accuracy
from vilt.data.vqa import load_easy_vqa_records
from vilt.jobs import vqa
from vilt.predict import answer_question
from vilt.processing import ViltProcessor, train_tokenizer


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("vqa") / "run"
    assert (
        vqa.main([*TINY_VQA, "--max-steps", "3", "--eval-every", "2", "--output-dir", str(out)])
        == 0
    )
    return out


def test_writes_every_output_and_predictions_match_the_accuracy(trained, capsys):
    found = assert_run_outputs(trained, steps=3, metric="eval_vqa_accuracy")
    # the trainer's evaluation scores the plain images; the headline, the test-time views
    assert found["single_view_accuracy"] == found["metrics"]["eval_vqa_accuracy"]
    assert found["metrics"]["eval_samples"] == 24 and found["data"] == "easy-vqa"
    # the recipe preset it ran with, and the flag the command line set to another value
    assert found["recipe_preset"]["name"] == "easy-vqa"
    assert found["recipe_preset"]["flags"]["tta-shift"] == 2
    assert found["recipe_preset"]["overridden"] == {"preset": "vilt-test"}
    assert [r["step"] for r in rows(trained) if r.get("eval_vqa_accuracy")] == ["2", "3"]
    # the official results format, one entry per evaluated question, scoring as reported
    predictions = json.loads((trained / "predictions.json").read_text())
    records = load_easy_vqa_records("test")[:24]
    assert [p["question_id"] for p in predictions] == [r.question_id for r in records]
    scores = [
        vqa_accuracy(p["answer"], r.answers) for p, r in zip(predictions, records, strict=True)
    ]
    assert np.mean(scores) == pytest.approx(found["accuracy"])
    assert sorted(p.name for p in (trained / "examples").iterdir()) == [
        "example_0.png",
        "example_1.png",
    ]
    # the saved directory is a model with its processor: predict works on it
    processor = ViltProcessor.from_pretrained(trained)
    assert processor.image_processor.size == 32 and processor.max_length == 16
    answers = answer_question(trained, records[0].image, records[0].question, top_k=2)
    model = vilt.ViltForQuestionAnswering.from_pretrained(trained)
    assert len(answers) == 2 and answers[0][0] in model.config.id2label.values()


def test_prints_the_accuracy_at_the_end(tmp_path, capsys):
    out = tmp_path / "run"
    vqa.main([*TINY_VQA, "--max-steps", "1", "--examples", "0", "--output-dir", str(out)])
    printed = capsys.readouterr().out.strip().splitlines()
    # first the recipe preset, its values and the overrides, as command-line flags
    assert printed[0].startswith("recipe preset easy-vqa (") and "easy-vqa.json): " in printed[0]
    assert printed[1].split() == [
        "--preset", "vilt-small-h16", "--epochs", "6", "--hflip", "0.5", "--shift", "2",
        "--tta-flip", "--tta-shift", "2", "--balance-answers", "0.5", "--randaugment", "0",
        "--cache-images",
    ]  # fmt: skip
    assert printed[2] == "  overridden: --preset vilt-test"
    last = printed[-3:]
    found = results(out)
    accuracy, single = found["accuracy"], found["single_view_accuracy"]
    # the preset's views: the image, mirrored, and moved 2 px four ways
    assert last[0] == (
        f"easy-VQA test accuracy: {100 * accuracy:.2f}% (24 questions; "
        f"answer logits averaged over 6 views of each image, the image alone: {100 * single:.2f}%)"
    )
    assert found["test_time_views"] == {"flip": True, "shift": 2}
    assert "1 steps" in last[1] and str(out) in last[2]
    assert not (out / "examples").exists()


def test_test_time_views_can_be_turned_off_and_score_the_plain_image(trained, tmp_path, capsys):
    plain = tmp_path / "plain"
    flags = ["--eval-only", "--init", str(trained), "--examples", "0"]
    vqa.main([*TINY_VQA, *flags, "--no-tta-flip", "--tta-shift", "0", "--output-dir", str(plain)])
    headline = capsys.readouterr().out.strip().splitlines()[-3]
    found = results(plain)
    assert headline.endswith("(24 questions)") and found["test_time_views"]["shift"] == 0
    overridden = found["recipe_preset"]["overridden"]
    assert overridden == {"preset": "vilt-test", "tta-flip": False, "tta-shift": 0}
    assert found["accuracy"] == found["single_view_accuracy"]
    # the plain accuracy is the model's own argmax over the plain images
    model = vilt.ViltForQuestionAnswering.from_pretrained(trained).eval()
    processor = ViltProcessor.from_pretrained(trained)
    records = load_easy_vqa_records("test")[:24]
    images = [load_image(r.image, source=r.source) for r in records]
    inputs = processor(images=images, text=[r.question for r in records])
    with torch.no_grad():
        guesses = model(**inputs).logits.argmax(-1).tolist()
    scores = [
        vqa_accuracy(model.config.id2label[g], r.answers)
        for g, r in zip(guesses, records, strict=True)
    ]
    assert found["accuracy"] == pytest.approx(np.mean(scores))


def test_resume_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    args = [*TINY_VQA, "--max-steps", "4", "--save-every", "2", "--keep-last", "3"]
    whole = tmp_path / "whole"
    vqa.main([*args, "--output-dir", str(whole)])
    # the same run cut after its step-2 checkpoint: what a killed run leaves behind (the
    # processor is saved with the model at the end, and into each checkpoint)
    cut = tmp_path / "cut"
    shutil.copytree(whole, cut)
    shutil.rmtree(cut / "checkpoints" / "step_00000004")
    assert (cut / "checkpoints" / "step_00000002" / "processor" / "tokenizer.json").is_file()
    for name in ("model.safetensors", "config.json", "results.json", "predictions.json",
                 "tokenizer.json", "vocab.txt", "tokenizer_config.json",
                 "special_tokens_map.json", "preprocessor_config.json"):  # fmt: skip
        (cut / name).unlink()
    vqa.main([*args, "--output-dir", str(cut), "--resume"])
    assert results(cut)["resumed_from"].endswith("step_00000002")
    assert same_weights(weights(whole), weights(cut))  # flips and order replayed exactly
    assert [int(r["step"]) for r in rows(cut)] == [int(r["step"]) for r in rows(whole)]


def test_eval_only_scores_a_saved_model_as_training_did(trained, tmp_path):
    out = tmp_path / "eval"
    args = ["--eval-only", "--init", str(trained), "--max-eval-examples", "24", "--examples", "1"]
    assert vqa.main([*EASY_VQA, *args, "--output-dir", str(out)]) == 0
    found = results(out)
    assert found["eval_only"] and found["steps"] == 0
    assert found["accuracy"] == pytest.approx(results(trained)["accuracy"])
    assert json.loads((out / "predictions.json").read_text()) == json.loads(
        (trained / "predictions.json").read_text()
    )
    assert (
        not (out / "model.safetensors").exists() and (out / "examples" / "example_0.png").exists()
    )


def test_init_from_a_vilt_checkpoint_keeps_its_tokenizer_and_answers(trained, tmp_path):
    out = tmp_path / "again"
    vqa.main([*TINY_VQA, "--init", str(trained), "--max-steps", "1", "--lr", "1e-30",
              "--layer-decay", "0.8", "--ema-decay", "0.9", "--save-best", "vqa_accuracy",
              "--output-dir", str(out)])  # fmt: skip
    assert (out / "tokenizer.json").read_text() == (trained / "tokenizer.json").read_text()
    before, after = weights(trained), weights(out)
    # the head too: the same answers, so it is loaded, not replaced
    assert same_weights(before, after, atol=1e-20)
    assert results(out)["config"]["lr"] == 1e-30
    # a ViLT keeps its average and its best model too, each with its processor
    assert results(out)["best"]["metric"] == "eval_vqa_accuracy"
    for kept in ("ema", "best"):
        assert same_weights(weights(out / kept), before, atol=1e-20)
        assert ViltProcessor.from_pretrained(out / kept).tokenizer.vocab_size > 0


def _transformers_mlm(directory, vocab_size=300):
    config = transformers.ViltConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        image_size=32, patch_size=8, vocab_size=vocab_size, max_position_embeddings=40,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.ViltForMaskedLM(config).save_pretrained(directory)
    questions = [r.question for r in load_easy_vqa_records("train")[:2000]]
    train_tokenizer(questions, vocab_size=vocab_size).save_pretrained(directory)
    return directory


def test_init_from_a_transformers_checkpoint_loads_the_backbone_and_a_new_head(tmp_path):
    hf = _transformers_mlm(tmp_path / "hf-mlm")
    out = tmp_path / "run"
    with pytest.warns(vilt.CheckpointWarning, match="newly initialised"):
        vqa.main([*TINY_VQA, "--init", str(hf), "--max-steps", "1", "--lr", "1e-30",
                  "--output-dir", str(out)])  # fmt: skip
    backbone = vilt.ViltModel.from_pretrained(hf).state_dict()
    trained = weights(out)
    assert same_weights({k: trained["vilt." + k] for k in backbone}, backbone, atol=1e-20)
    assert trained["classifier.3.weight"].shape == (13, 64)  # the VQA head: new, 13 answers
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 300
    assert results(out)["config"]["head_lr_multiplier"] == 10.0  # fine-tuning defaults


def _write_vqav2(root, split, question_ids, *, annotated=True):
    rng = np.random.default_rng(len(question_ids))
    subtype = "test2015" if split.startswith("test") else split
    (root / subtype).mkdir(parents=True, exist_ok=True)
    questions, annotations = [], []
    for qid in question_ids:
        image_id = qid // 2
        path = root / subtype / f"COCO_{subtype}_{image_id:012d}.jpg"
        if not path.exists():
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)
        color = ["red", "blue"][qid % 2]
        questions.append({"image_id": image_id, "question": f"Is it {color}?", "question_id": qid})
        answers = ["yes"] * 7 + ["no"] * 3 if qid % 3 else ["no"] * 6 + ["yes"] * 4
        annotations.append({"question_id": qid, "image_id": image_id,
                            "answer_type": "yes/no" if qid % 4 else "other",
                            "answers": [{"answer": a, "answer_id": n} for n, a in enumerate(answers)]})  # fmt: skip
    (root / f"v2_OpenEnded_mscoco_{split}_questions.json").write_text(
        json.dumps({"data_subtype": subtype, "questions": questions})
    )
    if annotated:
        (root / f"v2_mscoco_{split}_annotations.json").write_text(
            json.dumps({"annotations": annotations})
        )


def test_vqav2_layout_scores_vqa_accuracy_and_predicts_test_splits(tmp_path, capsys):
    root = tmp_path / "vqav2"
    _write_vqav2(root, "train2014", range(100, 124))
    _write_vqav2(root, "val2014", range(200, 212))
    _write_vqav2(root, "test-dev2015", range(300, 306), annotated=False)
    out = tmp_path / "run"
    vqa.main(["--data", str(root), "--preset", "vilt-test", "--min-answer-count", "1",
              "--max-steps", "2", "--batch-size", "8", "--examples", "1", "--output-dir", str(out)])  # fmt: skip
    printed = capsys.readouterr().out.strip().splitlines()
    found = results(out)
    assert found["eval_split"] == "val" and found["metrics"]["eval_samples"] == 12
    # no recipe preset: the generic defaults, no test-time views
    assert found["recipe_preset"] is None and found["test_time_views"] == {
        "flip": False,
        "shift": 0,
    }
    assert found["config"]["extra"]["data"] == str(root)
    predictions = json.loads((out / "predictions.json").read_text())
    val = json.loads((root / "v2_mscoco_val2014_annotations.json").read_text())["annotations"]
    humans = {a["question_id"]: [x["answer"] for x in a["answers"]] for a in val}
    official = np.mean([vqa_accuracy(p["answer"], humans[p["question_id"]]) for p in predictions])
    # soft scores: "yes" given by 7 of 10 people scores 1, by 3 of them 0.9
    assert official == pytest.approx(found["accuracy"])
    # by answer type as the official evaluation computes it: the mean over each type's
    # questions (here 3 "other", 9 "yes/no"); the overall figure stays the mean over all
    types = {a["question_id"]: a["answer_type"] for a in val}
    by_type = {
        kind: np.mean([vqa_accuracy(p["answer"], humans[p["question_id"]])
                       for p in predictions if types[p["question_id"]] == kind])
        for kind in ("other", "yes/no")
    }  # fmt: skip
    assert found["accuracy_by_answer_type"] == pytest.approx(by_type)
    last = rows(out)[-1]  # the evaluation row of metrics.csv
    assert float(last["eval_vqa_accuracy_yes_no"]) == pytest.approx(by_type["yes/no"], abs=1e-5)
    assert float(last["eval_vqa_accuracy_other"]) == pytest.approx(by_type["other"], abs=1e-5)
    assert float(last["eval_vqa_accuracy"]) == pytest.approx(official, abs=1e-5)
    assert printed[-3] == "by answer type: " + ", ".join(
        f"{kind} {100 * by_type[kind]:.2f}%" for kind in ("other", "yes/no")
    )
    assert printed[-4].startswith(f"{root} val accuracy: {100 * official:.2f}% (12 questions)")
    # a test split without annotations: predictions only
    test_out = tmp_path / "test-dev"
    vqa.main(["--data", str(root), "--eval-only", "--init", str(out), "--eval-split", "test-dev",
              "--examples", "0", "--output-dir", str(test_out)])  # fmt: skip
    assert results(test_out)["accuracy"] is None and results(test_out)["metrics"] == {}
    written = json.loads((test_out / "predictions.json").read_text())
    assert [p["question_id"] for p in written] == list(range(300, 306))
    assert {p["answer"] for p in written} <= {"yes", "no"}


def test_datasets_directory_source(tmp_path):
    rng = np.random.default_rng(0)

    def split(n, offset):
        return datasets.Dataset.from_dict({
            "image": [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(n)],
            "question": [f"what is shown in picture {i}?" for i in range(n)],
            "answers": [["cat"] * 3 if i % 2 else ["dog"] * 3 for i in range(n)],
            "question_id": [offset + i for i in range(n)],
        }, features=datasets.Features({
            "image": datasets.Image(), "question": datasets.Value("string"),
            "answers": datasets.Sequence(datasets.Value("string")),
            "question_id": datasets.Value("int64"),
        }))  # fmt: skip

    source = tmp_path / "pets-vqa"
    datasets.DatasetDict({"train": split(16, 0), "validation": split(6, 100)}).save_to_disk(source)
    out = tmp_path / "run"
    vqa.main(["--data", str(source), "--preset", "vilt-test", "--max-steps", "2",
              "--batch-size", "8", "--examples", "0", "--output-dir", str(out)])  # fmt: skip
    found = results(out)
    assert found["eval_split"] == "validation" and found["metrics"]["eval_samples"] == 6
    config = json.loads((out / "config.json").read_text())
    assert sorted(config["id2label"].values()) == ["cat", "dog"]
    assert [p["question_id"] for p in json.loads((out / "predictions.json").read_text())] == list(
        range(100, 106)
    )


def test_recipe_model_computes_only_the_pooled_state_with_the_same_logits(trained):
    model = vilt.ViltForQuestionAnswering.from_pretrained(trained).eval()
    assert model.config.pooled_only  # built so by the recipe, and saved so
    full_model = vilt.ViltForQuestionAnswering.from_pretrained(trained, pooled_only=False).eval()
    processor = ViltProcessor.from_pretrained(trained)
    images = [Image.fromarray(np.full((32, 40, 3), c, dtype=np.uint8)) for c in (0, 90, 200)]
    items = [
        {"text": q, "pixel_values": processor.image_processor.preprocess_one(im, normalize=False)}
        for q, im in zip(
            ["what color is the shape?", "is there a circle?", "what?"], images, strict=True
        )
    ]
    batch = vilt.data.VQACollator(processor)(items)
    batch.pop("meta")
    with torch.no_grad():
        fast = model(**batch)
        full = full_model(**batch)
    assert fast.last_hidden_state.shape[1] == 1
    torch.testing.assert_close(fast.logits, full.logits, atol=1e-5, rtol=1e-5)


def test_example_images_name_the_answer_of_the_test_time_views(trained, tmp_path, monkeypatch):
    """The example images give the answer predictions.json gives: with views, the argmax of
    the logits averaged over them (the heatmap stays the image's own); the recipe passes its
    views (easy-VQA: the mirror image and four shifts)."""
    import dataclasses

    from vilt.jobs import vqa_outputs

    model = vilt.ViltForQuestionAnswering.from_pretrained(trained).eval()
    processor = ViltProcessor.from_pretrained(trained)
    records = load_easy_vqa_records("test")[:4]
    names = model.config.id2label
    target = max(names)  # an answer the 3-step model never gives ("no" to everything)

    class Forced(vqa_outputs.AveragedViews):  # the views' answer, made unmistakable
        def __call__(self, **inputs):
            out = super().__call__(**inputs)
            assert self.views and out.attentions is not None  # views, and the plain heatmap
            logits = torch.zeros_like(out.logits)
            logits[:, target] = 1.0
            return dataclasses.replace(out, logits=logits)

    titles = []
    with monkeypatch.context() as patch:
        patch.setattr(vqa_outputs, "AveragedViews", Forced)
        patch.setattr(
            vqa_outputs,
            "save_attention_figure",
            lambda image, heatmap, path, title: titles.append(title) or path,
        )
        vqa_outputs.save_examples(model, processor, records, tmp_path, 4, views=[lambda x: x])
    assert len(titles) == 4
    assert all(t.split("predicted: ")[1].startswith(names[target] + " ") for t in titles), titles

    passed = []
    monkeypatch.setattr(vqa, "save_examples", lambda *a, views=(), **k: passed.append(views) or [])
    for flags, count in (([], 5), (["--no-tta-flip", "--tta-shift", "0"], 0)):
        out = tmp_path / f"eval-{count}"
        args = [*EASY_VQA, "--eval-only", "--init", str(trained), "--max-eval-examples", "8"]
        assert vqa.main([*args, *flags, "--output-dir", str(out)]) == 0
        assert len(passed.pop()) == count
