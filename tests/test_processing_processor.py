"""ViltProcessor: the same batch as transformers' ViltProcessor, text always within
max_length, and directories that either library writes and the other reads."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vilt import ViltConfig
from vilt.processing import ImageProcessor, Tokenizer, ViltProcessor, train_tokenizer

transformers = pytest.importorskip("transformers")
# The PIL reference pipeline (with torchvision installed transformers defaults to another one).
PIL_BACKEND = {"backend": "pil"} if hasattr(transformers, "ViltImageProcessorPil") else {}
RefVilt = getattr(transformers, "ViltImageProcessorPil", transformers.ViltImageProcessor)

QUESTIONS = ["what color is the circle?", "how many shapes are there", "is there a red square"]
KEYS = ("input_ids", "attention_mask", "token_type_ids", "pixel_mask")


def image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(QUESTIONS * 5, 80)


@pytest.fixture(scope="module")
def images():
    return [image(120, 90, 0), image(90, 140, 1), image(200, 60, 2)]


def assert_same_batch(ours, theirs):
    for key in KEYS:
        assert torch.equal(ours[key], theirs[key]), key
    assert (ours["pixel_values"] - theirs["pixel_values"]).abs().max() < 1e-2


def test_same_batch_as_transformers(tokenizer, images, tmp_path):
    ours = ViltProcessor(ImageProcessor(size=64), tokenizer)
    ours.save_pretrained(tmp_path)
    theirs = transformers.ViltProcessor.from_pretrained(
        tmp_path, **PIL_BACKEND
    )  # transformers reads our files
    batch = ours(images=images, text=QUESTIONS)
    assert set(batch) == {*KEYS, "pixel_values"}
    assert batch["input_ids"].shape[1] < 40  # padded to the longest question only
    expected = theirs(
        images=images,
        text=QUESTIONS,
        return_tensors="pt",
        padding=True,
        truncation=True,
        max_length=40,
    )
    assert_same_batch(batch, expected)


def test_long_text_is_truncated_at_max_length(tokenizer, images):
    proc = ViltProcessor(ImageProcessor(size=32), tokenizer, max_length=16)
    long = "is there a red square " * 20
    batch = proc(images=images[:2], text=[long, "what color"])
    assert batch["input_ids"].shape == (2, 16)
    assert batch["input_ids"][0, -1].item() == tokenizer.sep_token_id
    assert proc(text=long, max_length=8)["input_ids"].shape == (1, 8)


def test_text_only_images_only_and_pairs(tokenizer, images):
    proc = ViltProcessor(ImageProcessor(size=32), tokenizer)
    assert set(proc(text="what color")) == {"input_ids", "attention_mask", "token_type_ids"}
    assert set(proc(images=images[0])) == {"pixel_values", "pixel_mask"}
    pairs = proc(images=[images[:2], images[1:]], text=QUESTIONS[:2])  # NLVR2: two per text
    assert pairs["pixel_values"].shape[:2] == (2, 2) and pairs["pixel_mask"].shape[:2] == (2, 2)
    with pytest.raises(ValueError, match="3 images but 2 texts"):
        proc(images=images, text=QUESTIONS[:2])
    with pytest.raises(ValueError, match="images=, text= or both"):
        proc()
    with pytest.raises(ValueError, match="needs a tokenizer"):
        ViltProcessor(ImageProcessor())


def test_round_trip(tokenizer, images, tmp_path):
    proc = ViltProcessor(ImageProcessor(size=96, size_divisor=16), tokenizer, max_length=24)
    proc.save_pretrained(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"preprocessor_config.json", "tokenizer.json", "vocab.txt"} <= names
    loaded = ViltProcessor.from_pretrained(tmp_path)
    assert loaded.max_length == 24 and loaded.image_processor == proc.image_processor
    assert tokenizer.model_max_length == 40  # saving did not change the tokenizer itself
    a, b = proc(images=images, text=QUESTIONS), loaded(images=images, text=QUESTIONS)
    for key in a:
        assert torch.equal(a[key], b[key])


def test_reads_transformers_directories(tokenizer, images, tmp_path):
    tokenizer.save_pretrained(tmp_path / "vocab_only")
    vocab = tmp_path / "vocab_only" / "vocab.txt"
    bert = transformers.BertTokenizerFast(str(vocab))
    # transformers 5 layout: processor_config.json with the image processor inside
    new = tmp_path / "new"
    transformers.ViltProcessor(RefVilt(), bert).save_pretrained(new)
    loaded = ViltProcessor.from_pretrained(new)
    assert loaded.image_processor == ImageProcessor() and loaded.max_length == 40
    reference = transformers.ViltProcessor.from_pretrained(new, **PIL_BACKEND)
    assert_same_batch(
        loaded(images=images, text=QUESTIONS),
        reference(images=images, text=QUESTIONS, return_tensors="pt", padding=True),
    )
    # a dandelin-style checkpoint: vocab.txt, tokenizer_config.json, legacy preprocessor file
    old = tmp_path / "dandelin"
    old.mkdir()
    (old / "vocab.txt").write_text(vocab.read_text())
    (old / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "model_max_length": 40})
    )
    legacy = {"feature_extractor_type": "ViltFeatureExtractor", "size": 384, "size_divisor": 32}
    (old / "preprocessor_config.json").write_text(json.dumps(legacy))
    dandelin = ViltProcessor.from_pretrained(old)
    assert dandelin.image_processor == ImageProcessor() and dandelin.max_length == 40
    assert torch.equal(dandelin(text=QUESTIONS)["input_ids"], tokenizer(QUESTIONS)["input_ids"])


def test_sizes_from_the_model_config(tokenizer, tmp_path):
    config = ViltConfig.from_preset("vilt-small", max_position_embeddings=32)
    config.save(tmp_path / "config.json")
    Tokenizer.save_pretrained(tokenizer, tmp_path)
    (tmp_path / "tokenizer_config.json").unlink()  # no saved max_length: the config decides
    proc = ViltProcessor.from_pretrained(tmp_path)
    assert (proc.image_processor.size, proc.image_processor.size_divisor) == (64, 8)
    assert proc.max_length == 32
    direct = ViltProcessor.from_config(config, tokenizer)
    assert direct.image_processor == proc.image_processor and direct.max_length == 32


def test_wraps_transformers_tokenizer_and_fails_clearly(tokenizer, tmp_path, monkeypatch):
    tokenizer.save_pretrained(tmp_path)
    bert = transformers.BertTokenizerFast(str(tmp_path / "vocab.txt"))
    proc = ViltProcessor(ImageProcessor(size=32), bert)
    assert isinstance(proc.tokenizer, Tokenizer)
    assert torch.equal(proc(text=QUESTIONS)["input_ids"], tokenizer(QUESTIONS)["input_ids"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"someone/no-such-processor: .*offline"):
        ViltProcessor.from_pretrained("someone/no-such-processor")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: no tokenizer.json or vocab.txt"):
        ViltProcessor.from_pretrained(empty)


def test_transformers_offline_is_offline_too(tmp_path, monkeypatch):
    import huggingface_hub

    downloads = []

    def no_network(name, **options):
        if not options.get("local_files_only"):
            downloads.append(name)
        raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"someone/no-such-processor: .*offline"):
        ViltProcessor.from_pretrained("someone/no-such-processor")
    import vilt

    with pytest.raises(vilt.CheckpointError, match=r"someone/no-such-model: .*offline"):
        vilt.ViltModel.from_pretrained("someone/no-such-model")
    assert downloads == []


def test_check_model_refuses_a_model_the_processor_would_overrun(tokenizer):
    """The ids a processor makes are in range by construction only for a model whose tables
    hold them; a model's forward does not check (that would read values on the host)."""
    processor = ViltProcessor(ImageProcessor(size=32), tokenizer, max_length=16)
    fits = ViltConfig.from_preset("vilt-test", vocab_size=tokenizer.vocab_size)
    processor.check_model(fits)
    with pytest.raises(ValueError, match=f"tokenizer has {tokenizer.vocab_size} tokens but m/x"):
        processor.check_model(fits.replace(vocab_size=tokenizer.vocab_size - 1), "m/x")
    with pytest.raises(ValueError, match="up to 16 tokens but the model has 12 text positions"):
        processor.check_model(fits.replace(max_position_embeddings=12))
