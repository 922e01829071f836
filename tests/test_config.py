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


BAD_FIELDS = [
    ({"image_size": "384"}, "image_size must be one size or (height, width), in whole pixels"),
    ({"image_size": [32.5, 32]}, "image_size must be one size or (height, width)"),
    ({"hidden_size": "32"}, "hidden_size must be an integer, got '32' (str)"),
    ({"num_labels": 2.0}, "num_labels must be an integer, got 2.0 (float)"),
    ({"layer_norm_eps": "1e-6"}, "layer_norm_eps must be a finite number"),
    ({"hidden_dropout_prob": None}, "hidden_dropout_prob must be a finite number"),
    ({"qkv_bias": "false"}, "qkv_bias must be true or false"),
    ({"hidden_act": 1}, "hidden_act must be a string"),
    ({"id2label": ["red", "blue"]}, "id2label must be a mapping of label ids"),
    ({"id2label": {"0": "red", "1": None}}, "id2label must be a mapping of label ids"),
    ({"id2label": {"zero": "red"}}, "id2label must be a mapping of label ids"),
    (
        {"id2label": {"0": "red", "2": "blue"}},
        "id2label must number its labels 0 to 1 without gaps",
    ),
    ({"label2id": {"red": "0"}}, "label2id must be a mapping of label names"),
    ({"image_size": 36, "patch_size": 8}, "image_size 36 is not a whole number of patches"),
    ({"image_size": [32, 30], "patch_size": 8}, "is not a whole number of patches"),
]


@pytest.mark.parametrize(("fields", "message"), BAD_FIELDS)
def test_a_config_file_with_a_wrong_typed_field_names_the_file_and_the_field(
    fields, message, tmp_path
):
    data = vilt.ViltConfig.from_preset("vilt-test").to_dict() | fields
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as err:
        vilt.ViltConfig.load(path)
    assert str(err.value).startswith(f"{path}: ViltConfig.") and message in str(err.value)


def test_id2label_keys_in_any_order_and_as_ints_or_strings_are_one_config():
    a = vilt.ViTConfig.from_preset("vit-test", id2label={"1": "dog", "0": "cat"})
    b = vilt.ViTConfig.from_preset("vit-test", id2label={0: "cat", 1: "dog"})
    assert a == b and a.num_labels == 2


@pytest.mark.parametrize("kind", ["vilt", "transformers"])
def test_a_checkpoint_whose_config_is_wrong_is_refused_naming_its_config_file(kind, tmp_path):
    from tiny_checkpoints import save_vit

    from vilt.modeling.pretrained import CheckpointError

    out = save_vit(tmp_path / "vit", num_labels=3)
    if kind == "transformers":
        vilt.ViTForImageClassification.from_pretrained(out).save_pretrained(
            tmp_path / "hf", format="transformers"
        )
        out = tmp_path / "hf"
    config_file = out / "config.json"
    data = json.loads(config_file.read_text())
    data["id2label"] = {"0": "cat", "1": "dog", "5": "eel"}
    config_file.write_text(json.dumps(data))
    for load in (vilt.ViTForImageClassification.from_pretrained, vilt.load_model):
        with pytest.raises(CheckpointError, match="without gaps") as err:
            load(out)
        assert str(err.value).startswith(f"{config_file}: ViTConfig.id2label")
