"""Collators: dynamic padding, pixel masks, VQA targets and meta, ITM negatives, MLM
labels; DataLoader workers and the decoded-image cache."""

import json

import pytest
import torch
from PIL import Image

from vilt.data import PretrainingCollator, VQACollator, load_pairs, load_vqa
from vilt.processing import ImageProcessor, ViltProcessor, train_tokenizer

# ---- the real processor, small ------------------------------------------------------------------

_TEXTS = [
    "is it red?", "is there a rather elongated rectangle here?", "why ?", "ok?",
    "picture number 0 1 2 3 4 5 6 7 variant", "a? b? c? d? e?",
]  # fmt: skip


def _processor(max_length=40, **image_options):
    tokenizer = train_tokenizer(_TEXTS * 5, vocab_size=120)
    image_options = image_options or {"do_resize": False}  # keep sizes: masks are checkable
    return ViltProcessor(ImageProcessor(**image_options), tokenizer, max_length=max_length)


# ---- fixtures ------------------------------------------------------------------------------


def _vqav2(root, questions):
    (root / "val2014").mkdir(parents=True)
    for i, size in ((1, (20, 12)), (2, (14, 18))):
        Image.new("RGB", size, (i * 90, 10, 10)).save(
            root / "val2014" / f"COCO_val2014_{i:012d}.jpg"
        )
    qs = [
        {"image_id": img, "question": q, "question_id": n} for n, (img, q) in enumerate(questions)
    ]
    (root / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(
        json.dumps({"data_subtype": "val2014", "questions": qs})
    )
    anns = [
        {"question_id": n, "answers": [{"answer": a} for a in ["yes"] * 6 + ["no"] * 4]}
        for n in range(len(qs))
    ]
    (root / "v2_mscoco_val2014_annotations.json").write_text(json.dumps({"annotations": anns}))


def _pairs(root, n_images=4, captions=2):
    (root / "imgs").mkdir(parents=True)
    lines = []
    for i in range(n_images):
        Image.new("RGB", (8 + i, 8), (i * 50, 0, 0)).save(root / "imgs" / f"{i}.png")
        lines += [
            json.dumps({"image": f"imgs/{i}.png", "caption": f"picture number {i} variant {c}"})
            for c in range(captions)
        ]
    (root / "pairs.jsonl").write_text("\n".join(lines))
    return root / "pairs.jsonl"


# ---- VQA -------------------------------------------------------------------------------------


def test_vqa_collator_pads_text_and_images(tmp_path):
    _vqav2(
        tmp_path, [(1, "is it red?"), (2, "is there a rather elongated rectangle here?"), (1, "")]
    )
    proc = _processor()
    ds = load_vqa(
        tmp_path, split="val2014", transform=proc.image_processor.preprocess_one, skip_bad=True
    )
    assert len(ds) == 2  # the empty question was skipped while loading
    batch = VQACollator(proc)([ds[0], None, ds[1]])  # a None item (skipped in a worker) drops
    assert set(batch) == {
        "input_ids",
        "attention_mask",
        "token_type_ids",
        "pixel_values",
        "pixel_mask",
        "labels",
        "meta",
    }
    assert batch["input_ids"].shape[0] == 2
    assert (
        batch["attention_mask"][1].all() and not batch["attention_mask"][0].all()
    )  # padded to the longest
    assert batch["pixel_values"].shape == (2, 3, 18, 20)
    assert batch["pixel_mask"][0].sum() == 12 * 20 and batch["pixel_mask"][1].sum() == 18 * 14
    assert batch["labels"].dtype == torch.float32 and batch["labels"].shape == (2, len(ds.vocab))
    assert batch["meta"]["question_id"] == [0, 1] and batch["meta"]["image_id"] == [1, 2]
    assert ds.skips.counts() == {"empty_text": 1}
    assert VQACollator(proc)([None, None]) is None


def test_long_question_truncated_to_max_length(tmp_path):
    _vqav2(tmp_path, [(1, "why " * 100 + "?"), (2, "ok?")])
    proc = _processor(max_length=12)
    ds = load_vqa(tmp_path, split="val2014", transform=proc.image_processor.preprocess_one)
    batch = VQACollator(proc)([ds[0], ds[1]])
    assert batch["input_ids"].shape == (2, 12)
    assert batch["input_ids"][0, -1] == proc.tokenizer.sep_token_id


def test_dataloader_workers_and_image_cache(tmp_path):
    _vqav2(tmp_path, [(1, "a?"), (1, "b?"), (2, "c?"), (2, "d?"), (1, "e?")])
    proc = _processor()
    calls = []

    def counting(image):
        calls.append(image.size)
        return proc.image_processor.preprocess_one(image)

    ds = load_vqa(tmp_path, split="val2014", transform=counting, cache_images=True)
    assert len(calls) == 2  # two distinct images, decoded once, up front
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=VQACollator(proc))
    for _ in range(2):
        assert sum(b["labels"].shape[0] for b in loader) == 5
    assert len(calls) == 2  # and never again, epoch after epoch
    plain = load_vqa(tmp_path, split="val2014", transform=proc.image_processor.preprocess_one)
    loader = torch.utils.data.DataLoader(
        plain, batch_size=2, num_workers=2, collate_fn=VQACollator(proc)
    )
    ids = sorted(q for b in loader for q in b["meta"]["question_id"])
    assert ids == [0, 1, 2, 3, 4]


