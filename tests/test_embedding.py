"""vilt.embed and vilt.Embedder: the model's own pooled state, whatever the batch; ITM match
probabilities; every kind of image input; clear errors."""

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_checkpoints import TEXTS, images, save_vilt, save_vit, vilt_model

import vilt


@pytest.fixture(scope="module")
def itm_dir(tmp_path_factory):
    return save_vilt(tmp_path_factory.mktemp("itm"))


@pytest.fixture(scope="module")
def embedder(itm_dir):
    return vilt.Embedder.from_pretrained(itm_dir, device="cpu")


def one_by_one(model, processor, pictures, texts, run):
    """The model's own forward on each pair alone (a batch of one: no padding at all)."""
    rows = []
    with torch.no_grad():
        for picture, text in zip(pictures, texts, strict=True):
            rows.append(run(model(**processor(images=[picture], text=[text], return_tensors="pt"))))
    return torch.cat(rows)


def test_embed_is_the_models_pooled_state_in_fp32(embedder, itm_dir):
    pictures = images()
    ours = vilt.embed(pictures, TEXTS, itm_dir, batch_size=4)
    assert ours.dtype == torch.float32 and ours.shape == (len(TEXTS), 32)
    model = vilt.ViltForImageTextMatching.from_pretrained(itm_dir).eval()
    expected = one_by_one(model, embedder.processor, pictures, TEXTS, lambda o: o.pooler_output)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    assert not torch.is_inference(ours) and not ours.requires_grad  # a plain tensor to keep


def test_a_pairs_embedding_does_not_depend_on_its_batch(embedder):
    # images of six sizes (padded to the largest in a batch), texts of 1 to 16 tokens
    pictures, texts = images(), TEXTS
    alone = torch.cat([embedder(pictures[i : i + 1], texts[i : i + 1]) for i in range(6)])
    assert (alone[0] - alone[1]).abs().max() > 1e-2  # the pairs really differ
    for size in (1, 2, 3, 4, 6, 32):
        torch.testing.assert_close(
            embedder(pictures, texts, batch_size=size), alone, rtol=0, atol=1e-5
        )
    # and in other company: each pair next to different neighbours, in another order
    order = [5, 2, 0, 4, 1, 3]
    shuffled = embedder([pictures[i] for i in order], [texts[i] for i in order], batch_size=2)
    torch.testing.assert_close(shuffled, alone[order], rtol=0, atol=1e-5)


def test_images_as_paths_pil_and_arrays_agree(embedder, tmp_path):
    arrays = images(3)
    paths = []
    for i, array in enumerate(arrays):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(array).save(paths[-1])
    texts = TEXTS[:3]
    from_arrays = embedder(arrays, texts)
    torch.testing.assert_close(embedder(paths, texts), from_arrays, rtol=0, atol=0)
    torch.testing.assert_close(
        embedder([str(p) for p in paths], texts), from_arrays, rtol=0, atol=0
    )
    pil = [Image.fromarray(a) for a in arrays]
    torch.testing.assert_close(embedder(pil, texts), from_arrays, rtol=0, atol=0)
    torch.testing.assert_close(embedder(np.stack([arrays[0]] * 2), texts[:2])[0], from_arrays[0])


@pytest.mark.parametrize(
    "cls",
    [
        vilt.ViltModel,
        vilt.ViltForQuestionAnswering,
        vilt.ViltForMaskedLM,
        vilt.ViltForPreTraining,
        vilt.ViltForImagesAndTextClassification,
    ],
)
def test_any_vilt_class_embeds_with_its_backbone(embedder, cls):
    model = vilt_model(cls, num_labels=3)
    backbone = model if isinstance(model, vilt.ViltModel) else model.vilt
    pictures = images(3)
    ours = vilt.embed(pictures, TEXTS[:3], model, processor=embedder.processor)
    expected = one_by_one(
        backbone, embedder.processor, pictures, TEXTS[:3], lambda o: o.pooler_output
    )
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)


def test_a_loaded_model_keeps_its_mode_and_device(embedder):
    model = vilt_model().train()
    vilt.embed(images(2), TEXTS[:2], model, processor=embedder.processor)
    assert model.training  # put back as it came
    assert next(model.parameters()).device.type == "cpu"
    with pytest.raises(ValueError, match="needs its processor"):
        vilt.embed(images(2), TEXTS[:2], model)


def test_zero_pairs_give_an_empty_matrix(embedder):
    out = embedder([], [])
    assert out.shape == (0, 32) and out.dtype == torch.float32
    assert embedder.match([], []).shape == (0,)


def test_match_is_the_itm_probability_of_each_pair(embedder):
    pictures = images()
    probs = embedder.match(pictures, TEXTS, batch_size=4)
    expected = one_by_one(
        embedder.model, embedder.processor, pictures, TEXTS, lambda o: torch.sigmoid(o.scores)
    )
    torch.testing.assert_close(probs, expected, rtol=0, atol=1e-5)
    assert probs.min() > 0 and probs.max() < 1 and probs.std() > 1e-3
    torch.testing.assert_close(
        embedder.match(pictures, TEXTS, batch_size=1), probs, rtol=0, atol=1e-5
    )


def test_match_needs_an_itm_head(tmp_path):
    vqa = vilt.Embedder.from_pretrained(save_vilt(tmp_path, vilt.ViltForQuestionAnswering))
    with pytest.raises(TypeError, match="no image-text matching head"):
        vqa.match(images(1), TEXTS[:1])
    assert vqa(images(1), TEXTS[:1]).shape == (1, 32)  # embedding still works


