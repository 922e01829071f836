"""ViltForImageTextRetrieval: ViLT's ranking objective over groups of candidate pairs, the
same scores as pair-by-pair scoring, and the public retrieval checkpoints (transformers'
ViltForImageAndTextRetrieval, whose rank_output is the ITM match score) in and out."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
import transformers

import vilt

TF_CONFIG = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
    image_size=32, patch_size=8, vocab_size=60, max_position_embeddings=12,
)  # fmt: skip


def _model() -> vilt.ViltForImageTextRetrieval:
    torch.manual_seed(0)
    model = vilt.ViltForImageTextRetrieval(vilt.ViltConfig.from_preset("vilt-test"))
    with torch.no_grad():  # noise: every weight counts
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return model.eval()


def _groups(b: int = 3, g: int = 4, t: int = 7):
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 100, (b, g, t), generator=gen)
    am = torch.ones(b, g, t, dtype=torch.long)
    am[:, 1, 4:] = 0  # candidates of different lengths
    images = torch.randn(b, 1, 3, 32, 48, generator=gen)
    mask = torch.ones(b, 1, 32, 48, dtype=torch.long)
    mask[1, :, 16:] = 0
    return ids, am, images, mask


def test_grouped_scores_are_the_pairs_scores_and_the_loss_ranks_them():
    model = _model()
    ids, am, images, mask = _groups()
    b, g = ids.shape[:2]
    labels = torch.tensor([0, 2, 1])
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=am, pixel_values=images, pixel_mask=mask,
                    labels=labels)  # fmt: skip
        flat = model(
            input_ids=ids.reshape(b * g, -1),
            attention_mask=am.reshape(b * g, -1),
            pixel_values=images.expand(b, g, 3, 32, 48).reshape(b * g, 3, 32, 48),
            pixel_mask=mask.expand(b, g, 32, 48).reshape(b * g, 32, 48),
        )
    assert out.scores.shape == (b, g) and out.logits.shape == (b, g, 2)
    torch.testing.assert_close(out.scores, flat.scores.view(b, g), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, F.cross_entropy(flat.scores.view(b, g), labels))
    # images as candidates: one text per group, G images
    with torch.no_grad():
        by_image = model(
            input_ids=ids[:, :1], attention_mask=am[:, :1],
            pixel_values=images.expand(b, g, 3, 32, 48), pixel_mask=mask.expand(b, g, 32, 48),
        )  # fmt: skip
    first = flat.scores.view(b, g)[:, :1].expand(b, g)  # text 0 with the (same) image
    torch.testing.assert_close(by_image.scores, first, atol=1e-5, rtol=1e-5)


def test_flat_pairs_are_image_text_matching():
    model = _model()
    itm = vilt.ViltForImageTextMatching(model.config)
    itm.load_state_dict(model.state_dict())
    ids, am, images, _ = _groups()
    pairs = dict(input_ids=ids[:, 0], attention_mask=am[:, 0], pixel_values=images[:, 0])
    labels = torch.tensor([1, 0, 1])
    with torch.no_grad():
        a, b = model(**pairs, labels=labels), itm.eval()(**pairs, labels=labels)
    torch.testing.assert_close(a.scores, b.scores)
    torch.testing.assert_close(a.loss, b.loss)


def test_mismatched_groups_are_refused():
    model = _model()
    ids, am, images, _ = _groups(g=4)
    with pytest.raises(ValueError, match="G candidates"):
        model(input_ids=ids, attention_mask=am, pixel_values=images.expand(3, 3, 3, 32, 48))
    with pytest.raises(ValueError, match="matched position in each of the 3 groups"):
        model(input_ids=ids, attention_mask=am, pixel_values=images, labels=torch.zeros(2))
    with vilt.check_inputs(), pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        model(input_ids=ids, attention_mask=am, pixel_values=images, labels=torch.full((3,), 4))


def test_transformers_retrieval_checkpoint_trains_on_and_goes_back(tmp_path, perturb):
    torch.manual_seed(0)
    ref = perturb(transformers.ViltForImageAndTextRetrieval(transformers.ViltConfig(**TF_CONFIG)))
    ref.save_pretrained(tmp_path / "hf")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every weight loads: the rank head is the ITM score
        model = vilt.ViltForImageTextRetrieval.from_pretrained(tmp_path / "hf").eval()
    gen = torch.Generator().manual_seed(2)
    inputs = dict(
        input_ids=torch.randint(1, 60, (4, 9), generator=gen),
        attention_mask=torch.ones(4, 9, dtype=torch.long),
        pixel_values=torch.randn(4, 3, 32, 40, generator=gen),
    )
    with torch.no_grad():
        rank = ref(**inputs).logits[:, 0]
        torch.testing.assert_close(model(**inputs).scores, rank, atol=1e-5, rtol=1e-5)
        grouped = {k: v.unsqueeze(0) for k, v in inputs.items()}  # one group of 4 candidates
        torch.testing.assert_close(model(**grouped).scores[0], rank, atol=1e-5, rtol=1e-5)
    model.save_pretrained(tmp_path / "back", format="transformers")
    again = transformers.ViltForImageAndTextRetrieval.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(**inputs).logits[:, 0], rank, atol=1e-5, rtol=1e-5)
