"""The shared attention / encoder: SDPA and explicit paths agree, masks isolate padding."""

import pytest
import torch

import vilt
from vilt.modeling.layers import Attention, Encoder, key_padding_bias


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_sdpa_and_explicit_attention_agree_with_mask():
    attn = Attention(dim=32, num_heads=4).eval()
    x = torch.randn(3, 9, 32)
    keep = torch.ones(3, 9, dtype=torch.long)
    keep[1, 6:] = 0
    keep[2, 2:] = 0
    mask = key_padding_bias(keep)
    fast, none = attn(x, mask, output_attentions=False)
    slow, weights = attn(x, mask, output_attentions=True)
    assert none is None
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=1e-5)
    assert weights.shape == (3, 4, 9, 9)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, 9))
    assert float(weights[1, :, :, 6:].detach().abs().max()) == 0.0


def test_key_padding_bias_reads_no_values():
    """No mask in, no mask out; a mask is passed on whatever it holds (asking whether every
    key is real would wait on the device)."""
    assert key_padding_bias(None) is None
    assert key_padding_bias(torch.ones(2, 5)).shape == (2, 1, 1, 5)
    assert key_padding_bias(torch.tensor([[1, 0]])).dtype == torch.bool


def test_padding_tokens_never_change_real_tokens():
    config = vilt.ViTConfig.from_preset("vit-test")
    enc = Encoder(config).eval()
    x = torch.randn(1, 5, 32)
    padded = torch.cat([x, torch.randn(1, 3, 32) * 100], dim=1)
    keep = torch.tensor([[1] * 5 + [0] * 3])
    alone, _, _ = enc(x)
    with_pad, _, _ = enc(padded, keep)
    torch.testing.assert_close(with_pad[:, :5], alone, atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    config = vilt.ViTConfig.from_preset("vit-test")
    enc = Encoder(config).train()
    x = torch.randn(2, 6, 32, requires_grad=True)
    enc(x)[0].sum().backward()
    plain = [p.grad.clone() for p in enc.parameters()]
    enc.zero_grad()
    enc.gradient_checkpointing = True
    enc(x)[0].sum().backward()
    for a, p in zip(plain, enc.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, atol=1e-6, rtol=1e-5)


def test_hidden_states_and_attentions_are_returned_per_layer():
    config = vilt.ViTConfig.from_preset("vit-test", num_hidden_layers=3)
    out, hidden, attns = Encoder(config).eval()(
        torch.randn(2, 4, 32), output_hidden_states=True, output_attentions=True
    )
    assert len(hidden) == 4 and len(attns) == 3
    assert out.shape == (2, 4, 32)
