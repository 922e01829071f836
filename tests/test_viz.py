"""Attention rollout heatmaps and training-curve plots."""

import numpy as np
import pytest
import torch
from PIL import Image

import vilt
from vilt.viz import (
    attention_rollout,
    crop_to_image,
    overlay,
    patch_heatmaps,
    plot_training_curves,
    save_attention_figure,
    save_token_attention_figure,
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


def test_rollout_matches_the_formula_by_hand():
    a1 = torch.tensor([[0.5, 0.5], [0.0, 1.0]])
    a2 = torch.tensor([[1.0, 0.0], [0.25, 0.75]])
    heads = lambda a: torch.stack([a, a])[None]  # noqa: E731  (1 batch, 2 equal heads)
    mixed = [0.5 * torch.eye(2) + 0.5 * a for a in (a1, a2)]  # residual, rows already sum to 1
    torch.testing.assert_close(attention_rollout([heads(a1), heads(a2)])[0], mixed[1] @ mixed[0])


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


def vilt_outputs(model, pixel_values, pixel_mask, input_ids):
    return model(
        input_ids=input_ids,
        pixel_values=pixel_values,
        pixel_mask=pixel_mask,
        output_attentions=True,
    )


def test_vilt_heatmap_in_a_padded_batch_equals_the_image_alone():
    model = vilt.ViltModel(vilt.ViltConfig.from_preset("vilt-test")).eval()
    small, large = torch.randn(1, 3, 16, 24), torch.randn(1, 3, 32, 40)
    ids = torch.randint(5, 100, (2, 6))
    alone = patch_heatmaps(vilt_outputs(model, small, None, ids[:1]))[0]  # a 2x3 grid
    batch = torch.zeros(2, 3, 32, 40)
    batch[0, :, :16, :24], batch[1] = small[0], large[0]
    mask = torch.zeros(2, 32, 40, dtype=torch.long)
    mask[0, :16, :24], mask[1] = 1, 1
    maps = patch_heatmaps(vilt_outputs(model, batch, mask, ids))
    assert maps.shape == (2, 4, 5)
    assert float(maps[0, 2:].abs().max()) == 0 and float(maps[0, :, 3:].abs().max()) == 0
    torch.testing.assert_close(crop_to_image(maps[0], mask[0]), alone, rtol=0, atol=1e-5)
    assert crop_to_image(maps[1], mask[1]).shape == (4, 5)


def test_vilt_heatmap_covers_only_the_sampled_patches_in_training():
    config = vilt.ViltConfig.from_preset("vilt-test", max_image_length=5)
    model = vilt.ViltModel(config).train()
    torch.manual_seed(3)
    out = vilt_outputs(model, torch.randn(1, 3, 32, 32), None, torch.randint(5, 100, (1, 4)))
    sampled = out.patch_index[0, 1:].tolist()
    assert len(sampled) == 5
    maps = patch_heatmaps(out).view(-1)
    others = [p for p in range(16) if p not in sampled]
    assert float(maps[others].abs().max()) == 0 and bool((maps[sampled] > 0).all())


def test_query_must_be_a_real_token():
    model = vilt.ViltModel(vilt.ViltConfig.from_preset("vilt-test")).eval()
    ids = torch.randint(5, 100, (1, 6))
    text_mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    out = model(
        input_ids=ids,
        attention_mask=text_mask,
        pixel_values=torch.randn(1, 3, 32, 32),
        output_attentions=True,
    )
    with pytest.raises(ValueError, match="query token 4 is padding in sample"):
        patch_heatmaps(out, query=4)
    with pytest.raises(ValueError, match="outside the sequence of 23 tokens"):
        patch_heatmaps(out, query=23)
    without = model(input_ids=ids, pixel_values=torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="output_attentions=True"):
        patch_heatmaps(without)


def test_token_figure_has_one_panel_per_token(tmp_path):
    image = Image.new("RGB", (40, 30), (0, 0, 255))
    maps = [torch.rand(3, 4) for _ in range(5)]
    path = save_token_attention_figure(image, maps, list("abcde"), tmp_path / "t.png", columns=2)
    two_by_one = save_token_attention_figure(image, maps[:2], ["a", "b"], tmp_path / "u.png")
    wide, tall = Image.open(path).size
    assert Image.open(two_by_one).size[0] == wide and tall > 2 * Image.open(two_by_one).size[1]
    with pytest.raises(ValueError, match="2 heatmaps for 3 tokens"):
        save_token_attention_figure(image, maps[:2], list("abc"), tmp_path / "v.png")


def test_training_curves_check_their_inputs_and_leave_the_backend_alone(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    backend = matplotlib.get_backend()
    good = tmp_path / "metrics.csv"
    good.write_text("step,loss\n1,2.0\n2,1.5\n")
    plot_training_curves(good, tmp_path / "a.png")
    assert matplotlib.get_backend() == backend
    (tmp_path / "nostep.csv").write_text("loss\n2.0\n")
    with pytest.raises(ValueError, match="no 'step' column"):
        plot_training_curves(tmp_path / "nostep.csv", tmp_path / "b.png")
    with pytest.raises(ValueError, match="2 labels for 1 metrics files"):
        plot_training_curves(good, tmp_path / "c.png", labels=["x", "y"])
    with pytest.raises(ValueError, match="no numeric column accuracy"):
        plot_training_curves(good, tmp_path / "d.png", keys=["loss", "accuracy"])


def test_heatmap_puts_each_patch_at_its_row_and_column():
    from vilt.modeling.outputs import EncoderOutput

    # a 2 x 4 grid; the class token attends only to patch (row 0, column 3) = token 1 + 3
    attention = torch.zeros(1, 1, 9, 9)
    attention[0, 0, :, 0] = 1.0
    attention[0, 0, 0] = 0.0
    attention[0, 0, 0, 4] = 1.0
    vit_like = EncoderOutput(attentions=(attention,), text_length=0, grid_size=(2, 4))
    expected = torch.zeros(2, 4)
    expected[0, 3] = 1.0
    torch.testing.assert_close(patch_heatmaps(vit_like)[0], expected)
    # ViLT order: 2 text tokens, the image class token, then patches in any order
    attention = torch.zeros(1, 1, 6, 6)
    attention[0, 0, :, 0] = 1.0
    attention[0, 0, 0] = 0.0
    attention[0, 0, 0, 4] = 1.0  # the second image token, which holds patch 6 = (row 1, col 2)
    vilt_like = EncoderOutput(
        attentions=(attention,),
        text_length=2,
        grid_size=(2, 4),
        patch_index=torch.tensor([[-1, 0, 6, 7]]),
        attention_mask=torch.ones(1, 6, dtype=torch.long),
    )
    expected = torch.zeros(2, 4)
    expected[1, 2] = 1.0
    torch.testing.assert_close(patch_heatmaps(vilt_like)[0], expected)


def test_a_two_line_title_stays_above_the_panels(tmp_path):
    white = Image.new("RGB", (40, 40), "white")
    title = "Q: what shape is present?\npredicted: circle  (answer: circle)"
    one = Image.open(save_attention_figure(white, torch.zeros(2, 2), tmp_path / "1.png", title="q"))
    two = Image.open(
        save_attention_figure(white, torch.zeros(2, 2), tmp_path / "2.png", title=title)
    )
    assert two.height > one.height  # room for the second line
    # the first panel (a white image) is still white: no title text drawn over it
    grid = np.asarray(two.convert("L"))
    top = two.height - (192 + 22 + 8)  # panels (192 high) and their labels fill the bottom
    assert grid[top + 2 : top + 150, 10:180].min() == 255
