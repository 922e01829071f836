"""Every model compiles as one graph: ``torch.compile(model, fullgraph=True)`` traces its
forward (eval) and its forward and backward with labels (train) without a break, so no model
reads a tensor's value on the host. ``backend="eager"`` finds breaks without a C++ compiler."""

import pytest
import torch

import vilt

torch._dynamo.config.cache_size_limit = 64


@pytest.fixture(autouse=True)
def _fresh():
    torch.manual_seed(0)
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def vilt_config(**fields) -> vilt.ViltConfig:
    return vilt.ViltConfig.from_preset("vilt-test", num_labels=5, **fields)


def pairs(b: int = 3, images: int = 0) -> dict[str, torch.Tensor]:
    """Padded texts and padded images of different sizes (``images`` > 0: that many per text)."""
    ids = torch.randint(1, 100, (b, 7))
    am = torch.ones(b, 7, dtype=torch.long)
    am[1, 4:] = 0
    shape = (b, images, 3, 32, 48) if images else (b, 3, 32, 48)
    pm = torch.ones(*shape[:-3], 32, 48, dtype=torch.long)
    pm[1, ..., 16:, :] = 0
    pm[2, ..., :, 24:] = 0
    return dict(input_ids=ids, attention_mask=am, pixel_values=torch.randn(shape), pixel_mask=pm)


def labelled(name: str, b: int = 3) -> dict[str, torch.Tensor]:
    if name == "ViltForImageTextRetrieval":  # the matched candidate of each group
        return {"labels": torch.tensor([0, 2, 1][:b])}
    if name == "ViltForQuestionAnswering":
        return {"labels": torch.rand(b, 5)}
    if name in ("ViltForImageTextMatching", "ViltForImagesAndTextClassification"):
        return {"labels": torch.tensor([1, 0, 1][:b])}
    if name == "ViltForMaskedLM":
        labels = torch.full((b, 7), -100)
        labels[:, 2] = 5
        return {"labels": labels}
    if name == "ViltForPreTraining":
        labels = torch.full((b, 7), -100)
        labels[0, 1] = 7
        return {"itm_labels": torch.tensor([1, 0, 1][:b]), "mlm_labels": labels}
    return {"labels": torch.tensor([0, 2, 4][:b])}


CASES = {
    "ViTModel": lambda: (vilt.ViTModel(vilt.ViTConfig.from_preset("vit-test")), False),
    "ViTForImageClassification": lambda: (
        vilt.ViTForImageClassification(vilt.ViTConfig.from_preset("vit-test", num_labels=5)),
        True,
    ),
    "ViltModel": lambda: (vilt.ViltModel(vilt_config()), False),
    "ViltModel-pooled_only": lambda: (vilt.ViltModel(vilt_config(pooled_only=True)), False),
    "ViltForQuestionAnswering": lambda: (vilt.ViltForQuestionAnswering(vilt_config()), True),
    "ViltForQuestionAnswering-pooled_only": lambda: (
        vilt.ViltForQuestionAnswering(vilt_config(pooled_only=True)),
        True,
    ),
    "ViltForImageTextMatching": lambda: (vilt.ViltForImageTextMatching(vilt_config()), True),
    "ViltForImageTextRetrieval": lambda: (
        vilt.ViltForImageTextRetrieval(vilt_config(pooled_only=True)),
        True,
    ),
    "ViltForMaskedLM": lambda: (vilt.ViltForMaskedLM(vilt_config()), True),
    "ViltForPreTraining": lambda: (vilt.ViltForPreTraining(vilt_config()), True),
    "ViltForPreTraining-wpa": lambda: (vilt.ViltForPreTraining(vilt_config(wpa_weight=0.1)), True),
    "ViltForPreTraining-sampled-patches": lambda: (
        vilt.ViltForPreTraining(vilt_config(max_image_length=4)),
        True,
    ),
    "ViltForImagesAndTextClassification": lambda: (
        vilt.ViltForImagesAndTextClassification(
            vilt_config(num_images=2, modality_type_vocab_size=3)
        ),
        True,
    ),
}


def inputs_for(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    if isinstance(model, vilt.ViTModel | vilt.ViTForImageClassification):
        return {"pixel_values": torch.randn(3, 3, 32, 32)}
    if isinstance(model, vilt.ViltForImagesAndTextClassification):
        return pairs(images=2)
    if isinstance(model, vilt.ViltForImageTextRetrieval):  # groups: a text and 3 images each
        return pairs(images=3)
    return pairs()


@pytest.mark.parametrize("case", list(CASES))
def test_forward_compiles_as_one_graph(case):
    model, _ = CASES[case]()
    model.eval()
    inputs = inputs_for(model)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        expected = model(**inputs)
        got = compiled(**inputs)
    key = "logits" if getattr(expected, "logits", None) is not None else "pooler_output"
    torch.testing.assert_close(getattr(got, key), getattr(expected, key))


@pytest.mark.parametrize("case", [c for c in CASES if CASES[c]()[1]])
def test_training_forward_and_backward_compile_as_one_graph(case):
    model, _ = CASES[case]()
    model.train()
    name = type(model).__name__
    inputs = inputs_for(model) | labelled(name)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    loss = compiled(**inputs).loss
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert sum(g is not None for g in grads) > len(grads) // 2
