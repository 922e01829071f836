"""The retrieval recipe end to end on tiny settings: every output, recall at each evaluation
that a saved model repeats, the ITM objective, hard negatives, the Karpathy layout on a small
copy with a start from transformers' retrieval checkpoint, and bad flags."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch
import transformers
from jobs_helpers import RECIPES, assert_run_outputs, results, rows
from test_data_ranking import write_karpathy

import vilt
from vilt.data.ranking import load_retrieval_pairs, retrieval_pool
from vilt.jobs import retrieval
from vilt.jobs.retrieval_eval import ModelScorer
from vilt.processing import ViltProcessor
from vilt.retrieval import retrieval_recall

EASY = ["--recipe-preset", str(RECIPES / "presets" / "easy-vqa-retrieval.json")]
TINY = [*EASY, "--preset", "vilt-test", "--max-train-examples", "48", "--max-eval-examples"]
TINY += ["16", "--batch-size", "8", "--negative-texts", "3", "--recall-images", "6"]
TINY += ["--rerank-top-k", "4"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("retrieval") / "run"
    args = [*TINY, "--max-steps", "3", "--eval-every", "2", "--output-dir", str(out)]
    assert retrieval.main(args) == 0
    return out


def test_writes_every_output_and_recall_a_saved_model_repeats(trained):
    found = assert_run_outputs(trained, steps=3, metric="eval_rank_accuracy")
    assert found["recipe_preset"]["name"] == "easy-vqa-retrieval" and found["objective"] == "rank"
    recall = found["recall"]
    assert (recall["images"], recall["texts"]) == (6, 18)
    assert recall["exhaustive"]["pairs_scored"] == 108 and recall["rerank"]["top_k"] == 4
    evaluated = [r for r in rows(trained) if r.get("eval_t2i_R@1")]
    assert [r["step"] for r in evaluated] == ["2", "3"]
    assert float(evaluated[-1]["eval_t2i_R@1"]) == pytest.approx(
        recall["exhaustive"]["text_to_image"]["R@1"] / 100, abs=1e-5
    )
    # the saved model and processor give the recall the run reported (every pair scored)
    model = vilt.ViltForImageTextRetrieval.from_pretrained(trained)
    processor = ViltProcessor.from_pretrained(trained)
    transform = partial(processor.image_processor.preprocess_one, normalize=False)
    pairs = load_retrieval_pairs("easy-vqa", split="test", transform=transform)
    pool = retrieval_pool(pairs, max_images=6, identical_captions_match=True)
    again = retrieval_recall(
        vilt.Embedder(model, processor), pool.images, pool.texts, relevant=pool.relevant
    )
    assert {f"R@{k}": v for k, v in again.text_to_image.items()} == pytest.approx(
        recall["exhaustive"]["text_to_image"]
    )
    chance = vilt.chance_recall(pool.relevant)  # beside it: what a random order scores
    assert recall["chance"]["image_to_text"] == {
        f"R@{k}": v for k, v in chance.image_to_text.items()
    }
    predictions = json.loads((trained / "predictions.json").read_text())
    assert len(predictions["text_to_image"]) == 18 and len(predictions["image_to_text"]) == 6
    first = predictions["text_to_image"][0]
    assert first["rank"] == again.text_ranks[0] and len(first["retrieved"]) == 6


def test_eval_only_scores_any_itm_model(trained, tmp_path, capsys):
    out = tmp_path / "eval"
    args = [*EASY, "--eval-only", "--init", str(trained), "--recall-images", "6"]
    assert retrieval.main([*args, "--rerank-top-k", "4", "--output-dir", str(out)]) == 0
    assert results(out)["recall"] == results(trained)["recall"]
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-4].startswith("held-out retrieval, 6 images x 18 texts, every pair scored: ")
    assert "top 4 of the first stage reranked: text->image R@1 " in printed[-3]
    vqa = tmp_path / "vqa"
    vilt.ViltForQuestionAnswering(vilt.ViltConfig.from_preset("vilt-test")).save_pretrained(vqa)
    with pytest.raises(ValueError, match="needs an image-text matching head"):
        retrieval.main(["--eval-only", "--init", str(vqa), "--output-dir", str(tmp_path / "x")])


def test_itm_objective_and_hard_negatives(tmp_path, monkeypatch):
    out = tmp_path / "itm"
    args = [*TINY, "--max-steps", "2", "--objective", "itm", "--negative-texts", "1"]
    assert retrieval.main([*args, "--output-dir", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["architectures"] == [
        "ViltForImageTextMatching"
    ]
    metrics = results(out)["metrics"]
    assert metrics["eval_samples"] == 16 * 2  # every held-out pair and its negative scored
    assert 0.0 <= metrics["eval_itm_accuracy"] <= 1.0
    asked = []
    real = ModelScorer.__call__

    def counting(self, inputs):
        asked.append(inputs["input_ids"].shape[0])
        return real(self, inputs)

    monkeypatch.setattr(ModelScorer, "__call__", counting)
    hard = tmp_path / "hard"
    args = [*TINY, "--max-steps", "2", "--negatives", "hard", "--hard-pool", "6"]
    assert retrieval.main([*args, "--output-dir", str(hard)]) == 0
    # each batch: 6 candidates scored for each of 8 pairs (accelerate's loader reads one
    # batch ahead: a third batch is made before the run ends)
    assert len(asked) >= 2 and set(asked) == {8 * 6}


def test_karpathy_layout_from_a_transformers_retrieval_checkpoint(tmp_path):
    data = write_karpathy(tmp_path / "coco")
    hf = tmp_path / "hf"
    config = transformers.ViltConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        image_size=32, patch_size=8, vocab_size=100, max_position_embeddings=16,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.ViltForImageAndTextRetrieval(config).save_pretrained(hf)
    captions = [f"picture {n} caption {k}." for n in range(5) for k in range(3)]
    vilt.train_tokenizer(captions, vocab_size=100).save_pretrained(hf)
    out = tmp_path / "run"
    args = ["--data", str(data), "--train-split", "train+restval", "--eval-split", "val+test"]
    args += ["--init", str(hf), "--negative-texts", "2", "--batch-size", "4", "--max-steps", "2"]
    assert retrieval.main([*args, "--lr", "1e-30", "--output-dir", str(out)]) == 0
    found = results(out)
    assert found["recipe_preset"] is None and found["recall"]["texts"] == 5
    assert found["recall"]["images"] == 2 and found["config"]["head_lr_multiplier"] == 10.0
    # the rank head came from the checkpoint: the score is transformers' rank output
    ref = transformers.ViltForImageAndTextRetrieval.from_pretrained(hf).eval()
    model = vilt.ViltForImageTextRetrieval.from_pretrained(out).eval()
    inputs = {"input_ids": torch.randint(1, 100, (2, 6)), "pixel_values": torch.randn(2, 3, 32, 32)}
    with torch.no_grad():
        torch.testing.assert_close(
            model(**inputs).scores, ref(**inputs).logits[:, 0], atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--negative-texts", "0"], "ranking needs a negative"),
        (["--negatives", "hard", "--num-workers", "2"], "use --num-workers 0"),
        (["--rerank-top-k", "0", "--exhaustive-max-pairs", "0"], "no recall"),
        (["--randaugment-ops", "Flip"], "--randaugment-ops: unknown ['Flip']"),
    ],
)
def test_bad_flags_are_one_error_line(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit):
        retrieval.main([*flags, "--output-dir", str(tmp_path / "out")])
    assert message in capsys.readouterr().err and not (tmp_path / "out").exists()