# ---- pretraining: ITM negatives and MLM ---------------------------------------------------------


def test_itm_negatives_never_the_same_image(tmp_path):
    proc = _processor()
    ds = load_pairs(_pairs(tmp_path), transform=proc.image_processor.preprocess_one)
    collate = PretrainingCollator(proc, seed=3)
    items = [ds[i] for i in range(len(ds))]  # 4 images x 2 captions, same-image pairs adjacent
    negatives = total = 0
    for start in range(0, 8, 2):
        for epoch in range(20):
            collate.set_epoch(epoch)
            batch_items = items[start:] + items[:start]
            batch = collate(batch_items)
            for j, label in enumerate(batch["itm_labels"].tolist()):
                own = batch_items[j]["meta"]["image_id"]
                width = batch_items[j]["pixel_values"].shape[-1]
                shown = int(batch["pixel_mask"][j, 0].sum())
                total += 1
                if label == 0:
                    negatives += 1
                    # the swapped-in image is another image: never one with the same id
                    assert shown != width  # widths differ image to image: not its own
                    donors = [it for it in batch_items if it["meta"]["image_id"] != own]
                    assert any(int(it["pixel_values"].shape[-1]) == shown for it in donors)
                    assert (batch["mlm_labels"][j] == -100).all()
                else:
                    assert shown == width
    assert 0.4 < negatives / total < 0.6  # default ratio one half


def test_itm_draws_seeded_per_epoch(tmp_path):
    proc = _processor()
    ds = load_pairs(
        _pairs(tmp_path, n_images=8, captions=1), transform=proc.image_processor.preprocess_one
    )
    items = [ds[i] for i in range(8)]
    a, b = PretrainingCollator(proc, seed=1), PretrainingCollator(proc, seed=1)
    first = a(items)
    assert torch.equal(first["itm_labels"], b(items)["itm_labels"])
    assert torch.equal(first["input_ids"], b(items)["input_ids"])  # same masks too
    labels = {tuple(first["itm_labels"].tolist())}
    for epoch in range(1, 6):
        a.set_epoch(epoch)
        labels.add(tuple(a(items)["itm_labels"].tolist()))
    assert len(labels) > 1  # each epoch draws afresh
    only_one = PretrainingCollator(proc)([items[0], items[0]])  # no other image: stays positive
    assert only_one["itm_labels"].tolist() == [1, 1]


