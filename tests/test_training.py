"""Training engine: optimizer groups, schedules, the loop's outputs, checkpoints and exact
resumption (interrupt, SIGTERM), gradient accumulation, non-finite losses, config."""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import vilt
from vilt.training import (
    Trainer,
    TrainingConfig,
    build_optimizer,
    latest_checkpoint,
    lr_lambda,
    param_groups,
)
from vilt.training.checkpoint import is_complete, read_state
from vilt.training.records import MetricsLog


class ToyImages(torch.utils.data.Dataset):
    """Seeded 16x16 images in 3 classes, learnable from their mean brightness."""

    def __init__(self, n: int = 64, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 3, (n,), generator=gen)
        self.images = torch.randn(n, 3, 16, 16, generator=gen) + self.labels.view(-1, 1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.images[i], "labels": self.labels[i]}


class SkipAt(ToyImages):
    """ToyImages whose items at ``bad`` were skipped as bad records (None), as vilt's data sets
    with skip_bad=True return them, and whose images at ``nan`` are all NaN."""

    def __init__(self, n: int, seed: int, bad=(), nan=()) -> None:
        super().__init__(n, seed)
        self.bad, self.nan = set(bad), set(nan)

    def __getitem__(self, i: int):
        if i in self.bad:
            return None
        item = super().__getitem__(i)
        if i in self.nan:
            item["pixel_values"] = torch.full_like(item["pixel_values"], float("nan"))
        return item


def tiny_model(dropout: float = 0.1) -> vilt.ViTForImageClassification:
    config = vilt.ViTConfig.from_preset(
        "vit-test", image_size=16, patch_size=8, num_labels=3, hidden_dropout_prob=dropout
    )
    torch.manual_seed(0)
    return vilt.ViTForImageClassification(config)


def config_for(out: Path, **options) -> TrainingConfig:
    defaults = dict(epochs=2, batch_size=8, lr=1e-3, log_every=1, tensorboard=False)
    return TrainingConfig(output_dir=str(out), **{**defaults, **options})


def make_trainer(
    out: Path,
    *,
    dropout: float = 0.1,
    callbacks=(),
    eval_n=None,
    eval_bad=(),
    train_bad=(),
    train_nan=(),
    **options,
):
    """A Trainer of the tiny model on ToyImages; ``*_bad``: items skipped as bad records;
    ``train_nan``: items whose images are NaN."""
    config = config_for(out, **options)
    eval_data = SkipAt(eval_n, seed=1, bad=eval_bad) if eval_n else None
    drop_skipped = vilt.data.ClassificationCollator()
    return Trainer(
        tiny_model(dropout),
        config,
        train_dataset=SkipAt(64, seed=0, bad=train_bad, nan=train_nan),
        eval_dataset=eval_data,
        collate_fn=drop_skipped if train_bad else None,
        eval_collate_fn=drop_skipped if eval_bad else None,
        callbacks=callbacks,
    )


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    model = trainer.unwrapped_model
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def interrupt_at(step: int):
    def callback(trainer: Trainer, record: dict) -> None:
        if record["step"] == step:
            raise KeyboardInterrupt

    return callback


# -- optimizer and schedule -----------------------------------------------------------------------
def test_param_groups_split_decay_and_heads():
    model = tiny_model()
    groups = {
        g["name"]: g for g in param_groups(model, lr=1e-4, weight_decay=0.05, head_lr_multiplier=10)
    }
    assert set(groups) == {"decay", "no_decay", "head_decay", "head_no_decay"}
    names = {id(p): n for n, p in model.named_parameters()}
    by_group = {k: {names[id(p)] for p in g["params"]} for k, g in groups.items()}
    assert by_group["head_decay"] == {"classifier.weight"}
    assert by_group["head_no_decay"] == {"classifier.bias"}
    assert "vit.embeddings.cls_token" in by_group["no_decay"]
    assert "vit.embeddings.position_embeddings" in by_group["no_decay"]
    assert "vit.encoder.blocks.0.attn.qkv.weight" in by_group["decay"]
    assert by_group["no_decay"] | by_group["head_no_decay"] == model.no_weight_decay()
    assert groups["head_decay"]["lr"] == pytest.approx(1e-3)
    assert groups["decay"]["lr"] == pytest.approx(1e-4)
    assert groups["no_decay"]["weight_decay"] == 0.0 and groups["decay"]["weight_decay"] == 0.05
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))


