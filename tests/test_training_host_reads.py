"""The training step never reads a tensor on the host: over 20 steps at log_every=10 the
trainer reads the device once at each of the two read points (one stacked transfer) and once
per save at the end (the check that the weights are finite), and nowhere else; with a toy
model, and with vilt's ViT and ViLT pretraining models (whose forwards read nothing either)."""

from __future__ import annotations

import collections
import dataclasses
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import vilt
import vilt.training.loaders
from vilt.training import Trainer, TrainingConfig

READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy")
# the data order of each epoch, drawn on the host from CPU generators (vilt's sampler, torch's
# DataLoader seeding its iterator): host tensors made on the host, never device values
DATA_ORDER = (str(Path(torch.utils.data.__file__).parent), vilt.training.loaders.__file__)
STEPS, LOG_EVERY = 20, 10
READS_PER_READ_POINT = 1  # StepWindow.read: one stacked vector, one .tolist()


@dataclasses.dataclass
class TinyOutput:
    loss: torch.Tensor
    aux_loss: torch.Tensor  # a part of the loss, logged as its own column

    def keys(self) -> list[str]:
        return ["loss", "aux_loss"]


class Tiny(nn.Module):
    """A linear classifier whose output carries a loss and one part."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> TinyOutput:
        logits = self.linear(x)
        aux = logits.pow(2).mean() * 1e-3
        return TinyOutput(loss=nn.functional.cross_entropy(logits, labels) + aux, aux_loss=aux)


class Vectors(torch.utils.data.Dataset):
    def __init__(self, n: int = 64) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 6, generator=gen), torch.randint(0, 3, (n,), generator=gen)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "labels": self.y[i]}


class Images(torch.utils.data.Dataset):
    def __init__(self, n: int = 64) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 16, 16, generator=gen)
        self.y = torch.randint(0, 3, (n,), generator=gen)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def count_host_reads(monkeypatch, trainer: Trainer) -> collections.Counter:
    """Patch the Tensor methods that read a value on the host and count the reads by the step
    in progress: step k from the end of step k-1's callbacks to the end of its own (its
    batches, then its boundary: the read, the row); STEPS + 1 after the last callback (the
    final save and results)."""
    reads: collections.Counter = collections.Counter()
    done = {"step": 0}
    trainer.callbacks.append(lambda trainer, record: done.update(step=record["step"]))

    def counted(method):
        def wrapper(self, *args, **kwargs):
            if not sys._getframe(1).f_code.co_filename.startswith(DATA_ORDER):
                reads[done["step"] + 1] += 1
            return method(self, *args, **kwargs)

        return wrapper

    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, counted(getattr(torch.Tensor, name)))
    return reads


def config(tmp_path: Path, **options) -> TrainingConfig:
    defaults = dict(max_steps=STEPS, batch_size=4, log_every=LOG_EVERY, tensorboard=False)
    return TrainingConfig(output_dir=str(tmp_path), **{**defaults, **options})


def expected(model: nn.Module) -> dict[int, int]:
    """Reads by step in progress: one per read point; after the last step one weights check
    per save (the final checkpoint, and the model where it has save_pretrained)."""
    saves = 1 + hasattr(model, "save_pretrained")
    return {LOG_EVERY: READS_PER_READ_POINT, STEPS: READS_PER_READ_POINT, STEPS + 1: saves}


@pytest.mark.parametrize(
    ("on_nonfinite", "accum"), [("raise", 1), ("skip", 2)], ids=["raise", "skip-accum2"]
)
def test_the_step_reads_the_device_only_at_read_points(tmp_path, monkeypatch, on_nonfinite, accum):
    torch.manual_seed(0)
    options = dict(on_nonfinite=on_nonfinite, grad_accum_steps=accum)
    trainer = Trainer(Tiny(), config(tmp_path, **options), train_dataset=Vectors())
    if on_nonfinite == "skip":
        assert trainer._step.found_inf  # the skip on the device, not the host fallback
    reads = count_host_reads(monkeypatch, trainer)
    results = trainer.train()
    monkeypatch.undo()
    assert results["steps"] == STEPS
    assert dict(reads) == expected(trainer.unwrapped_model)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[:4] == ["step", "epoch", "loss", "lr"] and "aux_loss" in rows[0]
    assert [r.split(",")[0] for r in rows[1:]] == [str(LOG_EVERY), str(STEPS)]


class Pairs(torch.utils.data.Dataset):
    """Random tokens and images with ITM and MLM labels (vilt-test sizes)."""

    def __init__(self, n: int = 64) -> None:
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
        }


def vit() -> tuple[nn.Module, torch.utils.data.Dataset]:
    config = vilt.ViTConfig.from_preset("vit-test", image_size=16, patch_size=8, num_labels=3)
    return vilt.ViTForImageClassification(config), Images()


def vilt_pretraining() -> tuple[nn.Module, torch.utils.data.Dataset]:
    return vilt.ViltForPreTraining(vilt.ViltConfig.from_preset("vilt-test")), Pairs()


@pytest.mark.parametrize("build", [vit, vilt_pretraining], ids=["vit", "vilt-pretraining"])
def test_vilt_models_train_reading_the_device_only_at_read_points(tmp_path, monkeypatch, build):
    torch.manual_seed(0)
    model, data = build()
    trainer = Trainer(model, config(tmp_path), train_dataset=data)
    reads = count_host_reads(monkeypatch, trainer)
    trainer.train()
    monkeypatch.undo()
    assert dict(reads) == expected(trainer.unwrapped_model)


def test_ema_and_layer_decay_add_no_read_to_the_step(tmp_path, monkeypatch):
    """The moving average updates on the device after every step; its one read is the
    weights check when the final average is saved to ema/."""
    torch.manual_seed(0)
    model, data = vit()
    options = dict(ema_decay=0.9, layer_decay=0.75)
    trainer = Trainer(model, config(tmp_path, **options), train_dataset=data)
    reads = count_host_reads(monkeypatch, trainer)
    trainer.train()
    monkeypatch.undo()
    want = expected(trainer.unwrapped_model)
    assert dict(reads) == {**want, STEPS + 1: want[STEPS + 1] + 1}
    assert (tmp_path / "ema" / "model.safetensors").is_file()


def collate_with_hard_candidates(items: list[dict]) -> dict:
    """Pairs batched with every other pair a negative, each with two candidate images: the
    collator's batch keys for hard negatives, made without reading a value."""
    batch = torch.utils.data.default_collate(items)
    n = len(items)
    rows = torch.arange(0, n, 2)
    batch["itm_labels"] = torch.ones(n, dtype=torch.long).index_fill(0, rows, 0)
    batch["itm_hard_rows"] = rows
    batch["itm_hard_candidates"] = torch.stack([(rows + 1) % n, (rows + 3) % n], dim=1)
    return batch


def test_hard_negatives_are_chosen_without_reading_the_device(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model, data = vilt_pretraining()
    trainer = Trainer(
        model,
        config(tmp_path),
        train_dataset=data,
        collate_fn=collate_with_hard_candidates,
        prepare_inputs=vilt.training.HardNegatives(),
    )
    reads = count_host_reads(monkeypatch, trainer)
    trainer.train()
    monkeypatch.undo()
    assert dict(reads) == expected(trainer.unwrapped_model)
