"""ViLT from ViT weights (the paper's initialisation), BERT text embeddings, pooler-less ViT
checkpoints, and text position tables that grow without changing what fit before."""

from __future__ import annotations

import pytest
import torch
import transformers
from jobs_helpers import TINY_VIT
from safetensors.torch import load_file

import vilt
from vilt.jobs import train_vit

VIT = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
    image_size=32, patch_size=8,
)  # fmt: skip


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def hf_vit(tmp_path, cls=transformers.ViTForImageClassification, **kwargs):
    model = cls(transformers.ViTConfig(**VIT, num_labels=3), **kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # every tensor its own numbers
    model.save_pretrained(tmp_path)
    return model


def test_the_transformers_export_holds_the_vits_tensors_exactly(tmp_path):
    """ViT weights go into ViLT untouched: encoder, patch projection, class token, positions
    (same grid) and final norm, as transformers' ViLT would read them."""
    vit = hf_vit(tmp_path / "vit")
    with pytest.warns(vilt.CheckpointWarning, match="2 blocks and the final norm"):
        model = vilt.ViltForQuestionAnswering.from_vit(tmp_path / "vit", num_labels=4)
    assert model.config.hidden_size == 32 and model.config.image_size == 32
    model.save_pretrained(tmp_path / "vilt", format="transformers")
    exported = load_file(str(tmp_path / "vilt" / "model.safetensors"))
    reloaded = transformers.ViltForQuestionAnswering.from_pretrained(tmp_path / "vilt")
    theirs = dict(reloaded.named_parameters())
    # each ViT tensor beside the tensor transformers' ViLT reads from our export
    pairs = {
        "vit.embeddings.cls_token": "vilt.embeddings.cls_token",
        "vit.embeddings.position_embeddings": "vilt.embeddings.position_embeddings",
        "vit.layernorm.weight": "vilt.layernorm.weight",
        "vit.layernorm.bias": "vilt.layernorm.bias",
    }
    for part in ("weight", "bias"):
        pairs[f"vit.embeddings.patch_embeddings.projection.{part}"] = (
            f"vilt.embeddings.patch_embeddings.projection.{part}"
        )
        for i in range(2):
            ours_layer, vilt_layer = f"vit.layers.{i}", f"vilt.encoder.layer.{i}"
            for a, b in [
                ("attention.q_proj", "attention.attention.query"),
                ("attention.k_proj", "attention.attention.key"),
                ("attention.v_proj", "attention.attention.value"),
                ("attention.o_proj", "attention.output.dense"),
                ("layernorm_before", "layernorm_before"),
                ("layernorm_after", "layernorm_after"),
                ("mlp.fc1", "intermediate.dense"),
                ("mlp.fc2", "output.dense"),
            ]:
                pairs[f"{ours_layer}.{a}.{part}"] = f"{vilt_layer}.{b}.{part}"
    vit_state = vit.state_dict()
    assert len(pairs) == 2 * 16 + 6 and set(pairs) <= set(vit_state)
    for vit_key, vilt_key in pairs.items():
        assert torch.equal(theirs[vilt_key].detach(), vit_state[vit_key]), vit_key
    assert exported  # read back from disk, not from memory
    assert reloaded.config.num_labels == 4
    info = model.loading_info
    assert "classifier.0.weight" in info["newly_initialized"]
    assert "vilt.embeddings.text.word_embeddings.weight" in info["newly_initialized"]
    assert "vilt.encoder.norm.weight" in info["from_vit"]


def test_a_vit_trained_by_the_recipe_initialises_vilt_with_nothing_lost(tmp_path):
    out = tmp_path / "run"
    assert train_vit.main([*TINY_VIT, "--max-steps", "2", "--output-dir", str(out)]) == 0
    vit = vilt.ViTForImageClassification.from_pretrained(out)
    model = vilt.ViltForPreTraining.from_vit(out, vocab_size=50)
    ours = model.state_dict()
    for key, value in vit.state_dict().items():
        if key.startswith("vit.encoder."):
            assert torch.equal(ours[key.replace("vit.", "vilt.", 1)], value), key
        elif key.startswith("vit.embeddings."):
            name = key.replace("vit.embeddings.", "vilt.embeddings.image.", 1)
            assert torch.equal(ours[name], value), key
    assert model.loading_info["unused"] == ["classifier.bias", "classifier.weight"]


def test_positions_resample_to_another_grid_and_a_model_object_serves(tmp_path):
    vit = vilt.ViTModel(vilt.ViTConfig(**VIT))
    model = vilt.ViltModel.from_vit(vit, image_size=48)  # 4x4 -> 6x6 patches
    table = model.embeddings.image.position_embeddings
    assert table.shape == (1, 37, 32)
    assert torch.equal(table[:, 0], vit.embeddings.position_embeddings[:, 0])
    grid = vit.embeddings.position_embeddings[:, 1:].reshape(1, 4, 4, 32).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(6, 6), mode="bicubic")
    torch.testing.assert_close(table[0, 1:], expected.flatten(2)[0].T)
    assert "resampled from 4x4 to 6x6" in model.loading_info["notes"][0]
    out = model(
        input_ids=torch.ones(1, 4, dtype=torch.long), pixel_values=torch.randn(1, 3, 48, 64)
    )
    assert out.pooler_output.shape == (1, 32)


