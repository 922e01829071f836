"""The pretraining recipe end to end on tiny settings, and a VQA run started from it."""

from __future__ import annotations

import json

import pytest
from jobs_helpers import TINY_PRETRAIN, TINY_VQA, assert_run_outputs, results, same_weights, weights

import vilt
from vilt.data.vqa import load_easy_vqa_records
from vilt.jobs import pretrain, vqa
from vilt.processing import Tokenizer


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "run"
    assert pretrain.main([*TINY_PRETRAIN, "--max-steps", "3", "--output-dir", str(out)]) == 0
    return out


def test_reports_held_out_itm_and_mlm_accuracy(pretrained):
    found = assert_run_outputs(pretrained, steps=3, metric="eval_itm_accuracy")
    assert 0.0 <= found["mlm_accuracy"] <= 1.0 and found["itm_accuracy"] is not None
    assert found["metrics"]["eval_samples"] == 24
    model = vilt.ViltForPreTraining.from_pretrained(pretrained)
    assert model.config.vocab_size == Tokenizer.from_pretrained(pretrained).vocab_size


def test_tokenizer_covers_the_vqa_questions(pretrained):
    tokenizer = Tokenizer.from_pretrained(pretrained)
    questions = [r.question for r in load_easy_vqa_records("test")[:500]]
    ids = tokenizer(questions, padding=True)["input_ids"]
    assert tokenizer.unk_token_id not in set(ids.flatten().tolist())


def test_eval_only_repeats_the_held_out_scores(pretrained, tmp_path):
    out = tmp_path / "eval"
    pretrain.main(["--eval-only", "--init", str(pretrained), "--max-eval-examples", "24",
                   "--batch-size", "8", "--output-dir", str(out)])  # fmt: skip
    before, after = results(pretrained)["metrics"], results(out)["metrics"]
    assert after["eval_itm_accuracy"] == pytest.approx(before["eval_itm_accuracy"])
    assert after["eval_mlm_accuracy"] == pytest.approx(before["eval_mlm_accuracy"])


def test_vqa_starts_from_the_pretrained_backbone(pretrained, tmp_path):
    out = tmp_path / "vqa"
    with pytest.warns(vilt.CheckpointWarning):
        vqa.main([*TINY_VQA, "--init", str(pretrained), "--max-steps", "1", "--lr", "1e-30",
                  "--output-dir", str(out)])  # fmt: skip
    start, after = weights(pretrained), weights(out)
    backbone = {k: v for k, v in start.items() if k.startswith("vilt.")}
    assert same_weights(backbone, {k: after[k] for k in backbone}, atol=1e-20)
    assert (out / "tokenizer.json").read_text() == (pretrained / "tokenizer.json").read_text()
    assert json.loads((out / "config.json").read_text())["architectures"] == [
        "ViltForQuestionAnswering"
    ]
