"""Checkpoint files and names: hub names (offline), pytorch_model.bin through weights_only,
shards, transformers 5 names, optional weights, original ViLT .ckpt files, convert(), config
translation and the errors a user sees."""

import json
import time

import huggingface_hub
import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

import vilt
from vilt.config import PRESETS
from vilt.interop import config_from_transformers, config_to_transformers, convert

TF_VIT = dict(PRESETS["vit-test"][1], num_labels=3)  # tiny: 32 wide, 2 layers, 32 px
TF_VILT = dict(TF_VIT, vocab_size=50, max_position_embeddings=12)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty hub cache and no network, whatever the machine's settings."""
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def save_tf(model, path, perturb):
    perturb(model).save_pretrained(path)
    return model


def vilt_batch(t: int = 6) -> dict[str, torch.Tensor]:
    return dict(
        input_ids=torch.randint(1, 50, (2, t)),
        attention_mask=torch.tensor([[1] * t, [1] * (t - 2) + [0, 0]]),
        pixel_values=torch.randn(2, 3, 32, 40),
    )


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# -- hub names -----------------------------------------------------------------------------------
def test_unresolvable_hub_name_fails_fast_in_one_line(offline_cache):
    start = time.monotonic()
    with pytest.raises(vilt.CheckpointError) as info:
        vilt.ViltModel.from_pretrained("someone/no-such-vilt")
    message = str(info.value)
    assert time.monotonic() - start < 5
    assert "\n" not in message
    assert "someone/no-such-vilt" in message and "local checkpoint directory" in message
    # the download command it suggests is the one huggingface_hub installs (`hf`)
    assert "`hf download someone/no-such-vilt --local-dir DIR`" in message


def test_hub_name_resolves_from_the_local_cache(offline_cache, perturb):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = offline_cache / "models--org--tiny-vit"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    ref = save_tf(transformers.ViTModel(transformers.ViTConfig(**TF_VIT)), snapshot, perturb)
    model = vilt.load_model("org/tiny-vit")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x).pooler_output, ref(x).pooler_output)


def test_missing_absolute_path_is_not_taken_for_a_hub_name(tmp_path, offline_cache):
    with pytest.raises(vilt.CheckpointError, match="no such checkpoint directory"):
        vilt.ViTModel.from_pretrained(tmp_path / "nowhere")


# -- weight files --------------------------------------------------------------------------------
def test_pytorch_model_bin_is_read_with_weights_only(tmp_path, perturb, monkeypatch):
    save_tf(
        transformers.ViltForQuestionAnswering(transformers.ViltConfig(**TF_VILT)), tmp_path, perturb
    )
    expected = vilt.ViltForQuestionAnswering.from_pretrained(tmp_path)
    torch.save(load_file(tmp_path / "model.safetensors"), tmp_path / "pytorch_model.bin")
    (tmp_path / "model.safetensors").unlink()
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: calls.append(kw) or real_load(*a, **kw))
    same_state(vilt.ViltForQuestionAnswering.from_pretrained(tmp_path), expected)
    assert calls and all(kw.get("weights_only") is True for kw in calls)


class NotATensor:
    pass


def test_pickled_objects_are_refused(tmp_path):
    transformers.ViTConfig(**TF_VIT).save_pretrained(tmp_path)
    torch.save(
        {"embeddings.cls_token": torch.zeros(1), "x": NotATensor()}, tmp_path / "pytorch_model.bin"
    )
    with pytest.raises(
        vilt.CheckpointError,
        match=r"pytorch_model.bin: cannot be read with torch.load\(weights_only=True\)",
    ):
        vilt.ViTModel.from_pretrained(tmp_path)


def test_sharded_safetensors_load_like_one_file(tmp_path, perturb):
    ref = transformers.ViltForMaskedLM(transformers.ViltConfig(**TF_VILT))
    perturb(ref).save_pretrained(tmp_path / "one")
    ref.save_pretrained(tmp_path / "shards", max_shard_size="20KB")
    assert (tmp_path / "shards" / "model.safetensors.index.json").is_file()
    same_state(
        vilt.ViltForMaskedLM.from_pretrained(tmp_path / "shards"),
        vilt.ViltForMaskedLM.from_pretrained(tmp_path / "one"),
    )


