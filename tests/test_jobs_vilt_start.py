"""Where a ViLT job starts: --init-vision (a ViT checkpoint, the paper's start), --init-text
(BERT's text embeddings and tokenizer) and --max-text-length (the text positions, which the
processor follows), on local transformers checkpoints with random weights: in every ViLT
job (vqa, pretrain, retrieval, nlvr2)."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from jobs_helpers import RECIPES, TINY_VQA, results, weights

import vilt
from vilt.data.nlvr2 import easy_vqa_nlvr2_records
from vilt.jobs import nlvr2, pretrain, retrieval, vqa
from vilt.modeling.pretrained import read_checkpoint
from vilt.processing import Tokenizer

SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
# the retrieval and NLVR2 recipes on a handful of examples (their recipe presets applied)
TINY_RETRIEVAL = ["--recipe-preset", str(RECIPES / "presets" / "easy-vqa-retrieval.json")]
TINY_RETRIEVAL += ["--max-train-examples", "16", "--max-eval-examples", "8", "--batch-size"]
TINY_RETRIEVAL += ["8", "--negative-texts", "2", "--recall-images", "4", "--rerank-top-k", "2"]
TINY_NLVR2 = ["--recipe-preset", str(RECIPES / "presets" / "easy-vqa-nlvr2.json")]
TINY_NLVR2 += ["--max-train-examples", "16", "--max-eval-examples", "8", "--batch-size", "8"]
JOBS = (vqa, pretrain, retrieval, nlvr2)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A transformers ViT and a transformers BERT (with its vocab.txt) of the vilt-test width,
    random weights, saved as the public checkpoints are."""
    root = tmp_path_factory.mktemp("sources")
    torch.manual_seed(0)
    vit = transformers.ViTModel(transformers.ViTConfig(**SIZES, image_size=32, patch_size=8))
    vit.save_pretrained(root / "vit")
    words = "is there a red blue green circle rectangle triangle shape what color the not no"
    tokenizer = vilt.train_tokenizer(words.split() * 3, vocab_size=60)
    tokenizer.save_pretrained(root / "bert")  # tokenizer.json and vocab.txt
    (root / "bert" / "tokenizer.json").unlink()  # BERT as the hub has it: vocab.txt
    config = transformers.BertConfig(**SIZES, vocab_size=tokenizer.vocab_size,
                                     max_position_embeddings=64)  # fmt: skip
    transformers.BertModel(config).save_pretrained(root / "bert")
    return root


