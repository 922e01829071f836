"""Training in real processes: a run killed with SIGKILL resumes to the weights of a run that
was never interrupted; SIGTERM ends a run with a checkpoint and status 143; two processes
(torchrun, gloo) train like one at the same global batch and score each sample once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_training import make_trainer, max_diff, read_rows, weights

from vilt.training import latest_checkpoint
from vilt.training.checkpoint import read_state

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys, time
import torch
sys.path[:0] = [{tests!r}, {root!r}]
from test_training import make_trainer

torch.set_num_threads({threads})  # as the test process: the same float reductions

out, options = sys.argv[1], json.loads(sys.argv[2])
hold = options.pop("hold", None)

def wait_for_a_signal(trainer, record):
    # hold the run here until it is killed, or until SIGTERM asks it to stop
    deadline = time.monotonic() + 120
    while record["step"] == hold and trainer.stop.requested is None:
        assert time.monotonic() < deadline, "no signal came"
        time.sleep(0.01)

make_trainer(out, callbacks=[wait_for_a_signal], **options).train()
"""


def launch(tmp_path: Path, out: Path, options: dict, *, prefix: list[str] | None = None):
    script = tmp_path / "train_script.py"
    script.write_text(
        SCRIPT.format(tests=str(ROOT / "tests"), root=str(ROOT), threads=torch.get_num_threads())
    )
    env = {**os.environ, "TQDM_DISABLE": "1"}
    cmd = [*(prefix or [sys.executable]), str(script), str(out), json.dumps(options)]
    return subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        start_new_session=True,  # its own process group, to end torchrun's workers too
    )


def run_to_end(proc: subprocess.Popen, timeout: float = 120.0) -> str:
    """The output of a launched run; a run still going after ``timeout`` is killed (with
    every process it started) and fails the test."""
    try:
        return proc.communicate(timeout=timeout)[0].decode()
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output = proc.communicate()[0].decode()
        raise AssertionError(f"the run did not end in {timeout} s:\n{output[-3000:]}") from None


def wait_for_checkpoint(proc: subprocess.Popen, root: Path, timeout: float = 40.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = latest_checkpoint(root)
        if found is not None:
            return found
        if proc.poll() is not None:
            raise AssertionError(
                f"training ended before a checkpoint:\n{proc.stdout.read().decode()}"
            )
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("no checkpoint appeared")


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path):
    # 8 batches an epoch, a checkpoint every 3 steps: the run is killed right after the
    # first checkpoint it writes (and before step 10, where it would wait to be killed)
    options = {"epochs": 20, "save_every": 3, "keep_last": 2, "log_every": 5}
    run = tmp_path / "run"
    proc = launch(tmp_path, run, {**options, "hold": 10})
    seen = wait_for_checkpoint(proc, run / "checkpoints")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert not (run / "results.json").exists()
    resume_from = latest_checkpoint(run / "checkpoints")
    state = read_state(resume_from)
    assert state["global_step"] >= read_state(seen)["global_step"]
    assert state["global_step"] < 10 and state["batch_in_epoch"] % 8 != 0  # mid-epoch

    resumed = make_trainer(run, **options, resume=True)
    resumed.train()
    assert resumed.resumed_from == resume_from
    reference = make_trainer(tmp_path / "ref", **options)
    reference.train()
    assert resumed.state.global_step == reference.state.global_step == 160
    assert max_diff(weights(reference), weights(resumed)) < 1e-6
    steps = [int(r["step"]) for r in read_rows(run / "metrics.csv")]
    assert steps == sorted(set(steps)) and steps[-1] == 160


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_with_143(tmp_path):
    run = tmp_path / "run"
    proc = launch(tmp_path, run, {"epochs": 20, "save_every": 2, "hold": 5})
    seen = wait_for_checkpoint(proc, run / "checkpoints")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143, proc.stdout.read().decode()
    last = read_state(latest_checkpoint(run / "checkpoints"))
    assert last["global_step"] >= read_state(seen)["global_step"]
    assert "checkpoint saved" in proc.stdout.read().decode()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
def test_two_processes_train_like_one_and_score_each_sample_once(tmp_path):
    # items 3 and 20 of the evaluation data were skipped as bad: the processes' batches differ
    options = {"epochs": 1, "dropout": 0.0, "eval_n": 21, "eval_bad": [3, 20], "eval_every": 4,
               "save_every": 8}  # fmt: skip
    prefix = ["torchrun", "--standalone", "--nproc_per_node", "2"]  # --standalone: a free port
    proc = launch(tmp_path, tmp_path / "ddp", {**options, "batch_size": 4}, prefix=prefix)
    output = run_to_end(proc)
    assert proc.returncode == 0, output
    single = make_trainer(tmp_path / "one", **options, batch_size=8)
    single.train()
    ddp_rows = read_rows(tmp_path / "ddp" / "metrics.csv")
    one_rows = read_rows(tmp_path / "one" / "metrics.csv")
    assert [r["step"] for r in ddp_rows] == [r["step"] for r in one_rows]
    for a, b in zip(ddp_rows, one_rows, strict=True):
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-4, abs=1e-5)
    results = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert results["world_size"] == 2 and results["metrics"]["eval_samples"] == 19
    one = json.loads((tmp_path / "one" / "results.json").read_text())["metrics"]
    assert results["metrics"]["eval_accuracy"] == pytest.approx(one["eval_accuracy"])
    assert results["metrics"]["eval_loss"] == pytest.approx(one["eval_loss"], rel=1e-5)
    ddp_weights = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    assert max_diff(ddp_weights, weights(single)) < 1e-5
    checkpoint = latest_checkpoint(tmp_path / "ddp" / "checkpoints")
    assert (checkpoint / "rng_0.json").is_file() and (checkpoint / "rng_1.json").is_file()
    assert (checkpoint / "model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
def test_a_batch_skipped_on_one_process_is_skipped_on_all(tmp_path):
    # batches of 2 in order: process 0's second batch holds items 4 and 5, both bad; process
    # 1's (items 6, 7) is dropped with it, so the processes stay in step
    options = {"epochs": 1, "dropout": 0.0, "shuffle": False}
    prefix = ["torchrun", "--standalone", "--nproc_per_node", "2"]
    ddp = {**options, "batch_size": 2, "train_bad": [4, 5]}
    proc = launch(tmp_path, tmp_path / "ddp", ddp, prefix=prefix)
    output = run_to_end(proc)
    assert proc.returncode == 0, output
    single = make_trainer(tmp_path / "one", **options, batch_size=4, train_bad=[4, 5, 6, 7])
    single.train()
    results = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert results["steps"] == single.state.global_step == 15
    ddp_rows = read_rows(tmp_path / "ddp" / "metrics.csv")
    one_rows = read_rows(tmp_path / "one" / "metrics.csv")
    for a, b in zip(ddp_rows, one_rows, strict=True):
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-4, abs=1e-5)
    # Adam's steps are about lr = 1e-3 each: a step on other data would differ by that much
    ddp_weights = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    assert max_diff(ddp_weights, weights(single)) < 1e-4
