"""Fine-tuning a ViT as timm does: a checkpoint loaded at a new resolution (its position
table resampled once, at load), soft targets with cross-entropy, and accuracy on them."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
import transformers

import vilt
from vilt.modeling.vit import classification_loss
from vilt.training import accuracy, top_k_accuracy


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def vit_config(**kw) -> vilt.ViTConfig:
    return vilt.ViTConfig.from_preset("vit-test", image_size=16, patch_size=4, num_labels=3, **kw)


# -- a new resolution -----------------------------------------------------------------------------
def test_a_vit_loads_at_a_new_image_size_with_its_positions_resampled(tmp_path):
    model = vilt.ViTForImageClassification(vit_config()).eval()
    model.save_pretrained(tmp_path)
    with pytest.warns(vilt.CheckpointWarning, match=r"resampled \(bicubic\) from 4x4 to 6x6"):
        bigger = vilt.ViTForImageClassification.from_pretrained(tmp_path, image_size=24).eval()
    assert bigger.config.image_size == 24 and bigger.config.patch_grid == (6, 6)
    assert bigger.vit.embeddings.position_embeddings.shape == (1, 37, 32)
    assert "resampled" in bigger.loading_info["notes"][0]
    # what the old model computes by interpolating at run time, the new one holds
    x = torch.randn(2, 3, 24, 24)
    expected = model(x, interpolate_pos_encoding=True).logits
    torch.testing.assert_close(bigger(x).logits, expected, rtol=0, atol=1e-6)
    # the class row and every other weight are the checkpoint's
    old, new = model.state_dict(), bigger.state_dict()
    assert torch.equal(new["vit.embeddings.position_embeddings"][:, 0], old[
        "vit.embeddings.position_embeddings"][:, 0])  # fmt: skip
    assert all(torch.equal(new[k], v) for k, v in old.items() if "position" not in k)
    # saved at the new size, it loads with no warning and runs at 24 px
    bigger.save_pretrained(tmp_path / "24")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = vilt.ViTForImageClassification.from_pretrained(tmp_path / "24").eval()
    torch.testing.assert_close(again(x).logits, expected, rtol=0, atol=1e-6)


def test_a_transformers_vit_loads_at_a_new_image_size(tmp_path):
    config = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        image_size=16, patch_size=4, num_labels=3,
    )  # fmt: skip
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path)
    with pytest.warns(vilt.CheckpointWarning, match="from 4x4 to 8x8"):
        model = vilt.ViTForImageClassification.from_pretrained(tmp_path, image_size=32)
    assert model(torch.randn(1, 3, 32, 32)).logits.shape == (1, 3)


def test_a_vilt_checkpoint_loads_at_a_new_image_size(tmp_path):
    config = vilt.ViltConfig.from_preset("vilt-test")  # 32 px images, 8 px patches
    model = vilt.ViltModel(config).eval()
    model.save_pretrained(tmp_path)
    with pytest.warns(vilt.CheckpointWarning, match=r"resampled \(bilinear\) from 4x4 to 6x6"):
        bigger = vilt.ViltModel.from_pretrained(tmp_path, image_size=48).eval()
    assert bigger.embeddings.image.position_embeddings.shape == (1, 37, config.hidden_size)
    ids = torch.randint(5, config.vocab_size, (2, 6))
    pixels = torch.randn(2, 3, 48, 48)
    # ViLT resizes positions to each image itself: at the new grid nothing changes
    torch.testing.assert_close(
        bigger(input_ids=ids, pixel_values=pixels).last_hidden_state,
        model(input_ids=ids, pixel_values=pixels).last_hidden_state,
        rtol=0,
        atol=1e-5,
    )


def test_a_new_patch_size_is_still_an_error(tmp_path):
    vilt.ViTModel(vit_config()).save_pretrained(tmp_path)
    with pytest.raises(vilt.CheckpointError, match="wrong shape"):
        vilt.ViTModel.from_pretrained(tmp_path, patch_size=8)


# -- losses and soft targets ------------------------------------------------------------------------
def test_problem_type_fixes_the_loss_of_soft_targets():
    logits = torch.randn(4, 3)
    soft = torch.softmax(torch.randn(4, 3), -1)
    ids = torch.tensor([0, 2, 1, 2])
    single = "single_label_classification"
    expected = -(soft * logits.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(classification_loss(logits, soft, 3, single), expected)
    # without a problem type, float targets of the logits' shape stay multi-label BCE
    bce = F.binary_cross_entropy_with_logits(logits, soft)
    torch.testing.assert_close(classification_loss(logits, soft, 3), bce)
    multi = classification_loss(logits, soft, 3, "multi_label_classification")
    torch.testing.assert_close(multi, bce)
    # class ids: cross-entropy either way; one-hot targets give the same loss
    ce = F.cross_entropy(logits, ids)
    torch.testing.assert_close(classification_loss(logits, ids, 3, single), ce)
    torch.testing.assert_close(classification_loss(logits, ids, 3), ce)
    onehot = F.one_hot(ids, 3).float()
    torch.testing.assert_close(classification_loss(logits, onehot, 3, single), ce)
    # smoothed one-hot targets are cross-entropy with label smoothing
    smooth = onehot * 0.9 + 0.1 / 3
    expected = F.cross_entropy(logits, ids, label_smoothing=0.1)
    torch.testing.assert_close(classification_loss(logits, smooth, 3, single), expected)
    with pytest.raises(ValueError, match="class probabilities of shape"):
        classification_loss(logits, soft[:, :2], 3, single)


def test_the_classifier_trains_on_soft_targets_with_its_problem_type():
    config = vit_config(problem_type="single_label_classification")
    model = vilt.ViTForImageClassification(config)
    pixels, soft = torch.randn(2, 3, 16, 16), torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.5, 0.5]])
    out = model(pixel_values=pixels, labels=soft)
    expected = -(soft * out.logits.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert model.classifier.weight.grad is not None
    with pytest.raises(vilt.ConfigError, match="problem_type"):
        vit_config(problem_type="single_label")


def test_accuracy_on_soft_targets_is_that_of_their_argmax():
    class Out:
        logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [1.0, 0.0, 0.5]])

    soft = torch.tensor([[0.6, 0.4, 0.0], [0.0, 0.7, 0.3], [0.1, 0.1, 0.8]])
    ids = soft.argmax(-1)
    assert accuracy(Out, {"labels": soft}, {})[:, 0].tolist() == [1.0, 0.0, 0.0]
    assert torch.equal(accuracy(Out, {"labels": soft}, {}), accuracy(Out, {"labels": ids}, {}))
    top2 = top_k_accuracy(2)
    assert top2(Out, {"labels": soft}, {})[:, 0].tolist() == [1.0, 1.0, 1.0]


def test_problem_type_travels_through_transformers_checkpoints(tmp_path):
    model = vilt.ViTForImageClassification(vit_config(problem_type="single_label_classification"))
    model.save_pretrained(tmp_path, format="transformers")
    assert transformers.ViTConfig.from_pretrained(tmp_path).problem_type == (
        "single_label_classification"
    )
    again = vilt.ViTForImageClassification.from_pretrained(tmp_path)
    assert again.config.problem_type == "single_label_classification"
