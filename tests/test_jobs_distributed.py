"""A recipe under torchrun or accelerate launch with two CPU processes (gloo) ends with the
files one process writes, scores each evaluation example once and predicts every question
once."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from jobs_helpers import TINY_VQA, assert_run_outputs, results

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launcher(name: str) -> list[str]:
    """Two processes on this machine, as a user starts them: torchrun, or accelerate launch
    (its multi-process launch; the processes find no GPU and train over gloo on CPU)."""
    if name == "torchrun":
        return ["torchrun", "--standalone", "--nproc_per_node", "2"]
    return [
        "accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()),
    ]  # fmt: skip


def run_two_processes(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run a launcher's command line to its end, one thread a process, no progress bars; it
    must succeed (its output is the failure message otherwise)."""
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


LAUNCHERS = pytest.mark.parametrize(
    "launch",
    [
        pytest.param(
            "torchrun",
            marks=pytest.mark.skipif(shutil.which("torchrun") is None, reason="no torchrun"),
        ),
        pytest.param(
            "accelerate",
            marks=pytest.mark.skipif(shutil.which("accelerate") is None, reason="no accelerate"),
        ),
    ],
)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
def test_vqa_recipe_under_torchrun_two_processes(tmp_path):
    out = tmp_path / "ddp"
    command = [*launcher("torchrun"), str(ROOT / "recipes" / "vqa.py"), *TINY_VQA]
    command += ["--max-eval-examples", "23", "--max-steps", "2", "--output-dir", str(out)]
    proc = run_two_processes(command, tmp_path)
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
@LAUNCHERS
def test_retrieval_recipe_with_two_processes_shares_the_recall_pairs(launch, tmp_path):
    """Two processes score the held-out pairs between them: the recall they report is the one
    process's evaluation of the saved model."""
    from test_jobs_retrieval import TINY

    from vilt.jobs import retrieval

    out = tmp_path / "ddp"
    command = launcher(launch)
    command += [str(ROOT / "recipes" / "retrieval.py"), *TINY, "--max-steps", "2"]
    command += ["--output-dir", str(out)]
    proc = run_two_processes(command, tmp_path)
    found = results(out)
    assert found["world_size"] == 2 and found["metrics"]["eval_samples"] == 16
    assert proc.stdout.count("every pair scored") == 1  # the summary: main process only
    assert len(json.loads((out / "predictions.json").read_text())["text_to_image"]) == 18
    alone = tmp_path / "alone"
    args = ["--eval-only", "--init", str(out), "--recall-images", "6", "--rerank-top-k", "4"]
    assert retrieval.main([*TINY[:2], *args, "--output-dir", str(alone)]) == 0
    assert results(alone)["recall"] == found["recall"]


@pytest.mark.slow
@LAUNCHERS
def test_nlvr2_recipe_with_two_processes_predicts_every_statement_once(launch, tmp_path):
    """Two processes run the recipe preset's init run (a VQA run) and then NLVR2 from it
    in one process group, and share the test statements: one prediction per identifier, and
    the accuracy that the predictions score."""
    from test_jobs_nlvr2 import write_presets

    from vilt.data.nlvr2 import easy_vqa_nlvr2_records

    out = tmp_path / "ddp"
    command = launcher(launch)
    command += [str(ROOT / "recipes" / "nlvr2.py"), *write_presets(tmp_path), "--max-steps", "2"]
    command += ["--max-train-examples", "48", "--max-eval-examples", "24", "--batch-size", "8"]
    command += ["--output-dir", str(out)]
    proc = run_two_processes(command, tmp_path)
    found = results(out)
    assert found["world_size"] == 2 and found["metrics"]["eval_samples"] == 24
    assert results(out / "vqa")["world_size"] == 2 and found["init_run"]["reused"] is False
    assert found["start"]["init"] == str(out / "vqa")
    records = easy_vqa_nlvr2_records("test")[:24]
    predicted = json.loads((out / "predictions.json").read_text())
    assert [p["identifier"] for p in predicted] == [r.identifier for r in records]
    right = [p["prediction"] == str(r.label) for p, r in zip(predicted, records, strict=True)]
    assert sum(right) / 24 == pytest.approx(found["accuracy"])
    # each run's summary once: the main process alone prints
    assert proc.stdout.count("NLVR2 on easy-VQA images test accuracy") == 1
    assert proc.stdout.count("easy-VQA test accuracy") == 1  # the init run's
