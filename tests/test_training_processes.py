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
import torch.distributed as dist
from safetensors.torch import save_file
sys.path[:0] = [{tests!r}, {root!r}]
from test_training import make_trainer, weights

torch.set_num_threads({threads})  # as the test process: the same float reductions

out, options = sys.argv[1], json.loads(sys.argv[2])
hold = options.pop("hold", None)
stop_at = options.pop("stop_at", None)  # process 0 asks for a stop after this step
report = options.pop("report", False)  # each process writes its weights and collectives
done = {{"step": 0}}
collectives = {{}}

def wait_for_a_signal(trainer, record):
    # hold the run here until it is killed, or until SIGTERM asks it to stop
    deadline = time.monotonic() + 120
    while record["step"] == hold and trainer.stop.requested is None:
        assert time.monotonic() < deadline, "no signal came"
        time.sleep(0.01)

def track(trainer, record):
    done["step"] = record["step"]
    if record["step"] == stop_at and trainer.accelerator.process_index == 0:
        trainer.stop.request()

def counted(name):
    call = getattr(dist, name)
    def wrapper(*args, **kwargs):  # by the step in progress (steps done + 1)
        collectives.setdefault(str(done["step"] + 1), []).append(name)
        return call(*args, **kwargs)
    return wrapper

if report:
    for name in ("all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_object",
                 "broadcast", "broadcast_object_list", "reduce", "barrier"):
        setattr(dist, name, counted(name))
trainer = make_trainer(out, callbacks=[wait_for_a_signal, track], **options)
try:
    trainer.train()
finally:
    if report:
        rank = trainer.accelerator.process_index
        save_file(weights(trainer), f"{{out}}/weights_{{rank}}.safetensors")
        with open(f"{{out}}/collectives_{{rank}}.json", "w") as handle:
            json.dump(collectives, handle)
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


TORCHRUN = ["torchrun", "--standalone", "--nproc_per_node", "2"]  # --standalone: a free port
no_torchrun = pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")


def process_weights(run: Path) -> list[dict[str, torch.Tensor]]:
    return [load_file(str(run / f"weights_{rank}.safetensors")) for rank in (0, 1)]


@pytest.mark.slow
@no_torchrun
def test_a_batch_emptied_on_one_process_keeps_the_processes_paired(tmp_path):
    # batches of 2 in order: process 0's second batch holds items 4 and 5, both bad; it runs
    # a zero loss instead, so step 2 trains on process 1's items 6 and 7 alone, at half the
    # gradient of one process with those two items (DDP averages); clipping every gradient
    # to the same small norm makes the two runs' updates the same
    options = {"epochs": 1, "dropout": 0.0, "shuffle": False, "max_grad_norm": 1e-3,
               "log_every": 4, "train_bad": [4, 5]}  # fmt: skip
    ddp = {**options, "batch_size": 2, "report": True}
    proc = launch(tmp_path, tmp_path / "ddp", ddp, prefix=TORCHRUN)
    output = run_to_end(proc)
    assert proc.returncode == 0, output
    single = make_trainer(tmp_path / "one", **options, batch_size=4)
    single.train()
    results = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert results["steps"] == single.state.global_step == 16
    assert results["skipped_batches"] == 1  # the emptied batch, counted once
    # a row is the mean over its batches: the first (steps 1-4) holds 7 batches of 2 items
    # under DDP, 4 of 4 and 2 items alone; the later rows are the same
    ddp_rows = read_rows(tmp_path / "ddp" / "metrics.csv")[1:]
    one_rows = read_rows(tmp_path / "one" / "metrics.csv")[1:]
    for a, b in zip(ddp_rows, one_rows, strict=True):
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-4, abs=1e-5)
    first, second = process_weights(tmp_path / "ddp")
    assert max_diff(first, second) == 0.0  # the processes stayed in step
    assert max_diff(first, weights(single)) < 1e-5
    # collectives beyond DDP's own, by step in progress: at the reads (every log_every=4
    # steps), the same each time, and after the last step (step 17: saves, results)
    for rank in (0, 1):
        seen = json.loads((tmp_path / "ddp" / f"collectives_{rank}.json").read_text())
        assert set(seen) == {"4", "8", "12", "16", "17"}, seen
        assert seen["4"] == seen["8"] == seen["12"] == seen["16"], seen


@pytest.mark.slow
@no_torchrun
def test_a_nonfinite_loss_on_one_process_skips_the_step_on_every_process(tmp_path):
    # item 4 is NaN: process 0's second batch; both processes skip step 2's update, as one
    # process skips it with items 4..7 in one batch
    options = {"epochs": 1, "dropout": 0.0, "shuffle": False, "on_nonfinite": "skip",
               "log_every": 4, "train_nan": [4]}  # fmt: skip
    proc = launch(tmp_path, tmp_path / "ddp", {**options, "batch_size": 2, "report": True},
                  prefix=TORCHRUN)  # fmt: skip
    output = run_to_end(proc)
    assert proc.returncode == 0, output
    single = make_trainer(tmp_path / "one", **options, batch_size=4)
    one = single.train()
    results = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert results["skipped_steps"] == one["skipped_steps"] == 1
    assert results["skipped_batches"] == one["skipped_batches"] == 1
    first, second = process_weights(tmp_path / "ddp")
    assert max_diff(first, second) == 0.0
    # Adam's steps are about lr = 1e-3 each: a step taken or skipped wrongly would show
    assert max_diff(first, weights(single)) < 1e-4


@pytest.mark.slow
@no_torchrun
def test_a_stop_on_one_process_stops_every_process_at_the_next_read(tmp_path):
    options = {"max_steps": 12, "log_every": 4, "stop_at": 1, "batch_size": 4}
    proc = launch(tmp_path, tmp_path / "ddp", options, prefix=TORCHRUN)
    output = run_to_end(proc)
    assert proc.returncode != 0
    assert "stopped by signal 15 at step 4; checkpoint saved" in output, output
    checkpoint = latest_checkpoint(tmp_path / "ddp" / "checkpoints")
    assert read_state(checkpoint)["global_step"] == 4
    assert (checkpoint / "rng_0.json").is_file() and (checkpoint / "rng_1.json").is_file()
