"""Resuming: the files of a checkpoint are verified (size, SHA-256, format, parse) before use;
a damaged latest checkpoint is passed over for the newest usable one, saying which and why;
with none usable the run refuses, and with none at all it says it starts from step 0."""

from __future__ import annotations

import json
import shutil

import pytest
from test_training import interrupt_at, make_trainer, max_diff, weights

import vilt
from vilt.training import latest_checkpoint
from vilt.training.checkpoint import read_state
from vilt.training.resume import find_resume, problem_with

OPTIONS = {"max_steps": 6, "save_every": 2, "keep_last": 3}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    trainer = make_trainer(tmp_path_factory.mktemp("ref"), **OPTIONS)
    trainer.train()
    return weights(trainer)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run interrupted after step 4: checkpoints at steps 2 and 4."""
    root = tmp_path_factory.mktemp("interrupted")
    with pytest.raises(KeyboardInterrupt):
        make_trainer(root, **OPTIONS, callbacks=[interrupt_at(4)]).train()
    return root


@pytest.fixture
def run(tmp_path, interrupted):
    """A copy of the interrupted run to damage."""
    shutil.copytree(interrupted, tmp_path, dirs_exist_ok=True)
    return tmp_path


def flip_a_byte(path, offset=-1):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_corrupt_file_in_the_latest_checkpoint_falls_back_and_says_why(run, reference, capsys):
    root = run / "checkpoints"
    flip_a_byte(root / "step_00000004" / "optimizer.pt")
    resumed = make_trainer(run, **OPTIONS, resume=True)
    resumed.train()
    said = capsys.readouterr().out
    assert resumed.resumed_from.name == "step_00000002"
    assert "step_00000004 passed over: optimizer.pt does not have the SHA-256" in said
    assert max_diff(reference, weights(resumed)) < 1e-6  # still the uninterrupted run


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda d: (d / "model.safetensors").write_bytes(b""), "model.safetensors has 0 bytes"),
        (lambda d: (d / "rng_0.safetensors").unlink(), "rng_0.safetensors is missing"),
        (lambda d: (d / "trainer_state.json").write_text("{"), "trainer_state.json is missing"),
    ],
)
def test_each_kind_of_damage_is_named(run, damage, why):
    root = run / "checkpoints"
    damage(root / "step_00000004")
    path, note = find_resume(True, root)
    assert path.name == "step_00000002"
    assert f"step_00000004 passed over: {why}" in note


def test_a_newer_checkpoint_format_is_not_resumed_from(run):
    root = run / "checkpoints"
    state_file = root / "step_00000004" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "format": 3}))
    assert "format 3 is newer than this vilt reads" in problem_with(root / "step_00000004")


def test_no_usable_checkpoint_refuses_rather_than_start_over(run):
    root = run / "checkpoints"
    for step in ("step_00000002", "step_00000004"):
        flip_a_byte(root / step / "model.safetensors", offset=200)
    with pytest.raises(vilt.CheckpointError, match=r"no usable checkpoint.*step_00000004.*002"):
        make_trainer(run, **OPTIONS, resume=True).train()
    assert read_state(latest_checkpoint(root))["global_step"] == 4  # nothing overwritten


def test_a_named_checkpoint_that_is_damaged_is_refused_by_file(run):
    root = run / "checkpoints"
    flip_a_byte(root / "step_00000004" / "scheduler.json", offset=2)
    with pytest.raises(vilt.CheckpointError, match="scheduler.json does not have the SHA-256"):
        make_trainer(run, **OPTIONS, resume=str(root / "step_00000004")).train()


def test_resume_without_any_checkpoint_says_it_starts_from_step_0(tmp_path, capsys):
    results = make_trainer(tmp_path, max_steps=2, resume=True).train()
    assert results["resumed_from"] is None
    assert "no checkpoint under" in capsys.readouterr().out


# -- settings changed between the run and its resumption ----------------------------------------
def logged_lr(run) -> dict[int, float]:
    from test_training import read_rows

    return {int(r["step"]): float(r["lr"]) for r in read_rows(run / "metrics.csv")}


def test_a_changed_learning_rate_and_length_apply_from_the_resume_point(run, capsys):
    from vilt.training import lr_lambda

    resumed = make_trainer(run, **{**OPTIONS, "max_steps": 10}, lr=5e-4, resume=True)
    results = resumed.train()
    said = capsys.readouterr().out
    assert "applied from step 4: max_steps 6 -> 10, lr 0.001 -> 0.0005" in said
    assert results["resume_changes"] == {"max_steps": [6, 10], "lr": [0.001, 0.0005]}
    assert results["config"]["lr"] == 5e-4 and results["steps"] == 10
    factor = lr_lambda(total_steps=10, warmup_steps=1, schedule="cosine")
    lrs = logged_lr(run)
    for step in range(5, 11):  # the new rate on the new schedule, from the step after
        assert lrs[step] == pytest.approx(5e-4 * factor(step - 1), rel=1e-5), step  # 6 digits
    assert lrs[4] == pytest.approx(1e-3 * lr_lambda(total_steps=6, warmup_steps=0)(3))


def test_unchanged_settings_resume_with_no_message_and_exactly(run, reference, capsys):
    resumed = make_trainer(run, **OPTIONS, resume=True)
    results = resumed.train()
    assert "settings changed" not in capsys.readouterr().out
    assert results["resume_changes"] == {}
    assert max_diff(reference, weights(resumed)) < 1e-6


def test_a_changed_seed_is_refused(run):
    with pytest.raises(ValueError, match=r"seed=0 \(now 1\).*data order"):
        make_trainer(run, **OPTIONS, seed=1, resume=True).train()
