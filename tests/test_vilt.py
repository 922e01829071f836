"""ViLT: the joint sequence, padding and batch invariance, patch sampling, every head."""

import pytest
import torch

import vilt


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny(**kw) -> vilt.ViltConfig:
    return vilt.ViltConfig.from_preset("vilt-test", **{"num_labels": 5, **kw})


def inputs(b=3, t=7, h=32, w=48):
    ids = torch.randint(1, 100, (b, t))
    mask = torch.ones(b, t, dtype=torch.long)
    return dict(input_ids=ids, attention_mask=mask, pixel_values=torch.randn(b, 3, h, w))


def test_sequence_layout_and_shapes():
    model = vilt.ViltModel(tiny()).eval()
    out = model(**inputs())
    # 7 text tokens + image class token + 4x6 patches
    assert out.last_hidden_state.shape == (3, 7 + 1 + 24, 32)
    assert out.pooler_output.shape == (3, 32)
    assert out.text_length == 7 and out.grid_size == (4, 6)
    assert out.patch_index[0, 0] == -1 and out.patch_index[0, 1:].tolist() == list(range(24))


def test_text_padding_does_not_change_real_tokens():
    model = vilt.ViltForQuestionAnswering(tiny()).eval()
    x = inputs(b=1, t=5)
    padded = dict(x)
    padded["input_ids"] = torch.cat([x["input_ids"], torch.zeros(1, 4, dtype=torch.long)], 1)
    padded["attention_mask"] = torch.cat(
        [x["attention_mask"], torch.zeros(1, 4, dtype=torch.long)], 1
    )
    a, b = model(**x), model(**padded)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        a.last_hidden_state[:, :5], b.last_hidden_state[:, :5], atol=1e-5, rtol=1e-5
    )


def test_image_padding_equals_the_image_alone():
    model = vilt.ViltForQuestionAnswering(tiny()).eval()
    x = inputs(b=1, h=24, w=40)
    canvas = torch.full((1, 3, 48, 64), 7.0)
    canvas[:, :, :24, :40] = x["pixel_values"]
    pm = torch.zeros(1, 48, 64, dtype=torch.long)
    pm[:, :24, :40] = 1
    alone = model(**x)
    padded = model(**{**x, "pixel_values": canvas, "pixel_mask": pm})
    torch.testing.assert_close(alone.logits, padded.logits, atol=1e-5, rtol=1e-5)


def test_a_pair_gives_the_same_result_whatever_its_batch():
    model = vilt.ViltForImageTextMatching(tiny()).eval()
    ids = torch.randint(1, 100, (3, 6))
    am = torch.ones(3, 6, dtype=torch.long)
    am[1, 3:] = 0
    pv = torch.randn(3, 3, 48, 48)
    pm = torch.ones(3, 48, 48, dtype=torch.long)
    pm[0, 32:, :] = 0
    pm[2, :, 16:] = 0
    batch = model(input_ids=ids, attention_mask=am, pixel_values=pv, pixel_mask=pm).scores
    for i, (h, w) in enumerate([(32, 48), (48, 48), (48, 16)]):
        n = int(am[i].sum())
        one = model(input_ids=ids[i : i + 1, :n], pixel_values=pv[i : i + 1, :, :h, :w]).scores
        torch.testing.assert_close(batch[i : i + 1], one, atol=1e-5, rtol=1e-5)


def test_positions_interpolate_to_non_square_grids():
    model = vilt.ViltModel(tiny()).eval()
    out = model(**inputs(h=16, w=64))
    assert out.grid_size == (2, 8) and out.last_hidden_state.shape[1] == 7 + 1 + 16


def test_patch_sampling_only_in_training_seeded_and_bounded():
    model = vilt.ViltModel(tiny(max_image_length=10))
    x = inputs(b=2)
    model.eval()
    assert model(**x).last_hidden_state.shape[1] == 7 + 1 + 24  # every patch at eval
    model.train()
    torch.manual_seed(3)
    a = model(**x).patch_index
    torch.manual_seed(3)
    b = model(**x).patch_index
    assert a.shape == (2, 11) and torch.equal(a, b)
    assert len(set(a[0, 1:].tolist())) == 10  # distinct patches


