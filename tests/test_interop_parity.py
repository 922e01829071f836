"""Parity with transformers: its ViT/ViLT checkpoints load into vilt with the same outputs, and
vilt models written with format="transformers" load back into transformers with the same outputs.

transformers' ViLT draws its image patches through torch.multinomial even at eval (a random
order for the largest image of a batch). Order-independent outputs are compared as they are;
full sequences are compared with that sampler pinned to raster order, which is vilt's order.
"""

import pytest
import torch
import transformers

import vilt
import vilt.interop

ATOL = 1e-5
VIT_CONFIGS = {
    "d32-l2-h4-p8": dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        image_size=32, patch_size=8,
    ),
    "d48-l3-h3-p4-eps6-gelu_new": dict(
        hidden_size=48, num_hidden_layers=3, num_attention_heads=3, intermediate_size=96,
        image_size=24, patch_size=4, layer_norm_eps=1e-6, hidden_act="gelu_new",
    ),
    "d64-l1-h8-p16-noqkvbias": dict(
        hidden_size=64, num_hidden_layers=1, num_attention_heads=8, intermediate_size=32,
        image_size=48, patch_size=16, qkv_bias=False,
    ),
}  # fmt: skip
VILT_CONFIGS = {
    "d32-l2-h4-p8": dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        image_size=32, patch_size=8, vocab_size=60, max_position_embeddings=12,
    ),
    "d48-l1-h6-p16-mod3-eps6": dict(
        hidden_size=48, num_hidden_layers=1, num_attention_heads=6, intermediate_size=96,
        image_size=48, patch_size=16, vocab_size=40, max_position_embeddings=20,
        modality_type_vocab_size=3, layer_norm_eps=1e-6,
    ),
    "d24-l3-h2-p4-noqkvbias-gelu_new": dict(
        hidden_size=24, num_hidden_layers=3, num_attention_heads=2, intermediate_size=48,
        image_size=24, patch_size=4, vocab_size=30, max_position_embeddings=9,
        qkv_bias=False, hidden_act="gelu_new",
    ),
}  # fmt: skip
VILT_CLASSES = [  # (transformers class, vilt class)
    ("ViltModel", "ViltModel"),
    ("ViltForQuestionAnswering", "ViltForQuestionAnswering"),
    ("ViltForMaskedLM", "ViltForMaskedLM"),
    ("ViltForImageAndTextRetrieval", "ViltForImageTextMatching"),
    ("ViltForImagesAndTextClassification", "ViltForImagesAndTextClassification"),
]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def raster_order(monkeypatch):
    """Make transformers' ViLT patch sampler return patches in raster order (vilt's order)."""
    monkeypatch.setattr(
        torch, "multinomial", lambda weights, n, replacement=False: torch.arange(n) % len(weights)
    )


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=ATOL, rtol=ATOL)