def test_transformers_5_in_memory_names_load(tmp_path, perturb):
    ref = perturb(transformers.ViTModel(transformers.ViTConfig(**TF_VIT)))
    assert any(".q_proj." in k for k in ref.state_dict())
    ref.config.save_pretrained(tmp_path)
    save_file(
        {k: v.contiguous() for k, v in ref.state_dict().items()}, tmp_path / "model.safetensors"
    )
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = vilt.ViTModel.from_pretrained(tmp_path).eval()(x)
        torch.testing.assert_close(
            out.last_hidden_state, ref(x).last_hidden_state, atol=1e-5, rtol=1e-5
        )


def test_vit_pooler_in_a_classification_checkpoint(tmp_path, perturb):
    save_tf(
        transformers.ViTForImageClassification(transformers.ViTConfig(**TF_VIT)), tmp_path, perturb
    )
    state = load_file(tmp_path / "model.safetensors")
    pooler = {
        "vit.pooler.dense.weight": torch.randn(32, 32),
        "vit.pooler.dense.bias": torch.randn(32),
    }
    save_file(state | pooler, tmp_path / "model.safetensors")
    classifier = vilt.ViTForImageClassification.from_pretrained(tmp_path)  # strict: no error
    assert any("vit.pooler" in note for note in classifier.loading_info["notes"])
    with pytest.warns(vilt.CheckpointWarning, match="unused checkpoint weights: classifier"):
        backbone = vilt.ViTModel.from_pretrained(tmp_path)
    assert torch.equal(backbone.pooler.dense.weight, pooler["vit.pooler.dense.weight"])


def test_vit_model_checkpoint_with_vit_prefix_keeps_its_pooler(tmp_path, perturb):
    ref = save_tf(transformers.ViTModel(transformers.ViTConfig(**TF_VIT)), tmp_path, perturb)
    state = load_file(tmp_path / "model.safetensors")
    save_file({"vit." + k: v for k, v in state.items()}, tmp_path / "model.safetensors")
    model = vilt.load_model(tmp_path)
    assert torch.equal(model.pooler.dense.weight, ref.pooler.dense.weight)


@pytest.mark.parametrize("decoder", ["absent", "tied", "different"])
def test_mlm_decoder_weight_is_optional(decoder, tmp_path, perturb, recwarn):
    save_tf(transformers.ViltForMaskedLM(transformers.ViltConfig(**TF_VILT)), tmp_path, perturb)
    state = load_file(tmp_path / "model.safetensors")
    words = state["vilt.embeddings.text_embeddings.word_embeddings.weight"]
    if decoder != "absent":
        state["mlm_score.decoder.weight"] = (
            words.clone() if decoder == "tied" else torch.randn_like(words)
        )
    save_file(state, tmp_path / "model.safetensors")
    model = vilt.ViltForMaskedLM.from_pretrained(tmp_path)
    assert torch.equal(model.vilt.embeddings.text.word_embeddings.weight, words)
    messages = [str(w.message) for w in recwarn if issubclass(w.category, vilt.CheckpointWarning)]
    if decoder == "different":
        assert any("mlm_score.decoder.weight differs" in m for m in messages)
    else:
        assert not messages


# -- original ViLT checkpoints -------------------------------------------------------------------
TO_ORIGINAL = [  # vilt name prefix -> the original code's, written out independently of vilt
    ("vilt.embeddings.text.norm.", "text_embeddings.LayerNorm."),
    ("vilt.embeddings.text.", "text_embeddings."),
    ("vilt.embeddings.modality_type_embeddings.", "token_type_embeddings."),
    ("vilt.embeddings.image.patch_embeddings.proj.", "transformer.patch_embed.proj."),
    ("vilt.embeddings.image.cls_token", "transformer.cls_token"),
    ("vilt.embeddings.image.position_embeddings", "transformer.pos_embed"),
    ("vilt.encoder.blocks.", "transformer.blocks."),
    ("vilt.encoder.norm.", "transformer.norm."),
    ("vilt.pooler.", "pooler."),
    ("itm_head.", "itm_score.fc."),
    ("mlm_head.dense.", "mlm_score.transform.dense."),
    ("mlm_head.norm.", "mlm_score.transform.LayerNorm."),
    ("mlm_head.bias", "mlm_score.bias"),
]