@pytest.mark.parametrize(
    ("field", "value"),
    [("hidden_size", 64), ("num_hidden_layers", 1), ("num_attention_heads", 8), ("patch_size", 16)],
)
def test_overrides_that_contradict_the_vit_are_errors(field, value):
    vit = vilt.ViTModel(vilt.ViTConfig(**VIT))
    with pytest.raises(vilt.CheckpointError, match=f"ViT has {field}=.*cannot build a ViLT"):
        vilt.ViltModel.from_vit(vit, **{field: value})


def test_a_vilt_checkpoint_is_not_a_vit(tmp_path):
    vilt.ViltModel(vilt.ViltConfig.from_preset("vilt-test")).save_pretrained(tmp_path)
    with pytest.raises(vilt.CheckpointError, match="holds a 'vilt' model"):
        vilt.ViltModel.from_vit(tmp_path)


def test_a_vit_saved_without_pooler_loads_and_serves(tmp_path):
    """Self-supervised ViTs are saved with add_pooling_layer=False: the pooler starts fresh."""
    hf = hf_vit(tmp_path, cls=transformers.ViTModel, add_pooling_layer=False)
    with pytest.warns(vilt.CheckpointWarning, match="newly initialised .not in the checkpoint"):
        model = vilt.ViTModel.from_pretrained(tmp_path).eval()
    assert model.loading_info["newly_initialized"] == ["pooler.dense.bias", "pooler.dense.weight"]
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            model(pixels).last_hidden_state, hf(pixel_values=pixels).last_hidden_state
        )
    assert vilt.ViltModel.from_vit(tmp_path).config.hidden_size == 32


def test_text_embeddings_from_a_bert_checkpoint(tmp_path):
    bert = transformers.BertModel(
        transformers.BertConfig(
            vocab_size=70, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=64, type_vocab_size=2,
        )
    )  # fmt: skip
    bert.save_pretrained(tmp_path / "bert")
    vit = vilt.ViTModel(vilt.ViTConfig(**VIT))
    model = vilt.ViltForMaskedLM.from_vit(vit, text=tmp_path / "bert", max_position_embeddings=20)
    assert model.config.vocab_size == 70
    text = model.vilt.embeddings.text
    theirs = bert.embeddings
    assert torch.equal(text.word_embeddings.weight, theirs.word_embeddings.weight)
    assert torch.equal(text.position_embeddings.weight, theirs.position_embeddings.weight[:20])
    assert torch.equal(text.norm.weight, theirs.LayerNorm.weight)
    assert len(model.loading_info["from_text"]) == 5
    with pytest.raises(vilt.CheckpointError, match="64 text positions, fewer than"):
        vilt.ViltModel.from_vit(vit, text=tmp_path / "bert", max_position_embeddings=80)
    with pytest.raises(vilt.CheckpointError, match="not a BERT"):
        vilt.ViltModel.from_vit(vit, text=tmp_path)


