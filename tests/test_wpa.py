"""Word-patch alignment: the IPOT plan keeps the marginals, the distance is the exact optimal
transport on a small case, zero between identical sets, and ViltForPreTraining adds it as the
ViLT paper does (plus for matched pairs, minus for mismatched, at config.wpa_weight)."""

import itertools

import pytest
import torch

import vilt
from vilt.modeling.alignment import cosine_cost, ipot_plan, wpa_distance, wpa_token_masks


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def masks(b: int, n: int, real: list[int]) -> torch.Tensor:
    return torch.arange(n)[None, :].expand(b, n) < torch.tensor(real)[:, None]


def test_the_plan_keeps_the_marginals_and_leaves_padding_out():
    text, image = torch.randn(2, 6, 16), torch.randn(2, 9, 16)
    text_mask, image_mask = masks(2, 6, [6, 4]), masks(2, 9, [9, 7])
    plan = ipot_plan(cosine_cost(text, image), text_mask, image_mask)
    for b, (t, n) in enumerate([(6, 9), (4, 7)]):
        torch.testing.assert_close(plan[b, :t].sum(1), torch.full((t,), 1 / t), atol=1e-3, rtol=0)
        torch.testing.assert_close(
            plan[b, :, :n].sum(0), torch.full((n,), 1 / n), atol=1e-6, rtol=0
        )
        assert float(plan[b, t:].abs().sum() + plan[b, :, n:].abs().sum()) == 0.0
    assert bool((plan >= 0).all())


def test_the_distance_is_the_exact_transport_on_a_small_case():
    """Equal counts and uniform weights: optimal transport is the best assignment, found here
    by trying every permutation."""
    text, image = torch.randn(1, 4, 8), torch.randn(1, 4, 8)
    cost = cosine_cost(text, image)[0]
    best = min(sum(cost[i, p[i]] for i in range(4)) / 4 for p in itertools.permutations(range(4)))
    everything = torch.ones(1, 4, dtype=torch.bool)
    got = wpa_distance(text, image, everything, everything, iterations=200)
    torch.testing.assert_close(got[0], best, atol=2e-3, rtol=0)


def test_identical_sets_are_at_distance_zero():
    tokens = torch.randn(1, 5, 16)
    everything = torch.ones(1, 5, dtype=torch.bool)
    shuffled = tokens[:, torch.randperm(5)]
    assert float(wpa_distance(tokens, shuffled, everything, everything)[0]) < 1e-5


def test_token_masks_drop_cls_sep_and_the_image_class_token():
    attention = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    keep = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    text, image = wpa_token_masks(attention, keep)
    assert text.tolist() == [[False, True, True, False, False], [False, True, True, True, False]]
    assert image.tolist() == [[False, True, True, False], [False, True, True, True]]


def pretraining_batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(5, 100, (4, 7))
    attention = torch.ones(4, 7, dtype=torch.long)
    attention[2, 5:] = 0
    mlm = torch.full((4, 7), -100)
    mlm[:, 2] = ids[:, 2]
    return dict(
        input_ids=ids,
        attention_mask=attention,
        pixel_values=torch.randn(4, 3, 32, 32),
        itm_labels=torch.tensor([1, 0, 1, 0]),
        mlm_labels=mlm,
    )


def test_pretraining_adds_the_weighted_alignment_loss():
    config = vilt.ViltConfig.from_preset("vilt-test")
    plain = vilt.ViltForPreTraining(config)
    weighted = vilt.ViltForPreTraining(config.replace(wpa_weight=0.1))
    weighted.load_state_dict(plain.state_dict())
    batch = pretraining_batch()
    a, b = plain(**batch), weighted(**batch)
    assert a.wpa_loss is None
    torch.testing.assert_close(b.loss, a.loss + 0.1 * b.wpa_loss)
    # plus for matched pairs, minus for mismatched, over the batch
    out = weighted.vilt(**{k: v for k, v in batch.items() if not k.endswith("labels")})
    t = batch["input_ids"].shape[1]
    text, image = wpa_token_masks(batch["attention_mask"], out.attention_mask[:, t:])
    d = wpa_distance(out.last_hidden_state[:, :t], out.last_hidden_state[:, t:], text, image)
    torch.testing.assert_close(b.wpa_loss, (d[0] - d[1] + d[2] - d[3]) / 4)
    b.loss.backward()
    assert weighted.vilt.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    with pytest.raises(vilt.ConfigError, match="wpa_weight"):
        config.replace(wpa_weight=-1.0)