def test_mlm_labels_and_switches(tmp_path):
    proc = _processor()
    ds = load_pairs(
        _pairs(tmp_path, n_images=4, captions=1), transform=proc.image_processor.preprocess_one
    )
    items = [ds[i] for i in range(4)]
    batch = PretrainingCollator(proc, itm_negative_ratio=0.0)(items)
    assert batch["itm_labels"].tolist() == [1, 1, 1, 1]
    labels = batch["mlm_labels"]
    assert labels.shape == batch["input_ids"].shape and labels.dtype == torch.long
    assert ((labels != -100).sum(dim=1) >= 1).all()
    original = PretrainingCollator(proc, mlm=False)(items)
    assert "mlm_labels" not in original
    chosen = labels != -100
    assert torch.equal(labels[chosen], original["input_ids"][chosen])
    assert not chosen[original["input_ids"] <= 4].any()  # special tokens never masked
    itm_off = PretrainingCollator(proc, itm=False)(items)
    assert "itm_labels" not in itm_off and "mlm_labels" in itm_off
    with pytest.raises(ValueError, match="itm_negative_ratio"):
        PretrainingCollator(proc, itm_negative_ratio=1.5)


# ---- the batches feed the models ----------------------------------------------------------------


def test_batches_feed_the_models(tmp_path):
    from functools import partial

    from vilt import ViltConfig, ViltForPreTraining, ViltForQuestionAnswering

    torch.manual_seed(0)
    proc = _processor(max_length=16, size=32, size_divisor=8)
    uint8 = partial(proc.image_processor.preprocess_one, normalize=False)  # pad normalises
    _vqav2(tmp_path / "vqa", [(1, "is it red?"), (2, "why ?"), (1, "ok?")])
    vqa = load_vqa(tmp_path / "vqa", split="val2014", transform=uint8, cache_images=True)
    assert vqa[0]["pixel_values"].dtype == torch.uint8
    batch = VQACollator(proc)([vqa[i] for i in range(3)])
    meta = batch.pop("meta")
    assert meta["question_id"] == [0, 1, 2]
    # 20x12 -> 48x32 and 14x18 -> 32x40 (shorter side 32, multiples of 8), padded to 48x40
    assert batch["pixel_values"].dtype == torch.float32
    assert batch["pixel_values"].shape[-2:] == (40, 48)
    config = ViltConfig.from_preset(
        "vilt-test", vocab_size=proc.tokenizer.vocab_size, num_labels=len(vqa.vocab),
        id2label=vqa.vocab.id2label, max_position_embeddings=16,
    )  # fmt: skip
    assert torch.isfinite(ViltForQuestionAnswering(config)(**batch).loss)
    pairs = load_pairs(_pairs(tmp_path / "pairs"), transform=uint8)
    batch = PretrainingCollator(proc, seed=0)([pairs[i] for i in range(len(pairs))])
    batch.pop("meta")
    out = ViltForPreTraining(config)(**batch)
    assert torch.isfinite(out.loss) and out.mlm_loss is not None


def test_a_batch_with_no_padded_image_leaves_the_mask_out(tmp_path):
    """Without a mask the model takes every pixel as real: the same outputs on its path
    without per-image positions and gathers (it cannot read the mask's values itself)."""
    import vilt

    proc = _processor()
    images = [torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8) for _ in range(3)]
    items = [
        {"text": t, "pixel_values": im} for t, im in zip(["a", "b c", "d"], images, strict=True)
    ]
    batch = VQACollator(proc)(items)
    assert "pixel_mask" not in batch
    masked = dict(batch, pixel_mask=torch.ones(3, 16, 16, dtype=torch.long))
    batch.pop("meta"), masked.pop("meta")
    model = vilt.ViltModel(
        vilt.ViltConfig.from_preset("vilt-test", vocab_size=proc.tokenizer.vocab_size)
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).pooler_output, model(**masked).pooler_output)
    uneven = VQACollator(proc)([*items[:2], {"text": "e", "pixel_values": images[0][:, :8]}])
    assert uneven["pixel_mask"][2].sum() == 8 * 16
