"""Property-based tests (hypothesis) of the input policy: over generated images, arrays,
texts, records and configs, every input gives a result or the documented error type
(ImageInputError / ImageError, DataError, ConfigError), never another exception, and a
result is never garbage (pixels finite and in range, token ids inside the vocabulary).

Seeded (``derandomize``) and small, so that they run in a few seconds and fail the same way
every time."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tiny_checkpoints import tokenizer

import vilt
from vilt.config import ConfigError
from vilt.data import DataError, ImageError, load_image
from vilt.data.pairs import load_pair_file
from vilt.processing import ImageInputError

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

DTYPES = st.sampled_from(
    [np.uint8, np.uint16, np.int16, np.int64, np.float16, np.float32, np.float64, np.bool_]
)
SHAPES = st.one_of(
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=6),
    st.tuples(st.integers(0, 6), st.integers(0, 6), st.sampled_from([1, 2, 3, 4, 5])),
    st.tuples(st.sampled_from([1, 3, 4]), st.integers(1, 6), st.integers(1, 6)),
    hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=3),
)
ARRAYS = hnp.arrays(DTYPES, SHAPES)
ODD_ARRAYS = st.one_of(
    hnp.arrays(np.complex64, (4, 4, 3)),
    st.just(np.full((4, 4), "x")),
    st.just(np.empty((4, 4), dtype=object)),
)


@SETTINGS
@given(st.one_of(ARRAYS, ODD_ARRAYS))
def test_the_image_processor_gives_finite_pixels_or_an_image_input_error(array):
    processor = vilt.ImageProcessor(size=16, size_divisor=4)
    try:
        out = processor([array])
    except ImageInputError:
        return
    pixels = out["pixel_values"]
    assert pixels.dtype == torch.float32 and pixels.shape[:2] == (1, 3)
    assert torch.isfinite(pixels).all()
    assert pixels.abs().max() <= 1.0 + 1e-6  # normalised from [0, 1] by mean 0.5, std 0.5


@SETTINGS
@given(st.one_of(ARRAYS, ODD_ARRAYS))
def test_load_image_gives_an_rgb_image_or_an_image_error_like_the_processor(array):
    try:
        image = load_image(array, source="record 3")
    except ImageError as err:
        assert str(err).startswith("record 3: ")
        with pytest.raises(ImageInputError):  # the processor refuses it too
            vilt.ImageProcessor(size=16)([array])
        return
    assert image.mode == "RGB" and image.width > 0 and image.height > 0
    vilt.ImageProcessor(size=16)([array])  # one policy: what one path takes, the other does


@SETTINGS
@given(st.binary(max_size=64))
def test_bytes_that_are_not_an_image_are_an_image_error(data):
    try:
        load_image(data, source="row 1")
    except ImageError as err:
        assert err.reason in ("empty_image", "corrupt_image", "truncated_image")


TEXTS = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=40)


@pytest.fixture(scope="module")
def processor():
    return vilt.ViltProcessor(vilt.ImageProcessor(size=32), tokenizer(), max_length=16)


@SETTINGS
@given(st.lists(TEXTS, min_size=1, max_size=3))
def test_any_text_gives_token_ids_in_the_vocabulary_or_a_value_error(processor, texts):
    try:
        out = processor(text=texts, return_tensors="pt")
    except ValueError as err:
        assert "Unicode" in str(err) or "surrogate" in str(err), err
        assert any(any(0xD800 <= ord(c) <= 0xDFFF for c in t) for t in texts)
        return
    ids = out["input_ids"]
    assert ids.shape[0] == len(texts) and ids.shape[1] <= 16
    assert int(ids.min()) >= 0 and int(ids.max()) < processor.tokenizer.vocab_size


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=True) | TEXTS,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(TEXTS, inner, max_size=2),
    max_leaves=4,
)
RECORDS = st.lists(
    st.one_of(
        st.fixed_dictionaries({"image": JSON_VALUES, "caption": JSON_VALUES}),
        st.fixed_dictionaries({"image": st.just("a.png"), "caption": JSON_VALUES}),
        JSON_VALUES,
    ),
    min_size=1,
    max_size=4,
)


@SETTINGS
@given(RECORDS)
def test_a_pair_file_of_any_records_loads_or_names_the_bad_line(tmp_path_factory, records):
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    # ensure_ascii keeps lone surrogates as JSON escapes, as a JSON writer may
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    try:
        loaded = load_pair_file(path)
    except DataError as err:
        assert str(err).startswith(f"{path}: "), err
    else:
        assert all(isinstance(r.caption, str) and r.caption.strip() for r in loaded)
        assert all(str(r.caption).encode("utf-8") for r in loaded)  # valid Unicode
    counted = vilt.data.SkipCounter()
    kept = load_pair_file(path, skips=counted)  # skip_bad: never raises, counts each skip
    assert len(kept) + counted.total == len(records)


CONFIG_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 70),
    st.floats(allow_nan=True),
    st.text(max_size=4),
    st.lists(st.integers(0, 70), max_size=3),
    st.dictionaries(st.text("0123ab", max_size=2), st.none() | st.text(max_size=3), max_size=3),
)
CONFIG_FIELDS = [
    "hidden_size",
    "num_attention_heads",
    "image_size",
    "patch_size",
    "layer_norm_eps",
    "qkv_bias",
    "hidden_act",
    "id2label",
    "label2id",
    "num_labels",
    "hidden_dropout_prob",
    "vocab_size",
    "pad_token_id",
]


@SETTINGS
@given(st.dictionaries(st.sampled_from(CONFIG_FIELDS), CONFIG_VALUES, min_size=1, max_size=3))
def test_a_config_of_any_field_values_builds_or_names_the_field(fields):
    base = vilt.ViltConfig.from_preset("vilt-test").to_dict()
    try:
        config = vilt.ViltConfig.from_dict(base | fields)
    except ConfigError as err:
        assert any(f"ViltConfig.{name}" in str(err) for name in CONFIG_FIELDS), err
        return
    assert vilt.ViltConfig.from_dict(json.loads(config.to_json_string())) == config


@SETTINGS
@given(st.lists(st.text(max_size=20), min_size=1, max_size=4), st.booleans())
def test_csv_captions_of_any_text_come_back_as_written_or_are_named(
    tmp_path_factory, captions, bom
):
    import csv

    path = tmp_path_factory.mktemp("csv") / "pairs.csv"
    with open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        writer.writerows([f"{i}.png", c] for i, c in enumerate(captions))
    try:
        loaded = load_pair_file(path)
    except DataError as err:
        assert str(err).startswith(f"{path}: line "), err
        assert any(not c.strip() for c in captions)  # only an empty caption is refused
    else:
        assert [r.caption for r in loaded] == captions
