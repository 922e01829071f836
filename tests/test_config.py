"""Configs: presets, validation errors, JSON round trip."""

import json

import pytest

import vilt
from vilt.config import ConfigError, to_pair


def test_defaults_match_public_checkpoints():
    vit = vilt.ViTConfig()
    assert (vit.hidden_size, vit.num_hidden_layers, vit.image_size, vit.patch_size) == (
        768,
        12,
        224,
        16,
    )
    v = vilt.ViltConfig()
    assert (v.image_size, v.patch_size, v.max_position_embeddings, v.vocab_size) == (
        384,
        32,
        40,
        30522,
    )
    assert v.layer_norm_eps == 1e-12 and v.modality_type_vocab_size == 2


@pytest.mark.parametrize("name", vilt.preset_names())
def test_every_preset_builds_and_round_trips(name, tmp_path):
    config = vilt.get_preset(name)
    path = tmp_path / "config.json"
    config.save(path)
    loaded = type(config).load(path)
    assert loaded == config
    assert json.loads(path.read_text())["model_type"] == config.model_type


def test_from_dict_ignores_foreign_keys_and_applies_overrides():
    data = vilt.ViltConfig.from_preset("vilt-test").to_dict() | {"architectures": ["X"]}
    config = vilt.ViltConfig.from_dict(data, num_labels=7)
    assert config.num_labels == 7


def test_id2label_sets_num_labels_and_survives_json(tmp_path):
    config = vilt.ViTConfig.from_preset("vit-test", id2label={0: "cat", 1: "dog", 2: "eel"})
    assert config.num_labels == 3 and config.label2id == {"cat": 0, "dog": 1, "eel": 2}
    config.save(tmp_path / "c.json")
    assert vilt.ViTConfig.load(tmp_path / "c.json").id2label == {0: "cat", 1: "dog", 2: "eel"}


def test_changing_num_labels_drops_stale_label_names():
    config = vilt.ViTConfig.from_preset("vit-test", id2label={0: "a", 1: "b"})
    assert config.replace(num_labels=5).id2label is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hidden_size": 30, "num_attention_heads": 4}, "divisible by num_attention_heads"),
        ({"num_hidden_layers": 0}, "num_hidden_layers must be a positive integer"),
        ({"hidden_act": "swishy"}, "hidden_act 'swishy' is not supported"),
        ({"patch_size": 64}, "larger than image_size"),
        ({"hidden_dropout_prob": 1.5}, "hidden_dropout_prob must be in [0, 1)"),
        ({"max_image_length": 0}, "max_image_length must be -1"),
        ({"modality_type_vocab_size": 1}, "modality_type_vocab_size must be >= 2"),
        ({"image_size": (32, 32, 3)}, "image_size must be one size or"),
    ],
)
def test_validation_names_the_bad_field(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
        vilt.ViltConfig.from_preset("vilt-test", **overrides)


def test_to_pair_is_the_one_size_pair_helper():
    """config, the image processors, the embeddings and the jobs all read sizes through it."""
    assert to_pair(16) == (16, 16)
    assert to_pair([24, 32]) == (24, 32) and to_pair((24.0, 32.0)) == (24, 32)
    with pytest.raises(ValueError, match=r"one size or \(height, width\), got \(1, 2, 3\)"):
        to_pair((1, 2, 3))


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ConfigError, match="known presets: .*vilt-b32"):
        vilt.get_preset("vilt-huge")
    with pytest.raises(ConfigError, match="vit-base/16"):
        vilt.ViTConfig.from_preset("vilt-b32")


def test_unknown_override_field_is_an_error():
    with pytest.raises(ConfigError, match="no field"):
        vilt.ViltConfig.from_dict({}, hiden_size=3)


def test_malformed_json_names_the_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{oops")
    with pytest.raises(ConfigError, match="bad.json"):
        vilt.ViltConfig.load(path)
