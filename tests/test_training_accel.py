"""The Accelerator a run builds, seen from outside the process: a script that trains under a
launcher and simply ends must not leave its process group open at exit."""

from __future__ import annotations

import os
import subprocess
import sys

from test_training_processes import ROOT

SCRIPT = """
import atexit, sys
import torch.distributed as dist
sys.path[:0] = [{root!r}]

# registered first, so it runs last: after the library's own exit hook
atexit.register(lambda: print("open at exit:", dist.is_initialized(), flush=True))
dist.init_process_group("gloo")  # as a launcher's process would, before the Accelerator
from vilt.training import TrainingConfig
from vilt.training.accel import build_accelerator

build_accelerator(TrainingConfig(output_dir=sys.argv[1]))
build_accelerator(TrainingConfig(output_dir=sys.argv[1]))  # a second one: one hook
print("trained", flush=True)
"""


def test_a_script_that_ends_without_closing_its_process_group_has_it_closed(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.format(root=str(ROOT)))
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "0",
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
    }
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-2:] == ["trained", "open at exit: False"], done.stdout
