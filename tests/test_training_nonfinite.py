"""Non-finite losses and gradients with no host read in the step: "raise" names the first bad
step at the next read and nothing after it is saved; "skip" leaves parameters and optimizer
state bit-identical; too many skips, a run that skipped every step, and non-finite weights
stop with an error instead of saving garbage; train_loss is never 0.0 for nothing trained."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
from test_training import make_trainer, read_rows, weights
from torch import nn

from vilt.training import Trainer, TrainingConfig, latest_checkpoint
from vilt.training.checkpoint import read_state
from vilt.training.guards import carry_nonfinite

# make_trainer's data: 64 items; with shuffle=False and batches of 8, step k holds items
# 8(k-1) .. 8k-1 and an epoch is 8 steps
ORDERED = {"epochs": 1, "shuffle": False}


def optimizer_state(trainer: Trainer) -> dict:
    inner = trainer.optimizer.optimizer
    return {
        (i, k): v.detach().clone()
        for i, p in enumerate(inner.param_groups[0]["params"])
        for k, v in inner.state.get(p, {}).items()
    }


def snapshots(store: dict):
    """A callback keeping each step's weights and optimizer state."""

    def callback(trainer, record):
        store[record["step"]] = (weights(trainer), optimizer_state(trainer))

    return callback


def identical(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_raise_names_the_first_bad_step_at_the_next_read_and_saves_nothing_after(tmp_path):
    # steps 5 and 6 are NaN; reads at steps 3 and 6 (rows) and 4 (the checkpoint)
    trainer = make_trainer(tmp_path, **ORDERED, log_every=3, save_every=4, train_nan=range(32, 48))
    with pytest.raises(
        FloatingPointError, match=r"loss is nan at step 5 \(epoch 0\).*after step 6"
    ):
        trainer.train()
    assert read_state(latest_checkpoint(tmp_path / "checkpoints"))["global_step"] == 4
    assert [r["step"] for r in read_rows(tmp_path / "metrics.csv")] == ["3"]
    assert not (tmp_path / "model.safetensors").exists()


@pytest.mark.parametrize("accum", [1, 2])
def test_skip_leaves_parameters_and_optimizer_state_bit_identical(tmp_path, accum):
    seen: dict = {}
    trainer = make_trainer(
        tmp_path, **ORDERED, on_nonfinite="skip", batch_size=8 // accum, grad_accum_steps=accum,
        train_nan=[21], callbacks=[snapshots(seen)],
    )  # fmt: skip
    assert trainer._step.found_inf  # fused AdamW: the skip happens on the device
    results = trainer.train()
    assert results["steps"] == 8 and results["skipped_batches"] == 1
    assert results["skipped_steps"] == 1
    # step 3 (items 16..23; with accumulation its other batch is finite) changed nothing
    assert identical(seen[2][0], seen[3][0]) and identical(seen[2][1], seen[3][1])
    assert not identical(seen[3][0], seen[4][0])  # training went on
    assert seen[3][1][(0, "step")].item() == 2  # Adam's step count taken back
    rows = read_rows(tmp_path / "metrics.csv")  # log_every=1: one row per step
    assert rows[2]["loss"] == ("nan" if accum == 1 else rows[2]["loss"])
    assert all(math.isfinite(float(r["loss"])) for i, r in enumerate(rows) if i != 2)


def test_skip_without_a_fused_optimizer_checks_each_loss_on_the_host(tmp_path):
    trainer = make_trainer(tmp_path, **ORDERED, on_nonfinite="skip", fused=False, train_nan=[21])
    assert trainer._step.host_check and not trainer._step.found_inf
    results = trainer.train()
    assert results["steps"] == 8 and results["skipped_batches"] == 1
    assert all(torch.isfinite(v).all() for v in weights(trainer).values())


def test_a_run_of_skipped_steps_stops_with_an_error(tmp_path):
    trainer = make_trainer(
        tmp_path, **ORDERED, on_nonfinite="skip", max_consecutive_skips=3, log_every=2,
        train_nan=range(16, 64),
    )  # fmt: skip
    with pytest.raises(FloatingPointError, match=r"3 steps in a row \(steps 3 to 5\)"):
        trainer.train()
    assert trainer.state.global_step == 6  # found at the read after step 6
    assert not (tmp_path / "model.safetensors").exists()
    assert not (tmp_path / "results.json").exists()


def test_a_run_that_skipped_every_step_fails_and_saves_no_model(tmp_path):
    # 8 steps, fewer than max_consecutive_skips: the run ends, having trained nothing
    trainer = make_trainer(tmp_path, **ORDERED, on_nonfinite="skip", train_nan=range(64))
    with pytest.raises(FloatingPointError, match="every one of the 8 steps"):
        trainer.train()
    assert not (tmp_path / "model.safetensors").exists()
    assert not (tmp_path / "results.json").exists()
    assert latest_checkpoint(tmp_path / "checkpoints") is None


def test_train_loss_is_none_not_zero_when_the_last_rows_steps_were_all_skipped(tmp_path):
    trainer = make_trainer(
        tmp_path, **ORDERED, on_nonfinite="skip", log_every=4, train_nan=range(32, 64)
    )
    results = trainer.train()
    assert results["metrics"]["train_loss"] is None
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["metrics"]["train_loss"] is None and saved["skipped_steps"] == 4
    rows = read_rows(tmp_path / "metrics.csv")
    assert math.isfinite(float(rows[0]["loss"])) and rows[1]["loss"] == "nan"
    assert (tmp_path / "model.safetensors").exists()  # steps 1-4 trained it; finite


def test_nonfinite_weights_are_never_saved(tmp_path):
    def corrupt(trainer, record):  # what no loss would show before the end
        if record["step"] == 3:
            with torch.no_grad():
                trainer.unwrapped_model.classifier.bias[0] = float("inf")

    trainer = make_trainer(tmp_path, max_steps=3, callbacks=[corrupt])
    with pytest.raises(FloatingPointError, match="classifier.bias holds NaN or inf at step 3"):
        trainer.train()
    assert latest_checkpoint(tmp_path / "checkpoints") is None
    assert not (tmp_path / "model.safetensors").exists()


class Trap(nn.Module):
    """A linear classifier whose loss stays finite but whose gradient is NaN for a batch
    holding an item with ``trap`` 0 (the derivative of sqrt at 0, times 0)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 3)

    def forward(self, x, labels, trap):
        loss = nn.functional.cross_entropy(self.linear(x), labels)
        hidden = torch.sqrt(self.linear.weight.abs() * trap.min()).sum() * 0.0
        return argparse.Namespace(loss=loss + hidden)


class TrapData(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 32

    def __getitem__(self, i):
        x = torch.tensor([i % 3, 1.0, -1.0, 0.5])
        return {"x": x, "labels": torch.tensor(i % 3), "trap": torch.tensor(float(i != 9))}


@pytest.mark.parametrize("on_nonfinite", ["raise", "skip"])
def test_a_nonfinite_gradient_under_a_finite_loss(tmp_path, on_nonfinite):
    seen: dict = {}
    config = TrainingConfig(
        output_dir=str(tmp_path), batch_size=4, shuffle=False, log_every=4, lr=1e-2,
        on_nonfinite=on_nonfinite, tensorboard=False,
    )  # fmt: skip
    trainer = Trainer(Trap(), config, train_dataset=TrapData(), callbacks=[snapshots(seen)])
    if on_nonfinite == "raise":  # item 9 is in step 3
        with pytest.raises(FloatingPointError, match=r"gradient norm is nan at step 3 \("):
            trainer.train()
        return
    results = trainer.train()
    assert results["skipped_steps"] == 1 and results["skipped_batches"] == 0
    assert identical(seen[2][0], seen[3][0]) and identical(seen[2][1], seen[3][1])


def test_carry_nonfinite_puts_a_bad_loss_into_the_gradient_and_a_good_one_nowhere():
    for value, grad_finite in [(2.5, True), (float("inf"), False), (float("nan"), False)]:
        anchor = torch.ones(3, requires_grad=True)
        weight = torch.tensor(1.0, requires_grad=True)
        loss = weight * value
        out = carry_nonfinite(loss, anchor)
        assert out.item() == value if grad_finite else not math.isfinite(out.item())
        out.backward()
        assert bool(torch.isfinite(anchor.grad).all()) == grad_finite
        if grad_finite:
            assert torch.equal(anchor.grad, torch.zeros(3))


def test_max_consecutive_skips_is_checked_and_a_flag_with_help():
    with pytest.raises(ValueError, match="max_consecutive_skips=0"):
        TrainingConfig(max_consecutive_skips=0)
    parser = argparse.ArgumentParser()
    TrainingConfig.add_arguments(parser)
    action = next(a for a in parser._actions if a.dest == "max_consecutive_skips")
    assert "in a row" in action.help
    assert parser.parse_args(["--max-consecutive-skips", "none"]).max_consecutive_skips is None
    assert TrainingConfig(max_consecutive_skips=None).max_consecutive_skips is None