def original_state(model, classifier: str = "vqa_classifier") -> dict[str, torch.Tensor]:
    out = {"text_embeddings.position_ids": torch.arange(model.config.max_position_embeddings)[None]}
    for key, value in model.state_dict().items():
        for old, new in [*TO_ORIGINAL, ("classifier.", classifier + ".")]:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value.clone()
    return out


ORIGINAL_CASES = {  # class: hidden size, heads (64 wide: the default head width), outputs
    "ViltForQuestionAnswering": (32, 4, ("logits",)),
    "ViltForImagesAndTextClassification": (32, 4, ("logits",)),
    "ViltForPreTraining": (64, 1, ("itm_logits", "mlm_logits")),
    "ViltForImageTextMatching": (64, 1, ("scores",)),
}


@pytest.mark.parametrize("name", list(ORIGINAL_CASES))
def test_original_vilt_ckpt_loads_with_parity(name, tmp_path, perturb):
    hidden, heads, fields = ORIGINAL_CASES[name]
    config = vilt.ViltConfig.from_preset(
        "vilt-test", hidden_size=hidden, num_attention_heads=heads, vocab_size=50, num_labels=5,
        max_position_embeddings=12, modality_type_vocab_size=3 if "Images" in name else 2,
    )  # fmt: skip
    model = perturb(getattr(vilt, name)(config))
    state = original_state(model, "nlvr2_classifier" if "Images" in name else "vqa_classifier")
    if name == "ViltForPreTraining":
        state["mlm_score.decoder.weight"] = state["text_embeddings.word_embeddings.weight"]
    if name == "ViltForImageTextMatching":  # a retrieval fine-tune: the rank head is the score
        w, b = state["itm_score.fc.weight"], state["itm_score.fc.bias"]
        state["rank_output.weight"], state["rank_output.bias"] = w[1:] - w[:1], b[1:] - b[:1]
        state["itm_score.fc.weight"] = torch.randn_like(w)  # left out when rank_output is there
    data = {"state_dict": state, "epoch": 3}
    if heads != 1:
        data["hyper_parameters"] = {"config": {"num_heads": heads}}
    torch.save(data, tmp_path / "vilt.ckpt")
    loaded = vilt.load_model(tmp_path / "vilt.ckpt").eval()
    assert type(loaded).__name__ == name and loaded.config.num_attention_heads == heads
    images = 2 if "Images" in name else 1
    batch = vilt_batch() | {"pixel_values": torch.randn(2, images, 3, 32, 40).squeeze(1)}
    with torch.no_grad():
        a, b = model(**batch), loaded(**batch)
    for field in fields:
        torch.testing.assert_close(getattr(a, field), getattr(b, field), atol=1e-5, rtol=1e-5)


def test_original_ckpt_with_python_objects_is_refused(tmp_path):
    torch.save({"state_dict": {}, "callbacks": NotATensor()}, tmp_path / "last.ckpt")
    with pytest.raises(vilt.CheckpointError, match=r"weights_only=True.*never unpickles"):
        vilt.load_model(tmp_path / "last.ckpt")


def test_original_mlm_decoder_that_differs_is_reported(tmp_path):
    model = vilt.ViltForMaskedLM(
        vilt.ViltConfig.from_preset("vilt-test", hidden_size=64, num_attention_heads=1)
    )
    state = original_state(model)
    state["mlm_score.decoder.weight"] = torch.randn_like(
        state["text_embeddings.word_embeddings.weight"]
    )
    torch.save({"state_dict": state}, tmp_path / "mlm.ckpt")
    with pytest.warns(vilt.CheckpointWarning, match="decoder is not loaded"):
        assert type(vilt.load_model(tmp_path / "mlm.ckpt")) is vilt.ViltForMaskedLM