def pairs(t: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return dict(
        input_ids=torch.randint(1, 100, (2, t), generator=gen),
        pixel_values=torch.randn(2, 3, 32, 32, generator=gen),
    )


def test_resize_text_positions_keeps_what_fit_and_runs_longer_text(tmp_path):
    model = vilt.ViltForQuestionAnswering(vilt.ViltConfig.from_preset("vilt-test")).eval()
    short = pairs(10)
    before = model(**short).logits
    with pytest.raises(ValueError, match="longer than max_position_embeddings"):
        model(**pairs(30))
    model.resize_text_positions(40)
    assert model.config.max_position_embeddings == 40 == model.vilt.config.max_position_embeddings
    assert torch.equal(model(**short).logits, before)
    table = model.vilt.embeddings.text.position_embeddings.weight
    assert torch.equal(table[16], table[1]) and torch.equal(table[30], table[15])
    model.save_pretrained(tmp_path)
    again = vilt.ViltForQuestionAnswering.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(again(**pairs(30)).logits, model(**pairs(30)).logits)
    model.resize_text_positions(12)
    torch.testing.assert_close(model(**short).logits, before)
    with pytest.raises(ValueError, match="at least 2 positions"):
        model.resize_text_positions(1)


def test_drop_path_and_layer_scale_are_off_by_default_and_shape_the_blocks_when_on(tmp_path):
    plain = vilt.ViTModel(vilt.ViTConfig(**VIT))
    assert not any("ls1" in k or "ls2" in k for k in plain.state_dict())
    config = vilt.ViTConfig(
        **(VIT | {"num_hidden_layers": 3}), drop_path_rate=0.2, layer_scale_init_value=1e-4
    )
    model = vilt.ViTForImageClassification(config)
    rates = [
        block.drop_path.rate if hasattr(block.drop_path, "rate") else 0.0
        for block in model.vit.encoder.blocks
    ]
    assert rates == pytest.approx([0.0, 0.1, 0.2])
    assert torch.equal(model.vit.encoder.blocks[0].ls1.gamma, torch.full((32,), 1e-4))
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(model(pixel_values=x).logits, model(pixel_values=x).logits)
    model.train()
    torch.manual_seed(0)
    a = model(pixel_values=x).logits
    torch.manual_seed(1)
    assert not torch.allclose(a, model(pixel_values=x).logits)  # branches dropped at random
    model.save_pretrained(tmp_path)
    assert vilt.ViTForImageClassification.from_pretrained(tmp_path).config.drop_path_rate == 0.2
    with pytest.raises(vilt.CheckpointError, match="no layer scale"):
        model.save_pretrained(tmp_path / "hf", format="transformers")
    with pytest.raises(vilt.ConfigError, match="drop_path_rate"):
        vilt.ViTConfig(drop_path_rate=1.0)


def test_the_vit_preset_of_the_easy_vqa_vilt_shape_gives_every_block():
    """vit-mini-h16 is vilt-small-h16's shape: a ViT trained at it starts that ViLT whole."""
    vit = vilt.ViTForImageClassification(vilt.ViTConfig.from_preset("vit-mini-h16"))
    with pytest.warns(vilt.CheckpointWarning, match="4 blocks and the final norm"):
        model = vilt.ViltForQuestionAnswering.from_vit(vit, num_labels=13)
    target = vilt.ViltConfig.from_preset("vilt-small-h16")
    fields = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "image_size", "patch_size", "layer_norm_eps")  # fmt: skip
    assert {f: getattr(model.config, f) for f in fields} == {f: getattr(target, f) for f in fields}
