"""The pretraining job's options end to end on tiny settings: word-patch alignment, hard or
data-set ITM negatives, token masking, a global batch reached by accumulation, text cut at a
shorter length (and reported), and several corpora mixed with weights."""

from __future__ import annotations

import json

import pytest
from jobs_helpers import TINY_PRETRAIN, results, rows
from PIL import Image

from vilt.jobs import pretrain, vqa


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "run"
    argv = [*TINY_PRETRAIN, "--epochs", "1", "--wpa-weight", "0.1", "--itm-negatives", "hard",
            "--itm-hard-candidates", "2", "--no-whole-word-masking", "--global-batch-size", "16",
            "--max-text-length", "6", "--output-dir", str(out)]  # fmt: skip
    assert pretrain.main(argv) == 0
    return out


def test_wpa_is_trained_and_logged(run):
    found = results(run)
    assert found["pretraining"]["wpa_weight"] == 0.1
    assert json.loads((run / "config.json").read_text())["wpa_weight"] == 0.1
    assert "eval_wpa_loss" in found["metrics"]
    assert rows(run)[-1]["wpa_loss"] != ""  # a metrics.csv column of its own


def test_the_negatives_and_masking_options_are_recorded(run):
    assert results(run)["pretraining"] == {
        "mlm_probability": 0.15, "whole_word_masking": False, "itm_negative_ratio": 0.5,
        "itm_negatives": "hard", "itm_hard_candidates": 2, "wpa_weight": 0.1,
    }  # fmt: skip


def test_the_global_batch_is_reached_by_accumulation_and_the_schedule_counts_its_steps(run):
    found = results(run)
    assert found["global_batch_size"] == 16 and found["config"]["grad_accum_steps"] == 2
    # 48 pairs in batches of 8: 6 batches, 3 optimizer steps of 16 pairs
    assert found["steps"] == 3 and found["samples_seen"] == 48
    assert found["epochs"] == 1


def test_texts_cut_at_the_shorter_length_are_counted(run, capsys):
    found = results(run)
    assert found["start"]["text_positions"] == 6
    cut = found["text_truncation"]
    assert cut["train"]["max_length"] == 6 and cut["train"]["truncated"] > 0
    assert cut["eval"]["texts"] == 24 and cut["eval"]["longest"] > 6


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--global-batch-size", "12", "--batch-size", "8"], "not a multiple of 1 process(es)"),
        (["--global-batch-size", "32", "--batch-size", "8", "--grad-accum-steps", "2"],
         "--grad-accum-steps 2 contradicts --global-batch-size 32"),
        (["--wpa-weight", "-1"], "--wpa-weight must be >= 0"),
        (["--itm-negatives", "nearest"], "invalid choice"),
        (["--data", "a.jsonl", "--data", "b.jsonl", "--image-dir", "x"], "--image-dir is for one"),
        (["--streaming", "--itm-negatives", "dataset"], "needs data that is not streamed"),
    ],
)  # fmt: skip
def test_flags_that_cannot_work_are_one_error_line(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        pretrain.parse_args(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def _corpus(root, name, n_images, colour):
    """A JSONL corpus of ``n_images`` images with two captions each."""
    (root / name).mkdir()
    lines = []
    for i in range(n_images):
        Image.new("RGB", (32, 32), (colour, 20 * i, 0)).save(root / name / f"{i}.png")
        lines += [json.dumps({"image": f"{i}.png", "caption": f"a {name} picture {i} {c}"})
                  for c in range(2)]  # fmt: skip
    (root / name / "pairs.jsonl").write_text("\n".join(lines))
    return root / name / "pairs.jsonl"


def test_several_corpora_mixed_with_weights(tmp_path, capsys):
    first, second = _corpus(tmp_path, "red", 6, 200), _corpus(tmp_path, "blue", 3, 20)
    out = tmp_path / "mixed"
    argv = ["--preset", "vilt-test", "--data", str(first), "--data", f"{second}:3",
            "--itm-negatives", "dataset", "--batch-size", "8", "--max-steps", "2",
            "--max-eval-examples", "8", "--output-dir", str(out)]  # fmt: skip
    assert pretrain.main(argv) == 0
    said = capsys.readouterr().out
    # 18 pairs an epoch, 12 + 6 pairs at weights 1 : 3 -> 4.5 and 13.5 -> 5 + 13 (the tie
    # of remainders to the first)
    assert "a mixture of 2 sources, 18 pairs an epoch" in said
    assert f"{first} (12 pairs, weight 1: 5 an epoch)" in said
    assert f"{second} (6 pairs, weight 3: 13 an epoch)" in said
    found = results(out)
    assert found["data"] == [str(first), f"{second}:3"] and found["steps"] == 2
    assert found["metrics"]["eval_samples"] == 8  # held out: the first source's


def test_a_streamed_source_trains_with_a_file_source(tmp_path, capsys):
    """--streaming: the datasets source streams, the file is read (and trains the
    vocabulary); the run needs --max-steps."""
    from test_data_corpora import parquet_pairs

    shards, pairs = parquet_pairs(tmp_path, 8, 120), _corpus(tmp_path, "red", 4, 200)
    out = tmp_path / "streamed"
    argv = ["--preset", "vilt-test", "--data", str(pairs), "--data", str(shards), "--streaming",
            "--batch-size", "4", "--max-steps", "2", "--max-eval-examples", "4",
            "--output-dir", str(out)]  # fmt: skip
    assert pretrain.main(argv) == 0
    assert "a streamed mixture of 2 sources" in capsys.readouterr().out
    assert results(out)["steps"] == 2


@pytest.mark.parametrize("job", [pretrain, vqa])
def test_the_global_batch_divides_among_the_processes_of_a_launch(job, monkeypatch, capsys):
    """Under accelerate launch or torchrun the accumulation counts every process: 16
    processes of 64 reach the paper's 4,096 in 4 steps; 12 processes cannot."""
    from types import SimpleNamespace

    from vilt.jobs import common

    monkeypatch.setattr(common, "process_state", lambda: SimpleNamespace(num_processes=16))
    args = job.parse_args(["--global-batch-size", "4096", "--batch-size", "64"])
    assert args.grad_accum_steps == 4
    assert args._batch_message == (
        "global batch 4,096 = 16 process(es) x 64 per process x 4 accumulation step(s)"
    )
    monkeypatch.setattr(common, "process_state", lambda: SimpleNamespace(num_processes=12))
    with pytest.raises(SystemExit):
        job.parse_args(["--global-batch-size", "4096", "--batch-size", "64"])
    assert "not a multiple of 12 process(es) x --batch-size 64 = 768" in capsys.readouterr().err