def all_close(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        close(x, y)


def tf_vit(cls_name: str, **config):
    config = transformers.ViTConfig(**config, num_labels=3, attn_implementation="eager")
    return getattr(transformers, cls_name)(config)


LABELS = {0: "no", 1: "yes", 2: "maybe"}


def tf_vilt(cls_name: str, **config):
    config = transformers.ViltConfig(**config, id2label=LABELS)
    if cls_name == "ViltForImagesAndTextClassification":
        config.num_images = 2
        config.modality_type_vocab_size = max(3, config.modality_type_vocab_size)
    return getattr(transformers, cls_name)(config)


def vilt_inputs(config: dict, *, images: int = 1) -> dict[str, torch.Tensor]:
    """Three pairs: padded texts of different lengths, non-square images with padding."""
    p = config["patch_size"]
    t = min(9, config["max_position_embeddings"])
    input_ids = torch.randint(1, config["vocab_size"], (3, t))
    attention_mask = torch.ones(3, t, dtype=torch.long)
    attention_mask[1, 5:] = 0
    attention_mask[2, 3:] = 0
    shape = (3, images, 3, 5 * p, 7 * p)
    pixel_values = torch.randn(shape)
    pixel_mask = torch.ones(shape[0], images, *shape[-2:], dtype=torch.long)
    pixel_mask[1, :, 3 * p :] = 0  # 3 x 7 patches
    pixel_mask[2, :, :, 4 * p + p // 2 :] = 0  # a cut through a patch column
    pixel_mask[2, :, 2 * p :] = 0
    if images == 1:
        pixel_values, pixel_mask = pixel_values[:, 0], pixel_mask[:, 0]
    return dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        token_type_ids=torch.randint(0, 2, (3, t)),
        pixel_values=pixel_values,
        pixel_mask=pixel_mask,
    )


# -- ViT -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls_name", ["ViTModel", "ViTForImageClassification"])
@pytest.mark.parametrize("name", list(VIT_CONFIGS))
def test_vit_from_transformers(name, cls_name, tmp_path, perturb):
    config = VIT_CONFIGS[name]
    ref = perturb(tf_vit(cls_name, **config))
    ref.save_pretrained(tmp_path)
    model = getattr(vilt, cls_name).from_pretrained(tmp_path).eval()
    x = torch.randn(2, 3, config["image_size"], config["image_size"])
    with torch.no_grad():
        a = ref(x, output_hidden_states=True, output_attentions=True)
        b = model(pixel_values=x, output_hidden_states=True, output_attentions=True)
    if cls_name == "ViTModel":
        close(a.last_hidden_state, b.last_hidden_state)
        close(a.pooler_output, b.pooler_output)
    else:
        close(a.logits, b.logits)
        assert model.config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    all_close(a.hidden_states, b.hidden_states)
    all_close(a.attentions, b.attentions)


def test_vit_interpolated_positions_match(tmp_path, perturb):
    perturb(tf_vit("ViTModel", **VIT_CONFIGS["d32-l2-h4-p8"])).save_pretrained(tmp_path)
    ref = transformers.ViTModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    model = vilt.ViTModel.from_pretrained(tmp_path).eval()
    x = torch.randn(2, 3, 56, 56)  # a 7 x 7 grid from the 4 x 4 one
    with torch.no_grad():
        a = ref(x, interpolate_pos_encoding=True)
        b = model(pixel_values=x, interpolate_pos_encoding=True)
    close(a.last_hidden_state, b.last_hidden_state)
    close(a.pooler_output, b.pooler_output)


@pytest.mark.parametrize("cls_name", ["ViTModel", "ViTForImageClassification"])
@pytest.mark.parametrize("name", list(VIT_CONFIGS))
def test_vit_to_transformers(name, cls_name, tmp_path, perturb):
    labels = {0: "cat", 1: "dog", 2: "bird"}
    config = vilt.ViTConfig(**VIT_CONFIGS[name], id2label=labels)
    model = perturb(getattr(vilt, cls_name)(config))
    model.save_pretrained(tmp_path, format="transformers")
    ref = getattr(transformers, cls_name).from_pretrained(tmp_path, attn_implementation="eager")
    assert ref.config.id2label == labels and ref.config.label2id == {"cat": 0, "dog": 1, "bird": 2}
    x = torch.randn(2, 3, config.image_size, config.image_size)
    with torch.no_grad():
        a = ref.eval()(x, output_hidden_states=True, output_attentions=True)
        b = model(pixel_values=x, output_hidden_states=True, output_attentions=True)
    if cls_name == "ViTModel":
        close(a.pooler_output, b.pooler_output)
    else:
        close(a.logits, b.logits)
    all_close(a.hidden_states, b.hidden_states)
    all_close(a.attentions, b.attentions)


# -- ViLT ----------------------------------------------------------------------------------------
def _head_output(out, tf_name: str) -> torch.Tensor:
    if tf_name == "ViltModel":
        return out.pooler_output
    if tf_name == "ViltForImageAndTextRetrieval":  # rank output (B, 1) vs match score (B,)
        return out.logits[:, 0] if out.logits.shape[-1] == 1 else out.scores
    return out.logits


def run_both(ref, model, config: dict, tf_name: str):
    """Run a transformers and a vilt model on the same inputs; compare their head outputs."""
    images = 2 if tf_name == "ViltForImagesAndTextClassification" else 1
    inputs = vilt_inputs(config, images=images)
    with torch.no_grad():
        a = ref(**inputs, output_hidden_states=True)
        b = model(**inputs, output_hidden_states=True)
    close(_head_output(a, tf_name), _head_output(b, tf_name))
    return a, b, inputs


@pytest.mark.parametrize(("tf_name", "vilt_name"), VILT_CLASSES)
@pytest.mark.parametrize("name", list(VILT_CONFIGS))
def test_vilt_from_transformers(name, tf_name, vilt_name, tmp_path, perturb):
    """Order-independent outputs, with transformers' random patch order left as it is."""
    config = VILT_CONFIGS[name]
    ref = perturb(tf_vilt(tf_name, **config))
    ref.save_pretrained(tmp_path)
    model = vilt.load_model(tmp_path).eval()
    assert type(model).__name__ == vilt_name
    assert model.config.id2label == LABELS
    a, b, inputs = run_both(ref, model, config, tf_name)
    if inputs["pixel_values"].ndim == 4:
        t = inputs["input_ids"].shape[1]
        text = inputs["attention_mask"].bool()
        if tf_name == "ViltModel":
            close(a.last_hidden_state[:, :t][text], b.last_hidden_state[:, :t][text])
        for x, y in zip(a.hidden_states, b.hidden_states, strict=True):
            close(x[:, :t][text], y[:, :t][text])


@pytest.mark.parametrize("name", list(VILT_CONFIGS))
def test_vilt_full_sequences_match_in_raster_order(name, tmp_path, perturb, raster_order):
    config = VILT_CONFIGS[name]
    perturb(tf_vilt("ViltModel", **config)).save_pretrained(tmp_path)
    ref = transformers.ViltModel.from_pretrained(tmp_path).eval()
    model = vilt.ViltModel.from_pretrained(tmp_path).eval()
    inputs = vilt_inputs(config)
    with torch.no_grad():
        a = ref(**inputs, output_hidden_states=True, output_attentions=True)
        b = model(**inputs, output_hidden_states=True, output_attentions=True)
    close(a.last_hidden_state, b.last_hidden_state)
    all_close(a.hidden_states, b.hidden_states)
    all_close(a.attentions, b.attentions)


def test_nlvr2_hidden_states_per_image(tmp_path, perturb, raster_order):
    config = VILT_CONFIGS["d32-l2-h4-p8"]
    name = "ViltForImagesAndTextClassification"
    perturb(tf_vilt(name, **config)).save_pretrained(tmp_path)
    ref = transformers.ViltForImagesAndTextClassification.from_pretrained(tmp_path).eval()
    model = vilt.ViltForImagesAndTextClassification.from_pretrained(tmp_path).eval()
    assert model.config.num_images == 2 and model.config.modality_type_vocab_size == 3
    inputs = vilt_inputs(config, images=2)
    with torch.no_grad():
        a = ref(**inputs, output_hidden_states=True)
        b = model(**inputs, output_hidden_states=True)
    close(a.logits, b.logits)
    for image, per_image in enumerate(a.hidden_states):  # vilt: image-major rows
        all_close(per_image, [h[image * 3 : (image + 1) * 3] for h in b.hidden_states])


@pytest.mark.parametrize(("tf_name", "vilt_name"), VILT_CLASSES)
@pytest.mark.parametrize("name", list(VILT_CONFIGS))
def test_vilt_to_transformers(name, tf_name, vilt_name, tmp_path, perturb, raster_order):
    config = VILT_CONFIGS[name]
    labels = {0: "cat", 1: "dog", 2: "bird"}
    options = {"id2label": labels}
    if vilt_name == "ViltForImagesAndTextClassification":
        options |= {"num_images": 2, "modality_type_vocab_size": 3}
    model = perturb(getattr(vilt, vilt_name)(vilt.ViltConfig(**config | options)))
    model.save_pretrained(tmp_path, format="transformers")
    ref = getattr(transformers, tf_name).from_pretrained(tmp_path, attn_implementation="eager")
    if tf_name in ("ViltForQuestionAnswering", "ViltForImagesAndTextClassification"):
        assert ref.config.id2label == labels
    assert vilt.load_model(tmp_path).config.id2label == labels  # and back again
    images = 2 if tf_name == "ViltForImagesAndTextClassification" else 1
    inputs = vilt_inputs(config, images=images)
    with torch.no_grad():
        a = ref.eval()(**inputs, output_hidden_states=True, output_attentions=True)
        b = model(**inputs, output_hidden_states=True, output_attentions=True)
    close(_head_output(a, tf_name), _head_output(b, tf_name))
    if images == 1:
        all_close(a.hidden_states, b.hidden_states)
        all_close(a.attentions, b.attentions)


def test_pretraining_model_exports_its_mlm_half(tmp_path, perturb):
    config = vilt.ViltConfig(**VILT_CONFIGS["d32-l2-h4-p8"])
    model = perturb(vilt.ViltForPreTraining(config))
    with pytest.warns(vilt.CheckpointWarning, match=r"as ViltForMaskedLM, without itm_head"):
        model.save_pretrained(tmp_path, format="transformers")
    ref = transformers.ViltForMaskedLM.from_pretrained(tmp_path).eval()
    inputs = vilt_inputs(VILT_CONFIGS["d32-l2-h4-p8"])
    with torch.no_grad():
        close(ref(**inputs).logits, model(**inputs).mlm_logits)


def test_backbone_into_head_names_the_new_keys(tmp_path, perturb):
    config = VILT_CONFIGS["d32-l2-h4-p8"]
    ref = perturb(tf_vilt("ViltModel", **config))
    ref.save_pretrained(tmp_path)
    with pytest.warns(vilt.CheckpointWarning, match=r"newly initialised.*classifier\.0\.weight"):
        model = vilt.ViltForQuestionAnswering.from_pretrained(tmp_path, num_labels=13)
    assert model.loading_info["newly_initialized"] == [
        f"classifier.{i}.{p}" for i in (0, 1, 3) for p in ("bias", "weight")
    ]
    assert model.classifier[3].out_features == 13
    close(model.vilt.pooler.dense.weight, ref.pooler.dense.weight)