def test_param_groups_leave_out_frozen_and_empty_groups():
    model = tiny_model()
    for p in model.classifier.parameters():
        p.requires_grad = False
    groups = param_groups(model, lr=1.0, weight_decay=0.1)
    assert [g["name"] for g in groups] == ["decay", "no_decay"]


def test_schedules_warm_up_then_decay():
    cosine = lr_lambda(total_steps=100, warmup_steps=10, schedule="cosine")
    linear = lr_lambda(total_steps=100, warmup_steps=10, schedule="linear")
    constant = lr_lambda(total_steps=100, warmup_steps=10, schedule="constant")
    assert [cosine(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert cosine(55) == pytest.approx(0.5) and linear(55) == pytest.approx(0.5)
    assert cosine(30) > linear(30) and cosine(80) < linear(80)  # cosine holds, then drops
    assert 0 < cosine(99) < 0.01 and linear(99) == pytest.approx(0.0111, abs=1e-3)
    assert constant(50) == constant(99) == 1.0
    floor = lr_lambda(total_steps=100, warmup_steps=0, schedule="linear", min_lr_ratio=0.1)
    assert floor(0) == 1.0 and floor(100) == pytest.approx(0.1)
    steps = [cosine(s) for s in range(10, 100)]
    assert all(a >= b for a, b in itertools.pairwise(steps))


def test_wsd_schedule_holds_the_peak_then_decays_over_the_cooldown():
    wsd = lr_lambda(total_steps=100, warmup_steps=10, schedule="wsd", cooldown_steps=20)
    assert [wsd(s) for s in (0, 9)] == pytest.approx([0.1, 1.0])
    assert [wsd(s) for s in (10, 50, 80)] == [1.0, 1.0, 1.0]  # stable until the cooldown
    assert [wsd(s) for s in (90, 99, 100)] == pytest.approx([0.5, 0.05, 0.0])
    assert lr_lambda(total_steps=100, warmup_steps=0, schedule="wsd")(99) == 1.0  # no cooldown
    floor = lr_lambda(
        total_steps=100, warmup_steps=0, schedule="wsd", min_lr_ratio=0.1, cooldown_steps=20
    )
    assert floor(79) == 1.0 and floor(100) == pytest.approx(0.1)


def test_wsd_cooldown_is_a_fraction_or_a_step_count():
    assert TrainingConfig(schedule="wsd").cooldown_steps(1000) == 200
    assert TrainingConfig(schedule="wsd", cooldown=150).cooldown_steps(1000) == 150
    with pytest.raises(ValueError, match=r"TrainingConfig.cooldown=-0.1"):
        TrainingConfig(cooldown=-0.1)


def test_trainer_lr_follows_schedule_and_head_multiplier(tmp_path):
    seen = []
    trainer = make_trainer(
        tmp_path,
        warmup=4,
        max_steps=16,
        callbacks=[lambda t, r: seen.append([g["lr"] for g in t.optimizer.param_groups])],
    )
    trainer.train()
    factor = lr_lambda(total_steps=16, warmup_steps=4)
    base = [lrs[0] for lrs in seen]  # the lr for the next step, after each step
    assert base == pytest.approx([1e-3 * factor(s) for s in range(1, 17)])
    heads = [g["name"].startswith("head_") for g in trainer.optimizer.param_groups]
    assert [lr / base[5] for lr in seen[5]] == pytest.approx([10.0 if h else 1.0 for h in heads])


# -- the loop and what it writes ------------------------------------------------------------------
def test_training_lowers_loss_and_writes_metrics_results_model(tmp_path):
    trainer = make_trainer(tmp_path, epochs=4, log_every=2, eval_every=8, eval_n=21, save_every=8)
    results = trainer.train()
    rows = read_rows(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(2, 33, 2))
    losses = [float(r["loss"]) for r in rows]
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3
    assert {"epoch", "lr", "grad_norm", "samples_per_s", "eval_loss", "eval_accuracy"} <= set(
        rows[0]
    )
    assert [r["eval_samples"] for r in rows if r["eval_samples"]] == ["21"] * 4
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["steps"] == results["steps"] == 32
    assert saved["epochs"] == 4.0 and saved["samples_seen"] == 4 * 64
    assert saved["world_size"] == 1 and saved["num_parameters"] == trainer.model.num_parameters()
    assert saved["metrics"]["eval_samples"] == 21 and 0 <= saved["metrics"]["eval_accuracy"] <= 1
    assert saved["metrics"]["eval_accuracy"] > 0.5
    assert saved["config"]["lr"] == 1e-3 and saved["wall_time_s"] > 0
    reloaded = vilt.ViTForImageClassification.from_pretrained(tmp_path)
    assert max_diff(weights(trainer), reloaded.state_dict()) == 0.0


def test_progress_bar_shows_loss_lr_and_throughput_on_the_main_process(tmp_path, monkeypatch):
    bars = []

    class Bar:
        def __init__(self, **options):
            self.options, self.updates, self.postfix = options, 0, {}
            bars.append(self)

        def update(self, n):
            self.updates += n

        def set_postfix(self, **values):
            self.postfix = values

        def close(self):
            pass

    monkeypatch.setattr("vilt.training.trainer.tqdm", Bar)
    trainer = make_trainer(tmp_path, max_steps=4, log_every=2)
    trainer.train()
    (bar,) = bars
    assert bar.options["total"] == 4 and bar.updates == 4
    assert bar.options["disable"] is False  # shown: this is the (local) main process
    assert set(bar.postfix) == {"loss", "lr", "sps"}
    last = read_rows(tmp_path / "metrics.csv")[-1]
    assert float(bar.postfix["loss"]) == pytest.approx(float(last["loss"]), rel=1e-3)


def test_tensorboard_through_accelerate_when_installed(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    make_trainer(tmp_path / "on", max_steps=4, log_every=2, eval_n=5, tensorboard=True).train()
    (events,) = (tmp_path / "on").glob("vilt/events.out.tfevents.*")
    logged = EventAccumulator(str(events.parent))
    logged.Reload()
    assert {"loss", "lr", "samples_per_s", "eval_accuracy"} <= set(logged.Tags()["scalars"])
    rows = read_rows(tmp_path / "on" / "metrics.csv")
    assert [(e.step, e.value) for e in logged.Scalars("loss")] == [
        (int(r["step"]), pytest.approx(float(r["loss"]), rel=1e-4)) for r in rows
    ]
    monkeypatch.setattr("vilt.training.accel.is_tensorboard_available", lambda: False)
    make_trainer(tmp_path / "off", max_steps=2, tensorboard=True).train()  # not installed
    assert not list((tmp_path / "off").rglob("events.out.tfevents.*"))


def test_checkpoint_rotation_keeps_last_k(tmp_path):
    make_trainer(tmp_path, epochs=1, save_every=2, keep_last=3).train()
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == ["step_00000004", "step_00000006", "step_00000008"]
    assert all(is_complete(tmp_path / "checkpoints" / k) for k in kept)
    state = read_state(tmp_path / "checkpoints" / kept[0])
    assert (state["epoch"], state["batch_in_epoch"], state["global_step"]) == (0, 4, 4)
    assert state["seed"] == 0 and state["world_size"] == 1


def test_checkpoint_files_load_without_pickle(tmp_path):
    make_trainer(tmp_path, max_steps=3).train()
    path = latest_checkpoint(tmp_path / "checkpoints")
    torch.load(path / "optimizer.pt", weights_only=True)  # tensors and numbers only
    rng = json.loads((path / "rng_0.json").read_text())
    assert set(rng) == {"python", "numpy"} and len(rng["numpy"]["keys"]) == 624
    assert "torch" in load_file(str(path / "rng_0.safetensors"))
    assert not list(path.glob("*.pkl")) and not list(path.glob("*.bin"))


# -- resumption -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("accum", "workers"), [(1, 0), (3, 0), (1, 2)])
def test_resume_after_interrupt_matches_uninterrupted_run(tmp_path, accum, workers):
    # 64 samples / batch 8 = 8 batches an epoch; with accumulation 3 an epoch ends on a
    # partial group, and step 4 falls in the middle of the second epoch
    options = {"epochs": 3, "grad_accum_steps": accum, "num_workers": workers}
    reference = make_trainer(tmp_path / "ref", **options)
    reference.train()
    run = tmp_path / "run"
    interrupted = make_trainer(run, **options, callbacks=[interrupt_at(4)])
    with pytest.raises(KeyboardInterrupt):
        interrupted.train()
    state = read_state(latest_checkpoint(run / "checkpoints"))
    assert state["global_step"] == 4 and 0 < state["batch_in_epoch"] < 8
    resumed = make_trainer(run, **options, resume=True)
    results = resumed.train()
    assert results["resumed_from"].endswith("step_00000004")
    assert max_diff(weights(reference), weights(resumed)) < 1e-6
    steps = [int(r["step"]) for r in read_rows(run / "metrics.csv")]
    assert steps == list(range(1, reference.total_steps + 1))  # no step twice
    ref_rows, run_rows = read_rows(tmp_path / "ref" / "metrics.csv"), read_rows(run / "metrics.csv")
    assert [r["loss"] for r in run_rows] == [r["loss"] for r in ref_rows]


def test_half_written_checkpoints_are_ignored(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=4, save_every=2)
    trainer.train()
    root = tmp_path / "checkpoints"
    # a crash inside save: the temp dir and a renamed dir without its state file
    (root / ".tmp-step_00000006").mkdir()
    (root / ".tmp-step_00000006" / "model.safetensors").write_bytes(b"partial")
    (root / "step_00000008").mkdir()
    (root / "step_00000008" / "model.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(root).name == "step_00000004"
    resumed = make_trainer(tmp_path, max_steps=6, save_every=2, resume=True)
    resumed.train()
    assert resumed.resumed_from.name == "step_00000004"
    assert not (root / ".tmp-step_00000006").exists()  # the next save cleans up
    assert latest_checkpoint(root).name == "step_00000006"


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, max_steps=4, save_every=2, keep_last=1)
    from vilt.training import checkpoint as ckpt

    real = ckpt._write_json

    def crash_on_second_state(path, data):
        if path.name == "trainer_state.json" and data["global_step"] == 4:
            raise OSError("disk full")
        real(path, data)

    monkeypatch.setattr(ckpt, "_write_json", crash_on_second_state)
    with pytest.raises(OSError, match="disk full"):
        trainer.train()
    monkeypatch.undo()
    root = tmp_path / "checkpoints"
    assert latest_checkpoint(root).name == "step_00000002"
    resumed = make_trainer(tmp_path, max_steps=4, save_every=2, resume=True)
    resumed.train()
    assert resumed.resumed_from.name == "step_00000002"
    reference = make_trainer(tmp_path / "ref", max_steps=4)
    reference.train()
    assert max_diff(weights(reference), weights(resumed)) < 1e-6


def test_sigterm_saves_checkpoint_and_exits_143(tmp_path):
    def send_sigterm(trainer, record):
        if record["step"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # handled at the next step boundary

    trainer = make_trainer(tmp_path / "run", epochs=2, callbacks=[send_sigterm])
    with pytest.raises(SystemExit) as exit_info:
        trainer.train()
    assert exit_info.value.code == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    assert read_state(latest_checkpoint(tmp_path / "run" / "checkpoints"))["global_step"] in (3, 4)
    resumed = make_trainer(tmp_path / "run", epochs=2, resume=True)
    resumed.train()
    reference = make_trainer(tmp_path / "ref", epochs=2)
    reference.train()
    assert max_diff(weights(reference), weights(resumed)) < 1e-6


def test_resume_true_without_checkpoint_starts_fresh(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=2, resume=True)
    assert trainer.train()["resumed_from"] is None


def test_resume_from_a_path_that_is_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        make_trainer(tmp_path, max_steps=2, resume=str(tmp_path)).train()


# -- accumulation, non-finite losses ------------------------------------------------------------
def test_gradient_accumulation_matches_larger_batch(tmp_path):
    big = make_trainer(tmp_path / "big", dropout=0.0, epochs=1, batch_size=8)
    big.train()
    accum = make_trainer(tmp_path / "acc", dropout=0.0, epochs=1, batch_size=4, grad_accum_steps=2)
    accum.train()
    assert accum.state.global_step == big.state.global_step == 8
    assert max_diff(weights(big), weights(accum)) < 1e-5


@pytest.mark.parametrize("max_norm", [0.05, None])
def test_gradients_are_clipped_before_each_step(tmp_path, max_norm):
    trainer = make_trainer(tmp_path, max_steps=6, max_grad_norm=max_norm)
    norms = []

    def record_norm(optimizer, args, kwargs):
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())

    trainer.optimizer.optimizer.register_step_pre_hook(record_norm)
    trainer.train()
    assert len(norms) == 6
    if max_norm is None:
        assert max(norms) > 0.05
    else:
        assert max(norms) <= max_norm * (1 + 1e-4)  # the norm the optimizer saw
        logged = [float(r["grad_norm"]) for r in read_rows(tmp_path / "metrics.csv")]
        assert min(logged) > max_norm  # metrics.csv: the norm before clipping


class NaNAt(ToyImages):
    def __getitem__(self, i):
        item = super().__getitem__(i)
        if i == 5:
            item = {**item, "pixel_values": torch.full_like(item["pixel_values"], float("nan"))}
        return item


def test_nonfinite_loss_stops_with_the_step_or_skips(tmp_path):
    config = TrainingConfig(
        output_dir=str(tmp_path / "a"), batch_size=8, shuffle=False, tensorboard=False
    )
    with pytest.raises(FloatingPointError, match="at step 1 "):
        Trainer(tiny_model(), config, train_dataset=NaNAt()).train()
    config = config.replace(output_dir=str(tmp_path / "b"), on_nonfinite="skip")
    trainer = Trainer(tiny_model(), config, train_dataset=NaNAt())
    results = trainer.train()
    assert results["skipped_batches"] == 1 and results["steps"] == 8
    assert all(torch.isfinite(v).all() for v in weights(trainer).values())


def test_skipped_records_are_reported_at_the_end(tmp_path, capsys):
    from vilt.data import ClassificationCollator, ClassificationDataset
    from vilt.data.classification import ClassRecord
    from vilt.processing import ViTImageProcessor

    rng = np.random.default_rng(0)
    records = [
        ClassRecord(rng.integers(0, 256, (16, 16, 3), np.uint8), i, f"image {i}", label=i % 3)
        for i in range(24)
    ]
    records[5] = ClassRecord(b"not an image", 5, "image 5", label=0)
    train = ClassificationDataset(
        records,
        id2label={0: "a", 1: "b", 2: "c"},
        skip_bad=True,
        transform=ViTImageProcessor(size=16).preprocess_one,
    )
    config = config_for(tmp_path, epochs=3)
    trainer = Trainer(
        tiny_model(), config, train_dataset=train, collate_fn=ClassificationCollator()
    )
    results = trainer.train()
    assert results["data_skips"] == {"train": {"corrupt_image": 1}}  # met 3 times, counted once
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["data_skips"] == results["data_skips"]
    assert "train data: skipped 1 record: 1 corrupt image" in capsys.readouterr().out


def test_a_skipped_batch_does_not_carry_the_run_into_another_epoch(tmp_path):
    seen = []
    trainer = make_trainer(
        tmp_path, epochs=2, shuffle=False, train_bad=range(8, 16),  # the whole second batch
        callbacks=[lambda t, r: seen.append(r["epoch"])],
    )  # fmt: skip
    results = trainer.train()
    assert results["steps"] == 14 and results["epochs"] == 2.0  # 7 batches an epoch
    assert max(seen) <= 2.0


# -- pieces ------------------------------------------------------------------------------------------
def test_metrics_log_resume_drops_later_steps_and_widens_header(tmp_path):
    path = tmp_path / "metrics.csv"
    log = MetricsLog(path)
    for step in (1, 2, 3):
        log.log({"step": step, "loss": 1.0 / step})
    with open(path, "a") as handle:
        handle.write("4,0.2")  # a row cut short by a crash
    log = MetricsLog(path, resume_step=2)
    log.log({"step": 3, "loss": 0.5, "eval_accuracy": 0.9})
    rows = read_rows(path)
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["eval_accuracy"] == "" and rows[2]["eval_accuracy"] == "0.9"
    assert float(rows[2]["loss"]) == 0.5
    log.log({"step": 3, "eval_loss": 0.25})  # the same step again: merged into its row
    rows = read_rows(path)
    assert len(rows) == 3 and rows[2]["eval_loss"] == "0.25" and rows[2]["loss"] == "0.5"


def test_config_checks_name_the_field_and_round_trip_flags():
    with pytest.raises(ValueError, match=r"TrainingConfig.schedule='step'"):
        TrainingConfig(schedule="step")
    with pytest.raises(ValueError, match=r"TrainingConfig.grad_accum_steps=0"):
        TrainingConfig(grad_accum_steps=0)
    assert TrainingConfig(warmup=0.25).warmup_steps(100) == 25
    assert TrainingConfig(warmup=30).warmup_steps(100) == 30
    parser = argparse.ArgumentParser()
    TrainingConfig.add_arguments(parser, lr=3e-4)
    args = parser.parse_args(
        [
            "--output-dir",
            "x",
            "--max-steps",
            "7",
            "--no-shuffle",
            "--resume",
            "--max-grad-norm",
            "none",
        ]
    )
    config = TrainingConfig.from_args(args, dataset="digits")
    assert (config.output_dir, config.max_steps, config.shuffle, config.resume) == (
        "x",
        7,
        False,
        True,
    )
    assert (
        config.lr == 3e-4 and config.max_grad_norm is None and config.extra == {"dataset": "digits"}
    )
    assert TrainingConfig.from_dict(config.to_dict()) == config
    assert parser.parse_args(["--resume", "runs/a/checkpoints/step_00000010"]).resume.endswith("10")
    assert math.isclose(parser.parse_args([]).lr, 3e-4)


def test_ctrl_c_saves_at_the_step_boundary_then_raises(tmp_path):
    def press_ctrl_c(trainer, record):
        if record["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # the handler only flags the request

    # the handler from before is restored: Python's default, or SIG_IGN where the suite runs
    # as a background job of a non-interactive shell (which starts with SIGINT ignored)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        make_trainer(tmp_path, epochs=2, callbacks=[press_ctrl_c]).train()
    assert signal.getsignal(signal.SIGINT) is before
    assert read_state(latest_checkpoint(tmp_path / "checkpoints"))["global_step"] == 3


class ToyStream(torch.utils.data.IterableDataset):
    """ToyImages as a stream (no length), in the same order every epoch."""

    def __iter__(self):
        data = ToyImages()
        return (data[i] for i in range(len(data)))


def test_iterable_data_needs_max_steps_and_resumes_exactly(tmp_path):
    with pytest.raises(ValueError, match="max_steps"):
        Trainer(tiny_model(), config_for(tmp_path / "x"), train_dataset=ToyStream())

    def run(out, callbacks=(), **options):
        config = config_for(out, max_steps=12, **options)
        return Trainer(tiny_model(), config, train_dataset=ToyStream(), callbacks=callbacks)

    reference = run(tmp_path / "ref")
    reference.train()
    with pytest.raises(KeyboardInterrupt):  # at epoch 1, batch 2: the stream skips 2 batches
        run(tmp_path / "run", callbacks=[interrupt_at(10)]).train()
    resumed = run(tmp_path / "run", resume=True)
    resumed.train()
    assert resumed.state.global_step == 12 and resumed.state.epoch == 1
    assert max_diff(weights(reference), weights(resumed)) < 1e-6


def test_fused_adamw_is_the_default_where_torch_has_it_and_trains_alike():
    from vilt.training.optim import fused_adamw_supported

    model = tiny_model()
    default = build_optimizer(model, TrainingConfig())
    assert bool(default.defaults.get("fused")) == fused_adamw_supported("cpu")
    foreach = build_optimizer(model, TrainingConfig(fused=False))
    assert foreach.defaults["foreach"] is True and not foreach.defaults.get("fused")

    def train(fused: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        net = tiny_model(dropout=0.0)
        opt = build_optimizer(net, TrainingConfig(fused=fused, weight_decay=0.1))
        for _ in range(3):
            net(
                pixel_values=torch.randn(4, 3, 16, 16), labels=torch.tensor([0, 1, 2, 0])
            ).loss.backward()
            opt.step()
            opt.zero_grad()
        return [p.detach().clone() for p in net.parameters()]

    if fused_adamw_supported("cpu"):
        for a, b in zip(train(True), train(False), strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


# -- mixed precision -------------------------------------------------------------------------------
@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one mixed precision per process (AcceleratorState); a test that needs
    another starts without that state and leaves none behind."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield AcceleratorState._reset_state
    AcceleratorState._reset_state()


def test_mixed_precision_follows_the_launcher_unless_set(
    tmp_path, monkeypatch, fresh_accelerate_state
):
    # what `accelerate launch --mixed_precision bf16` (or an accelerate config) sets
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    trainer = make_trainer(tmp_path / "launcher", max_steps=2)
    assert trainer.config.mixed_precision is None
    assert trainer.train()["mixed_precision"] == "bf16"
    fresh_accelerate_state()
    forced = make_trainer(tmp_path / "forced", max_steps=2, mixed_precision="no")
    assert forced.train()["mixed_precision"] == "no"


def test_bf16_trains_and_resumes_exactly(tmp_path, fresh_accelerate_state):
    options = {"epochs": 2, "mixed_precision": "bf16"}
    seen = []

    def logits_dtype(trainer, record):  # draws nothing from the random state
        model = trainer.model.eval()
        with torch.no_grad(), trainer.accelerator.autocast():
            seen.append(model(pixel_values=torch.ones(1, 3, 16, 16)).logits.dtype)
        model.train()

    reference = make_trainer(tmp_path / "ref", **options, callbacks=[logits_dtype])
    results = reference.train()
    assert results["mixed_precision"] == "bf16" and math.isfinite(results["metrics"]["train_loss"])
    assert set(seen) == {torch.bfloat16}  # the forward runs in bf16
    assert all(v.dtype == torch.float32 for v in weights(reference).values())  # master weights
    with pytest.raises(KeyboardInterrupt):
        make_trainer(tmp_path / "run", **options, callbacks=[interrupt_at(5)]).train()
    resumed = make_trainer(tmp_path / "run", **options, resume=True)
    resumed.train()
    assert max_diff(weights(reference), weights(resumed)) < 1e-6


def test_evaluating_another_data_set_batches_it_as_evaluation_data(tmp_path):
    """trainer.evaluate(dataset) uses the evaluation collator, never the training one (which
    may augment: RandAugment, Mixup)."""
    used = []

    def augmenting(items):  # a training collator that changes the images
        used.append("train")
        batch = torch.utils.data.default_collate(items)
        return {**batch, "pixel_values": batch["pixel_values"] + 10.0}

    def plain(items):
        used.append("eval")
        return torch.utils.data.default_collate(items)

    trainer = Trainer(tiny_model(), config_for(tmp_path), train_dataset=ToyImages(16),
                      collate_fn=augmenting, eval_collate_fn=plain)  # fmt: skip
    found = trainer.evaluate(ToyImages(16, seed=1))
    assert set(used) == {"eval"} and found["eval_samples"] == 16
