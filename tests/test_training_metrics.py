"""Evaluation metrics on hand-made outputs, the evaluation loop's batch conventions, and a
vision-and-language model through the Trainer (its partial losses logged)."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from torch import nn

import vilt
from vilt.training import (
    Trainer,
    TrainingConfig,
    accuracy,
    evaluate,
    itm_accuracy,
    metrics_for,
    mlm_accuracy,
    rank_accuracy,
    split_batch,
    top_k_accuracy,
    vqa_accuracy,
)


def value(rows: torch.Tensor) -> float:
    return (rows[:, 0].sum() / rows[:, 1].sum()).item()


LOGITS = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.05], [0.2, 0.3, 0.5], [0.3, 0.2, 0.1]])


def test_accuracy_and_top_k():
    out = SimpleNamespace(logits=LOGITS)
    batch = {"labels": torch.tensor([1, 1, 2, 2])}
    assert accuracy(out, batch, {}).tolist() == [[1, 1], [0, 1], [1, 1], [0, 1]]
    assert value(top_k_accuracy(2)(out, batch, {})) == 0.75  # sample 3's label ranks last
    assert value(top_k_accuracy(5)(out, batch, {})) == 1.0  # k beyond the classes: all


def test_itm_and_mlm_accuracy():
    itm = SimpleNamespace(itm_logits=torch.tensor([[2.0, 1.0], [0.0, 1.0], [0.0, 3.0]]))
    assert value(itm_accuracy(itm, {"itm_labels": torch.tensor([0, 1, 0])}, {})) == pytest.approx(
        2 / 3
    )
    logits = torch.zeros(2, 4, 5)
    logits[0, 1, 3] = logits[0, 2, 4] = logits[1, 0, 2] = 1.0
    labels = torch.tensor([[-100, 3, 0, -100], [2, -100, -100, -100]])
    rows = mlm_accuracy(SimpleNamespace(logits=logits), {"labels": labels}, {})
    assert rows.tolist() == [[1, 2], [1, 1]]  # per sample: correct, masked tokens
    assert value(rows) == pytest.approx(2 / 3)  # over tokens, not samples


def test_vqa_accuracy_official_with_answers_and_soft_scores_without():
    id2label = {0: "yes", 1: "no", 2: "2"}
    out = SimpleNamespace(logits=torch.tensor([[3.0, 0, 0], [0, 0, 3.0], [3.0, 0, 0]]))
    answers = [
        ["yes"] * 3 + ["no"] * 7,  # 3 of 10 humans: every leave-one-out subset scores >= 2/3
        ["two"] * 2 + ["3"] * 8,  # "two" normalises to "2": 2 matches
        [],  # no human answers (a test split): not scored
    ]
    rows = vqa_accuracy(id2label)(out, {}, {"answers": answers})
    assert rows[:, 1].tolist() == [1.0, 1.0, 0.0]
    assert rows[0, 0].item() == pytest.approx((7 * 1.0 + 3 * 2 / 3) / 10)
    assert rows[1, 0].item() == pytest.approx((8 * 2 / 3 + 2 * 1 / 3) / 10)
    soft = torch.tensor([[0.3, 1.0, 0.0], [0.0, 0.0, 0.6], [0.0, 1.0, 0.0]])
    rows = vqa_accuracy()(out, {"labels": soft}, {})
    assert rows[:, 0].tolist() == pytest.approx([0.3, 0.6, 0.0])
    assert value(vqa_accuracy(["yes", "no", "2"])(out, {}, {"answers": [["yes"]] * 3})) == (
        pytest.approx(2 / 3)
    )


def test_vqa_accuracy_of_one_answer_type_averages_its_questions_only():
    id2label = {0: "yes", 1: "no", 2: "2"}
    out = SimpleNamespace(logits=torch.tensor([[3.0, 0, 0], [0, 0, 3.0], [0, 3.0, 0]]))
    meta = {
        "answers": [["yes"] * 10, ["2"] * 10, ["yes"] * 10],
        "answer_type": ["yes/no", "number", "yes/no"],
    }
    assert value(vqa_accuracy(id2label)(out, {}, meta)) == pytest.approx(2 / 3)  # unchanged
    assert value(vqa_accuracy(id2label, answer_type="yes/no")(out, {}, meta)) == 0.5
    assert value(vqa_accuracy(id2label, answer_type="number")(out, {}, meta)) == 1.0
    rows = vqa_accuracy(id2label, answer_type="other")(out, {}, meta)
    assert rows[:, 1].sum() == 0  # no question of the type: nothing to report
    soft = torch.tensor([[1.0, 0, 0], [0, 0, 0.6], [1.0, 0, 0]])
    by_soft = vqa_accuracy(answer_type="yes/no")(out, {"labels": soft}, meta)
    assert by_soft.tolist() == [[1.0, 1.0], [0.0, 0.0], [0.0, 1.0]]


def test_rank_accuracy_asks_whether_the_match_scores_highest_in_its_group():
    out = SimpleNamespace(scores=torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]]))
    rows = rank_accuracy(out, {"labels": torch.tensor([0, 0])}, {})
    assert rows.tolist() == [[1.0, 1.0], [0.0, 1.0]]
    cfg = vilt.ViltConfig.from_preset("vilt-test")
    assert set(metrics_for(vilt.ViltForImageTextRetrieval(cfg))) == {"rank_accuracy"}


def test_metrics_for_each_model_class():
    vit = vilt.ViTConfig.from_preset("vit-test")
    assert set(metrics_for(vilt.ViTForImageClassification(vit.replace(num_labels=3)))) == {
        "accuracy"
    }
    assert set(metrics_for(vilt.ViTForImageClassification(vit.replace(num_labels=10)))) == {
        "accuracy",
        "top5_accuracy",
    }
    cfg = vilt.ViltConfig.from_preset("vilt-test")
    assert set(metrics_for(vilt.ViltForPreTraining(cfg))) == {"itm_accuracy", "mlm_accuracy"}
    assert set(metrics_for(vilt.ViltForQuestionAnswering(cfg))) == {"vqa_accuracy"}
    assert set(metrics_for(vilt.ViltForImageTextMatching(cfg))) == {"itm_accuracy"}
    assert set(metrics_for(vilt.ViltForMaskedLM(cfg))) == {"mlm_accuracy"}
    assert metrics_for(vilt.ViltModel(cfg)) == {}  # a backbone: the loss alone
    assert metrics_for(nn.Linear(2, 2)) == {}


def test_metrics_follow_the_declared_task_not_the_class_name(monkeypatch):
    """A model of any class name gets its task's metrics; a new task registers its own."""
    from vilt.training import metrics as metrics_module

    class MyClassifier(vilt.ViTForImageClassification):  # a subclass: another class name
        pass

    class Captioner(nn.Module):
        task = "captioning"
        config = None

    vit = vilt.ViTConfig.from_preset("vit-test", num_labels=3)
    assert set(metrics_for(MyClassifier(vit))) == {"accuracy"}
    assert metrics_for(Captioner()) == {}
    monkeypatch.setitem(metrics_module.TASK_METRICS, "captioning", lambda c: {"acc": accuracy})
    assert metrics_for(Captioner()) == {"acc": accuracy}
    metrics_module.register_task_metrics("captioning", lambda c: {"top": accuracy})
    assert set(metrics_for(Captioner())) == {"top"}


