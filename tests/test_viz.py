"""Attention rollout heatmaps and training-curve plots."""

import pytest
import torch
from PIL import Image

import vilt
from vilt.viz import (
    attention_rollout,
    overlay,
    patch_heatmaps,
    plot_training_curves,
    save_attention_figure,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_rollout_rows_are_distributions_and_identity_without_layers_mixing():
    n = 5
    uniform = [torch.full((2, 3, n, n), 1.0 / n) for _ in range(2)]
    roll = attention_rollout(uniform)
    torch.testing.assert_close(roll.sum(-1), torch.ones(2, n))
    # attending only to oneself keeps the identity
    eye = [torch.eye(n).expand(2, 3, n, n) for _ in range(3)]
    torch.testing.assert_close(attention_rollout(eye), torch.eye(n).expand(2, n, n))
    with pytest.raises(ValueError, match="output_attentions=True"):
        attention_rollout([])


def test_vit_heatmap_has_the_patch_grid():
    model = vilt.ViTModel(vilt.ViTConfig.from_preset("vit-test")).eval()
    out = model(torch.randn(2, 3, 32, 32), output_attentions=True)
    maps = patch_heatmaps(out)
    assert maps.shape == (2, 4, 4) and torch.allclose(maps.amax((1, 2)), torch.ones(2))


def test_vilt_heatmap_is_zero_on_padding_patches_and_works_per_text_token():
    model = vilt.ViltModel(vilt.ViltConfig.from_preset("vilt-test")).eval()
    pm = torch.ones(1, 32, 48, dtype=torch.long)
    pm[:, :, 24:] = 0  # right half padding: grid columns 3..5
    out = model(
        input_ids=torch.randint(1, 100, (1, 5)),
        pixel_values=torch.randn(1, 3, 32, 48),
        pixel_mask=pm,
        output_attentions=True,
    )
    for query in (0, 3):
        maps = patch_heatmaps(out, query=query)
        assert maps.shape == (1, 4, 6)
        assert float(maps[0, :, 3:].abs().max()) == 0.0 and float(maps[0, :, :3].max()) == 1.0


def test_overlay_and_figure_write_a_png(tmp_path):
    image = Image.new("RGB", (40, 30), (0, 0, 255))
    heat = torch.zeros(3, 4)
    heat[0, 0] = 1.0
    mixed = overlay(image, heat)
    assert mixed.size == (40, 30)
    assert mixed.getpixel((1, 1)) != (0, 0, 255) and mixed.getpixel((39, 29)) == (0, 0, 255)
    path = save_attention_figure(image, heat, tmp_path / "a.png", title="q? a")
    assert Image.open(path).format == "PNG"


def test_training_curves_compare_runs(tmp_path):
    for name, slope in (("scratch", 1.0), ("pretrained", 0.5)):
        (tmp_path / name).mkdir()
        rows = ["step,loss,lr,accuracy"] + [
            f"{s},{2 - slope * s / 10},0.1,{s / 10}" for s in range(10)
        ]
        (tmp_path / name / "metrics.csv").write_text("\n".join(rows) + "\n")
    out = plot_training_curves(
        [tmp_path / "scratch" / "metrics.csv", tmp_path / "pretrained" / "metrics.csv"],
        tmp_path / "c.png",
    )
    assert Image.open(out).size[0] > 400  # two panels: loss and accuracy (lr skipped)
    (tmp_path / "empty.csv").write_text("step,note\n1,hello\n")
    with pytest.raises(ValueError, match="no numeric columns"):
        plot_training_curves(tmp_path / "empty.csv", tmp_path / "d.png")
