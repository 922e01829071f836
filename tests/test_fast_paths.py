"""The fast paths give the results of the general ones: unpadded ViLT batches (no pixel_mask)
skip the patch sort and gathers; pooled_only computes the pooled state alone; attention splits q, k, v without a permute; gradients stay the same."""

import pytest
import torch

import vilt


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def config() -> vilt.ViltConfig:
    return vilt.ViltConfig.from_preset("vilt-test", num_labels=5)


@pytest.mark.parametrize("training", [False, True])
def test_unpadded_batch_equals_the_same_images_in_a_padded_batch(training):
    model = vilt.ViltForQuestionAnswering(config()).train(training)
    ids = torch.randint(1, 100, (2, 6))
    images = torch.randn(2, 3, 32, 48)
    fast = model(input_ids=ids, pixel_values=images)  # no mask: the fast path
    # The same two images beside a third, smaller one: padding sends the batch the long way.
    canvas = torch.zeros(3, 3, 32, 48)
    canvas[:2] = images
    canvas[2, :, :16, :16] = torch.randn(3, 16, 16)
    mask = torch.zeros(3, 32, 48, dtype=torch.long)
    mask[:2] = 1
    mask[2, :16, :16] = 1
    ids3 = torch.cat([ids, ids[:1]])
    slow = model(input_ids=ids3, pixel_values=canvas, pixel_mask=mask)
    torch.testing.assert_close(fast.logits, slow.logits[:2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        fast.last_hidden_state, slow.last_hidden_state[:2], atol=1e-5, rtol=1e-5
    )
    assert torch.equal(fast.patch_index, slow.patch_index[:2])
    assert torch.equal(fast.attention_mask, slow.attention_mask[:2])


def test_unpadded_fast_path_gradients_match_the_general_path():
    model = vilt.ViltForQuestionAnswering(config()).train()
    ids = torch.randint(1, 100, (2, 6))
    images = torch.randn(2, 3, 32, 32)
    labels = torch.rand(2, 5)

    def grads(pixel_values, **extra) -> dict[str, torch.Tensor]:
        model.zero_grad()
        out = model(input_ids=ids, pixel_values=pixel_values, labels=labels, **extra)
        out.loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    fast = grads(images)
    # The same images on a canvas one patch row taller, the extra row masked: the general path.
    canvas = torch.zeros(2, 3, 40, 32)
    canvas[:, :, :32] = images
    mask = torch.zeros(2, 40, 32, dtype=torch.long)
    mask[:, :32] = 1
    general = grads(canvas, pixel_mask=mask)
    assert fast.keys() == general.keys()
    for name in fast:
        torch.testing.assert_close(fast[name], general[name], atol=1e-6, rtol=1e-5, msg=name)


def padded_pairs(b: int = 3) -> dict[str, torch.Tensor]:
    ids = torch.randint(1, 100, (b, 6))
    am = torch.ones(b, 6, dtype=torch.long)
    am[1, 4:] = 0
    pm = torch.ones(b, 32, 48, dtype=torch.long)
    pm[2, 16:] = 0
    return dict(
        input_ids=ids, attention_mask=am, pixel_values=torch.randn(b, 3, 32, 48), pixel_mask=pm
    )


def twins(cls: type, cfg: vilt.ViltConfig | None = None) -> tuple:
    """The same weights built without and with ``pooled_only``."""
    cfg = cfg or config()
    full = cls(cfg)
    pooled = cls(cfg.replace(pooled_only=True))
    pooled.load_state_dict(full.state_dict())
    return full, pooled


@pytest.mark.parametrize("checkpointing", [False, True])
def test_pooled_only_gives_the_same_logits_loss_and_gradients(checkpointing):
    full_model, pooled_model = twins(vilt.ViltForQuestionAnswering)
    inputs = padded_pairs() | {"labels": torch.rand(3, 5)}

    def run(model):
        model.train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        out = model(**inputs)
        out.loss.backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    full, full_grads = run(full_model)
    pooled, pooled_grads = run(pooled_model)
    torch.testing.assert_close(pooled.logits, full.logits, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(pooled.loss, full.loss, atol=1e-6, rtol=1e-5)
    assert pooled.last_hidden_state.shape == (3, 1, 32)
    torch.testing.assert_close(pooled.last_hidden_state, full.last_hidden_state[:, :1])
    assert pooled_grads.keys() == full_grads.keys()
    for name, grad in full_grads.items():
        torch.testing.assert_close(pooled_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_pooled_only_for_matching_and_nlvr2_and_in_full_where_it_cannot_apply():
    inputs = padded_pairs()
    itm, itm_pooled = (m.eval() for m in twins(vilt.ViltForImageTextMatching))
    torch.testing.assert_close(itm_pooled(**inputs).scores, itm(**inputs).scores)
    nlvr2_config = config().replace(num_images=2, modality_type_vocab_size=3)
    nlvr2, nlvr2_pooled = (
        m.eval() for m in twins(vilt.ViltForImagesAndTextClassification, nlvr2_config)
    )
    pairs = dict(input_ids=torch.randint(1, 100, (2, 5)), pixel_values=torch.randn(2, 2, 3, 32, 32))
    torch.testing.assert_close(nlvr2_pooled(**pairs).logits, nlvr2(**pairs).logits)
    # asking for hidden states or attentions runs every token, as without the option
    asked = itm_pooled(**inputs, output_hidden_states=True, output_attentions=True)
    full = itm(**inputs, output_hidden_states=True, output_attentions=True)
    assert asked.last_hidden_state.shape == full.last_hidden_state.shape
    torch.testing.assert_close(asked.hidden_states[-1], full.hidden_states[-1])
    # the models that read every text position ignore it (and say so in the config's docs)
    mlm, mlm_pooled = (m.eval() for m in twins(vilt.ViltForMaskedLM))
    assert not mlm_pooled.vilt.pooled_only
    torch.testing.assert_close(mlm_pooled(**inputs).logits, mlm(**inputs).logits)
    pre = vilt.ViltForPreTraining(config().replace(pooled_only=True))
    assert not pre.vilt.pooled_only


def test_pooled_only_is_saved_and_overridable(tmp_path):
    _, pooled = twins(vilt.ViltForQuestionAnswering)
    pooled.save_pretrained(tmp_path)
    assert vilt.ViltForQuestionAnswering.from_pretrained(tmp_path).vilt.pooled_only
    again = vilt.ViltForQuestionAnswering.from_pretrained(tmp_path, pooled_only=False)
    assert not again.vilt.pooled_only
    with pytest.raises(vilt.ConfigError, match="pooled_only"):
        config().replace(pooled_only="yes")
