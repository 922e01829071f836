"""What a run keeps besides its last weights: the moving average (EMA: its update, its
evaluation beside the model, its files, its exact resumption) and the best model by a
metric with early stopping (the copy, the record in results.json, resumption)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from test_training import interrupt_at, make_trainer, tiny_model

import vilt
from vilt.training import BestModel, ModelEma, TrainingConfig, latest_checkpoint
from vilt.training.best import resolve_metric


def test_ema_update_is_a_lerp_toward_the_weights_with_a_warmup():
    model = tiny_model()
    ema = ModelEma(model, 0.99)
    start = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model, step=1)  # warmup: min(0.99, 2 / 11)
    d = 2 / 11
    for name, value in model.state_dict().items():
        torch.testing.assert_close(ema.state_dict()[name], d * start[name] + (1 - d) * value)
    assert ema.decay_at(1000) == 0.99 and ModelEma(model, 0.5, warmup=False).decay_at(1) == 0.5
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        ModelEma(model, 1.0)


def test_ema_is_evaluated_beside_the_model_and_saved_in_ema(tmp_path):
    trainer = make_trainer(tmp_path, epochs=1, eval_n=16, eval_every=4, ema_decay=0.9)
    results = trainer.train()
    metrics = results["metrics"]
    assert {"ema_eval_loss", "ema_eval_accuracy"} <= metrics.keys()
    assert "ema_eval_samples" not in metrics
    assert metrics["ema_eval_loss"] != metrics["eval_loss"]
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "ema_eval_accuracy" in header
    saved = vilt.ViTForImageClassification.from_pretrained(tmp_path / "ema")
    averaged = trainer.kept.ema.state_dict()
    assert all(torch.equal(v, averaged[k]) for k, v in saved.state_dict().items())
    # the averaged model scores as the trainer reported
    again = trainer.evaluate()
    assert again["ema_eval_loss"] == pytest.approx(metrics["ema_eval_loss"])
    checkpoint = latest_checkpoint(tmp_path / "checkpoints")
    stored = load_file(str(checkpoint / "ema.safetensors"))
    assert all(torch.equal(stored[k], v.cpu()) for k, v in averaged.items())


def test_ema_after_an_interrupted_and_resumed_run_is_bit_equal(tmp_path):
    options = {"epochs": 3, "ema_decay": 0.95}
    reference = make_trainer(tmp_path / "ref", **options)
    reference.train()
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        make_trainer(run, **options, callbacks=[interrupt_at(5)]).train()
    resumed = make_trainer(run, **options, resume=True)
    assert resumed.train()["resumed_from"].endswith("step_00000005")
    ours, theirs = resumed.kept.ema.state_dict(), reference.kept.ema.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    ref_file = load_file(str(tmp_path / "ref" / "ema" / "model.safetensors"))
    run_file = load_file(str(run / "ema" / "model.safetensors"))
    assert all(torch.equal(ref_file[k], run_file[k]) for k in ref_file)


def test_resuming_without_a_saved_ema_starts_it_from_the_weights(tmp_path, caplog):
    make_trainer(tmp_path, max_steps=3).train()
    at_3 = load_file(str(latest_checkpoint(tmp_path / "checkpoints") / "model.safetensors"))
    resumed = make_trainer(tmp_path, max_steps=5, ema_decay=0.9, resume=True)
    assert not torch.equal(resumed.kept.ema.state_dict()["classifier.weight"], at_3[
        "classifier.weight"])  # fmt: skip
    resumed._resume(latest_checkpoint(tmp_path / "checkpoints"))
    assert "holds no EMA" in caplog.text
    assert all(torch.equal(resumed.kept.ema.state_dict()[k], v) for k, v in at_3.items())


def snapshots():
    """A callback keeping the weights at every step, and the dict it fills."""
    kept: dict[int, dict[str, torch.Tensor]] = {}

    def callback(trainer, record):
        state = trainer.unwrapped_model.state_dict()
        kept[record["step"]] = {k: v.detach().clone() for k, v in state.items()}

    return callback, kept


def test_the_best_model_is_kept_with_its_metric_and_step(tmp_path):
    callback, at_step = snapshots()
    options = dict(epochs=2, eval_n=24, eval_every=2, save_best="loss", callbacks=[callback])
    results = make_trainer(tmp_path, lr=1e-2, **options).train()
    best = results["best"]
    assert best["metric"] == "eval_loss" and best["mode"] == "min" and best["path"] == "best"
    rows = [r.split(",") for r in (tmp_path / "metrics.csv").read_text().splitlines()]
    column = rows[0].index("eval_loss")
    losses = {int(r[0]): float(r[column]) for r in rows[1:] if r[column]}
    assert best["step"] == min(losses, key=losses.get)  # the best evaluated step
    assert best["value"] == pytest.approx(losses[best["step"]], rel=1e-5)
    assert best["step"] < results["steps"]  # lr 1e-2 overshoots later: not the last step
    record = json.loads((tmp_path / "best" / "best.json").read_text())
    assert record == {**record, "metric": "eval_loss", "step": best["step"], "weights": "model"}
    saved = load_file(str(tmp_path / "best" / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in at_step[best["step"]].items())
    assert "early_stopping" not in results


def test_early_stopping_stops_after_patience_evaluations_without_progress(tmp_path):
    # lr 1e-30: the weights never change, so no evaluation after the first improves on it
    options = dict(epochs=3, eval_n=16, eval_every=2, lr=1e-30, save_best="accuracy")
    results = make_trainer(tmp_path, **options, early_stop_patience=2).train()
    assert results["steps"] == 6  # evaluations at steps 2, 4, 6: best at 2, two without
    assert results["best"]["step"] == 2
    assert results["early_stopping"] == {"patience": 2, "stopped": True, "step": 6}
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["early_stopping"]["stopped"] and saved["best"]["metric"] == "eval_accuracy"
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[-1].startswith("6,")  # nothing trained after the stop


def test_best_and_patience_survive_a_resume(tmp_path):
    # eval losses at steps 2, 4, ...: the best at 4, then three worse ones: a stop at 10
    options = dict(epochs=2, eval_n=24, eval_every=2, lr=1e-2, save_best="loss")
    options.update(early_stop_patience=3)
    reference = make_trainer(tmp_path / "ref", **options).train()
    assert reference["best"]["step"] == 4 and reference["early_stopping"]["step"] == 10
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        make_trainer(run, **options, callbacks=[interrupt_at(7)]).train()
    resumed = make_trainer(run, **options, resume=True).train()
    assert resumed["resumed_from"].endswith("step_00000007")
    assert resumed["best"] == reference["best"]
    assert resumed["early_stopping"] == reference["early_stopping"]
    assert resumed["steps"] == reference["steps"] == 10


def test_best_metric_names_and_their_errors(tmp_path):
    known = ["eval_loss", "eval_accuracy", "ema_eval_loss", "ema_eval_accuracy"]
    assert resolve_metric("accuracy", known) == "eval_accuracy"
    assert resolve_metric("eval_accuracy", known) == "eval_accuracy"
    assert resolve_metric("ema_accuracy", known) == "ema_eval_accuracy"
    assert resolve_metric("itm_loss", known) == "eval_itm_loss"  # loss parts: known once run
    with pytest.raises(ValueError, match="known: accuracy, loss"):
        resolve_metric("f1", known)
    with pytest.raises(ValueError, match="needs ema_decay"):
        make_trainer(tmp_path, eval_n=8, save_best="ema_accuracy")
    with pytest.raises(ValueError, match="set save_best too"):
        TrainingConfig(early_stop_patience=3, eval_every=5)
    with pytest.raises(ValueError, match="set eval_every too"):
        TrainingConfig(early_stop_patience=3, save_best="accuracy")
    assert TrainingConfig(save_best="loss").best_mode == "min"
    assert TrainingConfig(save_best="accuracy").best_mode == "max"
    assert TrainingConfig(save_best="accuracy", save_best_mode="min").best_mode == "min"
    with pytest.raises(ValueError, match="save_best_mode"):
        TrainingConfig(save_best="accuracy", save_best_mode="best")
    best = BestModel("eval_accuracy", "max", tmp_path)
    assert best.update({"eval_accuracy": 0.5}, 1) and not best.update({"eval_accuracy": 0.5}, 2)
    assert not best.update({"eval_accuracy": float("nan")}, 3) and best.evals_since == 2
