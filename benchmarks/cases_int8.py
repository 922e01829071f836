"""Opt-in int8 inference (vilt.quantization.quantize_int8) against the same model in fp32:
speed of the model on easy-VQA test batches, and easy-VQA test accuracy of each.

Needs a trained VQA model directory (``--vqa-model``, e.g. what recipes/vqa.py writes, with
its processor). Without one, a small ViLT is trained here for a few hundred steps first, so
that accuracy means something; the results record which.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from harness import Case, measure
from tqdm import tqdm
from workloads import answer_vocab, easy_vqa_pairs, tokenizer

import vilt
from vilt.processing import ImageProcessor, ViltProcessor
from vilt.quantization import quantize_int8
from vilt.training import TrainingConfig, build_optimizer


def train_small_vqa(out: Path, *, steps: int, batch_size: int = 32, seed: int = 0) -> Path:
    """A vilt-small VQA model trained briefly on easy-VQA (images and questions), saved with
    its processor in ``out``."""
    vocab = answer_vocab()
    config = vilt.ViltConfig.from_preset(
        "vilt-small", num_labels=len(vocab), id2label=vocab.id2label
    )
    processor = ViltProcessor(
        ImageProcessor.from_config(config), tokenizer(), max_length=config.max_position_embeddings
    )
    pairs = easy_vqa_pairs(8000, split="train", distinct_images=False)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = vilt.ViltForQuestionAnswering(config).train()
    optimizer = build_optimizer(model, TrainingConfig(lr=1e-3, head_lr_multiplier=1.0))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=steps)
    for _ in tqdm(range(steps), desc="training a small VQA model for the int8 case"):
        idx = rng.sample(range(len(pairs.images)), batch_size)
        batch = processor(
            images=[pairs.images[i] for i in idx], text=[pairs.questions[i] for i in idx]
        )
        model(**batch, labels=pairs.labels[idx]).loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _accuracy(model, batches, answers: list[str]) -> float:
    names = model.config.id2label
    predicted = []
    with torch.inference_mode():
        for batch in batches:
            predicted += [names[int(i)] for i in model(**batch).logits.argmax(-1)]
    return sum(p == a for p, a in zip(predicted, answers, strict=True)) / len(answers)


def int8_case(*, repeats: int, model_dir: str | None, questions: int, train_steps: int) -> Case:
    """fp32 vs int8: images/s of the model on preprocessed test batches, and test accuracy."""
    source = model_dir
    if model_dir is None:
        out = Path("runs") / "bench-int8-vqa-small"
        if not (out / "model.safetensors").is_file():
            train_small_vqa(out, steps=train_steps)
        model_dir = str(out)
        source = f"vilt-small trained here for {train_steps} steps ({out})"
    fp32 = vilt.ViltForQuestionAnswering.from_pretrained(model_dir).eval()
    processor = ViltProcessor.from_pretrained(model_dir)
    int8 = quantize_int8(fp32)
    pairs = easy_vqa_pairs(questions, split="test", distinct_images=False)
    size = 32
    batches = [
        dict(processor(images=pairs.images[i : i + size], text=pairs.questions[i : i + size]))
        for i in tqdm(range(0, questions, size), desc="preprocessing easy-VQA test")
    ]
    acc = {"fp32": _accuracy(fp32, batches, pairs.answers)}
    acc["int8"] = _accuracy(int8, batches, pairs.answers)
    timed = batches[:4]

    def run(model):
        def call() -> None:
            with torch.inference_mode():
                for batch in timed:
                    model(**batch)

        return call

    case = Case(
        name="int8 dynamic (opt-in) vs fp32, VQA inference, batch 32",
        unit="pairs",
        items=sum(b["input_ids"].shape[0] for b in timed),
        target="report only (not an fp32 figure)",
        outputs={
            "accuracy_fp32": acc["fp32"],
            "accuracy_int8": acc["int8"],
            "questions": questions,
            "summary": f"easy-VQA test acc {acc['fp32']:.3f} fp32 -> {acc['int8']:.3f} int8",
        },
    )
    seconds, case.spread = measure({"int8": run(int8), "fp32": run(fp32)}, repeats=repeats)
    case.seconds = {"vilt": seconds["int8"], "vilt fp32": seconds["fp32"]}
    case.extra.update(model=source, vilt="int8")
    return case


def int8_b32_speed(*, repeats: int, batch_size: int = 32) -> Case:
    """ViLT-B/32 speed, int8 vs fp32, on one batch of easy-VQA pairs at 384 (random weights:
    the speed of the large model, where int8 matrix products can pay; accuracy is measured on
    the trained small model)."""
    import tempfile

    from workloads import processors

    config = vilt.ViltConfig.from_preset("vilt-b32", num_labels=13)
    torch.manual_seed(0)
    fp32 = vilt.ViltForQuestionAnswering(config).eval()
    int8 = quantize_int8(fp32)
    pairs = easy_vqa_pairs(batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        proc, _ = processors(config, Path(tmp))
    batch = dict(proc(images=pairs.images, text=pairs.questions))

    def run(model):
        def call() -> torch.Tensor:
            with torch.inference_mode():
                return model(**batch).logits

        return call

    diff = (run(fp32)() - run(int8)()).abs().max().item()
    case = Case(
        name="int8 dynamic (opt-in) vs fp32, ViLT-B/32 VQA model, batch 32",
        unit="pairs",
        items=batch_size,
        target="report only (not an fp32 figure)",
        outputs={"max_abs_logit_diff": diff, "summary": f"logits move by {diff:.1e}"},
    )
    seconds, case.spread = measure({"int8": run(int8), "fp32": run(fp32)}, repeats=repeats)
    case.seconds = {"vilt": seconds["int8"], "vilt fp32": seconds["fp32"]}
    case.extra.update(vilt="int8")
    return case
