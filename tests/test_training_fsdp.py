"""FSDP2 checkpoints: two CPU processes over gloo shard the model with accelerate's FSDP2
plugin; a run stopped mid-epoch resumes from its sharded checkpoint to the weights and
optimizer state of a run that was never stopped, and nothing is unpickled on the way.

The processes get the environment that ``accelerate launch --config_file
recipes/configs/fsdp.yaml`` gives (but fp32), and build their Accelerator as a run does. But
accelerate 1.15 turns FSDP on for GPU-like devices only: on CPU processes it trains with DDP
whatever the config says. So the script switches the Accelerator's distributed type to FSDP,
with the plugin the launcher's environment describes; from there accelerate's own FSDP2 path
runs (``fully_shard`` per Block, its gradient clipping, its whole state dict for the final
model). The same check on GPUs: docs/training.md, "FSDP".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from accelerate.utils import DistributedType
from safetensors.torch import load_file
from test_training import max_diff, tiny_model
from test_training_processes import ROOT, run_to_end

from vilt.modeling.pretrained import CheckpointError
from vilt.training import TrainingConfig, build_optimizer
from vilt.training.checkpoint import latest_checkpoint, load_checkpoint, read_state
from vilt.training.progress import StepWindow
from vilt.training.resume import problem_with
from vilt.training.step import TrainStep

SCRIPT = """
import json, pickle, sys
import torch
sys.path[:0] = [{tests!r}, {root!r}]
from accelerate import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
from test_training import SkipAt, config_for, tiny_model
from vilt.training import Trainer
from vilt.training.accel import build_accelerator

torch.set_num_threads(1)
out, phase = sys.argv[1], sys.argv[2]
OPTIONS = dict(max_steps=12, batch_size=4, log_every=1, keep_last=1)  # 8 steps an epoch

acc = build_accelerator(config_for(out, **OPTIONS))  # as a Trainer builds it
for state in (acc.state, PartialState()):  # accelerate keeps FSDP to GPUs: switch it on
    state.distributed_type = DistributedType.FSDP
acc.state.fsdp_plugin = FullyShardedDataParallelPlugin()  # from the launcher's environment
assert acc.is_fsdp2

def stop_at(step):
    def callback(trainer, record):
        if record["step"] == step:
            trainer.stop.request()  # checkpoint at the next read (step + 1), exit 143
    return callback

def run(name, callbacks=(), **options):
    acc.free_memory()  # forget an earlier run's model: clip_grad_norm_ looks among them
    trainer = Trainer(tiny_model(), config_for(f"{{out}}/{{name}}", **{{**OPTIONS, **options}}),
                      train_dataset=SkipAt(64, seed=0), accelerator=acc, callbacks=callbacks)
    try:
        trainer.train()
    finally:  # the whole optimizer state, for the test to compare
        whole = StateDictOptions(full_state_dict=True, cpu_offload=True)
        inner = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
        state = get_optimizer_state_dict(trainer.unwrapped_model, inner, options=whole)
        if acc.is_main_process:
            flat = {{f"{{k}}.{{n}}": v for k, s in state["state"].items() for n, v in s.items()}}
            save_file(flat, f"{{out}}/{{name}}/optimizer_whole.safetensors")
            groups = [{{k: v for k, v in g.items() if k != "params"}} for g in state["param_groups"]]
            with open(f"{{out}}/{{name}}/optimizer_groups.json", "w") as handle:
                json.dump(groups, handle)
    return trainer

def refuse(*args, **kwargs):
    raise AssertionError("a checkpoint file was unpickled")

if phase == "stop":
    run("run", callbacks=[stop_at(4)])
else:
    pickle.load, torch.load = refuse, refuse  # what DCP's default reader would call
    resumed = run("run", resume=True)
    assert resumed.resumed_from is not None
    run("reference")
