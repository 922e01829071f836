"""Layer-wise learning-rate decay: the groups it makes for ViT and ViLT (depths, rates,
weight decay, heads), the table the trainer prints, and the schedule over every group."""

from __future__ import annotations

import pytest
import torch
from test_training import make_trainer

import vilt
from vilt.training import describe_param_groups, layer_id, param_groups


def by_name(model, groups):
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g for g in groups for p in g["params"]}


def test_vit_groups_follow_depth_with_the_weight_decay_split_and_heads():
    config = vilt.ViTConfig.from_preset("vit-test", image_size=16, patch_size=4, num_labels=3)
    model = vilt.ViTForImageClassification(config)  # 2 blocks: layers 0 .. 3
    groups = param_groups(
        model, lr=1.0, weight_decay=0.05, head_lr_multiplier=10.0, layer_decay=0.5
    )
    found = by_name(model, groups)
    assert len(found) == len(list(model.parameters()))  # each parameter in one group
    expected = {
        "vit.embeddings.patch_embeddings.proj.weight": (0, 0.125, 0.05),
        "vit.embeddings.cls_token": (0, 0.125, 0.0),
        "vit.embeddings.position_embeddings": (0, 0.125, 0.0),
        "vit.encoder.blocks.0.attn.qkv.weight": (1, 0.25, 0.05),
        "vit.encoder.blocks.0.norm1.bias": (1, 0.25, 0.0),
        "vit.encoder.blocks.1.mlp.fc2.weight": (2, 0.5, 0.05),
        "vit.encoder.norm.weight": (3, 1.0, 0.0),
        "classifier.weight": (3, 10.0, 0.05),  # the top layer's rate, times the head's
        "classifier.bias": (3, 10.0, 0.0),
    }
    for name, (layer, lr, wd) in expected.items():
        group = found[name]
        assert (group["layer"], group["lr"], group["weight_decay"]) == (layer, lr, wd), name
    assert groups[0]["name"] == "layer_03_no_decay" and groups[0]["lr"] == 1.0  # logged lr
    assert [g["layer"] for g in groups] == sorted((g["layer"] for g in groups), reverse=True)
    assert found["vit.encoder.blocks.1.mlp.fc2.weight"]["pattern"] == "vit.encoder.blocks.1.*"
    # without layer decay: the four groups as before
    plain = param_groups(model, lr=1.0, weight_decay=0.05, head_lr_multiplier=10.0)
    assert [g["name"] for g in plain] == ["decay", "no_decay", "head_decay", "head_no_decay"]
    same = param_groups(model, lr=1.0, weight_decay=0.05, layer_decay=1.0)
    assert [g["name"] for g in same] == [g["name"] for g in plain]


def test_vilt_groups_put_text_and_image_embeddings_first_and_heads_last():
    model = vilt.ViltForQuestionAnswering(vilt.ViltConfig.from_preset("vilt-test", num_labels=5))
    found = by_name(model, param_groups(model, lr=1.0, weight_decay=0.01, layer_decay=0.5))
    layers = {name: group["layer"] for name, group in found.items()}
    assert layers["vilt.embeddings.text.word_embeddings.weight"] == 0
    assert layers["vilt.embeddings.image.patch_embeddings.proj.weight"] == 0
    assert layers["vilt.embeddings.modality_type_embeddings.weight"] == 0
    assert layers["vilt.encoder.blocks.0.mlp.fc1.weight"] == 1
    assert layers["vilt.encoder.blocks.1.attn.proj.weight"] == 2
    assert layers["vilt.pooler.dense.weight"] == 3 and layers["vilt.encoder.norm.bias"] == 3
    head = [n for n in found if n.startswith(model.head_prefixes)]
    assert head and all(layers[n] == 3 for n in head)
    assert found["vilt.embeddings.text.word_embeddings.weight"]["lr"] == 0.125
    assert layer_id("anything.else", depth=12) == 13


def test_the_trainer_prints_the_groups_and_the_schedule_keeps_their_ratios(tmp_path, capsys):
    seen = []

    def rates(trainer, record):
        seen.append([g["lr"] for g in trainer.optimizer.param_groups])

    trainer = make_trainer(tmp_path, max_steps=4, layer_decay=0.5, callbacks=[rates])
    printed = capsys.readouterr().out
    assert "layer-wise lr decay 0.5:" in printed
    assert "layer_00_decay" in printed and "(x0.125)" in printed and "vit.embeddings.*" in printed
    trainer.train()
    groups = trainer.optimizer.param_groups
    initial = [g["lr_scale"] * (10.0 if "head" in g["name"] else 1.0) for g in groups]
    for lrs in seen[:-1]:  # the warmup and the cosine scale every group alike
        assert [lr / lrs[0] for lr in lrs] == pytest.approx(initial)
    lines = describe_param_groups(groups, 1e-3)
    assert len(lines) == len(groups) and "tensors" in lines[0]
    with pytest.raises(ValueError, match="layer_decay"):
        vilt.training.TrainingConfig(layer_decay=1.5)


def test_layer_decay_trains_lower_layers_less():
    torch.manual_seed(0)
    config = vilt.ViTConfig.from_preset("vit-test", image_size=16, patch_size=4, num_labels=3)
    model = vilt.ViTForImageClassification(config)
    groups = param_groups(model, lr=1.0, weight_decay=0.0, layer_decay=0.1)
    optimizer = torch.optim.SGD(groups, lr=1.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    step = {n: (before[n] - p.detach()).abs().max().item() for n, p in model.named_parameters()}
    assert step["vit.encoder.norm.weight"] == pytest.approx(1.0)
    assert step["vit.encoder.blocks.1.attn.qkv.weight"] == pytest.approx(0.1)
    assert step["vit.encoder.blocks.0.attn.qkv.weight"] == pytest.approx(0.01)
    assert step["vit.embeddings.cls_token"] == pytest.approx(0.001)
