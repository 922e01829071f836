"""A stop signal sent to the whole process group (as job schedulers and container runtimes
send it) reaches the DataLoader workers too: they leave it to the main process, which saves a
checkpoint and exits with 143, as when it alone gets the signal."""

from __future__ import annotations

import os
import signal

import pytest
from test_training_processes import launch, wait_for_checkpoint

from vilt.training import latest_checkpoint
from vilt.training.checkpoint import read_state


@pytest.mark.slow
def test_sigterm_to_the_process_group_with_workers_saves_and_exits_143(tmp_path):
    # (Ctrl-C reaches the group too; torch's workers already leave KeyboardInterrupt to the
    # main process, and vilt's workers ignore SIGINT)
    run = tmp_path / "run"
    proc = launch(tmp_path, run, {"epochs": 20, "save_every": 2, "hold": 5, "num_workers": 2})
    seen = wait_for_checkpoint(proc, run / "checkpoints")
    os.killpg(proc.pid, signal.SIGTERM)  # the launched run leads its own process group
    code = proc.wait(timeout=60)
    output = proc.stdout.read().decode()
    assert code == 143, output
    assert "worker" not in output.lower(), output  # no "DataLoader worker ... killed"
    last = read_state(latest_checkpoint(run / "checkpoints"))
    assert last["global_step"] >= read_state(seen)["global_step"]
    assert "checkpoint saved" in output
