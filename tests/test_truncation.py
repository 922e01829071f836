"""Truncation is never silent: the processor and the collators count the texts they cut at
max_length (in DataLoader workers too), and the Trainer reports the counts."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import DataLoader

from vilt.data import VQACollator
from vilt.processing import ImageProcessor, ViltProcessor, train_tokenizer
from vilt.processing.truncation import TruncationCounter, describe_truncation, text_lengths
from vilt.training import Trainer, TrainingConfig

TEXTS = ["a red circle", "is there a blue rectangle in the image near the top left corner"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS * 3, vocab_size=80)


def full_length(tokenizer, text: str) -> int:
    return len(tokenizer.tokenize(text)) + 2  # [CLS] and [SEP]


def test_tokenize_never_cuts_after_a_call_that_did(tokenizer):
    """The Rust tokenizer keeps truncation as state: tokenize() once returned the last
    call's cut."""
    whole = tokenizer.tokenize(TEXTS[1])
    tokenizer(TEXTS, max_length=4)
    assert tokenizer.tokenize(TEXTS[1]) == whole and len(whole) > 4


def test_text_lengths_are_the_lengths_before_the_cut(tokenizer):
    enc = tokenizer(TEXTS, max_length=6)
    assert enc["input_ids"].shape[1] == 6
    assert text_lengths(enc) == [full_length(tokenizer, t) for t in TEXTS]
    assert full_length(tokenizer, TEXTS[1]) > 6 >= full_length(tokenizer, TEXTS[0])


def test_the_processor_counts_the_texts_it_cuts(tokenizer):
    processor = ViltProcessor(ImageProcessor(), tokenizer, max_length=6)
    processor(text=TEXTS)
    processor(text=TEXTS[0])
    longest = full_length(tokenizer, TEXTS[1])
    assert processor.truncation.counts() == {
        "texts": 3, "truncated": 1, "longest": longest, "max_length": 6,
    }  # fmt: skip
    processor(text=TEXTS, truncation=False)  # nothing cut: nothing counted
    assert processor.truncation.counts()["texts"] == 3
    line = describe_truncation(processor.truncation.counts())
    assert line == f"1 of 3 texts (33.33%) cut at 6 tokens, the longest had {longest}"


class Questions(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> dict:
        return {
            "text": TEXTS[i % 2],
            "pixel_values": torch.zeros(3, 8, 8, dtype=torch.uint8),
            "labels": torch.zeros(2),
            "meta": {"index": i},
        }


def test_collators_count_in_dataloader_workers(tokenizer):
    processor = ViltProcessor(ImageProcessor(do_resize=False), tokenizer, max_length=6)
    collate = VQACollator(processor)
    loader = DataLoader(Questions(), batch_size=3, num_workers=2, collate_fn=collate)
    assert sum(len(b["input_ids"]) for b in loader) == 10
    counts = collate.truncation.counts()
    assert (counts["texts"], counts["truncated"]) == (10, 5)  # the counts of both workers
    # the reduction across processes: sums and maxima
    twice = collate.truncation.counts(lambda t, op: t * 2 if op == "sum" else t)
    assert (twice["texts"], twice["truncated"], twice["max_length"]) == (20, 10, 6)


def test_a_counter_without_encodings_counts_full_texts_as_cut():
    counter = TruncationCounter()
    counter.add({"attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])}, 4)
    assert counter.counts() == {"texts": 2, "truncated": 1, "longest": 4, "max_length": 4}


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(1, 1)

    def forward(self, input_ids, labels, **_):
        return {"loss": self.linear(input_ids.float().mean(1, keepdim=True)).mean() * 0}


def test_the_trainer_reports_the_counts_in_results_and_one_line(tokenizer, tmp_path, capsys):
    processor = ViltProcessor(ImageProcessor(do_resize=False), tokenizer, max_length=6)

    class Output(dict):
        def __getattr__(self, name):
            return self.get(name)

    class Model(Tiny):
        def forward(self, **inputs):
            return Output(super().forward(**inputs))

    config = TrainingConfig(output_dir=str(tmp_path), max_steps=2, batch_size=5, tensorboard=False)
    collate = VQACollator(processor)
    trainer = Trainer(Model(), config, train_dataset=Questions(), collate_fn=collate)
    results = trainer.train()
    assert results["text_truncation"] == {"train": collate.truncation.counts()}
    assert results["text_truncation"]["train"]["truncated"] == 5
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["text_truncation"]["train"]["texts"] == 10
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("text truncation")]
    assert lines == ["text truncation: train 5 of 10 texts (50.00%) cut at 6 tokens, the "
                     f"longest had {full_length(tokenizer, TEXTS[1])}"]  # fmt: skip