"""

TORCHRUN = ["torchrun", "--standalone", "--nproc_per_node", "2"]  # --standalone: a free port
no_torchrun = pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")


def launcher_env(config: Path) -> dict[str, str]:
    """The FSDP variables ``accelerate launch --config_file config`` sets for its processes
    (accelerate's own translation of the config file)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    argv = ["--config_file", str(config), "--num_processes", "2", "script.py"]
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
    env = prepare_multi_gpu_env(args)
    return {k: v for k, v in env.items() if k.startswith("FSDP_") or k == "ACCELERATE_USE_FSDP"}


def launch(tmp_path: Path, phase: str) -> tuple[int, str]:
    script = tmp_path / "fsdp_script.py"
    script.write_text(SCRIPT.format(tests=str(ROOT / "tests"), root=str(ROOT)))
    fsdp = launcher_env(ROOT / "recipes" / "configs" / "fsdp.yaml")
    assert fsdp["FSDP_VERSION"] == "2" and fsdp["ACCELERATE_USE_FSDP"] == "true"
    env = {**os.environ, **fsdp, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [*TORCHRUN, str(script), str(tmp_path), phase],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        start_new_session=True,
    )
    output = run_to_end(proc)
    return proc.returncode, output


@pytest.mark.slow
@no_torchrun
def test_an_fsdp_run_stopped_mid_epoch_resumes_to_the_uninterrupted_state(tmp_path):
    code, output = launch(tmp_path, "stop")
    assert code != 0 and "stopped by signal 15 at step 5; checkpoint saved" in output, output
    checkpoint = latest_checkpoint(tmp_path / "run" / "checkpoints")
    state = read_state(checkpoint)
    assert state["global_step"] == 5 and state["batch_in_epoch"] == 5  # mid-epoch
    assert state["format"] == 2 and state["sharded"] is True and state["world_size"] == 2
    # each process's shards in safetensors; no pickled DCP metadata, no whole copy
    shards = sorted(p.name for p in (checkpoint / "sharded").iterdir())
    assert shards == [f"shard-0000{i}-model-00001-of-00001.safetensors" for i in (1, 2)]
    assert {f"sharded/{name}" for name in shards} <= set(state["checksums"])
    assert not (checkpoint / "model.safetensors").exists()
    assert not (checkpoint / "optimizer.pt").exists()
    assert problem_with(checkpoint) is None
    damaged = tmp_path / "damaged" / checkpoint.name
    shutil.copytree(checkpoint, damaged)
    shard = damaged / "sharded" / shards[1]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF  # a bit flip in the last tensor
    shard.write_bytes(bytes(data))
    why = problem_with(damaged)
    assert why == f"sharded/{shards[1]} does not have the SHA-256 it had when saved (corrupt)"
    assert not (tmp_path / "run" / "model.safetensors").exists()

    code, output = launch(tmp_path, "resume")
    assert code == 0, output
    assert f"resuming from {checkpoint}" in output
    run, reference = tmp_path / "run", tmp_path / "reference"
    results = json.loads((run / "results.json").read_text())
    assert results["steps"] == 12 and results["resumed_from"] == str(checkpoint)
    # the final models, gathered whole into model.safetensors, and the optimizer states
    resumed_model = load_file(str(run / "model.safetensors"))
    reference_model = load_file(str(reference / "model.safetensors"))
    whole = {k: v.shape for k, v in tiny_model().state_dict().items()}
    assert {k: v.shape for k, v in resumed_model.items()} == whole  # not a shard
    assert max_diff(resumed_model, reference_model) < 1e-6
    resumed_opt = load_file(str(run / "optimizer_whole.safetensors"))
    reference_opt = load_file(str(reference / "optimizer_whole.safetensors"))
    assert resumed_opt["classifier.weight.step"].item() == 12
    assert max_diff(resumed_opt, reference_opt) < 1e-6
    assert json.loads((run / "optimizer_groups.json").read_text()) == json.loads(
        (reference / "optimizer_groups.json").read_text()
    )


def test_a_sharded_checkpoint_is_not_loaded_into_a_run_without_fsdp(tmp_path):
    one_process = SimpleNamespace(distributed_type=DistributedType.NO, is_fsdp2=False)
    checkpoint = tmp_path / "checkpoints" / "step_00000005"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(
        json.dumps({"format": 2, "sharded": True, "global_step": 5, "files": []})
    )
    with pytest.raises(CheckpointError, match="holds an FSDP2 run .* this is a run without FSDP"):
        load_checkpoint(one_process, checkpoint, model=tiny_model())


def test_skipping_nonfinite_steps_under_fsdp2_is_refused_before_training():
    # carry_nonfinite and checked_on_host add whole tensors to sharded ones: torch would fail
    # at the first backward with an error about mixed Tensor and DTensor
    fsdp2 = SimpleNamespace(is_fsdp2=True, num_processes=2, scaler=None)
    model = tiny_model()
    config = TrainingConfig(output_dir=".", on_nonfinite="skip")
    with pytest.raises(ValueError, match="on_nonfinite='skip' does not run under FSDP2"):
        TrainStep(fsdp2, model, build_optimizer(model, config), None, config, StepWindow())


@pytest.mark.parametrize("asked", [{"ema_decay": 0.99}, {"save_best": "eval_loss"}])
def test_ema_and_best_model_under_fsdp2_are_refused_before_training(asked):
    # both keep whole copies of the weights, which a sharded model does not hand over
    from vilt.training.kept import KeptWeights

    config = TrainingConfig(output_dir=".", **asked)
    with pytest.raises(ValueError, match="do not run under FSDP2"):
        KeptWeights(tiny_model(), config, {}, "cpu", sharded=True)
    KeptWeights(tiny_model(), config, {}, "cpu")  # fine without sharding
