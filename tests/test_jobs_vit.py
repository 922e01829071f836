"""The ViT recipe end to end on tiny settings: outputs, label names, evaluation of a saved
model, an imagefolder source and a start from a transformers checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from jobs_helpers import TINY_VIT, assert_run_outputs, results, same_weights, weights
from PIL import Image

import vilt
from vilt.jobs import train_vit
from vilt.processing import ViTImageProcessor


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("vit") / "run"
    assert train_vit.main([*TINY_VIT, "--max-steps", "3", "--output-dir", str(out)]) == 0
    return out


def test_writes_every_output_with_label_names(trained):
    found = assert_run_outputs(trained, steps=3, metric="eval_accuracy")
    assert found["metrics"]["eval_samples"] == 40 and found["data"] == "digits"
    config = json.loads((trained / "config.json").read_text())
    assert config["id2label"] == {str(i): str(i) for i in range(10)}
    processor = ViTImageProcessor.from_pretrained(trained)
    assert processor.size == (32, 32)
    model = vilt.ViTForImageClassification.from_pretrained(trained)
    assert model.config.id2label[3] == "3"


def test_eval_only_scores_a_saved_model_as_training_did(trained, tmp_path):
    out = tmp_path / "eval"
    train_vit.main(["--eval-only", "--init", str(trained), "--max-eval-examples", "40",
                    "--output-dir", str(out)])  # fmt: skip
    assert results(out)["accuracy"] == pytest.approx(results(trained)["accuracy"])
    assert not (out / "model.safetensors").exists()


def test_imagefolder_directory_keeps_class_names(tmp_path):
    root = tmp_path / "shapes"
    for split in ("train", "test"):
        for c, name in enumerate(("circle", "square", "star")):
            (root / split / name).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (20, 16), (80 * c, 20 * i, 0)).save(
                    root / split / name / f"{i}.png"
                )
    out = tmp_path / "run"
    train_vit.main(["--data", str(root), "--preset", "vit-test", "--max-steps", "2",
                    "--batch-size", "6", "--output-dir", str(out)])  # fmt: skip
    assert results(out)["metrics"]["eval_samples"] == 12
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "circle", "1": "square", "2": "star"}


def test_init_from_a_transformers_checkpoint(tmp_path):
    config = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        image_size=16, patch_size=4, num_labels=3,
    )  # fmt: skip
    torch.manual_seed(0)
    hf = tmp_path / "hf-vit"
    transformers.ViTForImageClassification(config).save_pretrained(hf)
    out = tmp_path / "run"
    with pytest.warns(vilt.CheckpointWarning, match="num_labels changed"):
        train_vit.main([*TINY_VIT, "--init", str(hf), "--max-steps", "1", "--lr", "1e-30",
                        "--output-dir", str(out)])  # fmt: skip
    with pytest.warns(vilt.CheckpointWarning, match="newly initialised.*pooler"):
        backbone = vilt.ViTModel.from_pretrained(hf).state_dict()  # no pooler in a classifier
    backbone = {k: v for k, v in backbone.items() if not k.startswith("pooler.")}
    trained = weights(out)
    assert same_weights({k: trained["vit." + k] for k in backbone}, backbone, atol=1e-20)
    assert trained["classifier.weight"].shape == (10, 32)  # digits: a new 10-way head
    assert ViTImageProcessor.from_pretrained(out).size == (16, 16)  # the checkpoint's size


def test_regularisation_flags_train_end_to_end_and_keep_ema_and_best(tmp_path):
    out = tmp_path / "run"
    flags = ["--crop-scale", "0.6", "--randaugment", "2", "--random-erasing", "0.25",
             "--mixup", "0.8", "--cutmix", "1.0", "--label-smoothing", "0.1",
             "--drop-path", "0.1", "--layer-scale", "1e-4", "--ema-decay", "0.9",
             "--save-best", "ema_accuracy", "--eval-every", "2"]  # fmt: skip
    assert train_vit.main([*TINY_VIT, *flags, "--max-steps", "4", "--output-dir", str(out)]) == 0
    found = assert_run_outputs(out, steps=4, metric="eval_accuracy")
    assert 0 <= found["ema_accuracy"] <= 1 and found["best"]["weights"] == "ema"
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "single_label_classification"  # soft-target CE
    assert (config["drop_path_rate"], config["layer_scale_init_value"]) == (0.1, 1e-4)
    for kept in ("ema", "best"):  # each loads with its processor
        assert vilt.ViTForImageClassification.from_pretrained(out / kept).config.num_labels == 10
        assert ViTImageProcessor.from_pretrained(out / kept).size == (32, 32)
    assert json.loads((out / "best" / "best.json").read_text())["metric"] == "ema_eval_accuracy"


def test_init_at_a_new_image_size_resamples_and_saves_the_new_size(trained, tmp_path):
    out = tmp_path / "bigger"
    with pytest.warns(vilt.CheckpointWarning, match="from 4x4 to 6x6 patches"):
        train_vit.main([*TINY_VIT, "--init", str(trained), "--image-size", "48", "--max-steps",
                        "2", "--layer-decay", "0.75", "--output-dir", str(out)])  # fmt: skip
    assert json.loads((out / "config.json").read_text())["image_size"] == 48
    assert ViTImageProcessor.from_pretrained(out).size == (48, 48)
    assert weights(out)["vit.embeddings.position_embeddings"].shape == (1, 37, 32)
    assert results(out)["metrics"]["eval_samples"] == 40


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--init", "runs/x", "--layer-scale", "1e-4"], "--layer-scale adds weights"),
        (["--drop-path", "1"], "--drop-path must be in"),
        (["--randaugment", "2", "--trivialaugment"], "alternatives"),
        (["--save-best", "accuracy", "--early-stop-patience", "2"], "set eval_every too"),
    ],
)
def test_bad_flags_stop_before_any_data_is_read(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_vit.parse_args([*TINY_VIT, *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
