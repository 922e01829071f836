"""vilt's own checkpoint format: exact round trip, head changes, clear errors, atomic writes."""

import json
import warnings

import pytest
import torch

import vilt
from vilt.atomic import atomic_write

VILT = vilt.ViltConfig.from_preset("vilt-test", num_labels=4)
VIT = vilt.ViTConfig.from_preset("vit-test", num_labels=3)
MODELS = [
    (vilt.ViTModel, VIT),
    (vilt.ViTForImageClassification, VIT),
    (vilt.ViltModel, VILT),
    (vilt.ViltForQuestionAnswering, VILT),
    (vilt.ViltForImageTextMatching, VILT),
    (vilt.ViltForImageTextRetrieval, VILT),
    (vilt.ViltForMaskedLM, VILT),
    (vilt.ViltForPreTraining, VILT),
    (vilt.ViltForImagesAndTextClassification, VILT),
]


@pytest.mark.parametrize(("cls", "config"), MODELS, ids=lambda x: getattr(x, "__name__", ""))
def test_save_and_load_is_bit_exact(cls, config, tmp_path):
    torch.manual_seed(0)
    model = cls(config)
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [cls.__name__]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a same-class load must not warn
        loaded = cls.from_pretrained(tmp_path)
    assert loaded.config == model.config
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_backbone_into_head_initialises_the_head_and_says_so(tmp_path):
    torch.manual_seed(0)
    backbone = vilt.ViltModel(VILT)
    backbone.save_pretrained(tmp_path)
    with pytest.warns(vilt.CheckpointWarning, match=r"newly initialised.*classifier\.0\.weight"):
        model = vilt.ViltForQuestionAnswering.from_pretrained(tmp_path, num_labels=13)
    assert model.config.num_labels == 13
    assert "classifier.3.weight" in model.loading_info["newly_initialized"]
    assert torch.equal(model.vilt.pooler.dense.weight, backbone.pooler.dense.weight)


def test_head_model_into_backbone_drops_the_head(tmp_path):
    vilt.ViltForImageTextMatching(VILT).save_pretrained(tmp_path)
    with pytest.warns(vilt.CheckpointWarning, match="unused checkpoint weights: itm_head"):
        vilt.ViltModel.from_pretrained(tmp_path)


def test_changing_num_labels_reinitialises_only_the_head(tmp_path):
    torch.manual_seed(0)
    model = vilt.ViTForImageClassification(VIT)
    model.save_pretrained(tmp_path)
    with pytest.warns(vilt.CheckpointWarning, match="num_labels changed"):
        other = vilt.ViTForImageClassification.from_pretrained(tmp_path, num_labels=7)
    assert other.classifier.weight.shape == (7, 32)
    assert torch.equal(other.vit.embeddings.cls_token, model.vit.embeddings.cls_token)


def test_shape_mismatch_outside_heads_is_an_error(tmp_path):
    vilt.ViltModel(VILT).save_pretrained(tmp_path)
    with pytest.raises(vilt.CheckpointError, match="wrong shape: embeddings.text.word_embeddings"):
        vilt.ViltModel.from_pretrained(tmp_path, vocab_size=50)


def test_wrong_family_and_missing_files_are_clear(tmp_path):
    vilt.ViTModel(VIT).save_pretrained(tmp_path / "vit")
    with pytest.raises(vilt.CheckpointError, match="holds a 'vit' model"):
        vilt.ViltModel.from_pretrained(tmp_path / "vit")
    with pytest.raises(vilt.CheckpointError, match="no such checkpoint"):
        vilt.ViltModel.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "vit" / "model.safetensors").unlink()
    with pytest.raises(vilt.CheckpointError, match="no model.safetensors"):
        vilt.ViTModel.from_pretrained(tmp_path / "vit")


def test_corrupt_weights_name_the_file(tmp_path):
    vilt.ViTModel(VIT).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(vilt.CheckpointError, match="model.safetensors"):
        vilt.ViTModel.from_pretrained(tmp_path)


def test_missing_keys_in_same_class_checkpoint_are_an_error(tmp_path):
    from safetensors.torch import load_file, save_file

    vilt.ViltForQuestionAnswering(VILT).save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["classifier.3.bias"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(vilt.CheckpointError, match=r"missing keys: classifier\.3\.bias"):
        vilt.ViltForQuestionAnswering.from_pretrained(tmp_path)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")

    def broken(tmp):
        with open(tmp, "w") as fh:
            fh.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_saving_again_overwrites_in_place(tmp_path):
    vilt.ViTModel(VIT).save_pretrained(tmp_path)
    model = vilt.ViTModel(VIT)
    model.save_pretrained(tmp_path)
    loaded = vilt.ViTModel.from_pretrained(tmp_path)
    assert torch.equal(loaded.pooler.dense.weight, model.pooler.dense.weight)


@pytest.mark.parametrize(("cls", "config"), MODELS[::3], ids=lambda x: getattr(x, "__name__", ""))
def test_load_model_builds_the_class_the_checkpoint_names(cls, config, tmp_path):
    cls(config).save_pretrained(tmp_path)
    assert type(vilt.load_model(tmp_path)) is cls


def test_load_model_rejects_an_unknown_architecture(tmp_path):
    vilt.ViTModel(VIT).save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data["architectures"] = ["ViTForSegmentation"]
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(vilt.CheckpointError, match="'ViTForSegmentation', which vilt cannot build"):
        vilt.load_model(tmp_path)