# -- convert -------------------------------------------------------------------------------------
def test_convert_both_ways_keeps_class_weights_and_side_files(tmp_path, perturb):
    ref = transformers.ViltForImageAndTextRetrieval(transformers.ViltConfig(**TF_VILT))
    save_tf(ref, tmp_path / "tf", perturb)
    (tmp_path / "tf" / "preprocessor_config.json").write_text('{"size": 384}')
    convert(tmp_path / "tf", tmp_path / "vilt")  # the default target is the other format
    data = json.loads((tmp_path / "vilt" / "config.json").read_text())
    assert data["architectures"] == ["ViltForImageTextMatching"] and "vilt_format" in data
    assert (tmp_path / "vilt" / "preprocessor_config.json").read_text() == '{"size": 384}'
    convert(tmp_path / "vilt", tmp_path / "back")
    assert "vilt_format" not in json.loads((tmp_path / "back" / "config.json").read_text())
    back = transformers.ViltForImageAndTextRetrieval.from_pretrained(tmp_path / "back")
    torch.testing.assert_close(back.rank_output.weight, ref.rank_output.weight)
    torch.testing.assert_close(back.rank_output.bias, ref.rank_output.bias)


def test_convert_keeps_half_precision(tmp_path, perturb):
    save_tf(
        transformers.ViTForImageClassification(transformers.ViTConfig(**TF_VIT)).half(),
        tmp_path / "tf",
        perturb,
    )
    convert(tmp_path / "tf", tmp_path / "out", to="vilt")
    assert {v.dtype for v in load_file(tmp_path / "out" / "model.safetensors").values()} == {
        torch.float16
    }
    with pytest.raises(ValueError, match="unknown target format 'onnx'"):
        convert(tmp_path / "tf", tmp_path / "x", to="onnx")


# -- configs -------------------------------------------------------------------------------------
def test_config_round_trip_through_transformers():
    config = vilt.ViltConfig(
        hidden_size=48, num_hidden_layers=3, num_attention_heads=6, intermediate_size=80,
        hidden_act="gelu_new", layer_norm_eps=1e-6, qkv_bias=False, image_size=96, patch_size=16,
        vocab_size=77, type_vocab_size=3, modality_type_vocab_size=3, max_position_embeddings=24,
        max_image_length=50, num_images=2, pad_token_id=0, id2label={0: "a", 1: "b", 2: "c"},
    )  # fmt: skip
    data = config_to_transformers(config, "ViltForImagesAndTextClassification")
    tf = transformers.ViltConfig(**{k: v for k, v in data.items() if k != "model_type"})
    back = config_from_transformers(
        tf.to_dict() | {"architectures": data["architectures"]}, source="x"
    )
    assert back["architectures"] == ["ViltForImagesAndTextClassification"]
    assert vilt.ViltConfig.from_dict(back) == config


def test_settings_one_side_cannot_express_are_errors(tmp_path):
    mean_pooled = vilt.ViTForImageClassification(
        vilt.ViTConfig.from_preset("vit-test", pooling="mean")
    )
    with pytest.raises(vilt.CheckpointError, match="pooling='mean' cannot be exported"):
        mean_pooled.save_pretrained(tmp_path / "a", format="transformers")
    oblong = vilt.ViltModel(vilt.ViltConfig.from_preset("vilt-test", image_size=(32, 64)))
    with pytest.raises(vilt.CheckpointError, match=r"image_size=\(32, 64\) is not square"):
        oblong.save_pretrained(tmp_path / "b", format="transformers")
    transformers.ViTConfig(**TF_VIT, hidden_act="gelu_fast").save_pretrained(tmp_path / "c")
    with pytest.raises(vilt.CheckpointError, match=r"config.json: hidden_act 'gelu_fast'"):
        vilt.ViTModel.from_pretrained(tmp_path / "c")
    transformers.BertConfig().save_pretrained(tmp_path / "d")
    with pytest.raises(vilt.CheckpointError, match="model_type 'bert' is not a ViT or ViLT"):
        vilt.ViltModel.from_pretrained(tmp_path / "d")
    transformers.ViTConfig(**TF_VIT).save_pretrained(tmp_path / "e")
    with pytest.raises(vilt.CheckpointError, match="has config.json but no weights"):
        vilt.ViTModel.from_pretrained(tmp_path / "e")


def test_a_vit_checkpoint_is_not_a_vilt_model(tmp_path, perturb):
    save_tf(transformers.ViTModel(transformers.ViTConfig(**TF_VIT)), tmp_path, perturb)
    with pytest.raises(vilt.CheckpointError, match="holds a 'vit' model"):
        vilt.ViltModel.from_pretrained(tmp_path)
