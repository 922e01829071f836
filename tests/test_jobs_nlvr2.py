"""The NLVR2 recipe end to end on tiny settings: the offline default with every output and
predictions that score as reported, the official layout on a small copy (a split without
labels predicted, bad images counted), a start from a one-image checkpoint, and evaluation
of a saved model."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch
import transformers
from jobs_helpers import RECIPES, TINY_VQA, assert_run_outputs, results, rows, weights
from test_data_nlvr2 import ROWS, write_nlvr2

import vilt
from vilt.data.nlvr2 import easy_vqa_nlvr2_records
from vilt.jobs import nlvr2, vqa
from vilt.jobs.models import unknown_words

EASY = ["--recipe-preset", str(RECIPES / "presets" / "easy-vqa-nlvr2.json")]
TINY = [*EASY, "--preset", "vilt-test", "--max-train-examples", "48", "--max-eval-examples"]
TINY += ["24", "--batch-size", "8", "--eval-batch-size", "16", "--no-init-run"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("nlvr2") / "run"
    assert (
        nlvr2.main([*TINY, "--max-steps", "3", "--eval-every", "2", "--output-dir", str(out)]) == 0
    )
    return out


def test_writes_every_output_and_predictions_score_as_reported(trained, capsys):
    found = assert_run_outputs(trained, steps=3, metric="eval_accuracy")
    assert found["metrics"]["eval_samples"] == 24 and found["eval_split"] == "test"
    assert found["recipe_preset"]["name"] == "easy-vqa-nlvr2"
    assert [r["step"] for r in rows(trained) if r.get("eval_accuracy")] == ["2", "3"]
    records = easy_vqa_nlvr2_records("test")[:24]
    predicted = json.loads((trained / "predictions.json").read_text())
    assert [p["identifier"] for p in predicted] == [r.identifier for r in records]
    right = [p["prediction"] == str(r.label) for p, r in zip(predicted, records, strict=True)]
    assert sum(right) / 24 == pytest.approx(found["accuracy"])
    with open(trained / "predictions.csv", newline="") as handle:  # the official format
        assert [tuple(r) for r in csv.reader(handle)] == [
            (p["identifier"], p["prediction"]) for p in predicted
        ]
    model = vilt.ViltForImagesAndTextClassification.from_pretrained(trained)
    assert model.config.num_images == 2 and model.config.id2label == {0: "False", 1: "True"}


def test_eval_only_repeats_the_accuracy(trained, tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["--eval-only", "--init", str(trained), "--max-eval-examples", "24"]
    assert nlvr2.main([*args, "--output-dir", str(out)]) == 0
    assert results(out)["accuracy"] == pytest.approx(results(trained)["accuracy"])
    assert capsys.readouterr().out.strip().splitlines()[-3] == (
        f"NLVR2 on easy-VQA images test accuracy: {100 * results(out)['accuracy']:.2f}% "
        "(24 statements)"
    )
    assert (out / "predictions.json").read_text() == (trained / "predictions.json").read_text()


def test_official_layout_trains_scores_dev_and_predicts_without_labels(tmp_path):
    rows_ = {**ROWS, "test1": [("test1-2-0-0", "the right image is red", None, None),
                               ("test1-3-0-0", "one image is blue", None, None)]}  # fmt: skip
    root = write_nlvr2(tmp_path / "nlvr2", rows_, skip_images={"train-11-1-img1.png"})
    out = tmp_path / "run"
    args = ["--data", str(root), "--preset", "vilt-test", "--batch-size", "2", "--skip-bad"]
    assert nlvr2.main([*args, "--max-steps", "2", "--output-dir", str(out)]) == 0
    found = results(out)
    assert found["recipe_preset"] is None and found["eval_split"] == "dev"
    assert found["metrics"]["eval_samples"] == 2
    assert found["data_skips"] == {"train": {"missing_image": 1}}  # named as elsewhere
    test = tmp_path / "test1"
    args = ["--data", str(root), "--eval-only", "--init", str(out), "--eval-split", "test1"]
    assert nlvr2.main([*args, "--output-dir", str(test)]) == 0
    assert results(test)["accuracy"] is None and results(test)["metrics"] == {}
    assert [p["identifier"] for p in json.loads((test / "predictions.json").read_text())] == [
        "test1-2-0-0", "test1-3-0-0"
    ]  # fmt: skip


def test_a_one_image_checkpoint_starts_with_the_right_image_as_the_left(tmp_path, capsys):
    source = tmp_path / "vqa"
    torch.manual_seed(0)
    config = vilt.ViltConfig.from_preset("vilt-test", num_labels=3)
    vilt.ViltForQuestionAnswering(config).save_pretrained(source)
    (tmp_path / "vocab").mkdir()
    vilt.train_tokenizer(["both images show a circle"] * 5, vocab_size=100).save_pretrained(source)
    out = tmp_path / "run"
    with pytest.warns(vilt.CheckpointWarning, match="newly initialised"):
        nlvr2.main([*TINY, "--init", str(source), "--max-steps", "1", "--lr", "1e-30",
                    "--output-dir", str(out)])  # fmt: skip
    # its vocabulary never saw an "f": "left" is [UNK], and the run says so
    unknown = results(out)["start"]["unknown_words"]
    assert "left" in unknown["words"] and 0 < unknown["texts"] <= unknown["of"]
    assert f"warning: the vocabulary of {source} lacks" in capsys.readouterr().out
    table = weights(out)["vilt.embeddings.modality_type_embeddings.weight"]
    before = weights(source)["vilt.embeddings.modality_type_embeddings.weight"]
    assert table.shape == (3, 32)
    torch.testing.assert_close(table[:2], before, atol=1e-20, rtol=0)
    torch.testing.assert_close(table[2], before[1], atol=1e-20, rtol=0)  # ViLT's start


def test_bad_flags_stop_before_any_data_is_read(tmp_path, capsys):
    with pytest.raises(SystemExit):
        nlvr2.main(["--randaugment", "-1", "--output-dir", str(tmp_path / "x")])
    assert "--randaugment must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_the_public_nlvr2_layout_trains_on_from_a_transformers_checkpoint(tmp_path):
    # a -finetuned-nlvr2 checkpoint as transformers saves it, random weights, two images
    config = transformers.ViltConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        image_size=32, patch_size=8, vocab_size=100, max_position_embeddings=16,
        modality_type_vocab_size=3, num_images=2, id2label={0: "False", 1: "True"},
    )  # fmt: skip
    hf = tmp_path / "hf"
    torch.manual_seed(0)
    transformers.ViltForImagesAndTextClassification(config).save_pretrained(hf)
    sentences = [s for split in ROWS.values() for _, s, *_ in split]
    vilt.train_tokenizer(sentences * 3, vocab_size=100).save_pretrained(hf)
    root = write_nlvr2(tmp_path / "nlvr2")
    out = tmp_path / "run"
    args = ["--data", str(root), "--init", str(hf), "--batch-size", "2", "--max-steps", "1"]
    assert nlvr2.main([*args, "--lr", "1e-30", "--output-dir", str(out)]) == 0
    found = results(out)
    assert found["metrics"]["eval_samples"] == len(ROWS["dev"])
    assert len(json.loads((out / "predictions.json").read_text())) == len(ROWS["dev"])
    # every weight came from the checkpoint: the same logits as transformers' model
    ref = transformers.ViltForImagesAndTextClassification.from_pretrained(hf).eval()
    model = vilt.ViltForImagesAndTextClassification.from_pretrained(out).eval()
    gen = torch.Generator().manual_seed(3)
    inputs = {
        "input_ids": torch.randint(1, 100, (2, 6), generator=gen),
        "pixel_values": torch.randn(2, 2, 3, 32, 32, generator=gen),
    }
    with torch.no_grad():
        torch.testing.assert_close(
            model(**inputs).logits, ref(**inputs).logits, atol=1e-5, rtol=1e-5
        )


def write_presets(tmp_path):
    """An NLVR2 preset whose init_run is a tiny easy-VQA run (the recipe's own, at tiny
    settings)."""
    recipe = json.loads((RECIPES / "presets" / "easy-vqa-nlvr2.json").read_text())
    first = json.loads((RECIPES / "presets" / "easy-vqa.json").read_text())
    first["flags"].update({"preset": "vilt-test", "max-train-examples": 32, "max-steps": 2,
                           "max-eval-examples": 16, "batch-size": 8, "examples": 1})  # fmt: skip
    (tmp_path / "tiny-vqa.json").write_text(json.dumps(first))
    recipe["init_run"]["recipe_preset"] = "tiny-vqa"  # looked up beside the preset
    (tmp_path / "tiny-nlvr2.json").write_text(json.dumps(recipe))
    return ["--recipe-preset", str(tmp_path / "tiny-nlvr2.json")]


@pytest.mark.slow
def test_the_recipe_preset_fine_tunes_its_init_run_and_reuses_it(tmp_path, capsys):
    preset = write_presets(tmp_path)
    tiny = ["--max-train-examples", "32", "--max-eval-examples", "16", "--batch-size", "8"]
    out = tmp_path / "run"
    assert nlvr2.main([*preset, *tiny, "--max-steps", "2", "--output-dir", str(out)]) == 0
    said = capsys.readouterr().out
    assert "init run, then this job from its model: vilt vqa --recipe-preset " in said
    assert "why: one true/false label per pair of images does not teach" in said
    assert results(out / "vqa")["recipe_preset"]["name"] == "tiny-vqa"
    found = results(out)
    assert found["init_run"]["reused"] is False and found["init_run"]["job"] == "vqa"
    assert found["start"]["kind"] == "init" and found["start"]["init"] == str(out / "vqa")
    # the VQA run's vocabulary lacks words of the statements: counted, and said
    assert found["start"]["unknown_words"]["texts"] > 0
    assert f"warning: the vocabulary of {out / 'vqa'} lacks" in said
    assert found["config"]["lr"] == 1e-4  # the rate of a start from a checkpoint
    # the encoder is the pretrained one (a step at lr 1e-30 moves nothing)
    again = tmp_path / "again"
    shutil.copytree(out / "vqa", again / "vqa")
    args = [*preset, *tiny, "--max-steps", "1", "--lr", "1e-30", "--output-dir", str(again)]
    assert nlvr2.main(args) == 0
    assert f"init run: {again / 'vqa'} finished before" in capsys.readouterr().out
    assert results(again)["init_run"]["reused"] is True
    start, now = weights(again / "vqa"), weights(again)
    key = "vilt.encoder.blocks.0.attn.qkv.weight"
    torch.testing.assert_close(now[key], start[key], atol=1e-20, rtol=0)
    # --no-init-run: from scratch, as the preset's flags say
    scratch = tmp_path / "scratch"
    args = [*preset, *tiny, "--max-steps", "1", "--no-init-run", "--output-dir", str(scratch)]
    assert nlvr2.main(args) == 0
    assert results(scratch)["start"]["kind"] == "scratch" and not (scratch / "vqa").exists()
    assert "init_run" not in results(scratch)


def test_a_vocabulary_flag_trains_the_next_data_words_into_a_new_vocabulary(tmp_path):
    out = tmp_path / "vqa"
    args = [*TINY_VQA, "--max-steps", "1", "--vocab-nlvr2-statements", "easy-vqa"]
    assert vqa.main([*args, "--output-dir", str(out)]) == 0
    statements = [r.sentence for r in easy_vqa_nlvr2_records("train")]
    assert unknown_words(vilt.Tokenizer.from_pretrained(out), statements)["texts"] == 0