def test_metrics_for_reads_through_distributed_and_compile_wrappers():
    """accelerate wraps the model (DDP's .module) before an --eval-only job picks metrics."""
    model = vilt.ViltForQuestionAnswering(vilt.ViltConfig.from_preset("vilt-test"))

    class Wrapper(nn.Module):
        def __init__(self, inner, attribute):
            super().__init__()
            setattr(self, attribute, inner)

    assert set(metrics_for(Wrapper(model, "module"))) == {"vqa_accuracy"}
    assert set(metrics_for(Wrapper(Wrapper(model, "_orig_mod"), "module"))) == {"vqa_accuracy"}


def test_split_batch_takes_meta_out():
    batch = {"pixel_values": 1, "meta": {"answers": [["a"]]}, "meta_question_id": [7]}
    inputs, meta = split_batch(batch)
    assert inputs == {"pixel_values": 1}
    assert meta == {"answers": [["a"]], "question_id": [7]}
    assert "meta" in batch  # the caller's batch is left as it was


class Stub(nn.Module):
    """Logits copied from the batch; a forward that rejects anything but its inputs."""

    def forward(self, scores: torch.Tensor, labels: torch.Tensor) -> SimpleNamespace:
        loss = nn.functional.cross_entropy(scores, labels)
        return SimpleNamespace(loss=loss, logits=scores)