def test_score_pairs_decodes_each_image_once(embedder, monkeypatch):
    calls = []
    original = embedder.processor.image_processor.preprocess_one

    def counting(image, **options):
        calls.append(image.shape)
        return original(image, **options)

    monkeypatch.setattr(embedder.processor.image_processor, "preprocess_one", counting)
    pictures = images(4)
    pairs = [(i, t) for t in range(5) for i in range(4)]  # every image with every text
    scores = embedder.score_pairs(pictures, TEXTS[:5], pairs, batch_size=3)
    assert len(calls) == 4
    monkeypatch.undo()
    expected = embedder.scores([pictures[i] for i, _ in pairs], [TEXTS[t] for _, t in pairs])
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-5)
    with pytest.raises(IndexError, match=r"pair 0 = \(4, 0\)"):
        embedder.score_pairs(pictures, TEXTS, [(4, 0)])


def test_progress_bar_for_large_inputs(embedder, capsys):
    embedder(images(2), TEXTS[:2], batch_size=1)
    assert "pairs" not in capsys.readouterr().err
    embedder(images(9), (TEXTS * 2)[:9], batch_size=1)  # more than 8 batches
    assert "pairs" in capsys.readouterr().err


def test_errors_name_what_is_wrong(embedder, tmp_path):
    pictures = images(2)
    with pytest.raises(ValueError, match="2 images but 3 texts"):
        embedder(pictures, TEXTS[:3])
    with pytest.raises(TypeError, match="not one string"):
        embedder(pictures[:1], "a red circle")
    with pytest.raises(TypeError, match="not a single image"):
        embedder(pictures[0], TEXTS[:1])
    with pytest.raises(TypeError, match="text 1 is int"):
        embedder(pictures, ["a", 3])
    missing = tmp_path / "nowhere.png"
    with pytest.raises(ValueError, match=r"image 1: .*nowhere\.png: image file not found"):
        embedder([pictures[0], missing], TEXTS[:2])
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ValueError, match=r"corrupt\.png"):
        embedder([corrupt], TEXTS[:1])
    with pytest.raises(ValueError, match=r"image 1: .*NaN"):
        embedder([pictures[0], np.full((8, 8, 3), np.nan)], TEXTS[:2])
    with pytest.raises(TypeError, match="image 0: .*cannot read an image from dict"):
        embedder([{"no": "image"}], TEXTS[:1])
    with pytest.raises(ValueError, match="batch_size"):
        embedder(pictures, TEXTS[:2], batch_size=0)


def test_vit_models_embed_images_alone(tmp_path):
    """A ViT embeds each image as the features its classifier reads (the final-norm class
    token; the mean patch token with pooling="mean"), whatever its batch."""
    vit_dir = save_vit(tmp_path / "vit")
    pictures = images()
    ours = vilt.embed(pictures, model=vit_dir, batch_size=4)
    model = vilt.ViTForImageClassification.from_pretrained(vit_dir).eval()
    processor = vilt.ViTImageProcessor.from_pretrained(vit_dir)
    with torch.no_grad():
        pixels = processor(pictures)["pixel_values"]
        expected = model.forward_features(pixels)[:, 0]
        assert torch.allclose(model.classifier(ours), model(pixel_values=pixels).logits, atol=1e-5)
    assert ours.shape == (len(pictures), 32)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    one_by_one = torch.cat([vilt.embed(pictures[i : i + 1], model=vit_dir) for i in range(3)])
    torch.testing.assert_close(one_by_one, ours[:3], rtol=0, atol=1e-5)
    mean = vilt.ViTModel(model.config.replace(pooling="mean"))
    got = vilt.Embedder(mean, processor)(pictures[:2])
    with torch.no_grad():
        torch.testing.assert_close(
            got, mean.forward_features(pixels[:2])[:, 1:].mean(1), atol=1e-5, rtol=0
        )
    with pytest.raises(TypeError, match="embeds images alone: pass no texts"):
        vilt.embed(pictures[:1], TEXTS[:1], vit_dir)


def test_wrong_pairings_are_refused(embedder, tmp_path):
    vit = vilt.ViTModel(vilt.ViTConfig.from_preset("vit-test"))
    with pytest.raises(TypeError, match="image processor .ViTImageProcessor., got ViltProcessor"):
        vilt.embed(images(1), model=vit, processor=embedder.processor)
    with pytest.raises(TypeError, match="processor must be a ViltProcessor"):
        vilt.Embedder(vilt_model(), processor=embedder.processor.image_processor)
    with pytest.raises(TypeError, match="pass texts, one per image"):
        embedder(images(1))
    with pytest.raises(TypeError, match="needs a ViLT model"):
        vilt.embed(images(1), TEXTS[:1], torch.nn.Linear(2, 2), processor=embedder.processor)


def test_a_processor_whose_ids_overrun_the_model_is_refused_up_front(embedder):
    """The forward does not check token ids (no host reads): the Embedder checks the pair."""
    small = vilt.ViltForImageTextMatching(
        embedder.model.config.replace(vocab_size=embedder.processor.tokenizer.vocab_size - 1)
    )
    with pytest.raises(ValueError, match="tokens but ViltForImageTextMatching embeds only"):
        vilt.Embedder(small, embedder.processor)
