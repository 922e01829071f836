"""ViT: shapes, pooling, position interpolation, loss, learning."""

import pytest
import torch

import vilt


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny(**kw) -> vilt.ViTConfig:
    return vilt.ViTConfig.from_preset("vit-test", num_labels=3, **kw)


def test_shapes_and_outputs():
    model = vilt.ViTForImageClassification(tiny()).eval()
    out = model(
        pixel_values=torch.randn(2, 3, 32, 32), output_hidden_states=True, output_attentions=True
    )
    assert out.logits.shape == (2, 3)
    assert out.last_hidden_state.shape == (2, 17, 32)  # 16 patches + class token
    assert len(out.hidden_states) == 3 and out.attentions[0].shape == (2, 4, 17, 17)
    backbone = vilt.ViTModel(tiny()).eval()
    assert backbone(torch.randn(2, 3, 32, 32)).pooler_output.shape == (2, 32)


def test_mean_pooling_classifies_the_mean_patch_token():
    model = vilt.ViTForImageClassification(tiny(pooling="mean")).eval()
    x = torch.randn(2, 3, 32, 32)
    out = model(pixel_values=x)
    expected = model.classifier(out.last_hidden_state[:, 1:].mean(1))
    torch.testing.assert_close(out.logits, expected)


def test_other_image_size_needs_interpolation_flag():
    model = vilt.ViTModel(tiny()).eval()
    with pytest.raises(ValueError, match="interpolate_pos_encoding=True"):
        model(torch.randn(1, 3, 48, 32))
    out = model(torch.randn(1, 3, 48, 32), interpolate_pos_encoding=True)
    assert out.last_hidden_state.shape == (1, 1 + 6 * 4, 32)


def test_interpolation_at_native_size_is_identity():
    model = vilt.ViTModel(tiny()).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(
        model(x).last_hidden_state, model(x, interpolate_pos_encoding=True).last_hidden_state
    )


def test_bad_inputs_get_clear_errors():
    model = vilt.ViTForImageClassification(tiny()).eval()
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(batch, 3"):
        model(pixel_values=torch.randn(2, 1, 32, 32))
    with vilt.check_inputs(), pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        model(pixel_values=torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 5]))
    for typo in ("pixel_value", "label", "output_attention"):
        with pytest.raises(TypeError, match=typo):
            model(pixel_values=torch.randn(2, 3, 32, 32), **{typo: None})


def test_every_parameter_gets_a_gradient():
    model = vilt.ViTForImageClassification(tiny())
    out = model(pixel_values=torch.randn(4, 3, 32, 32), labels=torch.tensor([0, 1, 2, 0]))
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert missing == []


def test_overfits_a_small_batch():
    model = vilt.ViTForImageClassification(tiny())
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 3
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        loss = model(pixel_values=x, labels=y).loss
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 < first


def test_no_weight_decay_names_norms_biases_and_positions():
    names = vilt.ViTForImageClassification(tiny()).no_weight_decay()
    assert "vit.embeddings.cls_token" in names and "vit.embeddings.position_embeddings" in names
    assert "vit.encoder.blocks.0.norm1.weight" in names and "classifier.bias" in names
    assert "vit.encoder.blocks.0.attn.qkv.weight" not in names


def test_forward_features_and_intermediates():
    """Features for dense heads and probes: the final-norm tokens, and chosen blocks' outputs
    as (B, D, rows, cols) maps or token sequences; blocks after the last chosen one not run."""
    model = vilt.ViTForImageClassification(tiny(num_hidden_layers=3)).eval()
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        features = model.forward_features(x, interpolate_pos_encoding=True)
        out = model(pixel_values=x, interpolate_pos_encoding=True, output_hidden_states=True)
        maps = model.forward_intermediates(x, interpolate_pos_encoding=True)
        last = model.forward_intermediates(
            x, [-1], output_fmt="NLC", include_cls=True, norm=True, interpolate_pos_encoding=True
        )
        two = model.forward_intermediates(x, 2, output_fmt="NLC", interpolate_pos_encoding=True)
    assert features.shape == (2, 1 + 4 * 6, 32)
    torch.testing.assert_close(features, out.last_hidden_state)
    assert [m.shape for m in maps] == [(2, 32, 4, 6)] * 3
    for i, m in enumerate(maps):  # block i's output is hidden_states[i + 1]
        torch.testing.assert_close(m.flatten(2).transpose(1, 2), out.hidden_states[i + 1][:, 1:])
    torch.testing.assert_close(last[0], features)
    assert len(two) == 2 and two[0].shape == (2, 24, 32)
    torch.testing.assert_close(two[0], out.hidden_states[2][:, 1:])
    with pytest.raises(ValueError, match="reach past the model's 3 blocks"):
        model.forward_intermediates(x, [5], interpolate_pos_encoding=True)
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NHWC", interpolate_pos_encoding=True)