def test_sampling_never_picks_padding_when_enough_real_patches():
    model = vilt.ViltModel(tiny(max_image_length=6)).train()
    x = inputs(b=1)
    pm = torch.zeros(1, 32, 48, dtype=torch.long)
    pm[:, :16, :24] = 1  # 2x3 valid patches in a 4x6 grid
    torch.manual_seed(0)
    out = model(**x, pixel_mask=pm)
    rows, cols = out.patch_index[0, 1:] // 6, out.patch_index[0, 1:] % 6
    assert bool((rows < 2).all() and (cols < 3).all())


def test_heads_shapes_and_losses():
    config = tiny()
    x = inputs()
    qa = vilt.ViltForQuestionAnswering(config)(**x, labels=torch.rand(3, 5))
    assert qa.logits.shape == (3, 5) and qa.loss.ndim == 0
    itm = vilt.ViltForImageTextMatching(config)(**x, labels=torch.tensor([1, 0, 1]))
    assert itm.logits.shape == (3, 2)
    torch.testing.assert_close(itm.scores, itm.logits[:, 1] - itm.logits[:, 0])
    labels = torch.full((3, 7), -100)
    labels[:, 2] = 4
    mlm = vilt.ViltForMaskedLM(config)(**x, labels=labels)
    assert mlm.logits.shape == (3, 7, 100) and mlm.loss > 0
    pt = vilt.ViltForPreTraining(config)(**x, itm_labels=torch.tensor([1, 0, 1]), mlm_labels=labels)
    torch.testing.assert_close(pt.loss, pt.itm_loss + pt.mlm_loss)


def test_vqa_loss_is_bce_scaled_by_num_labels():
    model = vilt.ViltForQuestionAnswering(tiny()).eval()
    x, y = inputs(), torch.rand(3, 5)
    out = model(**x, labels=y)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, y) * 5
    torch.testing.assert_close(out.loss, expected)


def test_pretraining_mlm_loss_ignores_mismatched_pairs():
    model = vilt.ViltForPreTraining(tiny()).eval()
    x = inputs()
    labels = torch.randint(0, 100, (3, 7))
    out = model(**x, itm_labels=torch.tensor([1, 0, 0]), mlm_labels=labels)
    only_first = labels.clone()
    only_first[1:] = -100
    ref = torch.nn.functional.cross_entropy(out.mlm_logits.reshape(-1, 100), only_first.reshape(-1))
    torch.testing.assert_close(out.mlm_loss, ref)


def test_mlm_decoder_shares_the_word_embeddings():
    model = vilt.ViltForMaskedLM(tiny())
    emb = model.vilt.embeddings.text.word_embeddings.weight
    assert not any(p is emb for n, p in model.mlm_head.named_parameters())
    with torch.no_grad():
        emb[5] += 1.0
    x = inputs()
    model.eval()
    assert model(**x).logits.shape[-1] == 100


def test_nlvr2_equals_each_image_paired_separately():
    config = tiny(num_images=2, modality_type_vocab_size=3, num_labels=2)
    model = vilt.ViltForImagesAndTextClassification(config).eval()
    x = inputs(b=2)
    images = torch.randn(2, 2, 3, 32, 48)
    out = model(input_ids=x["input_ids"], pixel_values=images, labels=torch.tensor([0, 1]))
    pooled = [
        model.vilt(
            input_ids=x["input_ids"], pixel_values=images[:, i], image_token_type_idx=i + 1
        ).pooler_output
        for i in range(2)
    ]
    torch.testing.assert_close(
        out.logits, model.classifier(torch.cat(pooled, -1)), atol=1e-5, rtol=1e-5
    )
    assert out.loss.ndim == 0


@pytest.mark.parametrize(
    "cls", [vilt.ViltForQuestionAnswering, vilt.ViltForImageTextMatching, vilt.ViltForMaskedLM]
)
def test_gradients_reach_every_used_parameter(cls):
    model = cls(tiny())
    x = inputs()
    labels = {
        vilt.ViltForQuestionAnswering: torch.rand(3, 5),
        vilt.ViltForImageTextMatching: torch.tensor([1, 0, 1]),
        vilt.ViltForMaskedLM: torch.randint(0, 100, (3, 7)),
    }[cls]
    x["token_type_ids"] = torch.zeros(3, 7, dtype=torch.long)
    model(**x, labels=labels).loss.backward()
    unused = (
        {"vilt.pooler.dense.weight", "vilt.pooler.dense.bias"}
        if cls is vilt.ViltForMaskedLM
        else set()
    )
    unused |= {
        "vilt.embeddings.modality_type_embeddings.weight"
    }  # row 2+ unused; rows 0/1 checked below
    missing = [
        n
        for n, p in model.named_parameters()
        if n not in unused and (p.grad is None or not p.grad.abs().sum())
    ]
    assert missing == []
    mod = model.vilt.embeddings.modality_type_embeddings.weight.grad
    assert mod[0].abs().sum() > 0 and mod[1].abs().sum() > 0