def test_evaluate_hands_meta_to_metrics_and_skips_empty_batches():
    seen = []

    def records_meta(output, batch, meta):
        seen.append(meta)
        return accuracy(output, batch, meta)

    batches = [
        {"scores": LOGITS[:2], "labels": torch.tensor([1, 0]), "meta_id": [0, 1]},
        None,  # every item skipped by the collator
        {"scores": LOGITS[2:], "labels": torch.tensor([0, 0]), "meta": {"id": [2, 3]}},
    ]
    model = Stub().train()
    out = evaluate(Accelerator(cpu=True), model, batches, {"accuracy": records_meta})
    assert out["eval_samples"] == 4 and out["eval_accuracy"] == 0.75
    expected = (
        nn.functional.cross_entropy(LOGITS[:2], torch.tensor([1, 0])) * 2
        + nn.functional.cross_entropy(LOGITS[2:], torch.tensor([0, 0])) * 2
    ) / 4
    assert out["eval_loss"] == pytest.approx(expected.item())
    assert seen == [{"id": [0, 1]}, {"id": [2, 3]}]
    assert model.training  # put back as it was


def test_evaluate_counts_every_row_a_collator_makes_of_an_item():
    # a collator may make several rows of one item (retrieval's ITM pairs: 1 + k per item);
    # the last batch keeps all its rows, not as many as the data set has items left over
    def pairs(items):
        rows = [row for item in items for row in item]
        return {
            "scores": torch.stack([r[0] for r in rows]),
            "labels": torch.stack([r[1] for r in rows]),
        }

    items = [
        [(LOGITS[i % 4], torch.tensor(1)), (LOGITS[(i + 1) % 4], torch.tensor(0))] for i in range(3)
    ]
    accelerator = Accelerator(cpu=True)
    loader = accelerator.prepare(torch.utils.data.DataLoader(items, batch_size=2, collate_fn=pairs))
    out = evaluate(accelerator, Stub(), loader, {"accuracy": accuracy})
    assert out["eval_samples"] == 6
    rows = pairs(items)
    expected = (rows["scores"].argmax(-1) == rows["labels"]).double().mean().item()
    assert out["eval_accuracy"] == pytest.approx(expected)


class ToyPairs(torch.utils.data.Dataset):
    """Random tokens and images with ITM and MLM labels (vilt-test sizes)."""

    def __init__(self, n: int = 24) -> None:
        gen = torch.Generator().manual_seed(0)
        self.ids = torch.randint(5, 100, (n, 6), generator=gen)
        self.images = torch.randn(n, 3, 32, 32, generator=gen)
        self.itm = torch.randint(0, 2, (n,), generator=gen)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        mlm = torch.full((6,), -100)
        mlm[2] = self.ids[i, 2]
        return {
            "input_ids": self.ids[i],
            "attention_mask": torch.ones(6, dtype=torch.long),
            "pixel_values": self.images[i],
            "itm_labels": self.itm[i],
            "mlm_labels": mlm,
            "meta_index": i,
        }


def test_pretraining_model_trains_with_its_metrics_and_partial_losses(tmp_path):
    torch.manual_seed(0)
    model = vilt.ViltForPreTraining(vilt.ViltConfig.from_preset("vilt-test"))
    config = TrainingConfig(
        output_dir=str(tmp_path), max_steps=6, batch_size=6, log_every=3, tensorboard=False
    )
    trainer = Trainer(model, config, train_dataset=ToyPairs(), eval_dataset=ToyPairs(10))
    results = trainer.train()
    metrics = results["metrics"]
    assert metrics["eval_samples"] == 10
    assert {"eval_itm_accuracy", "eval_mlm_accuracy", "eval_itm_loss", "eval_mlm_loss"} <= set(
        metrics
    )
    with open(tmp_path / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["step"] for r in rows] == ["3", "6"]
    assert float(rows[0]["itm_loss"]) > 0 and float(rows[0]["mlm_loss"]) > 0
    assert rows[1]["eval_itm_accuracy"] != ""
    # an evaluator adds figures that are no per-sample rows to each evaluation
    calls = []

    def evaluator(trainer):
        calls.append(trainer.state.global_step)
        return {"eval_recall": 0.25 * trainer.state.global_step}

    out = tmp_path / "more"
    trainer = Trainer(
        model, config.replace(output_dir=str(out), eval_every=2, max_steps=4),
        train_dataset=ToyPairs(), eval_dataset=ToyPairs(10), evaluators=[evaluator],
    )  # fmt: skip
    assert trainer.train()["metrics"]["eval_recall"] == 1.0 and calls == [2, 4]
    with open(out / "metrics.csv", newline="") as handle:
        logged = {r["step"]: r["eval_recall"] for r in csv.DictReader(handle)}
    assert logged == {"2": "0.5", "3": "", "4": "1"}
    assert vilt.ViltForPreTraining.from_pretrained(tmp_path).num_parameters() == (
        model.num_parameters()
    )
