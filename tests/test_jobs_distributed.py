"""A recipe under torchrun with two CPU processes (gloo) ends with the files one process
writes, scores each evaluation example once and predicts every question once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from jobs_helpers import TINY_VQA, assert_run_outputs, results

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
def test_vqa_recipe_under_torchrun_two_processes(tmp_path):
    out = tmp_path / "ddp"
    command = [
        "torchrun",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(ROOT / "recipes" / "vqa.py"),
    ]
    command += [
        *TINY_VQA,
        "--max-eval-examples",
        "23",
        "--max-steps",
        "2",
        "--output-dir",
        str(out),
    ]
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = results(out)
    assert found["world_size"] == 2 and found["metrics"]["eval_samples"] == 23  # an odd count
    found["world_size"] = 1  # the rest is what one process writes
    (out / "results.json").write_text(json.dumps(found))
    assert_run_outputs(out, steps=2, metric="eval_vqa_accuracy")
    predictions = json.loads((out / "predictions.json").read_text())
    assert [p["question_id"] for p in predictions] == list(range(23))
    assert len(list((out / "examples").glob("*.png"))) == 2
    assert proc.stdout.count("easy-VQA test accuracy") == 1  # the summary: main process only


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
def test_retrieval_recipe_under_torchrun_shares_the_recall_pairs(tmp_path):
    """Two processes score the held-out pairs between them: the recall they report is the one
    process's evaluation of the saved model."""
    from test_jobs_retrieval import TINY

    from vilt.jobs import retrieval

    out = tmp_path / "ddp"
    command = ["torchrun", "--standalone", "--nproc_per_node", "2"]
    command += [str(ROOT / "recipes" / "retrieval.py"), *TINY, "--max-steps", "2"]
    command += ["--output-dir", str(out)]
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = results(out)
    assert found["world_size"] == 2 and found["metrics"]["eval_samples"] == 16
    assert proc.stdout.count("every pair scored") == 1  # the summary: main process only
    assert len(json.loads((out / "predictions.json").read_text())["text_to_image"]) == 18
    alone = tmp_path / "alone"
    args = ["--eval-only", "--init", str(out), "--recall-images", "6", "--rerank-top-k", "4"]
    assert retrieval.main([*TINY[:2], *args, "--output-dir", str(alone)]) == 0
    assert results(alone)["recall"] == found["recall"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
def test_nlvr2_recipe_under_torchrun_predicts_every_statement_once(tmp_path):
    """Two processes share the test statements: one prediction per identifier, and the
    accuracy that the predictions score."""
    from test_jobs_nlvr2 import TINY

    from vilt.data.nlvr2 import easy_vqa_nlvr2_records

    out = tmp_path / "ddp"
    command = ["torchrun", "--standalone", "--nproc_per_node", "2"]
    command += [str(ROOT / "recipes" / "nlvr2.py"), *TINY, "--max-steps", "2"]
    command += ["--output-dir", str(out)]
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = results(out)
    assert found["world_size"] == 2 and found["metrics"]["eval_samples"] == 24
    records = easy_vqa_nlvr2_records("test")[:24]
    predicted = json.loads((out / "predictions.json").read_text())
    assert [p["identifier"] for p in predicted] == [r.identifier for r in records]
    right = [p["prediction"] == str(r.label) for p, r in zip(predicted, records, strict=True)]
    assert sum(right) / 24 == pytest.approx(found["accuracy"])
    assert proc.stdout.count("test accuracy") == 1  # the summary: main process only