def test_bad_shapes_get_clear_errors():
    model = vilt.ViltModel(tiny()).eval()
    with pytest.raises(ValueError, match="3 texts but pixel_values hold 2 images"):
        model(input_ids=torch.ones(3, 4, dtype=torch.long), pixel_values=torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="longer than max_position_embeddings"):
        model(input_ids=torch.ones(1, 17, dtype=torch.long), pixel_values=torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="pixel_mask must have shape"):
        model(
            input_ids=torch.ones(1, 4, dtype=torch.long),
            pixel_values=torch.randn(1, 3, 32, 32),
            pixel_mask=torch.ones(1, 16, 16),
        )
    with pytest.raises(ValueError, match="VQA labels must be soft scores"):
        vilt.ViltForQuestionAnswering(tiny())(
            input_ids=torch.ones(1, 4, dtype=torch.long),
            pixel_values=torch.randn(1, 3, 32, 32),
            labels=torch.tensor([1]),
        )


def test_value_checks_run_in_the_forward_when_switched_on(monkeypatch):
    """Values are checked where the data is made; in a forward only under check_inputs()."""
    model = vilt.ViltModel(tiny()).eval()
    ids, pixels = torch.full((1, 4), 100), torch.randn(1, 3, 32, 32)
    with vilt.check_inputs(), pytest.raises(ValueError, match="outside the vocabulary"):
        model(input_ids=ids, pixel_values=pixels)
    with vilt.check_inputs(), pytest.raises(ValueError, match="less than one whole patch"):
        model(
            input_ids=torch.ones(1, 4, dtype=torch.long),
            pixel_values=pixels,
            pixel_mask=torch.zeros(1, 32, 32),
        )
    itm = vilt.ViltForImageTextMatching(tiny())
    good = dict(
        input_ids=torch.ones(2, 4, dtype=torch.long), pixel_values=torch.randn(2, 3, 32, 32)
    )
    with vilt.check_inputs(), pytest.raises(ValueError, match="0 .mismatch. or 1 .match."):
        itm(**good, labels=torch.tensor([0, 2]))
    # Off (the default), the forward reads no value: the ids reach the embedding table as they are.
    reads = []
    monkeypatch.setattr(torch.Tensor, "item", lambda t: reads.append(t) or 0)
    with pytest.raises(IndexError):
        model(input_ids=ids, pixel_values=pixels)
    assert reads == []


@pytest.mark.parametrize("name", ["ViltForQuestionAnswering", "ViltForImageTextMatching"])
def test_a_misspelled_keyword_is_a_type_error(name):
    model = getattr(vilt, name)(tiny())
    good = dict(
        input_ids=torch.ones(1, 4, dtype=torch.long), pixel_values=torch.randn(1, 3, 32, 32)
    )
    for typo in ("attn_mask", "pixel_masks", "label"):
        with pytest.raises(TypeError, match=typo):
            model(**good, **{typo: torch.ones(1, 4)})


def test_small_vilt_overfits_a_vqa_batch():
    model = vilt.ViltForQuestionAnswering(tiny())
    x = inputs(b=8)
    y = torch.nn.functional.one_hot(torch.arange(8) % 5, 5).float()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = model(**x, labels=y).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (model.eval()(**x).logits.argmax(-1) == y.argmax(-1)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_outputs_follow_the_model_dtype_with_and_without_labels(dtype):
    model = vilt.ViltForQuestionAnswering(tiny()).to(dtype).eval()
    x = inputs(b=2, h=40, w=24)
    x["pixel_mask"] = torch.ones(2, 40, 24, dtype=torch.long)
    x["pixel_mask"][1, 32:] = 0
    plain = model(**x)
    assert plain.loss is None and plain.logits.dtype == dtype
    assert plain.pooler_output.dtype == dtype and plain.last_hidden_state.dtype == dtype
    labelled = model(**x, labels=torch.rand(2, 5))
    assert labelled.loss.dtype == dtype and torch.isfinite(labelled.loss)
    vit = vilt.ViTForImageClassification(vilt.ViTConfig.from_preset("vit-test")).to(dtype)
    assert vit(pixel_values=torch.randn(1, 3, 32, 32)).logits.dtype == dtype