@pytest.fixture(scope="module")
def from_vit(sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("vqa") / "run"
    argv = [*TINY_VQA, "--init-vision", str(sources / "vit"), "--init-text", str(sources / "bert"),
            "--max-text-length", "12", "--max-steps", "1", "--lr", "1e-30",
            "--output-dir", str(out)]  # fmt: skip
    with pytest.warns(vilt.CheckpointWarning, match="from ViT"):
        assert vqa.main(argv) == 0
    return out


def assert_holds_the_vit(saved: dict, vit_dir) -> None:
    """The run's model (one step at lr 1e-30: its start) has the ViT's encoder blocks, final
    norm, patch projection, class token and positions."""
    vit = read_checkpoint(str(vit_dir), vilt.ViTModel).state_dict
    kept = {f"vilt.{k}" for k in vit if k.startswith("encoder.")}
    assert len(kept) == 2 * 12 + 2  # two blocks, the final norm
    for key in kept:
        torch.testing.assert_close(saved[key], vit[key.removeprefix("vilt.")], rtol=0, atol=1e-20)
    for key in ("cls_token", "patch_embeddings.proj.weight", "position_embeddings"):
        torch.testing.assert_close(
            saved[f"vilt.embeddings.image.{key}"], vit[f"embeddings.{key}"], rtol=0, atol=1e-20
        )


def test_vqa_from_a_vit_keeps_its_blocks_and_berts_text(sources, from_vit):
    saved = weights(from_vit)
    assert_holds_the_vit(saved, sources / "vit")
    bert = transformers.BertModel.from_pretrained(sources / "bert").embeddings
    torch.testing.assert_close(
        saved["vilt.embeddings.text.word_embeddings.weight"], bert.word_embeddings.weight,
        rtol=0, atol=1e-20,
    )  # fmt: skip
    torch.testing.assert_close(  # BERT's first 12 positions
        saved["vilt.embeddings.text.position_embeddings.weight"],
        bert.position_embeddings.weight[:12], rtol=0, atol=1e-20,
    )  # fmt: skip


def test_the_run_uses_berts_tokenizer_and_the_models_text_length(sources, from_vit):
    config = json.loads((from_vit / "config.json").read_text())
    assert config["max_position_embeddings"] == 12 and config["hidden_size"] == 32
    bert_vocab = Tokenizer.from_pretrained(sources / "bert").get_vocab()
    assert Tokenizer.from_pretrained(from_vit).get_vocab() == bert_vocab
    processor = vilt.ViltProcessor.from_pretrained(from_vit)
    assert processor.max_length == 12
    start = results(from_vit)["start"]
    unknown = start.pop("unknown_words")  # BERT's vocabulary, checked against the questions
    assert unknown["of"] > 0 and (unknown["texts"] > 0) == bool(unknown["words"])
    assert start == {
        "kind": "vision", "init": None, "init_vision": str(sources / "vit"),
        "init_text": str(sources / "bert"), "text_positions": 12,
    }  # fmt: skip


def test_an_init_model_gets_longer_text_without_changing_what_fit(from_vit, tmp_path):
    out = tmp_path / "longer"
    vqa.main([*TINY_VQA, "--init", str(from_vit), "--max-text-length", "20", "--max-steps", "1",
              "--lr", "1e-30", "--output-dir", str(out)])  # fmt: skip
    before, after = weights(from_vit), weights(out)
    table = "vilt.embeddings.text.position_embeddings.weight"
    assert after[table].shape[0] == 20
    torch.testing.assert_close(after[table][:12], before[table], rtol=0, atol=1e-20)
    assert vilt.ViltProcessor.from_pretrained(out).max_length == 20
    assert results(out)["start"]["kind"] == "init" and results(out)["start"]["text_positions"] == 20


def test_retrieval_starts_from_a_vit(sources, tmp_path):
    out = tmp_path / "run"
    argv = [*TINY_RETRIEVAL, "--init-vision", str(sources / "vit"), "--max-text-length", "12",
            "--max-steps", "1", "--lr", "1e-30", "--output-dir", str(out)]  # fmt: skip
    with pytest.warns(vilt.CheckpointWarning, match="ViltForImageTextRetrieval from ViT"):
        assert retrieval.main(argv) == 0
    assert_holds_the_vit(weights(out), sources / "vit")
    assert vilt.ViltProcessor.from_pretrained(out).max_length == 12
    found = results(out)
    assert found["start"] == {
        "kind": "vision", "init": None, "init_vision": str(sources / "vit"),
        "init_text": None, "text_positions": 12,
    }  # fmt: skip
    assert found["recall"]["images"] == 4


def test_nlvr2_starts_from_a_vit_and_bert_with_a_second_image_type(sources, tmp_path):
    out = tmp_path / "run"
    argv = [*TINY_NLVR2, "--init-vision", str(sources / "vit"), "--init-text",
            str(sources / "bert"), "--max-text-length", "12", "--max-steps", "1", "--lr", "1e-30",
            "--output-dir", str(out)]  # fmt: skip
    with pytest.warns(vilt.CheckpointWarning, match="ViltForImagesAndTextClassification from ViT"):
        assert nlvr2.main(argv) == 0
    saved = weights(out)
    assert_holds_the_vit(saved, sources / "vit")
    assert saved["vilt.embeddings.modality_type_embeddings.weight"].shape == (3, 32)
    bert = transformers.BertModel.from_pretrained(sources / "bert").embeddings
    torch.testing.assert_close(
        saved["vilt.embeddings.text.word_embeddings.weight"], bert.word_embeddings.weight,
        rtol=0, atol=1e-20,
    )  # fmt: skip
    assert vilt.ViltForImagesAndTextClassification.from_pretrained(out).config.num_images == 2
    bert_vocab = Tokenizer.from_pretrained(sources / "bert").get_vocab()
    assert Tokenizer.from_pretrained(out).get_vocab() == bert_vocab
    start = results(out)["start"]
    assert start.pop("unknown_words")["of"] == len(easy_vqa_nlvr2_records("train"))
    assert start == {
        "kind": "vision", "init": None, "init_vision": str(sources / "vit"),
        "init_text": str(sources / "bert"), "text_positions": 12,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--init", "a", "--init-vision", "b"], "--init and --init-vision are alternatives"),
        (["--init-text", "b"], "--init-text needs --init-vision"),
        (["--init-vision", "b", "--patch-size", "4"], "--patch-size cannot change"),
        (["--max-text-length", "1"], "must be >= 2"),
    ],
)
def test_start_flags_that_cannot_work_are_one_error_line(argv, message, capsys):
    for job in JOBS:
        with pytest.raises(SystemExit) as stop:
            job.parse_args(argv)
        assert stop.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("job", JOBS, ids=lambda job: job.__name__.rsplit(".", 1)[-1])
def test_a_non_vit_init_vision_is_named_before_any_data_is_read(job, from_vit, tmp_path):
    missing = tmp_path / "no-data-here"  # read first, it would be the error
    with pytest.raises(vilt.CheckpointError, match="not a ViT"):
        job.main(["--init-vision", str(from_vit), "--data", str(missing),
                  "--output-dir", str(tmp_path / "out")])  # fmt: skip


def test_a_job_that_does_not_honour_the_flags_says_so(tmp_path):
    """A ViLT job that builds its model without models.ViltStart never drops them silently."""
    from vilt.jobs.common import Job

    args = vqa.parse_args(["--max-text-length", "12", "--output-dir", str(tmp_path)])
    with pytest.raises(ValueError, match="does not honour --max-text-length"):
        Job(args, task="vqa").training_config()
