"""Opt-in int8 inference: Linear layers become dynamic int8, outputs stay close, the fp32
model is left alone, and what cannot be quantized is refused with a clear error."""

import pytest
import torch

import vilt
from vilt.quantization import quantize_int8


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_int8_vqa_model_stays_close_and_leaves_the_original_alone():
    model = vilt.ViltForQuestionAnswering(vilt.ViltConfig.from_preset("vilt-test", num_labels=5))
    model.eval()
    inputs = dict(input_ids=torch.randint(1, 100, (8, 7)), pixel_values=torch.randn(8, 3, 32, 32))
    with torch.inference_mode():
        fp32 = model(**inputs).logits
        q = quantize_int8(model)
        int8 = q(**inputs).logits
        again = model(**inputs).logits
    assert not any(type(m) is torch.nn.Linear for m in q.modules())
    assert any(type(m) is torch.nn.Linear for m in model.modules())
    torch.testing.assert_close(again, fp32)  # the fp32 model is untouched
    assert not torch.equal(int8, fp32)  # it really runs a different (int8) path
    assert (int8 - fp32).abs().max() < 0.1 * fp32.abs().max()


def test_int8_vit_classifier_keeps_its_predictions():
    config = vilt.ViTConfig.from_preset("vit-test", num_labels=10)
    model = vilt.ViTForImageClassification(config).eval()
    images = torch.randn(16, 3, 32, 32)
    with torch.inference_mode():
        fp32 = model(pixel_values=images).logits
        int8 = quantize_int8(model)(pixel_values=images).logits
    assert (int8.argmax(-1) == fp32.argmax(-1)).float().mean() >= 0.75


def test_int8_refuses_non_fp32_models():
    model = vilt.ViTForImageClassification(vilt.ViTConfig.from_preset("vit-test"))
    with pytest.raises(ValueError, match="fp32"):
        quantize_int8(model.to(torch.bfloat16))


def test_int8_pooled_only_model_runs_and_agrees_with_the_full_sequence():
    # a pooled_only model (as the VQA recipe saves it) computes queries for the first token
    # only, from the rows of the fused qkv weight; a dynamic int8 Linear has no such tensor
    config = vilt.ViltConfig.from_preset("vilt-test", num_labels=5)
    full = vilt.ViltForQuestionAnswering(config).eval()
    pooled = vilt.ViltForQuestionAnswering(config.replace(pooled_only=True)).eval()
    pooled.load_state_dict(full.state_dict())
    inputs = dict(input_ids=torch.randint(1, 100, (4, 7)), pixel_values=torch.randn(4, 3, 32, 32))
    with torch.inference_mode():
        want = quantize_int8(full)(**inputs).logits
        got = quantize_int8(pooled)(**inputs).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
